"""The interactive viewer page (NiiVue): written with the CT, overlays and lesion list; opened in a
real headless Chromium, which must log no console error, draw a non-blank canvas and show the
tumour colour where the geometry puts the lesion. Skips, naming Chromium, where it is absent."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from rrcunet.cli.main import main
from rrcunet.errors import InputError
from rrcunet.inference.measure import measure_lesions
from rrcunet.synthetic import PhantomConfig, generate_phantom
from rrcunet.visualization.viewer import NIIVUE_FILE, SIDE_PX, niivue_source, write_viewer_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1000, 700)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    ph = generate_phantom(5, config=PhantomConfig.preset("small"))
    lesions = [x.to_dict() for x in measure_lesions(np.asarray(ph.label.array), ph.label.geometry)]
    assert lesions
    out = tmp_path_factory.mktemp("viewer") / "case_view.html"
    return write_viewer_page(out, ph.image, ph.label, title="phantom 5", lesions=lesions), lesions


def test_page_holds_the_volumes_lesions_and_viewer(page):
    result, lesions = page
    text = result.path.read_text()
    assert text.count('data-lesion="') == len(lesions)
    assert '"ct": "' in text and '"tumour": "' in text and '"lung": "' in text
    script = result.path.parent / NIIVUE_FILE
    assert script.read_bytes() == niivue_source().read_bytes()
    assert "cropped from 128×128×64" in (result.reduced or "")
    assert result.n_bytes == result.path.stat().st_size < 2_000_000


def test_page_lists_the_quality_flags_and_the_uncertainty_switch(tmp_path):
    ph = generate_phantom(5, config=PhantomConfig.preset("small"))
    unc = ph.image.with_array(np.zeros(ph.image.shape, np.float32))
    flags = [{"code": "lung_volume", "reason": "the lung region is 612 mL, outside the adult range <1500-9000 mL>"}]
    text = write_viewer_page(tmp_path / "v.html", ph.image, ph.label, title="x", flags=flags,
                             uncertainty=unc).path.read_text()
    assert "Check first" in text and "<b>lung_volume</b>" in text and "&lt;1500-9000 mL&gt;" in text
    assert 'id="uncertainty"' in text
    plain = write_viewer_page(tmp_path / "p.html", ph.image, ph.label, title="x").path.read_text()
    assert "Check first" not in plain and 'id="uncertainty"' not in plain


def test_grids_must_match(page, tmp_path):
    ph = generate_phantom(6, config=PhantomConfig.preset("small"))
    other = generate_phantom(7, config=PhantomConfig.preset("small", matrix=96))
    with pytest.raises(InputError, match="a viewer page needs both on one grid"):
        write_viewer_page(tmp_path / "x.html", ph.image, other.label, title="x")


def test_view_command_needs_a_prediction_folder(tmp_path, capsys):
    assert main(["view", str(tmp_path)]) == 2
    assert "holds no prediction" in capsys.readouterr().err


def _screen_position(geometry, lps_mm, window=WINDOW, side=SIDE_PX):
    """Where NiiVue's single axial view draws a point (radiological convention, fitted and centred)."""
    corners = np.array([[i, j, k] for i in (-0.5, geometry.shape[0] - 0.5) for j in (-0.5, geometry.shape[1] - 0.5)
                        for k in (-0.5, geometry.shape[2] - 0.5)])
    ras = geometry.index_to_physical(corners) * np.array([-1, -1, 1])
    lo, hi = ras.min(0), ras.max(0)
    w, h = window[0] - side, window[1]
    scale = min(w / (hi[0] - lo[0]), h / (hi[1] - lo[1]))
    left = side + (w - (hi[0] - lo[0]) * scale) / 2
    top = (h - (hi[1] - lo[1]) * scale) / 2
    x, y = -lps_mm[0], -lps_mm[1]
    return left + (hi[0] - x) * scale, top + (hi[1] - y) * scale


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium; .ci/run installs it)")
def test_page_renders_in_headless_chromium(page, tmp_path):
    from PIL import Image

    result, lesions = page
    shot = tmp_path / "shot.png"
    url = result.path.as_uri() + "#view=axial&lesion=1&crosshair=0"
    proc = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--enable-logging=stderr", "--v=0", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=10000",
         f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert any("rrcunet-view-ready" in line for line in console), proc.stderr[-3000:]
    errors = [line for line in console if re.search(r"error|uncaught|exception", line, re.I)]
    assert not errors, errors
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    canvas = image[:, SIDE_PX:]
    assert canvas.std() > 20, "the viewer canvas is blank"
    sx, sy = _screen_position(result.geometry, lesions[0]["centroid_mm_lps"])
    r = 6
    patch = image[int(sy) - r:int(sy) + r + 1, int(sx) - r:int(sx) + r + 1]
    red = (patch[..., 0] - np.maximum(patch[..., 1], patch[..., 2])) > 60
    assert red.mean() > 0.5, f"no tumour colour at ({sx:.0f}, {sy:.0f}): {patch[r, r]}"
    # and the tumour colour is not everywhere: only near the lesion
    reds = (image[..., 0] - np.maximum(image[..., 1], image[..., 2])) > 60
    assert reds.mean() < 0.1


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium; .ci/run installs it)")
def test_the_demo_report_opens_with_a_working_viewer(tmp_path):
    """``rrcunet demo`` (bundled model, 1 phantom): its report embeds a viewer that loads without a console
    error and draws. With RRCUNET_VIEWER_SCREENSHOT=PATH the screenshot is kept there (docs/img/viewer_demo.png)."""
    import os

    from PIL import Image

    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "-n", "1", "--no-progress"]) == 0
    index = out / "report" / "index.html"
    assert 'iframe class="viewer"' in index.read_text()
    shot = tmp_path / "demo.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--enable-logging=stderr", "--v=0", "--window-size=1200,1000", "--virtual-time-budget=12000",
         "--hide-scrollbars", f"--screenshot={shot}", index.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert any("rrcunet-view-ready" in line for line in console), proc.stderr[-3000:]
    assert not [line for line in console if re.search(r"error|uncaught|exception", line, re.I)]
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    viewer = image[300:880, 300:1150]  # the embedded viewer's canvas on this window
    assert viewer.std() > 20
    keep = os.environ.get("RRCUNET_VIEWER_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
