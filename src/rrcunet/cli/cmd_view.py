"""``rrcunet view PRED_DIR``: an interactive viewer page (NiiVue) for each prediction in a
``rrcunet predict`` output folder, a thin layer over :func:`rrcunet.visualization.viewer.write_viewer_page`.

Example::

    rrcunet predict scans/ -o out/ && rrcunet view out/         # out/<case>_view.html, open in a browser
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "view",
        help="write an interactive viewer page (CT + lung/tumour overlays, lesion list) per prediction",
        description=(
            "For each <case>.json of a `rrcunet predict` output folder, write <case>_view.html beside it: the CT "
            "with the lung and tumour overlays in axial, coronal, sagittal and 3D views (NiiVue, bundled; the "
            "page works offline from the folder), window presets, an opacity slider and the lesion list. The CT "
            "is read from the input path the JSON records."),
    )
    p.add_argument("pred_dir", metavar="PRED_DIR", help="a `rrcunet predict` output folder")
    p.add_argument("--case", action="append", metavar="ID", help="only this case (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.visualization.viewer import write_prediction_pages

    pages = write_prediction_pages(args.pred_dir, cases=args.case)
    for page in pages:
        extra = f" ({page.reduced})" if page.reduced else ""
        print(f"{page.path}\t{page.n_bytes / 1e6:.1f} MB{extra}")
    return 0
