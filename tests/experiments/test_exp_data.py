"""The fixed phantom benchmark: held-out test list, exact split sizes, reuse and refusal by stamp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrcunet.errors import ConfigError, InputError
from rrcunet.experiments.config import PhantomBenchmarkConfig
from rrcunet.experiments.data import ensure_phantom_benchmark


def test_split_is_fixed_and_the_last_cases_are_held_out(tiny_benchmark: Path):
    m = json.loads((tiny_benchmark / "manifest.json").read_text())
    ids = [c["case_id"] for c in m["cases"]]
    assert ids == [f"phantom_{i:04d}" for i in range(4)]
    assert m["split"]["test"] == ["phantom_0003"]
    assert len(m["split"]["train"]) == 2 and len(m["split"]["val"]) == 1
    assert set(m["split"]["train"]) | set(m["split"]["val"]) == set(ids[:3])
    assert all("tumours" in c["source"] for c in m["cases"])  # the facts the analysis needs


def test_existing_benchmark_is_reused_and_another_refused(tiny_benchmark: Path):
    stamp = json.loads((tiny_benchmark / "benchmark.json").read_text())
    spec = PhantomBenchmarkConfig(**stamp["benchmark"])
    before = (tiny_benchmark / "manifest.json").stat().st_mtime_ns
    assert ensure_phantom_benchmark(tiny_benchmark, spec) == tiny_benchmark
    assert (tiny_benchmark / "manifest.json").stat().st_mtime_ns == before  # not regenerated
    other = PhantomBenchmarkConfig(**{**stamp["benchmark"], "seed": 99})
    with pytest.raises(InputError, match="made with other options"):
        ensure_phantom_benchmark(tiny_benchmark, other)


def test_foreign_dataset_is_refused(tmp_path: Path):
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(InputError, match="did not generate"):
        ensure_phantom_benchmark(tmp_path, PhantomBenchmarkConfig())


def test_benchmark_options_are_checked():
    with pytest.raises(ConfigError, match="n_test must be >= 1"):
        PhantomBenchmarkConfig(n_test=0)
    with pytest.raises(ConfigError, match="tumours"):
        PhantomBenchmarkConfig(generator={"tumours": [{"diameter": 3}]}).phantom_config()
