"""``rrcunet train``: train (or resume) a model from a JSON config, a thin layer over
:func:`rrcunet.training.train`.

Examples::

    rrcunet train --config cpu_tumour -o runs/cpu1 data.dataset=phantoms
    rrcunet train --config my.json -o runs/exp2 optim.lr=1e-3 model.base_filters=16
    rrcunet train --resume runs/cpu1                       # continue after a crash / kill
    torchrun --nproc_per_node 4 -m rrcunet train --config paper -o runs/paper data.dataset=/data/lung1
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from rrcunet.errors import ConfigError, InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train RRc-UNet 3D (or the lung model) from a config; resume a run",
        description="Train a model on a prepared dataset (`rrcunet import` / `rrcunet phantoms`). The config "
        "is a JSON file or a packaged name (paper, cpu_tumour, cpu_lung); KEY=VALUE arguments override "
        "its options with dotted keys (optim.lr=1e-3, model.base_filters=8, preprocess.target_shape=96,96,32). "
        "The run folder gets config.json, metrics.csv, TensorBoard logs, a checkpoint every epoch and "
        "best.safetensors. Under torchrun it trains with DDP.",
        epilog="See docs/training.md for the recipe and every option.",
    )
    parser.add_argument("--config", metavar="FILE",
                        help="JSON config file or packaged config name (default: the paper's settings)")
    parser.add_argument("-o", "--output", metavar="RUN_DIR", help="run folder to create")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last completed epoch (uses its config.json)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars, only warnings on the terminal (RUN_DIR/train.log keeps every line)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.training import load_config, train

    if args.quiet:
        for handler in logging.getLogger().handlers:  # the terminal's; train.log keeps every line
            if not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)
        args.overrides = [*args.overrides, "runtime.progress=false"]
    if args.resume:
        if args.config:
            raise ConfigError("--resume uses the run's own config.json; do not pass --config with it")
        if args.output and Path(args.output).resolve() != Path(args.resume).resolve():
            raise ConfigError(f"--resume {args.resume} continues that folder; -o {args.output} names another")
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").is_file():
            raise InputError(f"{run_dir}: no config.json, so there is no run to resume; start one with "
                             "`rrcunet train --config FILE -o RUN_DIR`")
        config = load_config(run_dir / "config.json", args.overrides)
        result = train(config, run_dir, resume=True)
    else:
        if not args.output:
            raise ConfigError("missing -o RUN_DIR: the folder to write the run to (or --resume RUN_DIR)")
        config = load_config(args.config, args.overrides)
        result = train(config, args.output)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    best = result.best_metrics
    shown = ", ".join(f"{k}={v:.4g}" for k, v in best.items() if k.startswith("val_") and v is not None)
    print(f"{result.run_dir}: {result.epochs_completed} epochs"
          f"{f' (stopped by {result.stopped_by})' if result.stopped_early else ''}; best epoch {result.best_epoch}"
          f"{': ' + shown if shown else ''}; model {result.run_dir / 'best.safetensors'}")
    return 0
