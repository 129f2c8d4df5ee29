"""Untrusted files: model files and checkpoints never execute code, corrupt ones are refused with a
clear error, a model file cannot make rrcunet allocate what its weights do not hold, and paths
written in a dataset description cannot leave the dataset folder.

Threat model: a user downloads a "checkpoint" or a dataset from someone else. Loading it must not
run code (a pickle ``__reduce__`` payload), must not crash or exhaust memory, and must end in one
:class:`~rrcunet.errors.InputError` naming the file.
"""

from __future__ import annotations

import ast
import copy
import json
import pickle
import struct
from pathlib import Path

import pytest

from rrcunet.cli.main import main
from rrcunet.errors import InputError, RRcUNetError
from tests.reliability.rel_helpers import (
    REPO_ROOT,
    chest_ct,
    run_python,
    run_rrcunet,
    temp_files,
    tiny_model,
    write_pickle_payload,
)

NEVER_UNPICKLES = r"not a readable safetensors file .*never unpickles"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory) -> Path:
    from rrcunet.io import write_volume

    return write_volume(chest_ct(), tmp_path_factory.mktemp("ct") / "chest.nii.gz")


# ---------------------------------------------------------------------------------------------
# pickle payloads
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pickle", "torch_save"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_pickle_payload_in_a_checkpoint_is_refused_and_never_runs(tmp_path, kind, suffix):
    from rrcunet.inference import InferenceConfig, Predictor
    from rrcunet.training.checkpoint import load_checkpoint
    from rrcunet.models.model_file import load_model, read_model_meta

    marker = tmp_path / "PWNED"
    evil = write_pickle_payload(tmp_path / f"evil{suffix}", marker, kind)
    with pytest.raises(InputError, match=NEVER_UNPICKLES):
        load_model(evil)
    with pytest.raises(InputError, match="not a readable safetensors file"):
        load_checkpoint(evil)
    with pytest.raises(InputError, match="not a readable safetensors file"):
        read_model_meta(evil)
    with pytest.raises(InputError, match=NEVER_UNPICKLES):
        Predictor.from_file(evil, config=InferenceConfig(device="cpu"))
    assert not marker.exists(), "the pickle payload ran"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["pickle", "torch_save"])
def test_the_payload_is_live(tmp_path, kind):
    """Control: the same file, loaded the unsafe way, does run the payload, so the tests above can fail."""
    import torch

    marker = tmp_path / "PWNED"
    evil = write_pickle_payload(tmp_path / "evil.pt", marker, kind)
    if kind == "pickle":
        pickle.loads(evil.read_bytes())
    else:
        torch.load(evil, weights_only=False)
    assert marker.exists()
    # and the safe torch loader refuses it without running it
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(evil, weights_only=True)
    assert not marker.exists()


