"""Static HTML report."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from rrcunet.errors import InputError
from rrcunet.visualization.report import write_html_report


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("href", "src"):
                self.links.append(value)


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return path


def _report(tmp_path):
    out = tmp_path / "report dir"
    figs = {
        "<script>alert(1)</script>": [_png(out / "figs" / "evil case.png")],
        "LUNG1-001": [_png(out / "LUNG1-001_slices.png"), "LUNG1-001_3d.png"],
    }
    _png(out / "LUNG1-001_3d.png")
    hist = _png(out / "dice_histogram.png")
    rows = [{"case": "<script>alert(1)</script>", "tumour Dice": 0.25, "HD95 (mm)": math.nan},
            {"case": "LUNG1-001", "tumour Dice": 0.8766, "HD95 (mm)": 4.0, "n voxels": 123}]
    summary = [{"metric": "tumour Dice", "mean per case": 0.56, "voxel-pooled": 0.61}]
    page = write_html_report(out, summary_rows=summary, per_case_rows=rows, figures=figs, histogram_png=hist,
                             title="Eval & <test>", details={"model": "rrcunet3d <t=2>"})
    return out, page


def test_report_contains_rows_and_escapes(tmp_path):
    out, page = _report(tmp_path)
    text = page.read_text(encoding="utf-8")
    assert page == out / "index.html"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script" not in text
    assert "Eval &amp; &lt;test&gt;" in text and "rrcunet3d &lt;t=2&gt;" in text
    assert "0.8766" in text and "0.2500" in text and "n/a" in text and ">123<" in text
    assert "LUNG1-001" in text and "voxel-pooled" in text and "0.6100" in text
    parser = _Links()
    parser.feed(text)
    assert "script" not in parser.tags
    assert len(parser.links) >= 6
    for link in parser.links:
        assert "://" not in link and not link.startswith("/")
        assert (out / unquote(link)).is_file(), link


@pytest.mark.parametrize("bad,match", [("outside", "outside the report folder"), ("missing", "does not exist"),
                                       ("unknown", "have no row in per_case_rows")])
def test_bad_figures_refused(tmp_path, bad, match):
    out = tmp_path / "r"
    out.mkdir()
    rows = [{"case": "a", "tumour Dice": 0.5}]
    figs = {"outside": {"a": [_png(tmp_path / "elsewhere.png")]},
            "missing": {"a": [out / "nope.png"]},
            "unknown": {"b": [_png(out / "b.png")]}}[bad]
    with pytest.raises(InputError, match=match):
        write_html_report(out, summary_rows=[], per_case_rows=rows, figures=figs)
    assert not (out / "index.html").exists()
