"""``rrcunet demo``: the whole pipeline on a fresh install, with no data — a thin layer over
:func:`rrcunet.experiments.demo.run_demo`.

Generates a few small synthetic chest CTs, segments them with the bundled demo model, evaluates
the result and writes an HTML report; prints where the report is and the summary table.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from rrcunet.cli.cmd_predict import add_inference_arguments, inference_config, quiet_dicom_logs
from rrcunet.formatting import table


def register(subparsers: Any) -> None:
    # lazy: needed only to build the parser; importing this command module stays light
    from rrcunet.experiments.demo import DEMO_SEED

    p = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on generated phantoms and write an HTML report (no data needed)",
        description=(
            "Generates N small synthetic chest CTs (fixed seed) in DIR/phantoms, predicts them with the bundled "
            "demo model (or --model) into DIR/predictions, evaluates them into DIR/report and prints the path of "
            "DIR/report/index.html and the summary table. A second run reuses the phantoms and predictions."
        ),
    )
    p.add_argument("-o", "--out", dest="out_dir", default="rrcunet_demo", metavar="DIR",
                   help="demo folder (default: ./rrcunet_demo)")
    p.add_argument("-n", "--number", dest="n_cases", type=int, default=4, metavar="N",
                   help="number of phantoms (default 4)")
    p.add_argument("--seed", type=int, default=DEMO_SEED,
                   help=f"phantom seed (default {DEMO_SEED}; the bundled models were trained on seed 0)")
    add_inference_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="regenerate the phantoms and redo the predictions")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=run)


def demo_summary(evaluation: Any, *, bundled_unseen: bool = False) -> str:
    """The few numbers a first look needs, each Dice beside its IoU, and a one-line takeaway; the
    report keeps the paper's full tables (docs/metrics.md: the two aggregations)."""
    mc, vp = evaluation.summary.mean_of_cases.as_dict(), evaluation.summary.voxel_pooled.as_dict()
    n = len(evaluation.cases)
    rows = [{"": name, f"mean of {n} case(s)": mc.get(key), "all voxels pooled": vp.get(key) if pooled else None}
            for name, key, pooled in (("tumour Dice", "tumour_dice", True), ("tumour IoU", "tumour_iou", True),
                                      ("lung Dice", "dice_lung", True),
                                      ("tumour HD95, median (mm)", "tumour_hd95_mm_median", False))]
    dice = mc.get("tumour_dice")
    unseen = (" the bundled model never trained on; it is a demonstration model trained on phantoms only "
              "(docs/RESULTS.md for real CT)") if bundled_unseen else ""
    takeaway = (f"Tumour Dice {dice:.2f} on {n} synthetic phantom(s){unseen}." if isinstance(dice, float)
                else "No tumour was scored (no phantom had a tumour in either mask).")
    return table(rows, digits=3) + "\n" + takeaway + "\n"


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.experiments.demo import DEMO_SEED, run_demo

    quiet_dicom_logs(args)
    logging.getLogger("rrcunet.synthetic").setLevel(logging.WARNING)
    result = run_demo(args.out_dir, model=args.model, n_cases=args.n_cases, seed=args.seed,
                      config=inference_config(args), overwrite=args.overwrite, progress=args.progress)
    for o in result.batch.failed:
        print(f"rrcunet demo: {o.path}: {o.message}", file=sys.stderr)
    print(demo_summary(result.evaluation, bundled_unseen=args.model is None and args.seed == DEMO_SEED), end="")
    print(f"\n{len(result.evaluation.cases)} phantom(s) in {result.dataset}, predictions in {result.predictions}")
    print(f"Report (every metric, figures): {result.html.resolve()}")
    return 3 if result.batch.failed else 0
