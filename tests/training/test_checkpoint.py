"""Model files and training checkpoints: exact round trips, and no pickle ever."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from rrcunet.errors import InputError
from rrcunet.models import build_model
from rrcunet.preprocessing import PreprocessConfig
from rrcunet.training.checkpoint import flatten_optimizer_state, load_checkpoint, rng_state_bytes, restore_rng_state, save_checkpoint, unflatten_optimizer_state
from rrcunet.models.model_file import load_model, read_model_meta, save_model, make_model_meta

KW = {"base_filters": 2, "levels": 2, "norm_groups": 1, "dropout": 0.0}


def _trained(steps: int = 2):
    torch.manual_seed(0)
    net = build_model("rrcunet", **KW)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        net(torch.randn(1, 2, 8, 8, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return net, opt


def test_model_file_round_trip_is_bit_identical(tmp_path):
    net, _ = _trained()
    pcfg = PreprocessConfig(target_shape=(32, 32, 16))
    path = save_model(tmp_path / "m.safetensors", net, model_name="rrcunet", model_kwargs=dict(KW, checkpointing=True),
                      preprocess_config=pcfg, extra={"epoch": 7})
    back, meta = load_model(path)
    for (k, a), (k2, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert meta.model_name == "rrcunet" and meta.task == "tumour"
    assert meta.labels == {0: "background", 1: "lung", 2: "tumour"}
    assert "checkpointing" not in meta.model_kwargs  # training-only option dropped
    assert meta.preprocess == pcfg and meta.extra == {"epoch": 7}
    assert read_model_meta(path) == meta
    assert not back.training
    x = torch.randn(1, 2, 8, 8, 4)
    net.eval()
    assert torch.equal(net(x), back(x))


def test_checkpoint_round_trip_restores_optimizer_exactly(tmp_path):
    net, opt = _trained()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    opt.step()
    sched.step()
    meta = make_model_meta(model_name="rrcunet", model_kwargs=KW)
    path = save_checkpoint(tmp_path / "c.safetensors", model=net, optimizer=opt, scheduler=sched, scaler=None,
                           epoch=3, config={"a": 1}, trainer_state={"history": [{"epoch": 1}]},
                           rng=[rng_state_bytes(), b"rank1"], model_meta=meta)
    ck = load_checkpoint(path)
    assert ck.epoch == 3 and ck.meta["config"] == {"a": 1} and ck.meta["trainer"]["history"] == [{"epoch": 1}]
    assert ck.rng[1] == b"rank1"
    torch.manual_seed(1)
    net2 = build_model("rrcunet", **KW)
    opt2 = torch.optim.Adam(net2.parameters(), lr=5.0)
    net2.load_state_dict(ck.model)
    opt2.load_state_dict(unflatten_optimizer_state(ck.optimizer, ck.meta["optimizer"], opt2))
    sd1, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd1["param_groups"] == sd2["param_groups"]
    assert sd1["state"].keys() == sd2["state"].keys()
    for pid in sd1["state"]:
        for name, value in sd1["state"][pid].items():
            assert torch.equal(value, sd2["state"][pid][name]), (pid, name)
    # one more identical step from both
    x = torch.randn(1, 2, 8, 8, 4)
    for n, o in ((net, opt), (net2, opt2)):
        n(x).square().mean().backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    # a training checkpoint is also a loadable model
    model, m = load_model(path)
    assert m.model_name == "rrcunet"
    assert all(torch.equal(v, ck.model[k]) for k, v in model.state_dict().items())


def test_flat_optimizer_state_is_tensors_plus_json():
    _, opt = _trained()
    tensors, data = flatten_optimizer_state(opt.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    json.dumps(data)  # plain JSON
    assert any(k.endswith(".exp_avg_sq") for k in tensors)


def test_rng_state_round_trip():
    import random

    import numpy as np

    blob = rng_state_bytes()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(blob)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and (first[1] == again[1]).all() and first[2] == again[2]


class _Payload:
    """Unpickling this creates ``marker`` (stands for arbitrary code execution)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("kind", ["pickle", "torch_save"])
def test_pickle_payload_is_refused_and_never_runs(tmp_path, kind):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "model.safetensors"
    if kind == "pickle":
        evil.write_bytes(pickle.dumps({"weight": _Payload(str(marker))}))
    else:
        torch.save({"state_dict": {"w": torch.zeros(2)}, "evil": _Payload(str(marker))}, evil)
    assert not marker.exists()
    with pytest.raises(InputError, match=r"not a readable safetensors file .*never unpickles"):
        load_model(evil)
    with pytest.raises(InputError, match="not a readable safetensors file"):
        load_checkpoint(evil)
    assert not marker.exists()
    # sanity: the payload is live, so the test can fail for the reason it exists
    pickle.loads(pickle.dumps(_Payload(str(marker))))
    assert marker.exists()


def test_foreign_safetensors_and_wrong_weights_are_refused(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(InputError, match=r"format None, expected 'rrcunet-model'"):
        load_model(foreign)
    net, _ = _trained(0)
    path = save_model(tmp_path / "m.safetensors", net, model_name="rrcunet", model_kwargs=dict(KW, base_filters=4))
    with pytest.raises(InputError, match=r"weights do not fit the network: wrong shape"):
        load_model(path)
