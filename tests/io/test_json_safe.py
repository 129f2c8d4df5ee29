"""json_safe: result documents become strict JSON (what predict, evaluate and the ablation write)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from rrcunet.io.atomic import json_safe


def test_json_safe_makes_strict_json():
    doc = {"nan": math.nan, "inf": -math.inf, 3: np.float32(0.5), "i": np.int64(7), "b": np.bool_(True),
           "nested": [(np.float64(np.inf), Path("a/b")), {"x": 1.5}], "s": "t", "none": None}
    out = json_safe(doc)
    assert out == {"nan": None, "inf": None, "3": 0.5, "i": 7, "b": True,
                   "nested": [[None, "a/b"], {"x": 1.5}], "s": "t", "none": None}
    assert type(out["i"]) is int and type(out["3"]) is float
    json.dumps(out, allow_nan=False)  # would raise on anything left over
