"""``rrcunet phantoms``: write a dataset of synthetic chest-CT phantoms (NIfTI + manifest,
optionally DICOM CT + RTSTRUCT + SEG).

A thin layer over :func:`rrcunet.synthetic.dataset.write_phantom_dataset`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rrcunet.cli.cmd_predict import quiet_dicom_logs
from rrcunet.errors import ConfigError


def register(subparsers: Any) -> None:
    # lazy: needed only to build the parser; importing this command module stays light
    from rrcunet.synthetic.config import PRESETS

    p = subparsers.add_parser(
        "phantoms",
        help="generate synthetic chest-CT phantoms (the built-in demo/test/training data)",
        description=(
            "Write N seeded synthetic chest CTs in HU with their labels (0 background, 1 lung, 2 tumour) "
            "and lung-region masks as a prepared dataset: OUT_DIR/manifest.json, images/, labels/, lungs/ "
            "(see docs/phantoms.md). The same seed always gives the same voxels."
        ),
    )
    p.add_argument("-n", "--number", dest="n", type=int, required=True, metavar="N", help="number of phantoms")
    p.add_argument("-o", "--out", dest="out_dir", required=True, metavar="OUT_DIR", help="dataset folder")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--size", choices=sorted(PRESETS), default="small",
                   help="preset: 'small' (128×128×40–64, ~2.5–3 mm, fast) or 'full' "
                        "(512×512, 0.6–1 mm, 1–5 mm slices) (default small)")
    p.add_argument("--dicom", action="store_true",
                   help="also write each case as a DICOM CT series + RTSTRUCT + DICOM SEG under OUT_DIR/dicom/")
    p.add_argument("--follow-up", action="store_true",
                   help="also write <case>_followup: the same patient scanned again (moved, another breathing depth, "
                        "each tumour grown or shrunk by a known factor, sometimes a new nodule), with the true volumes, "
                        "diameters and RECIST / volumetric categories in the manifest (docs/response.md)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="validation fraction of the split (default 0.2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing phantom dataset in OUT_DIR")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="change one field of the preset's PhantomConfig (docs/phantoms.md), VALUE in JSON, e.g. "
                        "--set kind_weights=[0.15,0.15,0.2,0.25,0.25] (more subsolid lesions) or "
                        "--set nodule_diameter_mm=[5,12]; repeatable. The manifest records the changed config")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["kind_weights=[1,1,1,2,2]", ...]`` -> ``{"kind_weights": (1, 1, 1, 2, 2), ...}`` (lists become
    tuples, as :class:`~rrcunet.synthetic.config.PhantomConfig` holds them)."""
    out: dict[str, Any] = {}
    for item in items:
        field, sep, text = item.partition("=")
        name = field.strip()
        if not sep or not name:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. kind_weights=[1,1,1,2,2]")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare word, e.g. direction=flipped
        if name == "tumours" and isinstance(value, list):
            # lazy: keeps `rrcunet --help` fast
            from rrcunet.synthetic.config import TumourSpec

            try:
                value = [TumourSpec(**spec) for spec in value]
            except TypeError as exc:
                raise ConfigError(f"--set {item!r}: each tumour is an object with kind, location, diameter_mm "
                                  f"and side ({exc})") from exc
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.synthetic.config import PhantomConfig
    from rrcunet.synthetic.dataset import write_phantom_dataset

    quiet_dicom_logs(args)

    def progress(i: int, n: int, case: str) -> None:
        print(f"[{i}/{n}] {case}", flush=True)

    config = PhantomConfig.preset(args.size, **parse_overrides(args.overrides)) if args.overrides else None
    manifest = write_phantom_dataset(args.out_dir, args.n, seed=args.seed, size=args.size, dicom=args.dicom,
                                     overwrite=args.overwrite, val_fraction=args.val_fraction, config=config,
                                     follow_up=args.follow_up, progress=progress)
    if args.follow_up:
        from rrcunet.response.truth import add_follow_up_truth  # the measurements sit above the data layer

        manifest = add_follow_up_truth(args.out_dir)
    print(f"wrote {len(manifest.cases)} phantom(s) to {args.out_dir} "
          f"(train {len(manifest.split.train)}, val {len(manifest.split.val)})")
    return 0
