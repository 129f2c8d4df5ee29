"""``rrcunet insert-lesions``: synthetic lesions inserted into real chest CTs, written as a
prepared dataset (the layout of ``rrcunet phantoms``).

A thin layer over :func:`rrcunet.synthetic.insertion.write_insertion_dataset`.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "insert-lesions",
        help="insert synthetic lesions into real chest CTs (training data with real anatomy)",
        description=(
            "For each background CT, write N copies with 1-3 synthetic lung lesions each (solid, spiculated, "
            "part-solid, ground-glass; intrapulmonary, juxtavascular, juxtapleural, chest-wall, hilar) and "
            "NEGATIVES unchanged copies, with labels (0 background, 1 lung, 2 tumour) and lung-region masks: "
            "OUT_DIR/manifest.json, images/, labels/, lungs/. The lung region comes from the classical "
            "extractor. The backgrounds are only read. The same seed always gives the same voxels."),
    )
    p.add_argument("backgrounds", nargs="+", metavar="CT", help="real chest CT files or DICOM folders")
    p.add_argument("-o", "--out", dest="out_dir", required=True, metavar="OUT_DIR", help="dataset folder")
    p.add_argument("-n", "--number", dest="n", type=int, required=True, metavar="N",
                   help="cases with lesions per background CT")
    p.add_argument("--negatives", type=int, default=0, metavar="K", help="unchanged copies per background (default 0)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.synthetic.insertion import write_insertion_dataset

    def progress(i: int, n: int, case: str) -> None:
        print(f"[{i}/{n}] {case}", flush=True)

    manifest = write_insertion_dataset(args.out_dir, args.backgrounds, n=args.n, negatives=args.negatives,
                                       seed=args.seed, overwrite=args.overwrite, progress=progress)
    n_lesions = sum(len(c.source.get("tumours", [])) for c in manifest.cases)
    print(f"wrote {len(manifest.cases)} case(s) with {n_lesions} lesion(s) to {args.out_dir}")
    return 0
