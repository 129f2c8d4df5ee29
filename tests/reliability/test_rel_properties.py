"""Property-based hostile inputs (hypothesis): a model file whose JSON description and a dataset
manifest whose JSON are mutated at random are either accepted or refused with an rrcunet error
(one line at the command line). Never another exception, never a slow read (each example has a
deadline, so an allocation driven by a mutated size would show as a timeout)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from rrcunet.data.manifest import CaseEntry, DatasetManifest, make_split
from rrcunet.errors import RRcUNetError
from rrcunet.models import build_model
from rrcunet.models.model_file import META_KEY, read_model_meta, save_model
from rrcunet.preprocessing import PreprocessConfig

SETTINGS = settings(max_examples=60, deadline=2000, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# values a hostile file might hold where another value was expected
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e300, -1e300, 5000, 4096, 10**9, -1, 0, 0.5, "", "x", "a/b", "\x00\n\x1b", "ground-glass",
                     "G" * 5000, [], {}, [640, 640, 640], [4096, 4096, 4096], [1, 2], {"x": 1}]),
    st.text(max_size=20), st.lists(st.integers(-5, 5000), max_size=4),
)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """Replace, delete or add one to three places of a JSON document."""
    doc = json.loads(json.dumps(doc))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(HOSTILE)
        else:
            parent[path[-1]] = data.draw(HOSTILE)
    return doc


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    kwargs = {"base_filters": 4, "levels": 2, "t": 1}
    save_model(path, build_model("rrcunet", **kwargs), model_name="rrcunet", model_kwargs=kwargs,
               preprocess_config=PreprocessConfig(target_shape=(16, 16, 8)))
    return path


@SETTINGS
@given(data=st.data())
def test_mutated_model_description_is_accepted_or_refused(model_file, tmp_path_factory, data):
    from safetensors import safe_open

    with safe_open(str(model_file), framework="pt") as fh:
        header = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    doc = _mutate(json.loads(header[META_KEY]), data)
    header[META_KEY] = json.dumps(doc)
    out = tmp_path_factory.mktemp("mut") / "m.safetensors"
    save_file(tensors, str(out), metadata=header)
    try:
        meta = read_model_meta(out)
    except RRcUNetError as exc:
        assert "\n" not in str(exc).strip() or len(str(exc)) < 20000
        return
    # accepted: what the file asks to build is within the documented bounds
    shape = meta.preprocess.target_shape if meta.preprocess is not None else None
    if shape is not None:
        assert math.prod(shape) <= 512 * 512 * 256


@SETTINGS
@given(data=st.data())
def test_mutated_manifest_is_accepted_or_refused(tmp_path_factory, data):
    cases = [CaseEntry(case_id=f"c{i}", image=f"images/c{i}.nii.gz", label=f"labels/c{i}.nii.gz",
                       patient=f"p{i}") for i in range(4)]
    manifest = DatasetManifest(name="x", cases=tuple(cases), split=make_split(cases, seed=0))
    root = tmp_path_factory.mktemp("ds")
    (root / "manifest.json").write_text(json.dumps(_mutate(json.loads(manifest.to_json()), data)))
    try:
        DatasetManifest.load(root)
    except RRcUNetError:
        pass


def test_a_header_nested_200000_deep_is_refused(model_file, tmp_path):
    from safetensors import safe_open

    with safe_open(str(model_file), framework="pt") as fh:
        header = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    header[META_KEY] = "[" * 200_000 + "]" * 200_000
    out = tmp_path / "deep.safetensors"
    save_file(tensors, str(out), metadata=header)
    with pytest.raises(RRcUNetError, match="nested"):
        read_model_meta(out)
    (tmp_path / "manifest.json").write_text('{"version": 1, "cases": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(RRcUNetError, match="nested"):
        DatasetManifest.load(tmp_path)
