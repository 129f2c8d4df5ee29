"""Response categories between two time points: RECIST 1.1 on the sum of diameters, and its
volumetric counterpart (pure rules, no images).

Owns :class:`ResponseRules`, :func:`select_targets`, :func:`recist_category` and
:func:`volumetric_category`. Sources (docs/response.md):

* RECIST 1.1: Eisenhauer EA et al., "New response evaluation criteria in solid tumours: revised
  RECIST guideline (version 1.1)", Eur J Cancer 2009;45:228–247. Measurable lesion: longest
  diameter ≥ 10 mm on CT with slices ≤ 5 mm (≥ twice the slice spacing on thicker slices); at most
  5 target lesions, at most 2 per organ, the largest chosen; CR: every target gone; PR: the sum of
  diameters down ≥ 30 % from baseline; PD: up ≥ 20 % from the smallest sum (here the baseline: two
  time points) and by ≥ 5 mm, or any new lesion; SD: neither.
* Volumetric: PR at ≤ −65 % and PD at ≥ +73 % of the total tumour volume, the volume changes of a
  sphere whose diameter changes by RECIST's −30 % and +20 % (0.7³ = 0.343, 1.2³ = 1.728), the
  equivalence used when volumetric and RECIST responses are compared (e.g. Mozley PD et al.,
  Transl Oncol 2012;5:19–25); CR when every lesion is gone; a new lesion is PD.

Choices of ours, stated in docs/response.md: the targets are the model's lesions (not a
radiologist's choice); the two lungs count as one organ, so at most ``max_per_organ`` (2) lesions
are targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ResponseRules:
    """The thresholds (module docstring): RECIST 1.1 and the sphere-equivalent volumetric ones."""

    min_measurable_mm: float = 10.0
    max_targets: int = 5
    max_per_organ: int = 2
    pr_diameter_pct: float = -30.0
    pd_diameter_pct: float = 20.0
    pd_diameter_abs_mm: float = 5.0
    pr_volume_pct: float = -65.0
    pd_volume_pct: float = 73.0
    min_new_lesion_ml: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measurable(diameter_mm: float, slice_mm: float, rules: ResponseRules = ResponseRules()) -> bool:
    """RECIST 1.1: longest diameter ≥ 10 mm, or ≥ twice the slice spacing when slices are thicker than 5 mm."""
    return float(diameter_mm) >= max(rules.min_measurable_mm, 2.0 * float(slice_mm))


def select_targets(diameters_mm: Sequence[float], slice_mm: float, rules: ResponseRules = ResponseRules()) -> list[int]:
    """Indices (into ``diameters_mm``) of the target lesions: the largest measurable ones, at most
    ``min(max_targets, max_per_organ)`` (every lesion here is in the one organ "lung")."""
    order = sorted(range(len(diameters_mm)), key=lambda i: -float(diameters_mm[i]))
    keep = [i for i in order if measurable(diameters_mm[i], slice_mm, rules)]
    return keep[: min(rules.max_targets, rules.max_per_organ)]


def percent_change(before: float, after: float) -> float | None:
    """``100 × (after − before) / before``; ``None`` when ``before`` is 0."""
    return None if before <= 0 else 100.0 * (after - before) / before


def recist_category(sum_baseline_mm: float, sum_followup_mm: float, n_new: int,
                    rules: ResponseRules = ResponseRules()) -> str:
    """CR / PR / SD / PD from the target sums (two time points: the baseline is the nadir) and the
    number of new lesions; ``"NE"`` (not evaluable) when there is no target at baseline and no new lesion."""
    if n_new > 0:
        return "PD"
    if sum_baseline_mm <= 0:
        return "NE"
    if sum_followup_mm <= 0:
        return "CR"
    change = percent_change(sum_baseline_mm, sum_followup_mm)
    assert change is not None
    if change >= rules.pd_diameter_pct and sum_followup_mm - sum_baseline_mm >= rules.pd_diameter_abs_mm:
        return "PD"
    if change <= rules.pr_diameter_pct:
        return "PR"
    return "SD"


def volumetric_category(volume_baseline_ml: float, volume_followup_ml: float, n_new: int,
                        rules: ResponseRules = ResponseRules()) -> str:
    """CR / PR / SD / PD on the total tumour volume (module docstring); ``"NE"`` without tumour at baseline."""
    if n_new > 0:
        return "PD"
    if volume_baseline_ml <= 0:
        return "NE"
    if volume_followup_ml <= 0:
        return "CR"
    change = percent_change(volume_baseline_ml, volume_followup_ml)
    assert change is not None
    if change >= rules.pd_volume_pct:
        return "PD"
    if change <= rules.pr_volume_pct:
        return "PR"
    return "SD"
