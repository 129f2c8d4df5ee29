"""``rrcunet predict``: segment lung tumours in CT files and folders, a thin layer over
:class:`rrcunet.inference.Predictor` and :func:`rrcunet.inference.predict_paths`.

Examples::

    rrcunet predict LUNG1-001/image -o predictions/                       # DICOM series → NIfTI + DICOM SEG
    rrcunet predict scans/ -o predictions/ --model best.safetensors --tta --device auto
    rrcunet predict ct.nii.gz -o out/ --sliding-window --roi-size 128 128 48 --save-probabilities

Exit status: 0 when every case succeeded (or was already complete), 3 when any case failed
(each failure is printed as one line naming the input and the reason), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from rrcunet.cli.cmd_convert import add_ct_read_arguments, ct_read_options

EXIT_CASE_FAILED = 3


def device_arg(text: str) -> str:
    """``--device``: one of :data:`rrcunet.inference.config.DEVICES` or ``cuda:N`` (as ``rrcunet train``)."""
    # lazy: rrcunet.inference imports torch; importing this command module stays light
    from rrcunet.inference.config import is_device

    if is_device(text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N (e.g. cuda:1), not {text!r}")


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by ``predict`` and ``demo`` (model, lung extractor, how to run); the
    defaults are those of :class:`~rrcunet.inference.InferenceConfig` and its ``PostprocessConfig``."""
    # lazy: needed only to build the parser; importing this command module stays light
    from rrcunet.inference.config import InferenceConfig, PostprocessConfig
    from rrcunet.lungmask import LUNGMASK_METHODS

    p.add_argument("--model", metavar="PATH",
                   help="model file (.safetensors from `rrcunet train`); default: the bundled demo model")
    p.add_argument("--lung-method", choices=sorted(LUNGMASK_METHODS),
                   help="lung-region extractor for the lung input channel (default: %(default)s)")
    p.add_argument("--lung-model", metavar="PATH", help="lung model file for --lung-method coordunet")
    p.add_argument("--device", type=device_arg, metavar="{auto,cpu,cuda,cuda:N}",
                   help="where to run the network; cuda:N = GPU N (default: %(default)s = CUDA if available)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--bf16", dest="bf16", action="store_true",
                           help="bfloat16 autocast for the network (default on a CPU with native bf16: AMX-BF16 or "
                                "AVX512-BF16; docs/inference.md, 'Precision and the fast path')")
    precision.add_argument("--fp32", dest="bf16", action="store_false",
                           help="float32 network (default on other CPUs and on GPUs)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   help="run the network in channels_last_3d memory layout (default: on with bf16 on CPU, where the "
                        "fused GroupNorm+PReLU kernel runs; off otherwise)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the softmax over the mirror combinations along the axes "
                        "the model was trained to flip (the bundled model: left-right, 2x slower; a model file "
                        "that does not record them: all 8, 8x slower)")
    p.add_argument("--uncertainty", type=int, metavar="N",
                   help="N >= 2 stochastic network passes (the model's mirror axes in turn, dropout on where the "
                        "model has any, a small CT intensity perturbation): labels from their mean, and "
                        "<case>_uncertainty.nii.gz (predictive entropy, 0-1) plus each lesion's mean uncertainty "
                        "in the JSON. N times the network's cost (default: off)")
    p.add_argument("--perturb-hu", type=float, metavar="HU",
                   help="with --uncertainty: size (1 SD) of the CT offset and noise of passes 2..N (default %(default)s)")
    p.add_argument("--sliding-window", action="store_true",
                   help="run at native resolution with MONAI sliding-window inference instead of the fixed resize")
    p.add_argument("--roi-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="sliding-window size in voxels (default: the model's training input shape)")
    p.add_argument("--overlap", type=float, help="sliding-window overlap fraction (default %(default)s)")
    p.add_argument("--target-spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="with --sliding-window: network voxel size in mm (default: the CT's own spacing)")
    p.add_argument("--min-tumour-ml", type=float, metavar="N",
                   help="drop predicted tumour components smaller than N mL (0 keeps all; default: the value "
                        "the model file records, chosen on validation data by `rrcunet experiment postprocess`, "
                        "else 0)")
    p.add_argument("--on-empty-lung", choices=("error", "full"),
                   help="when the lung region is empty: error, or full = use the whole volume (default: the model "
                        "file's choice, normally error)")
    p.add_argument("--keep-outside-lung", action="store_true",
                   help="keep tumour components with no voxel in the lung region (dropped by default)")
    p.set_defaults(**{f.name: f.default for c in (InferenceConfig, PostprocessConfig) for f in dataclasses.fields(c)
                      if f.default is not dataclasses.MISSING})


def inference_config(args: argparse.Namespace) -> Any:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.inference import InferenceConfig, PostprocessConfig

    def given(cls: type) -> dict[str, Any]:
        return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}

    return InferenceConfig(**given(InferenceConfig) | {"postprocess": PostprocessConfig(**given(PostprocessConfig))})


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment lung tumours in CT scans (NIfTI/NRRD files, DICOM series folders)",
        description=(
            "For each case: lung region -> preprocessing (the model file's config) -> network -> optional "
            "clean-up -> back onto the input grid. Writes OUT_DIR/<case>_seg.nii.gz (0 background, 1 lung, "
            "2 tumour, exactly the input's geometry), <case>.json (tumour volume, lesions with centroid and "
            "longest axial diameter, lung volume, runtimes, model hash), for DICOM input <case>_seg.dcm "
            "(DICOM SEG), and on request probabilities and an RTSTRUCT. Cases whose outputs are complete "
            "are skipped (resume), unless --overwrite; a case made with another model or options is "
            "predicted again. A failing case is reported and skipped; the exit "
            "status is then 3."
        ),
        epilog="Inputs, outputs and the JSON schema: docs/inference.md.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image file (.nii.gz, .nii, .nrrd, .mha), DICOM series folder, or a folder of those")
    p.add_argument("-o", "--out", dest="out_dir", required=True, metavar="OUT_DIR", help="output folder")
    add_inference_arguments(p)
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write <case>_prob_<class>.nii.gz (float32, one file per non-background class)")
    p.add_argument("--rtstruct", action="store_true", help="also write <case>_rtstruct.dcm for DICOM inputs")
    p.add_argument("--overwrite", action="store_true", help="redo cases whose outputs already exist")
    p.add_argument("--num-parts", type=int, metavar="N",
                   help="split the cohort into N parts balanced by slice count (the same split in every process) "
                        "and predict one of them; with --part-id. Parts may share -o. Under torchrun the part is "
                        "taken from RANK / WORLD_SIZE, and --device cuda uses GPU LOCAL_RANK")
    p.add_argument("--part-id", type=int, metavar="I", help="which part, 0 to N-1 (with --num-parts)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="workers that read and prepare the next cases while the network runs (one thread writes "
                        "the previous case); 0 = one stage after the other. Default: $RRCUNET_WORKERS, else 1 (memory "
                        "within 1.3x of one case; 2 is faster on 2 cores, for more memory), for 5 cases or more "
                        "(fewer run one after the other)")
    p.add_argument("--worker-kind", choices=("process", "thread"),
                   default=os.environ.get("RRCUNET_WORKER_KIND", "thread"),
                   help="what the --workers are: threads of this process (less memory, and faster on 2 cores) or "
                        "processes (each with its own torch runtime and model). Default: $RRCUNET_WORKER_KIND, "
                        "else thread")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_ct_read_arguments(p, series_uid=False)
    p.set_defaults(func=run)


def quiet_dicom_logs(args: argparse.Namespace) -> None:
    """highdicom logs every copied DICOM module at INFO; keep that for --verbose."""
    if not getattr(args, "verbose", False):
        logging.getLogger("highdicom").setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.inference import Predictor

    from rrcunet.inference.batch import part_from_environment

    quiet_dicom_logs(args)
    num_parts, part_id = part_from_environment(args.num_parts, args.part_id)
    config = inference_config(args)
    local_rank = os.environ.get("LOCAL_RANK")
    if config.device == "cuda" and local_rank is not None and local_rank.isdigit():
        config = dataclasses.replace(config, device=f"cuda:{local_rank}")  # torchrun: one GPU per process
    predictor = Predictor.from_file(args.model, config=config)
    report = predictor.predict_paths(args.inputs, args.out_dir, save_probabilities=args.save_probabilities,
                                     rtstruct=args.rtstruct, overwrite=args.overwrite, progress=args.progress,
                                     read_options=ct_read_options(args), num_parts=num_parts, part_id=part_id,
                                     workers=args.workers, worker_kind=args.worker_kind)
    return print_report(report)


def case_line(out_dir: Path, outcome: Any) -> str | None:
    """``<case>: N lesion(s), V mL tumour, largest D mm[; flags]`` from the case's JSON (None without one)."""
    try:
        doc = json.loads((Path(out_dir) / f"{outcome.case_id}.json").read_text(encoding="utf-8"))
        tumour = doc["tumour"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    diameters = [les.get("longest_axial_diameter_mm") or 0.0 for les in tumour.get("lesions", [])]
    text = f"{outcome.case_id}: {tumour['n_lesions']} lesion(s), {tumour['volume_ml']:.1f} mL tumour"
    text += f", largest {max(diameters):.0f} mm across" if diameters else ""
    quality = [f["code"] for f in (doc.get("quality") or {}).get("flags", [])]
    flags = [f"{len(doc['postprocessing']['removed'])} small or outside-lung component(s) removed"
             if doc.get("postprocessing", {}).get("removed") else "",
             "unchanged, already complete" if outcome.status == "skipped" else "",
             "predicted again (model or options changed)" if outcome.message.startswith("predicted again") else "",
             "a DICOM output is missing" if doc.get("output_errors") else "",
             f"check: {', '.join(quality)}" if quality else ""]
    return text + "".join(f"; {f}" for f in flags if f)


def print_report(report: Any) -> int:
    """One line per case (lesions, volume, flags) and a summary line naming the output folder on stdout,
    one line per failed case on stderr; the exit status."""
    for o in report.outcomes:
        line = case_line(report.out_dir, o) if o.status != "failed" else None
        if line:
            print(line)
    for o in report.failed:  # the reader's messages often start with the path already
        message = o.message[len(f"{o.path}: "):] if o.message.startswith(f"{o.path}: ") else o.message
        print(f"rrcunet predict: {o.path}: {message}", file=sys.stderr)
    again = [o for o in report.done if o.message.startswith("predicted again")]
    partial = [o for o in report.done if "not written:" in o.message]
    for o in partial:
        print(f"rrcunet predict: {o.path}: {o.message}", file=sys.stderr)
    print(f"{report.out_dir}: {len(report.done)} predicted, {len(report.skipped)} already complete (skipped), "
          f"{len(report.failed)} failed"
          + (f"; {len(again)} predicted again because the model or an option changed since the last run"
             if again else "")
          + (f"; {len(partial)} without one of the requested DICOM outputs (listed above)" if partial else ""))
    return EXIT_CASE_FAILED if report.failed or partial else 0
