"""The precision rule of ``rrcunet predict`` and the bf16 fast path against float32.

Issue 23: the fast path (bf16 autocast, channels-last, the fused GroupNorm → PReLU kernel) is the
default on CPUs with native bf16 and must not change the masks in substance: tumour Dice ≥ 0.99
between the bf16 and float32 masks of the bundled model, on phantoms and on every real case in
``../shared/realdata``, and probabilities within the tolerances below. This compares two runs of
one model with each other; it does not score the model.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rrcunet.cli.cmd_predict import inference_config
from rrcunet.cli.main import build_parser
from rrcunet.experiments.real_ct import REAL_CASES, load_real_case
from rrcunet.inference import InferenceConfig, Predictor
from rrcunet.inference import predictor as predictor_module
from rrcunet.inference.predictor import resolve_precision
from rrcunet.synthetic import PhantomConfig, generate_phantom

#: |p_bf16 - p_fp32| over all classes and voxels: the 99.9th percentile, and the largest difference.
#: Measured on the real cases: 0.003-0.006 and 0.03-0.12.
PROB_P999 = 0.02
PROB_MAX = 0.25
MIN_DICE = 0.99

CPU = torch.device("cpu")


@pytest.mark.parametrize(("native", "kernel", "given", "expected"), [
    (True, True, {}, (True, True)),
    (True, False, {}, (True, True)),
    (False, True, {}, (False, True)),
    (False, False, {}, (False, False)),
    (True, True, {"bf16": False}, (False, True)),
    (True, False, {"bf16": False}, (False, False)),
    (False, False, {"bf16": True}, (True, True)),
    (True, True, {"channels_last": False}, (True, False)),
    (False, False, {"channels_last": True}, (False, True)),
])
def test_the_default_precision_follows_the_cpu(monkeypatch, native, kernel, given, expected):
    monkeypatch.setattr(predictor_module, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(predictor_module, "fused_kernel_available", lambda: kernel)
    config = resolve_precision(InferenceConfig(device="cpu", **given), CPU)
    assert (config.bf16, config.channels_last) == expected


def test_a_gpu_defaults_to_float32(monkeypatch):
    monkeypatch.setattr(predictor_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(predictor_module, "fused_kernel_available", lambda: True)
    config = resolve_precision(InferenceConfig(device="cpu"), torch.device("cuda"))
    assert (config.bf16, config.channels_last) == (False, False)


@pytest.mark.parametrize(("argv", "expected"), [
    ([], (None, None)),
    (["--fp32"], (False, None)),
    (["--bf16"], (True, None)),
    (["--bf16", "--no-channels-last"], (True, False)),
    (["--channels-last"], (None, True)),
])
def test_precision_flags(argv, expected, tmp_path):
    args = build_parser().parse_args(["predict", "ct.nii.gz", "-o", str(tmp_path), *argv])
    config = inference_config(args)
    assert (config.bf16, config.channels_last) == expected


def test_bf16_and_fp32_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "ct.nii.gz", "-o", str(tmp_path), "--bf16", "--fp32"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.fixture(scope="module")
def predictors():
    """float32 as before issue 23 (contiguous, eager) and bf16 channels-last (the fast path)."""
    fp32 = Predictor.from_file(None, config=InferenceConfig(device="cpu", bf16=False, channels_last=False))
    bf16 = Predictor.from_file(None, config=InferenceConfig(device="cpu", bf16=True))
    assert (fp32.config.bf16, fp32.config.channels_last, bf16.config.bf16, bf16.config.channels_last) == (
        False, False, True, True)
    return fp32, bf16


@pytest.fixture(scope="module")
def float32_layouts(predictors):
    """float32 contiguous (eager) and float32 channels-last (through the fused kernel where it is built:
    the float32 default since issue 23)."""
    fp32_cl = Predictor.from_file(None, config=InferenceConfig(device="cpu", bf16=False, channels_last=True))
    return predictors[0], fp32_cl


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _compare(predictors, ct, lung=None, *, min_dice=MIN_DICE, p999=PROB_P999, largest=PROB_MAX) -> None:
    fp32, bf16 = (p.predict_volume(ct, lung, return_probabilities=True) for p in predictors)
    a, b = np.asarray(fp32.labels.array), np.asarray(bf16.labels.array)
    assert _dice(a == 2, b == 2) >= min_dice, "tumour"
    assert _dice(a >= 1, b >= 1) >= min_dice, "lung"
    diff = np.abs(np.asarray(fp32.probabilities.array) - np.asarray(bf16.probabilities.array))
    assert np.quantile(diff, 0.999) <= p999
    assert diff.max() <= largest


@pytest.mark.parametrize("seed", [3, 4])
def test_bf16_masks_match_float32_on_phantoms(predictors, seed):
    phantom = generate_phantom(seed, config=PhantomConfig.preset("small"))
    _compare(predictors, phantom.image)


@pytest.mark.parametrize("folder", sorted(REAL_CASES))
def test_bf16_masks_match_float32_on_the_real_cases(predictors, realdata, folder):
    case = load_real_case(realdata(folder).parent, folder)
    _compare(predictors, case.ct)


#: float32 channels-last (fused kernel) against float32 contiguous (eager): only the summation order of
#: the GroupNorm statistics differs. Measured on the five real cases: no voxel's label differed, and the
#: probabilities by at most 1.6e-6 to 3.7e-6 (docs/inference.md, "Precision and the fast path").
FP32_MIN_DICE = 0.999
FP32_PROB_MAX = 1e-4


@pytest.mark.parametrize("seed", [3])
def test_float32_channels_last_matches_float32_contiguous_on_a_phantom(float32_layouts, seed):
    phantom = generate_phantom(seed, config=PhantomConfig.preset("small"))
    _compare(float32_layouts, phantom.image, min_dice=FP32_MIN_DICE, p999=FP32_PROB_MAX, largest=FP32_PROB_MAX)


@pytest.mark.parametrize("folder", sorted(REAL_CASES))
def test_float32_channels_last_matches_float32_contiguous_on_the_real_cases(float32_layouts, realdata, folder):
    """Issue 23: "fp32 results are unchanged" by the float32 default's move to channels-last."""
    case = load_real_case(realdata(folder).parent, folder)
    _compare(float32_layouts, case.ct, min_dice=FP32_MIN_DICE, p999=FP32_PROB_MAX, largest=FP32_PROB_MAX)


def test_the_prediction_json_records_the_precision_used(predictors, tmp_path):
    from rrcunet.inference.batch import predictor_settings

    fp32, bf16 = predictors
    assert predictor_settings(fp32)["bf16"] is False and predictor_settings(bf16)["bf16"] is True
    assert dataclasses.asdict(bf16.config)["channels_last"] is True
