"""``rrcunet lungmask``: CT → 0/1 lung-region mask on the CT's own grid.

A thin layer over :func:`rrcunet.inference.make_lung_extractor`; the ``--method`` choices come from
:data:`rrcunet.lungmask.LUNGMASK_METHODS`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rrcunet.cli.cmd_convert import add_ct_read_arguments, ct_read_options


def register(subparsers: Any) -> None:
    # lazy: needed only to build the parser; importing this command module stays light
    from rrcunet.lungmask import LUNGMASK_METHODS

    methods = "; ".join(f"{m.name}: {m.summary}" for m in LUNGMASK_METHODS.values())
    p = subparsers.add_parser(
        "lungmask",
        help="extract the lung region (lung channel of the network input) from a CT",
        description=(
            "Write a mask with 1 for the lung region (lung parenchyma including tumours inside or touching "
            "it) and 0 elsewhere, on exactly the input's grid (shape, spacing, origin, direction). "
            f"Methods: {methods}."
        ),
    )
    p.add_argument("input", metavar="INPUT", help="CT: DICOM series folder (or one of its files), .nii.gz, .nrrd or .mha")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output mask (.nii.gz, .nii, .nrrd or .mha)")
    p.add_argument("--method", choices=sorted(LUNGMASK_METHODS), default="classical",
                   help="extractor (default: classical)")
    p.add_argument("--model", metavar="PATH", help="checkpoint for methods that need one (coordunet)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_ct_read_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.inference import InferenceConfig, make_lung_extractor
    from rrcunet.io import check_output_path, read_image, write_volume
    from rrcunet.lungmask import check_method

    # Refuse a bad method/model or output before the (slower) read and extraction.
    check_method(args.method, args.model)
    check_output_path(args.out, inputs=[args.input], overwrite=args.overwrite)
    extractor = make_lung_extractor(args.method, args.model, config=InferenceConfig(device="cpu"))
    ct = read_image(args.input, **ct_read_options(args))
    start = time.perf_counter()
    lungs = extractor(ct)
    elapsed = time.perf_counter() - start
    write_volume(lungs, args.out, overwrite=args.overwrite)
    volume_ml = float(lungs.array.sum()) * lungs.geometry.voxel_volume_ml
    print(f"{args.out}\tlung region {volume_ml:.0f} mL\t{args.method} {elapsed:.1f} s")
    return 0
