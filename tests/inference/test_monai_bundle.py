"""``rrcunet export --format monai-bundle``: MONAI's own bundle API (``monai.bundle.ConfigParser``,
``monai.bundle.run``) loads the bundle and runs it on a phantom; on the network grid its labels
match rrcunet's own preprocessing + network (tumour Dice ≥ 0.99, labels ≥ 99 % equal)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rrcunet.cli.main import main
from rrcunet.errors import InputError
from rrcunet.inference import InferenceConfig, Predictor
from rrcunet.inference.bundled import bundled_model_path
from rrcunet.io import write_volume
from rrcunet.lungmask import ClassicalLungExtractor
from rrcunet.preprocessing import preprocess
from rrcunet.synthetic import PhantomConfig, generate_phantom

pytestmark = pytest.mark.slow


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    out = root / "rrcunet_bundle"
    assert main(["export", "--format", "monai-bundle", "-o", str(out)]) == 0
    ph = generate_phantom(21, config=PhantomConfig.preset("small"))
    lung = ClassicalLungExtractor()(ph.image)
    data = out / "data"
    data.mkdir()
    write_volume(ph.image, data / "case_ct.nii.gz")
    write_volume(lung, data / "case_lung.nii.gz")
    return out, ph, lung


def test_bundle_layout_and_metadata(bundle):
    out, _, _ = bundle
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.ts", "docs/README.md"):
        assert (out / rel).is_file(), rel
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 2
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lung", "2": "tumour"}
    assert meta["version"] and meta["monai_version"]


def test_monai_config_parser_matches_rrcunet_on_the_network_grid(bundle):
    from monai.bundle import ConfigParser

    out, ph, lung = bundle
    parser = ConfigParser()
    parser.read_config(str(out / "configs" / "inference.json"))
    parser["bundle_root"] = str(out)
    pre = parser.get_parsed_content("preprocessing")
    sample = pre({"image": str(out / "data" / "case_ct.nii.gz"), "lung": str(out / "data" / "case_lung.nii.gz")})
    x_monai = torch.as_tensor(sample["image"]).float()
    net = parser.get_parsed_content("network")
    with torch.inference_mode():
        labels_monai = net(x_monai[None])[0].argmax(0).numpy()

    predictor = Predictor.from_file(None, config=InferenceConfig(device="cpu"))
    case = preprocess(ph.image, lung, config=predictor.preprocess_config(ph.image))
    x_ours = torch.as_tensor(case.image).float()
    assert x_monai.shape == x_ours.shape
    assert float((x_monai - x_ours).abs().max()) < 1e-3  # the same network input
    labels_ours = predictor.run_network(case.image).argmax(0).numpy()
    assert (labels_ours == 2).sum() > 0, "the phantom's tumour must be found for the comparison to mean something"
    assert _dice(labels_monai == 2, labels_ours == 2) >= 0.99
    assert np.mean(labels_monai == labels_ours) >= 0.99


def test_monai_bundle_run_writes_label_maps(bundle):
    from monai.bundle import run

    out, _, _ = bundle
    run(config_file=str(out / "configs" / "inference.json"), bundle_root=str(out))
    assert torch.is_grad_enabled(), "the bundle must not switch autograd off in the caller's process"
    written = list((out / "eval").glob("*seg*.nii.gz"))
    assert len(written) == 1


def test_export_refuses_an_existing_bundle_and_a_lung_model(bundle, tmp_path, capsys):
    out, _, _ = bundle
    assert main(["export", "--format", "monai-bundle", "-o", str(out)]) == 2
    assert "already holds a MONAI bundle" in capsys.readouterr().err
    assert main(["export", "--format", "monai-bundle", "--model", str(bundled_model_path("lung")),
                 "-o", str(tmp_path / "b")]) == 2
    assert "is a 'lung' model" in capsys.readouterr().err
    with pytest.raises(InputError):
        from rrcunet.inference.monai_bundle import export_monai_bundle

        export_monai_bundle(out)
