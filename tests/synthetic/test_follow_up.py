"""Follow-up scans of a phantom (``FollowUp``, ``rrcunet phantoms --follow-up``)."""

from __future__ import annotations

import numpy as np
import pytest

from rrcunet.errors import ConfigError
from rrcunet.synthetic.dataset import FOLLOW_UP_SCENARIOS, follow_up_plan
from rrcunet.synthetic.phantom import FollowUp, generate_phantom

SEED = 7  # a small phantom with two tumours


def test_a_follow_up_with_no_change_is_the_baseline():
    base = generate_phantom(SEED)
    same = generate_phantom(SEED, follow_up=FollowUp())
    np.testing.assert_array_equal(same.image.array, base.image.array)
    np.testing.assert_array_equal(same.label.array, base.label.array)
    assert same.facts.follow_up["baseline_index"] == list(range(1, len(base.facts.tumours) + 1))


def test_volume_factors_motion_and_a_new_lesion():
    base = generate_phantom(SEED)
    assert len(base.facts.tumours) == 2
    plan = FollowUp(volume_factors=(0.4, 0.0), shift_mm=(6.0, -4.0, 5.0), rotation_deg=3.0, breathing_mm=6.0,
                    new_lesion_mm=14.0)
    fu = generate_phantom(SEED, follow_up=plan)
    assert fu.image.geometry == base.image.geometry  # recorded on the baseline's grid
    assert fu.facts.follow_up["baseline_index"] == [1, None]  # tumour 2 has gone; a new one came
    shrunk, new = fu.facts.tumours
    assert shrunk.volume_ml == pytest.approx(0.4 * base.facts.tumours[0].volume_ml, rel=0.15)
    assert 0.8 < new.volume_ml < 2.5  # a 14 mm nodule is about 1.4 mL
    moved = np.asarray(fu.image.array, np.float32) - np.asarray(base.image.array, np.float32)
    assert np.abs(moved).mean() > 10.0  # the body moved
    again = generate_phantom(SEED, follow_up=plan)
    np.testing.assert_array_equal(again.image.array, fu.image.array)


def test_follow_up_plans_cycle_through_the_scenarios():
    names = [follow_up_plan(0, i, 2)[0] for i in range(len(FOLLOW_UP_SCENARIOS))]
    assert names == list(FOLLOW_UP_SCENARIOS)
    name, plan = follow_up_plan(0, 1, 3)
    lo, hi = FOLLOW_UP_SCENARIOS[name]
    assert len(plan.volume_factors) == 3 and all(lo <= f <= hi for f in plan.volume_factors)
    assert follow_up_plan(0, 1, 3) == (name, plan)
    assert follow_up_plan(0, 3, 1)[1].new_lesion_mm > 0 and follow_up_plan(0, 2, 1)[1].new_lesion_mm == 0


@pytest.mark.parametrize("kwargs", [{"volume_factors": (-1.0,)}, {"shift_mm": (1.0, 2.0)}, {"new_lesion_mm": -3.0}])
def test_follow_up_options_are_checked(kwargs):
    with pytest.raises(ConfigError):
        FollowUp(**kwargs)
