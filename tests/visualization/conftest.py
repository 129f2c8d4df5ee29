"""Synthetic chest-like CT + label volumes for the visualization tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rrcunet.io.volume import Geometry, Volume


def make_chest(shape: tuple[int, int, int] = (64, 64, 32), spacing: tuple[float, float, float] = (5.0, 5.0, 10.0),
               *, tumour_centre: tuple[float, float, float] = (0.30, 0.45, 0.55), tumour_radius_mm: float = 22.0,
               seed: int = 0) -> tuple[Volume, Volume]:
    """A CT-like phantom (HU) and its 0/1/2 label map, identity direction (i→L, j→P, k→S).

    Body ellipse, two ellipsoidal lungs (the patient's right lung at low i), a mediastinum, a spine
    posteriorly, and a spherical tumour in the right lung at ``tumour_centre`` (fractions of the grid).
    """
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    sx, sy, sz = spacing
    x = (np.arange(nx) + 0.5) / nx - 0.5
    y = (np.arange(ny) + 0.5) / ny - 0.5
    z = (np.arange(nz) + 0.5) / nz - 0.5
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    ct = np.full(shape, -1000.0)
    body = (X / 0.46) ** 2 + (Y / 0.34) ** 2 <= 1
    ct[body] = 40.0
    ct[body & ((X / 0.43) ** 2 + (Y / 0.31) ** 2 > 1)] = -100.0  # subcutaneous fat
    lungs = np.zeros(shape, dtype=bool)
    for cx in (-0.2, 0.2):
        lungs |= ((X - cx) / 0.15) ** 2 + ((Y + 0.01) / 0.24) ** 2 + ((Z + 0.05) / 0.42) ** 2 <= 1
    ct[lungs] = -850.0
    spine = ((X / 0.06) ** 2 + ((Y - 0.25) / 0.06) ** 2) <= 1
    ct[spine] = 600.0
    label = lungs.astype(np.uint8)
    centre_mm = np.array([(c * n) * s for c, n, s in zip(tumour_centre, shape, spacing)])
    ii, jj, kk = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    tumour = (ii - centre_mm[0]) ** 2 + (jj - centre_mm[1]) ** 2 + (kk - centre_mm[2]) ** 2 <= tumour_radius_mm ** 2
    tumour &= body
    ct[tumour] = 30.0
    label[tumour] = 2
    ct += rng.normal(0, 15, shape)
    geom = Geometry(shape, spacing, (-160.0, -160.0, -150.0))
    return Volume(ct.astype(np.int16), geom, "image", {"case": "synthetic"}), Volume(label, geom, "label")


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, *, min_bytes: int, max_bytes: int) -> np.ndarray:
    """The file is a complete PNG of plausible size, with no temporary file left beside it."""
    from matplotlib.image import imread

    path = Path(path)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert min_bytes <= len(data) <= max_bytes, len(data)
    assert not [p for p in path.parent.iterdir() if ".part" in p.name]
    return imread(path)


@pytest.fixture
def chest() -> tuple[Volume, Volume]:
    """(CT, label) phantom, 64×64×32 at 5×5×10 mm."""
    return make_chest()


@pytest.fixture
def chest_factory():
    """:func:`make_chest`, for tests that need another size or spacing."""
    return make_chest


@pytest.fixture
def png_check():
    """:func:`assert_png`."""
    return assert_png
