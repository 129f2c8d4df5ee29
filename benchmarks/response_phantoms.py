"""``rrcunet compare`` against the known response of phantom follow-up pairs (issue 19's goal).

Writes ``--pairs`` phantom pairs (``rrcunet phantoms --follow-up``) of a seed no model trained on,
runs ``compare`` on each pair with a model file (default: the bundled one), and scores it against
the truth in the manifest:

* the RECIST 1.1 category (goal: right on ≥ 9 of 10);
* the volume change of every true lesion of ≥ 2 mL at baseline, within 10 percentage points of the
  true change (a true lesion is followed through the prediction's lesion that overlaps it most on
  each scan, and the compare group holding that lesion);
* every true new lesion of ≥ 1 mL found as ``new`` (a predicted follow-up lesion overlapping it in
  a group with status ``new``).

Example (the table of docs/RESULTS.md, "Tumour response")::

    python benchmarks/response_phantoms.py --pairs 10 --seed 17
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_speed import cpu_model  # noqa: E402  (the benchmarks' one CPU-name reader)


def overlapping_lesion(pred_map: np.ndarray, truth_component: np.ndarray) -> int | None:
    """The prediction's lesion number overlapping a true tumour most (``None`` if none does)."""
    ids = pred_map[truth_component]
    ids = ids[ids > 0]
    return int(np.bincount(ids).argmax()) if ids.size else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=10, help="phantom pairs (default %(default)s)")
    parser.add_argument("--seed", type=int, default=17, help="dataset seed, one no model trained on (default %(default)s)")
    parser.add_argument("--model", help="tumour model file (default: the bundled model)")
    parser.add_argument("--work", help="keep the phantoms and outputs here (default: a temporary folder)")
    args = parser.parse_args(argv)

    import torch

    from rrcunet.inference import InferenceConfig, Predictor
    from rrcunet.io import read_image
    from rrcunet.response import compare_scans
    from rrcunet.response.compare import lesion_map
    from rrcunet.response.truth import add_follow_up_truth, tumour_lesions
    from rrcunet.synthetic.dataset import write_phantom_dataset

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="rrcunet_response_"))
    data = work / "pairs"
    if not (data / "manifest.json").is_file():
        write_phantom_dataset(data, args.pairs, seed=args.seed, follow_up=True, val_fraction=0.0)
        add_follow_up_truth(data)
    from rrcunet.data.manifest import DatasetManifest

    manifest = DatasetManifest.load(data)
    by_id = {c.case_id: c for c in manifest.cases}
    predictor = Predictor.from_file(args.model, config=InferenceConfig(device="cpu"))
    print(f"CPU: {cpu_model()}; torch threads {torch.get_num_threads()}; model: {predictor.model_path}; "
          f"{args.pairs} pairs of seed {args.seed}; work folder {work}")
    print("pair | scenario | true RECIST | RECIST | true vol. | vol. | lesions ≥ 2 mL: true Δ% / measured Δ% | "
          "new ≥ 1 mL found | compare s")
    right = n_vol = ok_vol = n_new = found_new = 0
    for i in range(args.pairs):
        base_id, fu_id = f"phantom_{i:04d}", f"phantom_{i:04d}_followup"
        base, fu = by_id[base_id], by_id[fu_id]
        truth = fu.source["truth"]
        out = work / "compare" / base_id
        t0 = time.perf_counter()
        doc = compare_scans(data / base.image, data / fu.image, out, html=True,
                            predict=lambda scan, folder: predictor.predict_paths([scan], folder, progress=False),
                            force=True)
        seconds = time.perf_counter() - t0
        right += doc["recist"]["category"] == truth["recist"]["category"]
        # follow each true tumour through the predictions
        _, _, b_cmap, b_ids = tumour_lesions(data / base.label, base.source["tumours"])
        _, _, f_cmap, f_ids = tumour_lesions(data / fu.label, fu.source["tumours"])
        _, b_pred = lesion_map(read_image(out / "baseline" / f"{base_id}_seg.nii.gz", kind="label"), 0.1)
        _, f_pred = lesion_map(read_image(out / "followup" / f"{fu_id}_seg.nii.gz", kind="label"), 0.1)
        group_of_b = {n: g for g in doc["lesions"] for n in g["baseline_lesions"]}
        group_of_f = {n: g for g in doc["lesions"] for n in g["followup_lesions"]}

        vols = []
        pair_new = pair_found = 0
        for les in truth["lesions"]:
            if les["status"] == "new":
                if les["volume_followup_ml"] >= 1.0:
                    pair_new += 1
                    n = overlapping_lesion(f_pred, f_cmap == f_ids[les["followup_tumour"] - 1])
                    pair_found += bool(n is not None and group_of_f.get(n, {}).get("status") == "new")
                continue
            if les["volume_baseline_ml"] < 2.0:
                continue
            n_vol += 1
            n = overlapping_lesion(b_pred, b_cmap == b_ids[les["baseline_tumour"] - 1])
            measured = group_of_b[n]["volume_change_pct"] if n is not None and n in group_of_b else None
            good = measured is not None and abs(measured - les["volume_change_pct"]) <= 10.0
            ok_vol += good
            vols.append(f"{les['volume_change_pct']:+.0f}/{'n/a' if measured is None else f'{measured:+.0f}'}"
                        + ("" if good else " ✗"))
        n_new += pair_new
        found_new += pair_found
        new_cell = f"{pair_found}/{pair_new}" if pair_new else "–"
        print(f"{base_id} | {fu.source['scenario']} | {truth['recist']['category']} | {doc['recist']['category']} | "
              f"{truth['volumetric']['category']} | {doc['volumetric']['category']} | {', '.join(vols) or '–'} | "
              f"{new_cell} | {seconds:.1f}", flush=True)
    print(f"RECIST category right: {right}/{args.pairs} (goal ≥ {int(np.ceil(0.9 * args.pairs))}); "
          f"volume change within 10 points: {ok_vol}/{n_vol} lesions ≥ 2 mL (goal all); "
          f"new lesions ≥ 1 mL found: {found_new}/{n_new} (goal all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
