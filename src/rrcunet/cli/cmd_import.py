"""``rrcunet import {msd,nnunet,nsclc} SRC -o DATASET_DIR``: a public dataset → the canonical prepared layout.

A thin layer over :func:`rrcunet.data.importers.import_dataset_report`. Exit status: 0 when every
case was imported, 3 when some cases were skipped (the summary lists them and why; the others are in
the manifest), 2 for a user error (nothing usable written).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

#: Exit status when the import finished but skipped bad cases.
EXIT_SKIPPED = 3


def register(subparsers: Any) -> None:
    # lazy: needed only to build the parser; importing this command module stays light
    from rrcunet.data.importers import IMPORT_KINDS
    from rrcunet.lungmask import LUNGMASK_METHODS

    kinds = "; ".join(f"{k.name}: {k.description}" for k in IMPORT_KINDS.values())
    p = subparsers.add_parser(
        "import",
        help="import MSD, nnU-Net or TCIA NSCLC data into a prepared dataset folder",
        description=(
            "Write DATASET_DIR/images/<case>.nii.gz (CT, HU), labels/<case>.nii.gz (0 background, 1 lung, 2 tumour), "
            "lungs/<case>.nii.gz (0/1 lung region) and manifest.json (provenance, seeded patient-level split). "
            f"Sources — {kinds}. Where the source has no lung label, the lung comes from the lung extractor. "
            "Re-running the same command resumes: complete cases are kept. Bad cases are skipped and listed; "
            "the exit status is then 3. See docs/datasets.md."
        ),
    )
    p.add_argument("kind", choices=list(IMPORT_KINDS), help="source kind")
    p.add_argument("src", metavar="SRC", help="source folder (read only)")
    p.add_argument("-o", "--out", dest="out_dir", required=True, metavar="DATASET_DIR",
                   help="prepared dataset folder to create (not inside SRC)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient-level train/validation split (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction of patients in validation (default 0.2, the paper's 80/20)")
    p.add_argument("--test-list", metavar="FILE",
                   help="text file of case or patient ids (one a line) to hold out as the test split")
    p.add_argument("--lung-method", default="classical", choices=list(LUNGMASK_METHODS),
                   help="lung extractor method for sources without a lung label (default classical)")
    p.add_argument("--roi", action="append", dest="rois", metavar="NAME",
                   help="nsclc: tumour ROI name or pattern (case-insensitive), repeat for a union; default GTV-1 "
                        "(else the single GTV-1* ROI)")
    p.add_argument("--lung-roi", action="append", dest="lung_rois", metavar="NAME",
                   help="nsclc: lung ROI name or pattern; default Lung-Left/Lung-Right/Lungs* and common variants")
    p.add_argument("--label-map", action="append", dest="label_map", metavar="NAME=VALUE",
                   help="nnunet: map a label name to 0 (background), 1 (lung) or 2 (tumour); repeat")
    p.add_argument("--overwrite", action="store_true",
                   help="redo an import made with other options, or write into a non-empty folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.data.importers import import_dataset_report

    report = import_dataset_report(
        args.kind, args.src, args.out_dir,
        seed=args.seed, val_fraction=args.val_fraction, test_list=args.test_list,
        lung_method=args.lung_method, rois=args.rois, lung_rois=args.lung_rois,
        label_map=args.label_map, overwrite=args.overwrite,
    )
    print(report.summary(), file=sys.stderr if report.skipped else sys.stdout)
    return EXIT_SKIPPED if report.skipped else 0
