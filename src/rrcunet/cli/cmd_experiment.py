"""``rrcunet experiment``: the paper's experiments, thin layers over :mod:`rrcunet.experiments`.

Sub-commands::

    rrcunet experiment ablation --config FILE -o DIR [KEY=VALUE ...] [--seeds 0 1] [--variants rrcunet,cgpd] [--resume]
    rrcunet experiment analyse RUN_DIR|MODEL|PRED_DIR --data DATASET -o OUT [--subset test] [--size-bins 1,5,20,50]
    rrcunet experiment postprocess RUN_DIR|MODEL --data DATASET -o OUT [--subset val] [--write-model NEW_MODEL]
    rrcunet experiment merge-datasets A B C -o OUT [--seed 0] [--val-fraction 0.2] [--test-list FILE] [--copy]

Examples::

    rrcunet experiment ablation --config configs/benchmark/ablation_cpu.json -o experiments/ablation_cpu
    rrcunet experiment ablation --config configs/benchmark/ablation_cpu.json -o experiments/ablation_cpu --resume
    rrcunet experiment analyse experiments/ablation_cpu/runs/rrcunet-seed0 --data experiments/ablation_cpu/data -o an/
    rrcunet experiment merge-datasets prepared/interobs prepared/lung1 prepared/msd -o prepared/paper494
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rrcunet.errors import ConfigError, InputError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="the paper's experiments: block ablation (Table 5), size/location analysis, postprocessing choice, "
        "dataset merging",
        description="Reproduce and extend the paper's §4.4–4.5: `ablation` trains and scores every block "
        "variant with one budget (Table 5), `analyse` scores one model's tumours by size and location (and "
        "gives Tables 3–4 and Figure 7), `merge-datasets` joins prepared datasets with a new patient-level split.",
        epilog="See docs/reproduction.md.",
    )
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")

    a = sub.add_parser(
        "ablation", help="train the RRc/CGPD/residual/recurrent/U-Net variants alike and tabulate Table 5",
        description="Trains every variant × seed with the experiment's training config (same data, budget and "
        "seeds) into DIR/runs/, scores each best model on the experiment's split, and writes DIR/ablation.md "
        "(Table 5 with mean of cases and voxel-pooled scores, mean ± SD over seeds, parameters, wall time), "
        "ablation.json/.csv and the size/location analysis of the RRc model in DIR/analysis/. The phantom "
        "benchmark is generated into DIR/data when absent. KEY=VALUE overrides the training config "
        "(schedule.max_minutes=10, model.base_filters=4) or the experiment (phantoms.n_train=8, "
        "dataset=/data/x, evaluation.subset=val).",
        epilog="--resume continues an experiment: finished runs are skipped, interrupted ones resume, scores are "
        "cached. See docs/reproduction.md.")
    a.add_argument("--config", metavar="FILE",
                   help="experiment JSON (e.g. configs/benchmark/ablation_cpu.json); with --resume, default: "
                        "DIR/experiment.json")
    a.add_argument("-o", "--output", dest="out_dir", required=True, metavar="DIR", help="experiment folder")
    a.add_argument("--seeds", nargs="+", metavar="SEED", help="training seeds (default: the config's)")
    a.add_argument("--variants", metavar="LIST",
                   help="comma-separated model names (default: the config's; e.g. rrcunet,cgpd,residual,recurrent,unet)")
    a.add_argument("--resume", action="store_true", help="continue the experiment in DIR")
    a.add_argument("--no-analysis", dest="analysis", action="store_false",
                   help="skip the size/location analysis of the RRc model")
    a.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    a.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    a.set_defaults(func=run_ablation_cmd)

    n = sub.add_parser(
        "analyse", aliases=["analyze"],
        help="tumour Dice by size and location, Tables 3–4 and Figure 7 of one model",
        description="SOURCE is a run folder (best.safetensors), a model file, or a folder of <case>_seg.nii.gz "
        "predictions. A model is first applied to the --subset split of --data (into OUT/predictions). Writes "
        "OUT/analysis.md (Tables 3 and 4 with both aggregations, Figure 7 counts, lesion Dice by size bin, by "
        "location and size × location), lesions.csv, cases.csv, by_size.csv, by_location.csv, "
        "size_location.png and the evaluation report OUT/report/. Locations need the phantom facts of the "
        "dataset's manifest; on real data they are 'unknown' and only the size analysis is informative.",
        epilog="Lesion matching rules: docs/reproduction.md.")
    _add_scoring_arguments(
        n, source_help="run folder, model file (.safetensors) or prediction folder",
        subset="test", subset_help="split predicted when SOURCE is a model (default test)",
        lung="dataset", lung_help="lung channel when predicting: the dataset's lungs/ masks (default) or the classical "
        "extractor")
    n.add_argument("--size-bins", default="1,5,20,50", metavar="ML",
                   help="inner edges of the size bins in mL (default 1,5,20,50: <1, 1–5, 5–20, 20–50, ≥50)")
    n.add_argument("--tolerance-mm", type=float, default=2.0, help="surface-Dice tolerance of the report")
    n.add_argument("--figures", action="store_true", help="also draw per-case slice and 3D figures in the report")
    n.add_argument("--overwrite", action="store_true", help="replace an existing analysis in OUT")
    n.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    n.set_defaults(func=run_analyse_cmd)

    q = sub.add_parser(
        "postprocess", help="choose a model's smallest-tumour volume on validation cases (as nnU-Net's postprocessing)",
        description="Predicts the --subset split of --data with SOURCE as `rrcunet predict` does (tumour outside the "
        "lung region dropped) but with no volume threshold, then scores each candidate --min-tumour-ml on the "
        "original CT grids: tumour Dice mean of cases and pooled, components removed (and how many touch true "
        "tumour), false-alarm and missed cases. Chooses the best mean of cases (the smallest threshold on a tie) "
        "and writes OUT/postprocess.md and postprocess.json. With --write-model, also writes a copy of the model "
        "file that records the choice: `rrcunet predict --model` that file applies it unless --min-tumour-ml "
        "is given.",
        epilog="See docs/inference.md, 'Postprocessing'.")
    _add_scoring_arguments(
        q, source_help="run folder (best.safetensors) or model file (.safetensors)",
        subset="val", subset_help="split to choose on (default val: the model's validation cases)",
        lung="classical", lung_help="lung channel: the classical extractor (default, as rrcunet predict) or the "
        "dataset's lungs/")
    q.add_argument("--candidates", type=float, nargs="+", metavar="ML",
                   help="thresholds to try in mL (default 0 0.1 0.25 0.5 1 2; 0 is always tried)")
    q.add_argument("--write-model", metavar="PATH",
                   help="write a copy of the model file with the chosen threshold recorded (a new file)")
    q.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    q.set_defaults(func=run_postprocess_cmd)

    m = sub.add_parser(
        "merge-datasets", help="join prepared datasets into one with a seeded patient-level split",
        description="Links (or copies) every case of the source datasets into OUT (images/, labels/, lungs/), "
        "keeps each case's provenance, and writes one manifest with a new patient-level train/val split over the "
        "union; the sources' test splits and --test-list are held out. Case ids must not clash between sources "
        "(or use --prefix-ids).",
        epilog="See docs/reproduction.md.")
    m.add_argument("sources", nargs="+", metavar="DATASET", help="prepared dataset folders (manifest.json)")
    m.add_argument("-o", "--out", dest="out_dir", required=True, metavar="OUT", help="merged dataset folder")
    m.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    m.add_argument("--val-fraction", type=float, default=0.2, help="validation fraction of patients (default 0.2)")
    m.add_argument("--test-list", metavar="FILE", help="case or patient ids (one a line) to hold out as test")
    group = m.add_mutually_exclusive_group()
    group.add_argument("--copy", dest="link", action="store_const", const="copy", default="auto",
                       help="copy the files (default: hard links where possible, else copies)")
    group.add_argument("--hardlink", dest="link", action="store_const", const="hardlink",
                       help="hard links only (fail on another file system)")
    m.add_argument("--prefix-ids", action="store_true",
                   help="prefix case and patient ids with the source folder's name (when ids clash)")
    m.add_argument("--name", help="dataset name in the manifest")
    m.add_argument("--overwrite", action="store_true", help="remake an existing merged dataset")
    m.set_defaults(func=run_merge_cmd)

    def _usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 1

    p.set_defaults(func=_usage)


def _add_scoring_arguments(p: argparse.ArgumentParser, *, source_help: str, subset: str, subset_help: str, lung: str,
                           lung_help: str) -> None:
    """The options shared by the sub-commands that predict a dataset split with a model and score it."""
    p.add_argument("source", metavar="SOURCE", help=source_help)
    p.add_argument("--data", required=True, metavar="DATASET", help="prepared dataset with the ground truth")
    p.add_argument("-o", "--out", dest="out_dir", required=True, metavar="OUT", help="output folder")
    p.add_argument("--subset", default=subset, choices=["test", "val", "train", "all"], help=subset_help)
    p.add_argument("--lung", default=lung, choices=["dataset", "classical"], help=lung_help)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device when predicting")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast when predicting")


def _evaluation_config(args: argparse.Namespace, **extra: Any) -> Any:
    """The :class:`~rrcunet.experiments.config.EvaluationConfig` of the options added by
    :func:`_add_scoring_arguments`."""
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.experiments.config import EvaluationConfig

    return EvaluationConfig(subset="val" if args.subset == "val" else "test", lung=args.lung, device=args.device,
                            bf16=args.bf16, **extra)


def _split_seed_args(args: argparse.Namespace) -> tuple[list[int] | None, list[str]]:
    """``--seeds 0 1 schedule.epochs=2`` lets argparse swallow the overrides into --seeds: move them back."""
    overrides = list(args.overrides)
    if args.seeds is None:
        return None, overrides
    seeds = []
    for item in args.seeds:
        if "=" in item:
            overrides.append(item)
            continue
        try:
            seeds.append(int(item))
        except ValueError:
            raise ConfigError(f"--seeds takes integers, not {item!r}") from None
    return seeds, overrides


def run_ablation_cmd(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.experiments import run_ablation
    from rrcunet.experiments.ablation import EXPERIMENT_NAME
    from rrcunet.experiments.config import experiment_from_data, read_experiment_data

    seeds, overrides = _split_seed_args(args)
    if args.variants:
        overrides.append("variants=" + ",".join(v.strip() for v in args.variants.split(",") if v.strip()))
    if seeds is not None:
        overrides.append("seeds=" + ",".join(map(str, seeds)))
    if not args.analysis:
        overrides.append("analysis.enabled=false")
    if args.config:
        data, where = read_experiment_data(args.config), args.config
    elif args.resume:
        saved = Path(args.out_dir) / EXPERIMENT_NAME
        if not saved.is_file():
            raise ConfigError(f"{args.out_dir}: no {EXPERIMENT_NAME} to resume; pass --config FILE")
        data, where = read_experiment_data(saved), str(saved)
    else:
        raise ConfigError("missing --config FILE (an experiment JSON such as configs/benchmark/ablation_cpu.json)")
    config = experiment_from_data(data, overrides, where=where)
    result = run_ablation(config, args.out_dir, resume=args.resume, progress=args.progress)
    print(result.files["markdown"].read_text(encoding="utf-8"), end="")
    print(f"\nwritten: {result.files['markdown']}, {result.files['json']}, {result.files['csv']}")
    return 0


def run_analyse_cmd(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.experiments import analyse
    from rrcunet.experiments.config import check_size_bins

    bins = check_size_bins([b for b in args.size_bins.replace(";", ",").split(",") if b.strip()], where="--size-bins")
    if (Path(args.out_dir) / "analysis.md").exists() and not args.overwrite:
        raise InputError(f"{args.out_dir} already holds an analysis (analysis.md); pass --overwrite to replace it")
    evaluation = _evaluation_config(args, tolerance_mm=args.tolerance_mm)
    result = analyse(args.source, args.data, args.out_dir, subset=args.subset, evaluation=evaluation,
                     size_bins_ml=bins, figures=args.figures, progress=args.progress)
    print(result.files["markdown"].read_text(encoding="utf-8"), end="")
    print(f"\nwritten: {result.files['markdown']}, {result.files['figure']}")
    return 0


def run_postprocess_cmd(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.experiments.postprocessing import DEFAULT_CANDIDATES_ML, select_postprocessing

    evaluation = _evaluation_config(args)
    result = select_postprocessing(args.source, args.data, args.out_dir, subset=args.subset,
                                   candidates_ml=args.candidates or DEFAULT_CANDIDATES_ML, evaluation=evaluation,
                                   write_model=args.write_model, progress=args.progress)
    print((result.out_dir / "postprocess.md").read_text(encoding="utf-8"), end="")
    print(f"chosen: min_tumour_ml={result.chosen.min_tumour_ml:g}")
    if result.model_out is not None:
        print(f"written: {result.model_out} (rrcunet predict --model {result.model_out} applies it)")
    return 0


def run_merge_cmd(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.experiments import merge_datasets

    manifest = merge_datasets(args.sources, args.out_dir, seed=args.seed, val_fraction=args.val_fraction,
                              test_list=args.test_list, link=args.link, prefix_ids=args.prefix_ids, name=args.name,
                              overwrite=args.overwrite)
    s = manifest.split
    print(f"{args.out_dir}: {len(manifest.cases)} cases from {len(args.sources)} dataset(s); split "
          f"{len(s.train)} train / {len(s.val)} val / {len(s.test)} test (patient level, seed {s.seed})")
    return 0
