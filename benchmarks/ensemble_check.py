"""Would averaging several models, or a lower tumour-probability cut, raise the tumour Dice?

For each case of a prepared dataset's split, every model's class probabilities are computed on the
network grid exactly as ``rrcunet predict`` does (:meth:`Predictor.run_network`, the lung channel
from the classical extractor), averaged over the models (nnU-Net's ensembling: the mean of the
softmax), mapped back to the CT grid and cut into labels in two ways:

* the arg-max of the averaged probabilities (what an ensemble would ship);
* ``tumour probability >= cut`` for each ``--cuts`` value (a recall knob; the other voxels take the
  arg-max of background and lung).

Each label map then goes through the product's postprocessing (:func:`postprocess_labels`: tumour
outside the lung region dropped), and each ``--min-ml`` is scored from its components against the
dataset's label on the CT grid by ``rrcunet experiment postprocess``'s own scorer
(:func:`~rrcunet.experiments.postprocessing.score_thresholds`): tumour Dice mean of cases (cases
with no tumour in truth or prediction left out, as ``rrcunet evaluate``; in brackets, scored 1, as
the trainer's validation), and pooled over the voxels of all cases. With one model, the arg-max row is the model alone.

Example (the figures of docs/training.md, "What did not close the gap either")::

    python benchmarks/ensemble_check.py --data data/phantoms250 --subset val \\
        --models src/rrcunet/weights/demo_tumour.safetensors runs/seed1/best.safetensors runs/seed2/best.safetensors
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np


def score(data: str, subset: str, models: list[str], cuts: list[float]) -> dict[str, list[Any]]:
    """Each case's predicted tumour components against the truth
    (:class:`~rrcunet.experiments.postprocessing.CaseComponents`), per labelling rule, after the
    product's drop of tumour outside the lung region; :func:`score_thresholds` then scores any
    smallest-component volume from them, as ``rrcunet experiment postprocess`` does."""
    import torch

    from rrcunet.data.manifest import DatasetManifest
    from rrcunet.errors import InputError
    from rrcunet.experiments.postprocessing import case_components
    from rrcunet.experiments.scoring import split_case_ids
    from rrcunet.inference import Predictor
    from rrcunet.inference.config import InferenceConfig, PostprocessConfig
    from rrcunet.inference.postprocess import postprocess_labels
    from rrcunet.io import read_image
    from rrcunet.preprocessing import invert_probabilities, preprocess

    keep_all = PostprocessConfig(min_tumour_ml=0)
    # float32, as `rrcunet experiment postprocess` scores (its rows are compared with these)
    predictors = [Predictor.from_file(m, config=InferenceConfig(bf16=False, postprocess=keep_all)) for m in models]
    for path, p in zip(models, predictors):
        if p.meta.task != "tumour":
            raise InputError(f"{path}: a {p.meta.task!r} model; expected a tumour model")
    first = predictors[0]
    manifest = DatasetManifest.load(data)
    rules = {"argmax": None, **{f"p>={c:g}": c for c in cuts}}
    components: dict[str, list[Any]] = {r: [] for r in rules}
    for case_id in split_case_ids(data, subset):
        entry = manifest.case(case_id)
        ct = read_image(manifest.resolve(data, entry.image))
        truth = np.asarray(read_image(manifest.resolve(data, entry.label), kind="label").array)
        lung = first.extract_lung(ct)
        case = preprocess(ct, lung, config=first.preprocess_config(ct))
        probs = torch.stack([p.run_network(case.image[: p.in_channels]) for p in predictors]).mean(0)
        prob_map = invert_probabilities(probs, case.record)
        argmax = prob_map.argmax()
        for rule, cut in rules.items():
            labels = np.asarray(argmax.array).copy()
            if cut is not None:
                was_tumour = labels == 2
                labels[was_tumour] = (prob_map.array[1] >= prob_map.array[0])[was_tumour]  # lung or background
                labels[prob_map.array[2] >= cut] = 2
            cleaned, _ = postprocess_labels(argmax.with_array(labels), lung, keep_all)  # outside the lung: dropped
            components[rule].append(case_components(cleaned.array, truth, ct.geometry.voxel_volume_ml, case_id))
    return components


def _cell(row: Any) -> str:
    mean = "-" if math.isnan(row.dice_mean_of_cases) else f"{row.dice_mean_of_cases:.3f}"
    return f"{mean} ({row.dice_mean_empty_as_1:.3f}) / {row.dice_pooled:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="prepared dataset (manifest.json) with labels")
    parser.add_argument("--subset", default="val", choices=("train", "val", "test", "all"))
    parser.add_argument("--models", nargs="+", required=True, help="model files (.safetensors) to average")
    parser.add_argument("--cuts", type=float, nargs="*", default=[0.4, 0.3, 0.2],
                        help="tumour-probability cuts to try besides the arg-max")
    parser.add_argument("--min-ml", type=float, nargs="+", default=[0.0, 0.5, 1.0],
                        help="smallest tumour component kept, mL (0 keeps all)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    from rrcunet.experiments.postprocessing import score_thresholds

    components = score(args.data, args.subset, args.models, args.cuts)
    n_cases = len(components["argmax"])
    print(f"{len(args.models)} model(s) averaged, {n_cases} cases of {args.data} ({args.subset}), "
          f"{time.perf_counter() - t0:.0f} s")
    print("tumour Dice: mean of cases (tumour-free cases scored 1) / pooled")
    print("| labels | " + " | ".join(f"min {m:g} mL" for m in args.min_ml) + " |")
    print("|---|" + "---|" * len(args.min_ml))
    for rule, cases in components.items():
        print(f"| {rule} | " + " | ".join(_cell(row) for row in score_thresholds(cases, args.min_ml)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
