"""Batch prediction: case discovery, the output files and JSON, resuming, --overwrite, bad cases."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest

from rrcunet import __version__
from rrcunet.errors import InputError
from rrcunet.inference import InferenceConfig, PostprocessConfig, Predictor, discover_cases, measure_lesions
from rrcunet.io import Geometry, Volume, read_image, write_ct_series, write_volume
from tests.inference.helpers import save_tiny_model

CPU = InferenceConfig(device="cpu")


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor.from_file(tiny_model, config=CPU)


@pytest.fixture(scope="module")
def scans(tmp_path_factory, chest_case):
    """Two good NIfTI cases and one unreadable file, in one folder."""
    ct = chest_case[0]
    root = tmp_path_factory.mktemp("scans")
    write_volume(ct, root / "a.nii.gz")
    write_volume(ct.with_array(np.flip(ct.array, 0).copy()), root / "b.nii.gz")
    return root


def _tiny_ct() -> Volume:
    arr = np.full((8, 8, 4), -1000, np.int16)
    arr[2:6, 2:6] = 40
    return Volume(arr, Geometry((8, 8, 4), (1.0, 1.0, 2.0)), "image")


def test_discovery_rules(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    write_volume(_tiny_ct(), root / "a.nii.gz")
    write_volume(_tiny_ct(), root / "b.nrrd")
    (root / "notes.txt").write_text("not an image")
    write_ct_series(_tiny_ct(), root / "patient1" / "study" / "series", patient_id="P1")
    write_ct_series(_tiny_ct(), tmp_path / "P7" / "ct", patient_id="P7")
    ds = tmp_path / "dataset"
    write_volume(_tiny_ct(), ds / "images" / "case_01.nii.gz")
    (ds / "manifest.json").write_text("{}")
    cases = discover_cases([root, tmp_path / "P7" / "ct", ds, root / "a.nii.gz"])
    assert [(c.case_id, c.is_dicom) for c in cases] == [
        ("a", False), ("b", False), ("P1", True), ("P7", True), ("case_01", False)]  # DICOM: the PatientID
    assert cases[2].path == root / "patient1" / "study" / "series"
    one_file = discover_cases([tmp_path / "P7" / "ct" / "CT_0001.dcm"])
    assert [(c.case_id, c.is_dicom) for c in one_file] == [("P7", True)]


def test_discovery_errors(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        discover_cases([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="found no case"):
        discover_cases([tmp_path / "empty"])
    for sub in ("x", "y"):
        write_volume(_tiny_ct(), tmp_path / sub / "same.nii.gz")
    with pytest.raises(InputError, match="two inputs give the case id 'same'"):
        discover_cases([tmp_path / "x", tmp_path / "y"])


def test_outputs_and_json(predictor, scans, tmp_path, tiny_model):
    out = tmp_path / "out"
    report = predictor.predict_paths([scans / "a.nii.gz"], out, save_probabilities=True, progress=False)
    assert [o.status for o in report.outcomes] == ["done"]
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a_prob_lung.nii.gz", "a_prob_tumour.nii.gz",
                                                     "a_seg.nii.gz"]
    ct = read_image(scans / "a.nii.gz")
    seg = read_image(out / "a_seg.nii.gz", kind="label")
    assert seg.geometry.same_grid(ct.geometry, atol=1e-6)
    prob = read_image(out / "a_prob_tumour.nii.gz", check_intensity=False)
    assert prob.array.dtype == np.float32 and prob.geometry.same_grid(ct.geometry, atol=1e-6)
    doc = json.loads((out / "a.json").read_text())
    assert doc["schema"] == "rrcunet-prediction" and doc["case"] == "a"
    assert doc["outputs"] == {"segmentation": "a_seg.nii.gz",
                              "probabilities": {"lung": "a_prob_lung.nii.gz", "tumour": "a_prob_tumour.nii.gz"}}
    voxel_ml = float(np.prod(ct.spacing)) / 1000
    assert doc["tumour"]["n_voxels"] == int(np.count_nonzero(seg.array == 2))
    assert doc["tumour"]["volume_ml"] == pytest.approx(doc["tumour"]["n_voxels"] * voxel_ml)
    assert doc["tumour"]["n_lesions"] == len(doc["tumour"]["lesions"])
    assert sum(les["volume_ml"] for les in doc["tumour"]["lesions"]) == pytest.approx(doc["tumour"]["volume_ml"])
    # The JSON's lesions are those of the written label map (measured again here).
    again = measure_lesions(seg.array, seg.geometry)
    assert again  # the seeded tiny model does predict tumour on this chest
    assert [les["n_voxels"] for les in doc["tumour"]["lesions"]] == [les.n_voxels for les in again]
    for got, ref in zip(doc["tumour"]["lesions"], again):
        assert got["longest_axial_diameter_mm"] == pytest.approx(ref.longest_axial_diameter_mm)
        assert got["centroid_mm_lps"] == pytest.approx(list(ref.centroid_mm), abs=1e-4)
        assert got["centroid_voxel"] == pytest.approx(list(ref.centroid_voxel))
    assert doc["lung"]["region_volume_ml"] > 0
    assert doc["lung"]["predicted_parenchyma_ml"] == pytest.approx(np.count_nonzero(seg.array == 1) * voxel_ml)
    assert set(doc["runtime_s"]) == {"read", "lungmask", "preprocess", "model", "invert", "postprocess", "measure",
                                     "quality", "write", "total"}
    # every lesion carries its confidence, and the case its quality section (rrcunet.inference.quality)
    assert all(0.0 <= les["confidence"] <= 1.0 and 0.0 <= les["fraction_in_lung"] <= 1.0
               for les in doc["tumour"]["lesions"])
    assert isinstance(doc["quality"]["flags"], list) and "lung_region_ml" in doc["quality"]["checks"]
    assert doc["model"]["sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert doc["rrcunet_version"] == __version__
    assert doc["input"]["geometry"]["shape"] == list(ct.shape)
    assert doc["preprocessing_record"]["config"]["target_shape"] == [32, 32, 16]


def _stamp(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def test_resume_skips_complete_cases_and_overwrite_redoes_them(predictor, scans, tmp_path, caplog):
    out = tmp_path / "out"
    first = predictor.predict_paths([scans], out, progress=False)
    assert [o.status for o in first.outcomes] == ["done", "done"]
    stamps = {p.name: _stamp(p) for p in out.iterdir()}
    again = predictor.predict_paths([scans], out, progress=False)
    assert [o.status for o in again.outcomes] == ["skipped", "skipped"]
    assert {p.name: _stamp(p) for p in out.iterdir()} == stamps
    # An interrupted case: predict had marked b.json "started", written some outputs, then died.
    (out / "b.json").write_text(json.dumps({"schema": "rrcunet-prediction", "schema_version": 1, "case": "b",
                                            "status": "started"}))
    partial = predictor.predict_paths([scans], out, progress=False)
    assert [o.status for o in partial.outcomes] == ["skipped", "done"]
    assert _stamp(out / "a_seg.nii.gz") == stamps["a_seg.nii.gz"]
    assert _stamp(out / "b_seg.nii.gz") != stamps["b_seg.nii.gz"]
    redo = predictor.predict_paths([scans], out, overwrite=True, progress=False)
    assert [o.status for o in redo.outcomes] == ["done", "done"]
    assert _stamp(out / "a_seg.nii.gz") != stamps["a_seg.nii.gz"]
    # Earlier outputs in the output folder are never taken as inputs.
    assert [o.case_id for o in predictor.predict_paths([scans, out], out, progress=False).outcomes] == ["a", "b"]


def test_a_complete_case_made_with_another_model_or_options_is_predicted_again(predictor, scans, tmp_path, caplog):
    out = tmp_path / "out"
    predictor.predict_paths([scans], out, progress=False)
    other = Predictor.from_file(save_tiny_model(tmp_path / "other.safetensors", seed=1), config=CPU)
    again = other.predict_paths([scans], out, progress=False).outcomes
    assert [o.status for o in again] == ["done", "done"] and all("model" in o.message for o in again)
    assert "predicting again" in caplog.text
    assert json.loads((out / "a.json").read_text())["model"]["sha256"] == other.model_sha256
    assert [o.status for o in other.predict_paths([scans], out, progress=False).outcomes] == ["skipped", "skipped"]
    for option in ({"tta": True}, {"postprocess": PostprocessConfig(min_tumour_ml=3.0)},
                   {"postprocess": PostprocessConfig(keep_outside_lung=True)}):
        changed = Predictor.from_file(tmp_path / "other.safetensors", config=dataclasses.replace(CPU, **option))
        outcomes = changed.predict_paths([scans], out, progress=False).outcomes
        assert [o.status for o in outcomes] == ["done", "done"], option
        assert [o.status for o in changed.predict_paths([scans], out, progress=False).outcomes] == ["skipped"] * 2


def test_a_bad_case_is_reported_and_the_others_finish(predictor, scans, tmp_path):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    # Soft tissue everywhere (−5..−3 HU, so the intensity check passes): no lung to find.
    soft = (np.arange(16 * 16 * 8).reshape(16, 16, 8) % 3 - 5).astype(np.int16)
    write_volume(Volume(soft, Geometry((16, 16, 8), (2.0, 2.0, 4.0)), "image"), bad / "nolung.nii.gz")
    report = predictor.predict_paths([bad, scans / "a.nii.gz"], tmp_path / "out", progress=False)
    status = {o.case_id: (o.status, o.message) for o in report.outcomes}
    assert status["a"][0] == "done"
    assert status["broken"][0] == "failed" and "broken.nii.gz" in status["broken"][1]
    assert status["nolung"][0] == "failed" and "lung" in status["nolung"][1]
    assert not (tmp_path / "out" / "broken.json").exists()
    assert (tmp_path / "out" / "a.json").exists()


def test_predict_paths_runs_with_fewer_collections_and_puts_the_thresholds_back(predictor, scans, tmp_path):
    import gc

    from rrcunet import heap

    before = gc.get_threshold()
    seen = []
    predictor.predict_paths([scans / "a.nii.gz"], tmp_path / "out", progress=False,
                            on_case=lambda outcome: seen.append(gc.get_threshold()))
    assert seen
    if gc.isenabled() and before[0] > 0:  # (a collector that is off is left off)
        assert all(t[0] >= heap.FEWER_COLLECTIONS[0] for t in seen)
    assert gc.get_threshold() == before


def test_predict_case_runs_its_stages_in_the_heap_blocks(predictor, scans, tmp_path, monkeypatch):
    """(rrcunet.heap) Reading the CT and the lung region run without huge pages, the stages after
    the network in a heap-reuse block of their own; the network's pass and the preprocessing are in
    neither."""
    import contextlib

    from rrcunet import heap
    from rrcunet.inference import batch

    inside = []
    seen = {}

    def block(kind):
        @contextlib.contextmanager
        def enter(**_):
            inside.append(kind)
            try:
                yield
            finally:
                inside.remove(kind)
        return enter

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            seen[name] = sorted(inside)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(heap, "network_pass", block("reuse"))
    monkeypatch.setattr(heap, "no_huge_pages", block("no-thp"))
    monkeypatch.setattr(batch, "read_image", spy("read", batch.read_image))
    monkeypatch.setattr(type(predictor), "extract_lung", spy("lung", type(predictor).extract_lung))
    from rrcunet.inference import predictor as predictor_module

    monkeypatch.setattr(predictor_module, "preprocess", spy("preprocess", predictor_module.preprocess))
    monkeypatch.setattr(batch, "finish_and_write", spy("write", batch.finish_and_write))
    monkeypatch.setattr(type(predictor), "run_prepared", spy("network", type(predictor).run_prepared))
    report = predictor.predict_paths([scans / "a.nii.gz"], tmp_path / "out", progress=False, workers=0)
    assert [o.status for o in report.outcomes] == ["done"]
    assert seen == {"read": ["no-thp"], "lung": ["no-thp"], "preprocess": [], "network": [], "write": ["reuse"]}
