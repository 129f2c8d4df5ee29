"""``rrcunet evaluate``: score predictions against ground truth and write a report folder, a thin
layer over :func:`rrcunet.evaluation.evaluate.evaluate_folder`.

Example::

    rrcunet evaluate predictions/ data/phantoms -o report/          # a prepared dataset as ground truth
    rrcunet evaluate predictions/ labelsTs/ -o report/ --images imagesTs/
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score predictions against ground truth; write CSV/JSON/Markdown tables, figures and an HTML report",
        description=(
            "Pairs PRED_DIR/<case>_seg.nii.gz with GT_DIR/<case>.nii.gz, <case>_seg.nii.gz, labels/<case>.nii.gz "
            "or the cases of a prepared dataset (manifest.json), checks each pair is on one grid, and writes to "
            "REPORT_DIR: per_case.csv, summary.csv/.json/.md (the paper's Table 3 and Table 4 metrics plus tumour "
            "HD95 and surface Dice, each as the mean of per-case scores and voxel-pooled), dice_histogram.png "
            "(Figure 7), per-case slice and 3D figures, and index.html."
        ),
        epilog="Metric definitions and the two aggregations: docs/metrics.md. Report layout: docs/inference.md.",
    )
    p.add_argument("pred_dir", metavar="PRED_DIR", help="folder of <case>_seg.nii.gz (from `rrcunet predict`)")
    p.add_argument("gt_dir", metavar="GT_DIR", help="folder of ground-truth label maps (0/1/2) or a prepared dataset")
    p.add_argument("-o", "--out", dest="out_dir", required=True, metavar="REPORT_DIR", help="report folder")
    p.add_argument("--images", metavar="IMG_DIR",
                   help="CT images (<case>.nii.gz or DICOM folders <case>/) for the slice figures; default: the "
                        "dataset's images/ or the inputs recorded by `rrcunet predict`")
    p.add_argument("--reference-labels", choices=("auto", "lung+tumour", "tumour"), default="auto",
                   help="what the ground truth's values mean: lung+tumour (0 background, 1 lung, 2 tumour), tumour "
                        "(any non-zero value is tumour, e.g. a GTV from `rrcunet convert --rtstruct`; lung not "
                        "scored) or auto (default: a prepared dataset is lung+tumour; references with no label 2 "
                        "are read as tumour-only, with a warning)")
    p.add_argument("--tolerance-mm", type=float, default=2.0, help="surface-Dice tolerance in mm (default 2)")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="skip the per-case figures")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report in REPORT_DIR")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.evaluation.evaluate import evaluate_folder

    report = evaluate_folder(args.pred_dir, args.gt_dir, args.out_dir, images_dir=args.images,
                             tolerance_mm=args.tolerance_mm, figures=args.figures, overwrite=args.overwrite,
                             progress=args.progress, reference_labels=args.reference_labels)
    print(report.summary_markdown(), end="")
    print(f"{len(report.cases)} case(s) scored; report: {report.files['html']}")
    return 0
