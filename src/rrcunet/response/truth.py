"""The known response of phantom follow-up pairs (``rrcunet phantoms --follow-up``), measured on
their ground-truth masks with the same definitions as ``rrcunet compare``.

Owns :func:`pair_truth` and :func:`add_follow_up_truth`, which writes it into each follow-up case's
``source.truth`` in the dataset manifest: per tumour its baseline and follow-up volume and longest
axial diameter and its status (matched / new / disappeared), and the pair's RECIST 1.1 and
volumetric categories. It lives here, not in :mod:`rrcunet.synthetic`, because it needs the
measurements and the response rules, which sit above the data layer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from rrcunet.data.manifest import DatasetManifest
from rrcunet.inference.measure import Lesion, measure_lesions, tumour_components
from rrcunet.io import read_image
from rrcunet.preprocessing.orientation import orientation_step
from rrcunet.response.compare import LesionChange, assess
from rrcunet.response.recist import ResponseRules, percent_change
from rrcunet.tasks import TUMOUR_LABEL


def tumour_lesions(label_path: Path, facts: list[dict[str, Any]]
                   ) -> tuple[list[Lesion | None], Any, np.ndarray, list[int | None]]:
    """For each tumour of ``facts`` (in order) its measured lesion on the truth label map (the
    component holding most of its bounding box's tumour voxels; ``None`` if it rendered empty),
    the label Volume, the component map (component ids per voxel, 0 elsewhere) and each tumour's
    component id."""
    labels = read_image(label_path, kind="label")
    arr = np.asarray(labels.array)
    comps = tumour_components(arr == TUMOUR_LABEL)
    cmap = np.zeros(arr.shape, np.int32)
    cmap[comps.box] = comps.labels
    out: list[Lesion | None] = []
    chosen: list[int | None] = []
    for fact in facts:
        (lo, hi) = fact["bbox_voxel"]
        box = cmap[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
        ids = box[box > 0]
        if fact.get("n_voxels", 0) == 0 or ids.size == 0:
            out.append(None)
            chosen.append(None)
            continue
        cid = int(np.bincount(ids).argmax())
        out.append(measure_lesions((cmap == cid).astype(np.uint8) * TUMOUR_LABEL, labels.geometry)[0])
        chosen.append(cid)
    return out, labels, cmap, chosen


def pair_truth(dataset: Path, base_source: dict[str, Any], base_label: str, follow_source: dict[str, Any],
               follow_label: str, rules: ResponseRules = ResponseRules()) -> dict[str, Any]:
    """The truth of one baseline / follow-up pair (module docstring)."""
    b_les, b_labels, _, _ = tumour_lesions(dataset / base_label, base_source["tumours"])
    f_les, _, _, _ = tumour_lesions(dataset / follow_label, follow_source["tumours"])
    index = follow_source["follow_up"]["baseline_index"]
    changes: list[LesionChange] = []
    rows = []
    seen: set[int] = set()
    for j, (bi, fl) in enumerate(zip(index, f_les)):
        bl = b_les[bi - 1] if bi is not None else None
        if bi is not None:
            seen.add(bi)
        status = "new" if bl is None else ("matched" if fl is not None else "disappeared")
        rows.append((bi, j + 1, bl, fl, status))
    rows += [(i + 1, None, bl, None, "disappeared") for i, bl in enumerate(b_les) if i + 1 not in seen]
    lesions = []
    for bi, fj, bl, fl, status in rows:
        vb, vf = (bl.volume_ml if bl else 0.0), (fl.volume_ml if fl else 0.0)
        db, df = (bl.longest_axial_diameter_mm if bl else 0.0), (fl.longest_axial_diameter_mm if fl else 0.0)
        if bl is None and fl is None:
            continue
        changes.append(LesionChange(len(changes) + 1, status, [bi] if bl else [], [fj] if fl else [], vb, vf, db, df,
                                    tuple(bl.centroid_mm) if bl else (0.0, 0.0, 0.0), "truth"))  # type: ignore[arg-type]
        lesions.append({"baseline_tumour": bi, "followup_tumour": fj, "status": status, "volume_baseline_ml": vb,
                        "volume_followup_ml": vf, "volume_change_pct": percent_change(vb, vf),
                        "diameter_baseline_mm": db, "diameter_followup_mm": df,
                        "diameter_change_pct": percent_change(db, df)})
    slice_mm = float(orientation_step(b_labels.geometry).output_geometry.spacing[2])
    response = assess(changes, slice_mm, rules)
    for les, c in zip(lesions, changes):
        les["target"] = c.target
    return {"lesions": lesions, "recist": response["recist"], "volumetric": response["volumetric"],
            "rules": rules.to_dict()}


def add_follow_up_truth(dataset: str | Path, rules: ResponseRules = ResponseRules()) -> DatasetManifest:
    """Add ``source.truth`` (:func:`pair_truth`) to every follow-up case of a phantom dataset's
    manifest, and save it."""
    root = Path(dataset)
    manifest = DatasetManifest.load(root)
    by_id = {c.case_id: c for c in manifest.cases}
    cases = []
    for case in manifest.cases:
        base_id = (case.source or {}).get("follow_up_of")
        if base_id is None:
            cases.append(case)
            continue
        base = by_id[base_id]
        truth = pair_truth(root, base.source, base.label, case.source, case.label, rules)
        cases.append(dataclasses.replace(case, source={**case.source, "truth": truth}))
    manifest = dataclasses.replace(manifest, cases=tuple(cases))
    manifest.save(root)
    return manifest
