"""Metrics on a real NSCLC tumour mask (IBSI CT radiomics phantom, 204×201×60 at 0.977×0.977×3 mm):
properties that follow from geometry, and agreement with MONAI on a large irregular surface."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

from rrcunet.evaluation import evaluate_case
from tests.conftest import realdata_path

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def tumour():
    import SimpleITK as sitk

    from rrcunet.io.volume import Volume

    path = realdata_path("ibsi-ct-radiomics-phantom", "nifti", "mask", "mask.nii.gz")
    vol = Volume.from_sitk(sitk.ReadImage(str(path)), kind="label")
    labels = (vol.array > 0).astype(np.uint8) * 2  # the GTV as label 2 (tumour)
    return labels, vol.spacing


def _shift_one_slice(labels: np.ndarray) -> np.ndarray:
    out = np.zeros_like(labels)
    out[:, :, 1:] = labels[:, :, :-1]
    return out


def test_one_slice_shift_on_a_real_tumour(tumour):
    gt, spacing = tumour
    assert not gt[:, :, 0].any() and not gt[:, :, -1].any()  # the GTV does not touch the z borders
    pred = _shift_one_slice(gt)
    m = evaluate_case(pred, gt, spacing, tolerance_mm=spacing[2])
    # |pred| = |gt|, so Dice = 2|G ∩ S(G)| / 2|G| = overlap fraction; counted here with plain numpy.
    g = gt == 2
    assert m.tumour_dice == pytest.approx(np.count_nonzero(g & (pred == 2)) / np.count_nonzero(g))
    # A translation by one slice maps each surface voxel onto a surface voxel exactly s_z away, so no
    # surface distance exceeds s_z = 3 mm: HD95 <= 3 mm and surface Dice at τ = s_z is 1.
    assert m.tumour_hd95_mm <= spacing[2] + 1e-9
    assert m.tumour_surface_dice == 1.0


def test_real_tumour_matches_monai(tumour):
    gt, spacing = tumour
    pred = _shift_one_slice(gt)
    pred = np.roll(pred, 3, axis=0)  # plus 3 voxels in x: a realistic boundary error
    ours = evaluate_case(pred, gt, spacing)
    p = torch.from_numpy(pred == 2)[None, None].float()
    g = torch.from_numpy(gt == 2)[None, None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, g, percentile=95, spacing=spacing).item()
        nsd = compute_surface_dice(p, g, class_thresholds=[2.0], spacing=spacing).item()
    assert ours.tumour_hd95_mm == pytest.approx(hd, rel=1e-4)
    assert ours.tumour_surface_dice == pytest.approx(nsd, rel=1e-4)
