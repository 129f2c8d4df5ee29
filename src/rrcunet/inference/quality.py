"""Quality flags of one prediction and the confidence of each lesion (``quality`` and the lesions'
``confidence`` in ``<case>.json``).

Owns :class:`QualityThresholds`, :func:`lesion_confidences` and :func:`quality_report`. A flag is
a reason to look at a case first; it never changes the masks. Every flag carries a ``code``, a
``reason`` in words, the measured ``value`` and the ``threshold`` it crossed. The checks
(docs/inference.md, "Quality flags", with the sources of the thresholds):

* ``low_confidence``: the tumour's mean probability (volume-weighted over its lesions, from the
  averaged passes under ``--uncertainty``) is below ``min_confidence``;
* ``lesion_at_edge``: a lesion touches a face of the field of view (its extent may be cut off);
* ``lung_volume``: the lung region is outside ``lung_ml``, the adult range from the residual
  volume to the largest total lung capacity (Quanjer et al., Eur Respir J 1993;6 Suppl 16:5–40):
  a partial scan, a cropped field of view or a failed lung extraction;
* ``thick_slices``: slice spacing above ``max_slice_mm`` (RECIST 1.1 measures on ≤ 5 mm slices;
  small nodules blur away);
* ``hu_calibration``: the air estimate (the 1st percentile of the voxels above −1500 HU, so the
  padding outside the reconstruction circle is left out) is more than ``air_tolerance_hu`` from
  −1000 HU: a missing rescale slope/intercept or a non-CT image;
* ``tumour_outside_lung``: a lesion has less than ``min_in_lung`` of its voxels in the lung region
  (the network's lung channel): a chest-wall or mediastinal mass, or a false positive there;
* ``lung_mask_small``: the lung region is less than ``min_lung_to_air`` of the air-like volume
  inside the body (:func:`rrcunet.lungmask.body_air_ml`): the extractor missed a lung or part of one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rrcunet.inference.measure import Components, Lesion
from rrcunet.io.volume import Volume
from rrcunet.lungmask import body_air_ml
from rrcunet.preprocessing.orientation import orientation_step


@dataclass(frozen=True, kw_only=True)
class QualityThresholds:
    """When a check raises a flag (module docstring; sources in docs/inference.md)."""

    min_confidence: float = 0.75
    lung_ml: tuple[float, float] = (1500.0, 9000.0)
    max_slice_mm: float = 5.0
    air_hu: float = -1000.0
    air_tolerance_hu: float = 100.0
    min_in_lung: float = 0.5
    min_lung_to_air: float = 0.6


def _component_order(components: Components) -> np.ndarray:
    """Component ids (1-based) in lesion order: by decreasing size, as :func:`measure_lesions` numbers them."""
    return np.argsort(-components.sizes, kind="stable") + 1


def lesion_confidences(components: Components, tumour_probability: np.ndarray, lung: np.ndarray,
                       uncertainty: np.ndarray | None = None) -> list[dict[str, float]]:
    """Per lesion (in lesion order): ``confidence`` (mean tumour probability over its voxels; the
    probability map may be float or uint8 holding ``round(255 × p)``),
    ``fraction_in_lung`` (share of its voxels in the lung region) and, with an uncertainty map,
    ``mean_uncertainty``. All arrays on the CT grid; ``components`` from
    :func:`~rrcunet.inference.measure.tumour_components` of the final label map."""
    if components.count == 0:
        return []
    box = components.box
    ids = _component_order(components)
    # Per-component means over the labelled voxels only, not ``scipy.ndimage.mean`` over the whole
    # box (a float64 copy of it, then a weighted count of every voxel: slow when a random network
    # marks litres of tumour; issue 23). Same sums, in the same voxel order.
    where, number = components.voxels()
    sizes = components.sizes[ids - 1]

    def mean_of(values: np.ndarray) -> np.ndarray:
        return np.bincount(number, weights=np.asarray(values[box])[where].astype(np.float64),
                           minlength=components.count + 1)[ids] / sizes

    conf = mean_of(np.asarray(tumour_probability))
    if np.asarray(tumour_probability).dtype == np.uint8:  # stored as round(255 × p)
        conf = conf / 255.0
    inside = np.bincount(number[np.asarray(lung[box])[where] > 0], minlength=components.count + 1)[ids] / sizes
    out = [{"confidence": float(c), "fraction_in_lung": float(f)} for c, f in zip(conf, inside)]
    if uncertainty is not None:
        for d, u in zip(out, mean_of(np.asarray(uncertainty))):
            d["mean_uncertainty"] = float(u)
    return out


def air_estimate_hu(ct: np.ndarray) -> float | None:
    """The 1st percentile of the CT voxels above −1500 HU (about every 8th voxel): room air or,
    in a scan cropped to the body, the lungs' darkest air. ``None`` when no voxel is above −1500."""
    sample = np.asarray(ct)[::2, ::2, ::2].ravel()
    sample = sample[sample > -1500]
    return float(np.percentile(sample, 1.0)) if sample.size else None


