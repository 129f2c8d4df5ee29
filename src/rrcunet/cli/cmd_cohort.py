"""``rrcunet cohort PRED_DIR``: one CSV and one HTML table of every case in a ``predict`` output
folder (done, being written, failed and why), a thin layer over :mod:`rrcunet.inference.cohort`.

Example::

    rrcunet predict scans/ -o out/ --num-parts 4 --part-id 0 &   # ... parts 1-3 elsewhere
    rrcunet cohort out/ --inputs scans/                          # out/cohort.csv, out/cohort.html
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cohort",
        help="gather a predict output folder into one table (cohort.csv, cohort.html): volumes, lesions, "
             "flags, timings, failed cases",
        description=(
            "Read every <case>.json (and <case>.failed.json) of a `rrcunet predict` output folder and write "
            "cohort.csv and cohort.html: per case the status (done, started = being written or interrupted, "
            "failed with the reason), tumour volume, lesion count, largest diameter, lung volume, flags and "
            "stage timings. Safe while parts of a split prediction are still running; rerun to refresh."),
    )
    p.add_argument("pred_dir", metavar="PRED_DIR", help="a `rrcunet predict` output folder")
    p.add_argument("--inputs", nargs="+", metavar="INPUT",
                   help="the cohort's inputs (as given to predict), to count the cases not started yet")
    p.add_argument("-o", "--out", dest="out_dir", metavar="DIR", help="where to write the table (default PRED_DIR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.inference.cohort import gather_cohort, write_cohort

    cohort = gather_cohort(args.pred_dir, args.inputs or ())
    csv_path, html_path = write_cohort(cohort, args.out_dir)
    print(cohort.headline())
    print(f"{csv_path}\n{html_path}")
    return 0
