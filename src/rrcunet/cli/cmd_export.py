"""``rrcunet export``: a model file → ONNX or TorchScript (+ sidecar JSON), a thin layer over
:func:`rrcunet.inference.export.export_model`.

Example::

    rrcunet export --format onnx --model best.safetensors -o rrcunet.onnx          # checks ONNX Runtime agreement
    rrcunet export --format torchscript -o rrcunet.pt --shape 256 256 48
    rrcunet export --format monai-bundle -o rrcunet_bundle/                           # a MONAI bundle folder
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    # lazy: needed only to build the parser; importing this command module stays light
    from rrcunet.inference.export import FORMATS, MIN_OPSET

    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX, TorchScript (with a sidecar JSON of its metadata) or a MONAI bundle",
        description=(
            "Writes OUT and OUT.json (model name and options, labels, preprocessing config, input/output names "
            "and shapes, hashes). ONNX: opset >= 17; by default ONNX Runtime is run on a random input and its "
            "labels compared with PyTorch's (at least 99.9% voxel agreement, else the export is removed). "
            "TorchScript: torch.jit.trace. monai-bundle: OUT is a folder holding a MONAI bundle (configs/metadata.json, "
            "configs/inference.json with the preprocessing as MONAI transforms, models/model.ts); it takes the CT "
            "and its lung mask (rrcunet lungmask)."
        ),
    )
    p.add_argument("--format", choices=(*FORMATS, "monai-bundle"), required=True, help="export format")
    p.add_argument("--model", metavar="PATH", help="model file (default: the bundled demo model)")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output file (.onnx or .pt), or folder (monai-bundle)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="spatial input shape (default: the model file's training input shape)")
    p.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET}, default {MIN_OPSET})")
    p.add_argument("--dynamic", action="store_true", help="ONNX: dynamic batch and spatial axes")
    p.add_argument("--no-check", dest="check", action="store_false", help="ONNX: skip the ONNX Runtime comparison")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.inference.export import export_model

    if args.format == "monai-bundle":
        from rrcunet.inference.monai_bundle import export_monai_bundle  # lazy: loads MONAI's bundle code

        out = export_monai_bundle(args.out, model_path=args.model, overwrite=args.overwrite)
        print(f"{out}\tMONAI bundle (run: python -m monai.bundle run --config_file {out}/configs/inference.json "
              f"--bundle_root {out})")
        return 0
    result = export_model(args.format, args.out, model_path=args.model,
                          shape=tuple(args.shape) if args.shape else None, opset=args.opset, dynamic=args.dynamic,
                          check=args.check, overwrite=args.overwrite)
    agree = "" if result.agreement is None else f"\tONNX Runtime label agreement {result.agreement:.4%}"
    print(f"{result.path}\tinput {'x'.join(map(str, result.shape))}\tsidecar {result.sidecar}{agree}")
    return 0