def test_cli_predict_refuses_a_pickle_model_in_one_line(tmp_path, ct_file, capsys):
    marker = tmp_path / "PWNED"
    evil = write_pickle_payload(tmp_path / "model.pt", marker, "torch_save")
    out = tmp_path / "out"
    code = main(["predict", str(ct_file), "-o", str(out), "--model", str(evil), "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rrcunet predict: error: ")
    assert "never unpickles" in lines[0] and str(evil) in lines[0]
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_cli_subprocess_pickle_model_no_traceback_no_payload(tmp_path, ct_file):
    marker = tmp_path / "PWNED"
    evil = write_pickle_payload(tmp_path / "model.ckpt", marker, "pickle")
    out = tmp_path / "out"
    proc = run_rrcunet(["predict", ct_file, "-o", out, "--model", evil, "--device", "cpu", "--no-progress"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "never unpickles" in proc.stderr.strip().splitlines()[-1]
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def test_no_unsafe_deserialisation_anywhere_in_the_package():
    """A static guard: no module of rrcunet can unpickle (or eval) what a user hands it.

    Refused: importing pickle / dill / cloudpickle / joblib / marshal / shelve; ``torch.load``
    without ``weights_only=True``; ``numpy.load(allow_pickle=True)``; ``torch.jit.load``;
    ``pandas.read_pickle``; ``yaml.load`` / ``yaml.unsafe_load``; the ``eval`` / ``exec`` builtins.
    """
    banned_modules = {"pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "_pickle"}
    problems = []
    files = sorted((REPO_ROOT / "src" / "rrcunet").rglob("*.py"))
    assert len(files) > 20
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(REPO_ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.split(".")[0] in banned_modules]
                if bad:
                    problems.append(f"{rel}:{node.lineno} imports {bad}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in banned_modules:
                problems.append(f"{rel}:{node.lineno} imports from {node.module}")
        for call in _calls(tree):
            name = _dotted(call.func)
            where = f"{rel}:{call.lineno} {name}(...)"
            if name.endswith("torch.load"):
                wo = _kw(call, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where} without weights_only=True")
            elif name.endswith(("np.load", "numpy.load")):
                ap = _kw(call, "allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    problems.append(f"{where} with allow_pickle")
            elif name.endswith(("jit.load", "read_pickle", "yaml.unsafe_load")) or (
                    isinstance(call.func, ast.Name) and call.func.id in ("eval", "exec")):
                problems.append(where)
            elif name.endswith("yaml.load") and _kw(call, "Loader") is None:
                problems.append(f"{where} without a safe Loader")
    assert not problems, "unsafe deserialisation:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# corrupt safetensors files
# ---------------------------------------------------------------------------------------------
def _st(header: object, data: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def _rrcunet_st(meta_text: str) -> bytes:
    return _st({"__metadata__": {"format": "rrcunet-model", "format_version": "1", "rrcunet": meta_text}})


CORRUPT = {
    # name: (bytes or a function of the valid file's bytes, message)
    "empty file": (b"", "header too small"),
    "5 bytes": (b"\x01\x02\x03\x04\x05", "header too small"),
    "header length beyond the file": (struct.pack("<Q", 10_000) + b"{}", "invalid header length"),
    "header length 2**63": (struct.pack("<Q", 2**63 - 1) + b"{}", "header too large"),
    "header not JSON": (struct.pack("<Q", 9) + b"{not json", "invalid JSON in header"),
    "header a JSON list": (_st([1, 2]), "invalid JSON in header"),
    "file cut at 60 %": (lambda raw: raw[: int(len(raw) * 0.6)], "invalid header length"),
    "file cut by 1 byte": (lambda raw: raw[:-1], "not a readable safetensors file"),
    "tensor beyond the data": (_st({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}, b"\0" * 8),
                               "not fully covered"),
    "unknown dtype": (_st({"w": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
                      "unknown variant"),
    "shape and offsets disagree": (_st({"w": {"dtype": "F32", "shape": [10], "data_offsets": [0, 8]}}, b"\0" * 8),
                                   "invalid shape, data type, or offset"),
    "negative dimension": (_st({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8),
                           "invalid value: integer `-2`"),
    "metadata not a string": (_st({"__metadata__": {"format": 5}}), "invalid JSON in header"),
    "rrcunet metadata not JSON": (_rrcunet_st("{bad"), "metadata header 'rrcunet' missing or not JSON"),
    "rrcunet metadata a list": (_rrcunet_st("[1]"), "is not a JSON object"),
    "rrcunet metadata empty": (_rrcunet_st("{}"), "malformed model description, missing or wrong field 'model_name'"),
    "foreign safetensors": (_st({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
                            "format None, expected 'rrcunet-model'"),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_corrupt_safetensors_is_refused_clearly(tmp_path, model_file, name):
    from rrcunet.models.model_file import load_model

    data, message = CORRUPT[name]
    if callable(data):
        data = data(model_file.read_bytes())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data)
    with pytest.raises(InputError, match=message) as info:
        load_model(bad)
    assert str(bad) in str(info.value)


def _edited_model(src: Path, dst: Path, *, merge: bool = True, **changes) -> Path:
    """A copy of model file ``src`` (same tensors) whose JSON description has ``changes`` (dict values
    merged into the existing ones unless ``merge=False``)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as fh:
        header = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    meta = json.loads(header["rrcunet"])
    for key, value in changes.items():
        if merge and isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    save_file(tensors, str(dst), metadata=dict(header, rrcunet=json.dumps(meta)))
    return dst


BAD_DESCRIPTIONS = {
    "unknown model name": ({"model_name": "nope"}, "cannot build model 'nope'"),
    "unknown constructor option": ({"model_kwargs": {"evil": 1}}, "has no option\\(s\\) evil"),
    "option of the wrong type": ({"model_kwargs": {"base_filters": "x"}}, "base_filters='x' is invalid"),
    "weights of another network": ({"model_kwargs": {"base_filters": 4}}, "weights do not fit the network"),
    "labels not a mapping": ({"labels": [1]}, "malformed model description"),
    "unknown task": ({"task": "brain"}, "model task 'brain' is not one of"),
    "preprocess of the wrong type": ({"preprocess": {"target_shape": "x"}}, "target_shape must be"),
    "unknown preprocess option": ({"preprocess": {"evil": 3}}, "unknown config key 'preprocess.evil'"),
}


@pytest.mark.parametrize("name", list(BAD_DESCRIPTIONS))
def test_model_file_with_a_bad_description_is_refused(tmp_path, model_file, name):
    from rrcunet.inference import InferenceConfig, Predictor

    changes, message = BAD_DESCRIPTIONS[name]
    bad = _edited_model(model_file, tmp_path / "bad.safetensors", **copy.deepcopy(changes))
    with pytest.raises(RRcUNetError, match=message):
        Predictor.from_file(bad, config=InferenceConfig(device="cpu"))


@pytest.mark.parametrize("labels", [{"0": "background", "1": "lung"}, {str(i): f"c{i}" for i in range(5)}])
def test_model_file_whose_labels_do_not_match_the_network_is_refused(tmp_path, model_file, labels):
    from rrcunet.inference import InferenceConfig, Predictor

    bad = _edited_model(model_file, tmp_path / "bad.safetensors", merge=False, labels=labels)
    with pytest.raises(InputError, match=f"names {len(labels)} classes .* but the network has 3 output channels"):
        Predictor.from_file(bad, config=InferenceConfig(device="cpu"))


def test_cli_predict_with_a_truncated_model_file(tmp_path, model_file, ct_file, capsys):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(model_file.read_bytes()[:-100])
    out = tmp_path / "out"
    code = main(["predict", str(ct_file), "-o", str(out), "--model", str(bad), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("rrcunet predict: error: ") and str(bad) in err
    assert not out.exists() or not any(out.iterdir())


_HUGE_MODEL_SCRIPT = r"""
import json, resource, sys, time
from safetensors import safe_open
from safetensors.torch import save_file
from rrcunet.errors import InputError
from rrcunet.models.model_file import load_model
src, dst = sys.argv[1], sys.argv[2]
with safe_open(src, framework="pt") as fh:
    header = fh.metadata(); tensors = {k: fh.get_tensor(k) for k in fh.keys()}
meta = json.loads(header["rrcunet"])
meta["model_kwargs"].update(base_filters=1024, levels=5)   # ~7 GB of float32 weights claimed
save_file(tensors, dst, metadata=dict(header, rrcunet=json.dumps(meta)))
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
vm = int([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize")][0]) * 1024
limit = vm + (1536 << 20)   # at most 1.5 GiB more address space: a real allocation fails fast, not the machine
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    load_model(dst)
    outcome = "loaded"
except InputError as exc:
    outcome = "InputError: " + str(exc)
except BaseException as exc:
    outcome = type(exc).__name__ + ": " + str(exc)
grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
print(json.dumps({"outcome": outcome[:400], "grown_mb": grown_mb}))
"""


@pytest.mark.slow
def test_model_file_claiming_a_huge_network_is_refused_before_allocating(tmp_path, model_file):
    proc = run_python(_HUGE_MODEL_SCRIPT, str(model_file), str(tmp_path / "huge.safetensors"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # refused by the architecture bounds (base 8192 > 4096), or, within them, by the weights' shapes
    assert result["outcome"].startswith("InputError") and ("do not fit" in result["outcome"]
                                                          or "expected an integer <=" in result["outcome"]), result
    assert result["grown_mb"] < 200, result


# ---------------------------------------------------------------------------------------------
# paths in dataset descriptions
# ---------------------------------------------------------------------------------------------
def test_manifest_symlink_leaving_the_dataset_root_is_refused(tmp_path):
    """A manifest path that is a symbolic link to a file outside the root is refused like ``../``."""
    from rrcunet.data.manifest import CaseEntry, DatasetManifest, make_split

    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    secret = tmp_path / "secret.nii.gz"
    secret.write_bytes(b"outside")
    (root / "images" / "a.nii.gz").symlink_to(secret)
    cases = (CaseEntry(case_id="a", image="images/a.nii.gz"),)
    DatasetManifest(name="x", cases=cases, split=make_split(list(cases))).save(root)
    with pytest.raises(InputError, match="escapes the dataset root"):
        DatasetManifest.load(root)


@pytest.mark.parametrize("where", ["dataset object image", "dataset object label", "v1 training list"])
def test_nnunet_dataset_json_paths_cannot_leave_src(tmp_path, monkeypatch, where):
    from rrcunet.data.importers import base as import_base
    from rrcunet.data.importers import import_dataset
    from tests.data.test_import import make_nnunet_v2, threshold_extractor

    monkeypatch.setattr(import_base, "extract_lung_region", threshold_extractor)
    src = make_nnunet_v2(tmp_path / "Dataset042_Lung", {"lung": 1, "tumour": 2}, n=1)
    data = json.loads((src / "dataset.json").read_text())
    escape = "../outside/case01_0000.nii.gz"
    if where == "v1 training list":
        data["training"] = [{"image": "./imagesTr/case01.nii.gz", "label": "./labelsTr/../../" + "x.nii.gz"}]
    else:
        item = {"images": ["imagesTr/case01_0000.nii.gz"], "label": "labelsTr/case01.nii.gz"}
        if where.endswith("image"):
            item["images"] = [escape]
        else:
            item["label"] = escape
        data["dataset"] = {"case01": item}
    (src / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="escapes the dataset folder"):
        import_dataset("nnunet", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_case_names_in_dataset_json_cannot_place_files_outside_the_output(tmp_path, monkeypatch):
    """An nnU-Net v2 case named ``../../evil`` is imported under a file-safe id inside DATASET_DIR."""
    from rrcunet.data.importers import base as import_base
    from rrcunet.data.importers import import_dataset
    from tests.data.test_import import make_nnunet_v2, threshold_extractor

    monkeypatch.setattr(import_base, "extract_lung_region", threshold_extractor)
    src = make_nnunet_v2(tmp_path / "src" / "Dataset042_Lung", {"lung": 1, "tumour": 2}, n=1)
    data = json.loads((src / "dataset.json").read_text())
    data["dataset"] = {"../../../evil": {"images": ["imagesTr/case01_0000.nii.gz"], "label": "labelsTr/case01.nii.gz"}}
    (src / "dataset.json").write_text(json.dumps(data))
    out = tmp_path / "a" / "b" / "out"
    before = {p for p in tmp_path.rglob("*")}
    manifest = import_dataset("nnunet", src, out)
    (case,) = manifest.cases
    assert "/" not in case.case_id and ".." not in case.case_id
    created = {p for p in tmp_path.rglob("*")} - before
    assert created and all(out in p.parents or p == out or p in out.parents for p in created), sorted(created)
    assert not temp_files(out)
