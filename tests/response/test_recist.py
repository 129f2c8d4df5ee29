"""RECIST 1.1 and volumetric categories on hand-made sums (rrcunet.response.recist)."""

from __future__ import annotations

import pytest

from rrcunet.response.recist import (
    ResponseRules,
    measurable,
    percent_change,
    recist_category,
    select_targets,
    volumetric_category,
)


@pytest.mark.parametrize(("before", "after", "new", "expected"), [
    (50.0, 35.0, 0, "PR"),      # exactly -30 %
    (50.0, 35.5, 0, "SD"),      # -29 %
    (50.0, 60.0, 0, "PD"),      # +20 % and +10 mm
    (20.0, 24.0, 0, "SD"),      # +20 % but only +4 mm: RECIST asks 5 mm too
    (20.0, 25.0, 0, "PD"),      # +25 % and +5 mm
    (50.0, 0.0, 0, "CR"),
    (50.0, 50.0, 1, "PD"),      # a new lesion
    (0.0, 0.0, 0, "NE"),        # no target at baseline
])
def test_recist_category(before, after, new, expected):
    assert recist_category(before, after, new) == expected


@pytest.mark.parametrize(("before", "after", "expected"), [
    (10.0, 3.5, "PR"), (10.0, 3.6, "SD"), (10.0, 17.3, "PD"), (10.0, 17.2, "SD"), (10.0, 0.0, "CR"),
])
def test_volumetric_category_sphere_equivalents(before, after, expected):
    assert volumetric_category(before, after, 0) == expected
    assert volumetric_category(before, after, 2) == "PD"


def test_targets_measurable_largest_two_in_the_lungs():
    # 10 mm is measurable on 2.5 mm slices; on 7 mm slices a lesion needs 14 mm
    assert measurable(10.0, 2.5) and not measurable(9.9, 2.5)
    assert not measurable(12.0, 7.0) and measurable(14.0, 7.0)
    assert select_targets([12.0, 30.0, 8.0, 25.0], 2.5) == [1, 3]
    assert select_targets([12.0, 30.0, 8.0, 25.0], 2.5, ResponseRules(max_per_organ=5)) == [1, 3, 0]
    assert select_targets([8.0, 9.0], 2.5) == []


def test_percent_change():
    assert percent_change(10.0, 15.0) == pytest.approx(50.0)
    assert percent_change(0.0, 5.0) is None
