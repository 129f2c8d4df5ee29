"""Do the quality flags mean anything? (issue 19) The cases a model gets wrong should carry flags more
often than the cases it gets right.

Predicts ``--phantoms`` phantoms of a seed no model trained on and every real chest in
``../shared/realdata/`` with a model file (default: the bundled one), and calls a case **wrong**
when a reference lesion is missed, the tumour Dice is below 0.5, or a false-positive component
(one touching no reference lesion) is above 2 mL; on the unlabelled real chests only the last
applies. On phantoms, reference tumour specks below 0.1 mL (a few voxels of a spicule tip cut off
by partial volume) are left out of the reference. Prints one line per case (its flags, why it is wrong) and the 2 × 2 table, per flag too.
Definitions of the scores: :mod:`rrcunet.experiments.real_ct` (``score_real_case``).

Example (docs/RESULTS.md, "Quality flags")::

    python benchmarks/quality_flags.py --phantoms 20 --seed 9019
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_speed import cpu_model  # noqa: E402  (the benchmarks' one CPU-name reader)

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("RRCUNET_REALDATA", REPO.parent / "shared" / "realdata"))


def wrong_because(score) -> list[str]:
    why = []
    if score.lesions and score.lesions_found < score.lesions:
        why.append(f"missed {score.lesions - score.lesions_found}")
    if not math.isnan(score.tumour_dice) and score.tumour_dice < 0.5:
        why.append(f"Dice {score.tumour_dice:.2f}")
    if score.largest_fp_ml > 2.0:
        why.append(f"FP {score.largest_fp_ml:.1f} mL")
    return why


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phantoms", type=int, default=20)
    parser.add_argument("--seed", type=int, default=9019, help="phantom seed no model trained on (default %(default)s)")
    parser.add_argument("--size", default="small", choices=["small", "full"])
    parser.add_argument("--model", help="tumour model file (default: the bundled model)")
    parser.add_argument("--realdata", default=str(REALDATA))
    args = parser.parse_args(argv)

    import torch

    from rrcunet.experiments.real_ct import REAL_CASES, load_real_case, score_real_case
    from rrcunet.inference import InferenceConfig, Predictor
    from rrcunet.inference.measure import tumour_components
    from rrcunet.synthetic.config import PhantomConfig
    from rrcunet.synthetic.dataset import case_seed
    from rrcunet.synthetic.phantom import generate_phantom

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    predictor = Predictor.from_file(args.model, config=InferenceConfig(device="cpu"))
    print(f"CPU: {cpu_model()}; model: {predictor.model_path}; {args.phantoms} {args.size} phantoms of seed {args.seed}"
          " and the real chests")
    rows = []
    config = PhantomConfig.preset(args.size)
    for i in range(args.phantoms):
        ph = generate_phantom(case_seed(args.seed, i), config=config)
        result = predictor.predict_volume(ph.image)
        comps = tumour_components(np.asarray(ph.label.array) == 2)
        kept = np.concatenate([[False], comps.sizes * ph.image.geometry.voxel_volume_ml >= 0.1])  # no specks
        ref = np.zeros(ph.label.shape, bool)
        ref[comps.box] = kept[comps.labels]
        score = score_real_case(f"phantom_{i:04d}", np.asarray(result.labels.array), ph.image.spacing,
                                tumour=ref, lungs=None)
        rows.append(("phantom", score, result.quality["flags"]))
    if Path(args.realdata).is_dir():
        for folder, (name, _) in REAL_CASES.items():
            case = load_real_case(args.realdata, folder)
            result = predictor.predict_volume(case.ct)
            score = score_real_case(name, np.asarray(result.labels.array), case.ct.spacing, tumour=case.tumour,
                                    lungs=case.lungs)
            rows.append(("real", score, result.quality["flags"]))
    print("kind | case | wrong because | flags")
    for kind, score, flags in rows:
        print(f"{kind} | {score.case} | {', '.join(wrong_because(score)) or '–'} | "
              f"{', '.join(f['code'] for f in flags) or '–'}")
    for kind in ("phantom", "real", "all"):
        sel = [(s, f) for k, s, f in rows if kind in ("all", k)]
        wrong = [bool(wrong_because(s)) for s, _ in sel]
        flagged = [bool(f) for _, f in sel]
        n_wrong, n_right = sum(wrong), len(wrong) - sum(wrong)
        fw = sum(1 for w, f in zip(wrong, flagged) if w and f)
        fr = sum(1 for w, f in zip(wrong, flagged) if not w and f)
        print(f"{kind}: wrong cases flagged {fw}/{n_wrong}"
              + (f" ({fw / n_wrong:.0%})" if n_wrong else "")
              + f"; right cases flagged {fr}/{n_right}" + (f" ({fr / n_right:.0%})" if n_right else ""))
    codes = Counter()
    for _, s, flags in rows:
        for f in flags:
            codes[(f["code"], bool(wrong_because(s)))] += 1
    for code in sorted({c for c, _ in codes}):
        print(f"flag {code}: on {codes[(code, True)]} wrong and {codes[(code, False)]} right case(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
