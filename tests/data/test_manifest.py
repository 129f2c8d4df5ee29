import json

import pytest

from rrcunet.data.manifest import CaseEntry, DatasetManifest, make_split
from rrcunet.errors import InputError


def _cases(n, per_patient=1):
    return [CaseEntry(case_id=f"c{i}", image=f"images/c{i}.nii.gz", label=f"labels/c{i}.nii.gz",
                      patient=f"p{i // per_patient}") for i in range(n)]


def test_split_is_seeded_and_patient_level():
    cases = _cases(20, per_patient=2)
    a = make_split(cases, seed=3)
    b = make_split(cases, seed=3)
    c = make_split(cases, seed=4)
    assert a == b
    assert a != c
    assert len(a.val) == 4 and len(a.train) == 16  # 2 of 10 patients, 2 scans each
    by_id = {x.case_id: x.patient_id for x in cases}
    assert not ({by_id[i] for i in a.train} & {by_id[i] for i in a.val})


def test_split_holds_out_test_cases():
    cases = _cases(10)
    s = make_split(cases, seed=0, test=("c9",))
    assert s.test == ("c9",) and "c9" not in s.train + s.val
    with pytest.raises(InputError, match="unknown cases"):
        make_split(cases, test=("nope",))


def test_roundtrip(tmp_path):
    cases = _cases(5)
    m = DatasetManifest(name="demo", cases=tuple(cases), split=make_split(cases, seed=1))
    m.save(tmp_path)
    back = DatasetManifest.load(tmp_path)
    assert back.split == m.split
    assert [c.case_id for c in back.cases] == [c.case_id for c in cases]
    assert back.resolve(tmp_path, "images/c0.nii.gz") == (tmp_path / "images/c0.nii.gz").resolve()


@pytest.mark.parametrize("bad", ["../outside.nii.gz", "/etc/passwd", "images/../../x.nii.gz"])
def test_paths_cannot_escape_root(tmp_path, bad):
    cases = [CaseEntry(case_id="a", image=bad)]
    m = DatasetManifest(name="x", cases=tuple(cases), split=make_split(cases))
    (tmp_path / "manifest.json").write_text(m.to_json())
    with pytest.raises(InputError, match="dataset root"):
        DatasetManifest.load(tmp_path)


def test_missing_and_malformed_manifest(tmp_path):
    with pytest.raises(InputError, match="manifest.json not found"):
        DatasetManifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        DatasetManifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 1, "cases": []}))
    with pytest.raises(InputError, match="malformed manifest"):
        DatasetManifest.load(tmp_path)


def test_validation_split_equal_to_training_is_refused(tmp_path):
    cases = _cases(6)
    m = DatasetManifest(name="x", cases=tuple(cases), split=make_split(cases, seed=0))
    data = json.loads(m.to_json())
    data["split"]["val"] = list(data["split"]["train"])
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"in both train and val .*validation would score cases the network "
                                         r"trained on"):
        DatasetManifest.load(tmp_path)


def test_a_patient_on_both_sides_is_warned(tmp_path, caplog):
    cases = _cases(4, per_patient=2)
    data = json.loads(DatasetManifest(name="x", cases=tuple(cases), split=make_split(cases, seed=0)).to_json())
    data["split"]["train"], data["split"]["val"] = ["c0", "c2", "c3"], ["c1"]  # p0 on both sides
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    DatasetManifest.load(tmp_path)
    assert "patient(s) ['p0'] have scans in train and in val/test" in caplog.text


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.__setitem__("labels", ["background", "lung", "tumour"]), r"labels must be object, not \['background'"),
    (lambda d: d["labels"].__setitem__("x", "thing"), r"labels has the key 'x': its keys must be an integer"),
    (lambda d: d["labels"].__setitem__("1", 5), r"labels\['1'\] must be a string, not 5"),
    (lambda d: d["split"].__setitem__("seed", "abc"), r"split\.seed must be an integer, not 'abc'"),
])
def test_a_malformed_manifest_is_one_error_naming_the_field(tmp_path, change, message):
    """Issue 22: these gave tracebacks; each is now one line naming the manifest and the field."""
    cases = _cases(3)
    doc = json.loads(DatasetManifest(name="x", cases=tuple(cases), split=make_split(cases)).to_json())
    change(doc)
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=rf"manifest\.json: malformed manifest, {message}"):
        DatasetManifest.load(tmp_path)
