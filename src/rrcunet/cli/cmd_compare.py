"""``rrcunet compare BASELINE FOLLOWUP -o OUT``: tumour response between two scans of one patient, a
thin layer over :func:`rrcunet.response.compare_scans`.

Example::

    rrcunet compare scans/2024-01/ scans/2024-04/ -o response/   # response/response.json, response.html
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rrcunet.cli.cmd_predict import add_inference_arguments, inference_config, quiet_dicom_logs


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare",
        help="tumour response between a baseline and a follow-up scan: RECIST 1.1 and volumetric categories, "
             "lesions matched across time",
        description=(
            "Each argument is a CT (file or DICOM folder), predicted first into OUT/baseline or OUT/followup, or "
            "an existing `rrcunet predict` output folder of that scan. The follow-up is registered onto the "
            "baseline (SimpleITK: rigid, then affine, on the lungs), lesions are matched by overlap and then by "
            "distance, and OUT/response.json, OUT/response.html and OUT/followup_on_baseline_seg.nii.gz are "
            "written. Definitions, thresholds and their sources: docs/response.md."),
    )
    p.add_argument("baseline", metavar="BASELINE", help="baseline scan, DICOM folder or prediction folder")
    p.add_argument("followup", metavar="FOLLOWUP", help="follow-up scan, DICOM folder or prediction folder")
    p.add_argument("-o", "--out", dest="out_dir", required=True, metavar="OUT", help="output folder")
    p.add_argument("--force", action="store_true",
                   help="compare even when the DICOM PatientIDs differ (e.g. re-anonymised scans)")
    p.add_argument("--match-distance-mm", type=float, default=15.0,
                   help="pair lesions that do not overlap after registration when their centroids are this close "
                        "(default %(default)s mm)")
    p.add_argument("--min-new-lesion-ml", type=float, default=0.5,
                   help="a new lesion smaller than this is listed but does not make the response PD "
                        "(default %(default)s mL)")
    add_inference_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.inference import Predictor
    from rrcunet.response import ResponseRules, compare_scans

    quiet_dicom_logs(args)
    predictor: list[Any] = []

    def predict(scan: Path, out: Path) -> None:
        if not predictor:
            predictor.append(Predictor.from_file(args.model, config=inference_config(args)))
        report = predictor[0].predict_paths([scan], out, progress=False)
        if report.failed:
            raise SystemExit(f"rrcunet compare: {scan}: {report.failed[0].message}")

    doc = compare_scans(args.baseline, args.followup, args.out_dir, predict=predict, force=args.force,
                        rules=ResponseRules(min_new_lesion_ml=args.min_new_lesion_ml),
                        match_distance_mm=args.match_distance_mm)
    r, v = doc["recist"], doc["volumetric"]
    pct = "n/a" if r["change_pct"] is None else f"{r['change_pct']:+.1f} %"
    vpct = "n/a" if v["change_pct"] is None else f"{v['change_pct']:+.1f} %"
    print(f"RECIST 1.1: {r['category']} (sum of diameters {r['sum_diameters_baseline_mm']:.1f} -> "
          f"{r['sum_diameters_followup_mm']:.1f} mm, {pct}); volumetric: {v['category']} "
          f"({v['volume_baseline_ml']:.1f} -> {v['volume_followup_ml']:.1f} mL, {vpct}); "
          f"{len(r['new_lesions'])} new lesion(s)")
    for les in doc["lesions"]:
        print(f"  lesion {les['lesion']}: {les['status']}, {les['volume_baseline_ml']:.2f} -> "
              f"{les['volume_followup_ml']:.2f} mL, {les['diameter_baseline_mm']:.1f} -> "
              f"{les['diameter_followup_mm']:.1f} mm" + (" (target)" if les["target"] else ""))
    for note in doc["notes"]:
        print(f"  note: {note}")
    print(f"{Path(args.out_dir) / 'response.json'}\n{Path(args.out_dir) / doc['outputs'].get('html', '')}")
    return 0