def quality_report(ct: Volume, lung: Volume, lesions: list[Lesion], lesion_extras: list[dict[str, float]],
                   thresholds: QualityThresholds = QualityThresholds()) -> dict[str, Any]:
    """The ``quality`` section of a prediction: ``flags`` (a list; empty when nothing is flagged),
    the measured ``checks`` and the ``thresholds`` used."""
    t = thresholds
    flags: list[dict[str, Any]] = []

    def flag(code: str, reason: str, value: Any, threshold: Any) -> None:
        flags.append({"code": code, "reason": reason, "value": value, "threshold": threshold})

    lung_arr = np.asarray(lung.array)
    lung_ml = float(np.count_nonzero(lung_arr)) * lung.geometry.voxel_volume_ml
    canonical = orientation_step(ct.geometry).output_geometry
    slice_mm = float(canonical.spacing[2])
    air = air_estimate_hu(ct.array)
    body_air = lung.meta.get("body_air_ml")
    if body_air is None:
        body_air = body_air_ml(ct)
    body_air = float(body_air)
    tumour_ml = float(sum(les.volume_ml for les in lesions))
    confidence = (float(sum(les.volume_ml * x["confidence"] for les, x in zip(lesions, lesion_extras)) / tumour_ml)
                  if lesions and tumour_ml > 0 else None)

    if confidence is not None and confidence < t.min_confidence:
        flag("low_confidence", f"the tumour's mean probability is {confidence:.2f}, below {t.min_confidence}: "
             "the network is unsure of what it marked", round(confidence, 4), t.min_confidence)
    shape = np.asarray(ct.shape)
    at_edge = [les.index for les in lesions
               if np.any(np.asarray(les.bbox_voxel[0]) <= 0) or np.any(np.asarray(les.bbox_voxel[1]) >= shape - 1)]
    if at_edge:
        flag("lesion_at_edge", f"lesion(s) {', '.join(map(str, at_edge))} touch the edge of the field of view: "
             "their extent and volume may be cut off", at_edge, "a face of the scan")
    lo, hi = t.lung_ml
    if not lo <= lung_ml <= hi:
        flag("lung_volume", f"the lung region is {lung_ml:.0f} mL, outside the adult range {lo:.0f}-{hi:.0f} mL: "
             "a partial scan, a cropped field of view, or a failed lung extraction", round(lung_ml, 1), [lo, hi])
    if slice_mm > t.max_slice_mm:
        flag("thick_slices", f"slices are {slice_mm:.2f} mm apart, above {t.max_slice_mm} mm: small nodules blur "
             "and diameters are coarse", round(slice_mm, 3), t.max_slice_mm)
    if air is None or abs(air - t.air_hu) > t.air_tolerance_hu:
        what = "no voxel above -1500 HU" if air is None else f"air at about {air:.0f} HU"
        flag("hu_calibration", f"{what}, expected near {t.air_hu:.0f} HU (±{t.air_tolerance_hu:.0f}): check the "
             "rescale slope and intercept, or that the image is a CT in HU",
             None if air is None else round(air, 1), [t.air_hu, t.air_tolerance_hu])
    outside = [(les.index, x["fraction_in_lung"]) for les, x in zip(lesions, lesion_extras)
               if x["fraction_in_lung"] < t.min_in_lung]
    if outside:
        flag("tumour_outside_lung", "lesion(s) " + ", ".join(f"{i} ({f:.0%} in the lung region)" for i, f in outside)
             + f" lie mostly outside the lung region (less than {t.min_in_lung:.0%} inside)",
             [i for i, _ in outside], t.min_in_lung)
    ratio = lung_ml / body_air if body_air > 0 else None
    if ratio is not None and ratio < t.min_lung_to_air:
        flag("lung_mask_small", f"the lung region ({lung_ml:.0f} mL) is {ratio:.0%} of the air inside the body "
             f"({body_air:.0f} mL), below {t.min_lung_to_air:.0%}: the lung extraction may have missed a lung",
             round(ratio, 4), t.min_lung_to_air)
    checks = {"tumour_confidence": None if confidence is None else round(confidence, 4),
              "lung_region_ml": round(lung_ml, 1), "slice_spacing_mm": round(slice_mm, 3),
              "air_hu": None if air is None else round(air, 1), "body_air_ml": round(body_air, 1),
              "lung_to_body_air": None if ratio is None else round(ratio, 4)}
    return {"flags": flags, "checks": checks, "thresholds": asdict(t)}
