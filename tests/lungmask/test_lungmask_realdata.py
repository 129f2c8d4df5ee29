"""The classical extractor on real CT: NSCLC-Radiomics LUNG1-001 and the cropped IBSI phantom.

Read in place from ../shared/realdata (skipped when absent). The manual Lung-Left/Lung-Right
contours of LUNG1-001 exclude the tumour, so the mask is compared with them directly.
"""

from __future__ import annotations

import numpy as np
import pytest

from rrcunet.io import read_image, read_rtstruct
from rrcunet.lungmask import extract_lungs
from tests.conftest import realdata_path

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_lung1_001_dice_against_manual_lungs():
    root = realdata_path("nsclc-radiomics-lung1-001")
    ct = read_image(root / "image")
    rois = read_rtstruct(root / "mask_rtstruct" / "1-1.dcm", ct, rois=["Lung-Left", "Lung-Right"])
    manual = (rois["Lung-Left"].array > 0) | (rois["Lung-Right"].array > 0)
    mask = extract_lungs(ct)
    assert mask.geometry == ct.geometry
    assert _dice(mask.array > 0, manual) >= 0.95


def test_ibsi_cropped_field_of_view_does_not_crash():
    root = realdata_path("ibsi-ct-radiomics-phantom", "nifti")
    ct = read_image(root / "image" / "phantom.nii.gz")
    gtv = read_image(root / "mask" / "mask.nii.gz", kind="label").array > 0
    mask = extract_lungs(ct).array > 0
    assert mask.shape == ct.shape
    # the lung is cut by the field of view on several sides; it must still be found...
    assert mask.sum() * ct.geometry.voxel_volume_ml > 200.0
    # ...and must touch the tumour it surrounds (how much of it is included is reported in docs)
    assert (mask & gtv).any()
