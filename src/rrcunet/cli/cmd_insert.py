"""``rrcunet insert-lesions``: synthetic lesions inserted into real chest CTs, written as a
prepared dataset (the layout of ``rrcunet phantoms``).

A thin layer over :func:`rrcunet.synthetic.insertion.write_insertion_dataset`.
"""

from __future__ import annotations

import argparse
from typing import Any

from rrcunet.errors import ConfigError


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
    p.add_argument("--locations", nargs="+", metavar="LOCATION=WEIGHT",
                   help="draw weights of the lesion locations (intrapulmonary, juxtavascular, juxtapleural, "
                        "chest_wall, hilar; unnamed ones get 0), e.g. --locations chest_wall=1 (default: all)")
    p.add_argument("--kinds", nargs="+", metavar="KIND=WEIGHT",
                   help="draw weights of the kinds (round, lobulated, spiculated, part_solid, ground_glass)")
    p.add_argument("--invade-mm", type=float, metavar="MM",
                   help="how far a lesion may reach beyond the lung region (default 2; a chest-wall mass "
                        "growing into the wall: 15-25)")
    p.add_argument("--max-diameter-mm", type=float, metavar="MM", help="cap the lesion diameters (small nodules only)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT_DIR")
    p.set_defaults(func=run)


def weights(items: list[str] | None, names: tuple[str, ...], option: str) -> tuple[float, ...] | None:
    """``["chest_wall=2", "hilar=1"]`` → one weight per name of ``names`` (unnamed: 0)."""
    if not items:
        return None
    out = dict.fromkeys(names, 0.0)
    for item in items:
        name, sep, value = item.partition("=")
        try:
            w = float(value) if sep else 1.0
        except ValueError:
            w = -1.0
        if name not in out or not w >= 0:
            raise ConfigError(f"{option} {item!r}: expected NAME=WEIGHT with NAME one of {', '.join(names)} and "
                              "WEIGHT >= 0, e.g. chest_wall=1")
        out[name] = w
    if not sum(out.values()) > 0:
        raise ConfigError(f"{option}: every weight is 0; give at least one a positive weight")
    return tuple(out.values())


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.synthetic.insertion import INSERT_KINDS, INSERT_LOCATIONS, write_insertion_dataset

    def progress(i: int, n: int, case: str) -> None:
        print(f"[{i}/{n}] {case}", flush=True)

    options = {"location_weights": weights(args.locations, INSERT_LOCATIONS, "--locations"),
               "kind_weights": weights(args.kinds, INSERT_KINDS, "--kinds"),
               "invade_mm": args.invade_mm, "max_diameter_mm": args.max_diameter_mm}
    manifest = write_insertion_dataset(args.out_dir, args.backgrounds, n=args.n, negatives=args.negatives,
                                       seed=args.seed, overwrite=args.overwrite, progress=progress,
                                       **{k: v for k, v in options.items() if v is not None})
    n_lesions = sum(len(c.source.get("tumours", [])) for c in manifest.cases)
    print(f"wrote {len(manifest.cases)} case(s) with {n_lesions} lesion(s) to {args.out_dir}")
    return 0
