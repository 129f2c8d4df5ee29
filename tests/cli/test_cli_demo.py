"""``rrcunet demo``: phantoms → predict → evaluate → report, with a tiny model passed by --model."""

from __future__ import annotations

import pytest

from rrcunet.cli.main import main


@pytest.mark.slow
def test_demo_end_to_end(cli_model, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--model", str(cli_model), "-n", "2", "--device", "cpu",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    html = out / "report" / "index.html"
    assert f"Report (every metric, figures): {html.resolve()}" in printed
    assert "| tumour Dice |" in printed and "| tumour IoU |" in printed  # each Dice beside its own IoU
    assert "Tumour Dice" in printed and "never trained on" not in printed  # --model: no claim about its data
    assert html.is_file() and (out / "report" / "summary.csv").is_file()
    assert sorted(p.name for p in (out / "predictions").glob("*_seg.nii.gz")) == [
        "phantom_0000_seg.nii.gz", "phantom_0001_seg.nii.gz"]
    assert len(list((out / "report" / "figures").glob("*_slices.png"))) == 2   # CTs found in the phantom dataset
    # A second run reuses the phantoms and the predictions and rewrites the report.
    assert main(["demo", "-o", str(out), "--model", str(cli_model), "-n", "2", "--device", "cpu",
                 "--no-progress"]) == 0
