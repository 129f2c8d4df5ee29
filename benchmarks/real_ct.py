"""Real-CT benchmark: a tumour model file on every real chest in ``../shared/realdata/``.

Per case: tumour Dice, reference lesions found, false-positive components (count, total and
largest mL), lung Dice where the lungs are known, predicted tumour mL, the prediction's seconds.
Cases named with ``--trained-on`` (training or tuning saw them) are marked and left out of the
held-out summary. Definitions: :mod:`rrcunet.experiments.real_ct`.

Examples (the table of docs/RESULTS.md, "Real CT")::

    python benchmarks/real_ct.py                                  # the bundled model
    python benchmarks/real_ct.py --model runs/x/best.safetensors --trained-on popi-phase00 \\
        --figures docs/img/real_ct --json runs/x/real_ct.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_speed import cpu_model  # noqa: E402  (the benchmarks' one CPU-name reader)

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("RRCUNET_REALDATA", REPO.parent / "shared" / "realdata"))


def fmt(x: float, spec: str = ".3f") -> str:
    return "n/a" if isinstance(x, float) and math.isnan(x) else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    from rrcunet.experiments.real_ct import real_case_names

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="tumour model file (default: the bundled model)")
    parser.add_argument("--realdata", default=str(REALDATA), help="the shared realdata folder (default: %(default)s)")
    parser.add_argument("--trained-on", nargs="*", default=[], metavar="CASE",
                        help=f"cases training or tuning saw, reported apart: {', '.join(real_case_names())}")
    parser.add_argument("--lung-method", default="classical", choices=["classical", "coordunet"])
    parser.add_argument("--lung-model", help="Coordinate-UNet lung model file for --lung-method coordunet "
                                             "(default: the bundled lung model)")
    parser.add_argument("--min-tumour-ml", type=float, default=None, help="override the model's smallest tumour kept")
    parser.add_argument("--keep-outside-lung", action="store_true",
                        help="keep tumour components wholly outside the lung region (drop the outside-lung rule)")
    parser.add_argument("--figures", help="write one PNG per case into this folder")
    parser.add_argument("--figure-prefix", default="", help="prefix of the figure file names")
    parser.add_argument("--json", help="write the scores as JSON here")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (default fp32)")
    args = parser.parse_args(argv)
    if not Path(args.realdata).is_dir():
        print(f"realdata folder {args.realdata} not found; pass --realdata PATH", file=sys.stderr)
        return 2

    import torch

    from rrcunet.experiments.real_ct import run_real_benchmark
    from rrcunet.inference import InferenceConfig, Predictor
    from rrcunet.inference.postprocess import PostprocessConfig

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    post = PostprocessConfig(min_tumour_ml=args.min_tumour_ml, keep_outside_lung=args.keep_outside_lung)
    lung_model = args.lung_model
    if args.lung_method == "coordunet" and lung_model is None:
        from rrcunet.inference.bundled import bundled_model_path

        lung_model = str(bundled_model_path("lung"))
    config = InferenceConfig(device="cpu", bf16=args.bf16, lung_method=args.lung_method, lung_model=lung_model,
                             postprocess=post)
    predictor = Predictor.from_file(args.model, config=config)
    chosen = predictor.meta.postprocess.min_tumour_ml if predictor.meta.postprocess is not None else None
    print(f"CPU: {cpu_model()}; torch threads {torch.get_num_threads()}; model: {predictor.model_path}")
    print(f"lung channel: {args.lung_method}{'' if lung_model is None else f' ({lung_model})'}; smallest tumour kept: "
          f"{args.min_tumour_ml if args.min_tumour_ml is not None else chosen} mL "
          f"({'--min-tumour-ml' if args.min_tumour_ml is not None else 'the model file'}); outside-lung rule: "
          f"{'off' if args.keep_outside_lung else 'on'}")
    header = ("case", "trained", "tumour Dice", "lesions found", "FP n", "FP mL", "largest FP mL", "lung Dice",
              "pred mL", "ref mL", "s")
    print(" | ".join(header))

    def show(s, seconds: float) -> None:
        print(" | ".join([s.case, "yes" if s.trained_on else "no", fmt(s.tumour_dice),
                          f"{s.lesions_found}/{s.lesions}" if s.lesions else "–", str(s.fp_components),
                          fmt(s.fp_ml, ".1f"), fmt(s.largest_fp_ml, ".1f"), fmt(s.lung_dice),
                          fmt(s.pred_tumour_ml, ".1f"), fmt(s.ref_tumour_ml, ".1f"), f"{seconds:.1f}"]), flush=True)

    bench = run_real_benchmark(predictor, args.realdata, trained_on=args.trained_on, figures=args.figures,
                               figure_prefix=args.figure_prefix, on_case=show)
    held = bench.held_out_labelled
    print(f"held-out labelled cases: {', '.join(s.case for s in held) or 'none'}; "
          f"mean tumour Dice {fmt(bench.mean_tumour_dice)}; every lesion found: "
          f"{'yes' if all(s.all_found for s in held) else 'no'}; largest false positive on a held-out scan "
          f"{bench.largest_fp_ml:.1f} mL; goal (>= 0.65, all found, <= 2 mL): {'met' if bench.goal_met() else 'not met'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "model": str(predictor.model_path),
                                               "trained_on": args.trained_on,
                                               "scores": [s.as_dict() for s in bench.scores],
                                               "mean_tumour_dice": bench.mean_tumour_dice,
                                               "goal_met": bench.goal_met()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
