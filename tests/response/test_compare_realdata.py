"""A real no-change pair: NSCLC-Radiomics LUNG1-001 against a copy of itself moved rigidly by a known
transform and resampled. The response must be SD, the volume change within 5 %, and no new lesion
(issue 19); the registration must find the transform."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rrcunet.inference import InferenceConfig, Predictor
from rrcunet.io import Volume, read_image, write_volume
from rrcunet.response import compare_scans
from tests.conftest import realdata_path

ANGLE_DEG, SHIFT_MM = 3.0, (8.0, -6.0, 5.0)


def moved_copy(ct: Volume):
    """``ct`` with the patient turned by ANGLE_DEG about z (through the grid centre) and shifted by
    SHIFT_MM, resampled onto the same grid less 4 slices at each end (a rescan covers a slightly
    different range; no slab of padding air where the shift leaves the scanned range); and the
    transform used."""
    import SimpleITK as sitk

    img = ct.to_sitk()
    centre = img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in img.GetSize()])
    t = sitk.Euler3DTransform(centre, 0.0, 0.0, math.radians(ANGLE_DEG), SHIFT_MM)
    ref = img[:, :, 4:-4]
    # Resample pulls: output point p takes the input at t(p); the anatomy moves by t's inverse
    out = sitk.Resample(img, ref, t, sitk.sitkLinear, -1024.0, sitk.sitkInt16)
    return Volume.from_sitk(out, "image"), t


@pytest.mark.slow
def test_lung1_against_its_moved_copy_is_stable_disease(tmp_path):
    ct = read_image(realdata_path("nsclc-radiomics-lung1-001", "image"))
    moved, transform = moved_copy(ct)
    write_volume(moved, tmp_path / "moved.nii.gz")
    predictor = Predictor.from_file(None, config=InferenceConfig(device="cpu"))
    doc = compare_scans(realdata_path("nsclc-radiomics-lung1-001", "image"), tmp_path / "moved.nii.gz",
                        tmp_path / "out", predict=lambda scan, out: predictor.predict_paths([scan], out, progress=False))
    assert doc["recist"]["category"] == "SD"
    assert abs(doc["volumetric"]["change_pct"]) <= 5.0
    assert doc["recist"]["new_lesions"] == [] and not any(les["status"] == "new" for les in doc["lesions"])
    # the registration recovered the known motion: it maps baseline points where the anatomy went
    # (the inverse of the resampling transform), within 2 mm over the chest
    reg = doc["registration"]
    a = np.asarray(reg["affine_matrix"]).reshape(3, 3)
    c, t = np.asarray(reg["affine_center_mm"]), np.asarray(reg["affine_translation_mm"])
    inverse = transform.GetInverse()
    for offset in ([0, 0, 0], [80, 40, 30], [-80, -40, -30], [60, -60, 0]):
        p = np.asarray(transform.GetCenter()) + np.asarray(offset, float)
        assert np.linalg.norm(a @ (p - c) + c + t - np.asarray(inverse.TransformPoint(tuple(p)))) < 2.0
    assert reg["lung_dice_after"] > 0.9
