"""``rrcunet models``: the listing and the parameter table come from the one registry."""

from __future__ import annotations

from rrcunet.cli.main import main
from rrcunet.models import list_models


def test_lists_every_registered_model(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == list_models()


def test_param_table_markdown(capsys):
    assert main(["models", "--params", "--base", "4", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | options |")
    rows = {(c[1].strip(), c[2].strip()): c for c in (line.split("|") for line in lines[2:])}
    assert ("unet", "defaults") in rows and ("rrcunet", "join=add") in rows
    assert rows[("unet", "defaults")][7].strip() == "1.000"
    # t never changes the count (weights shared across recurrence steps)
    assert rows[("rrcunet", "defaults")][6] == rows[("rrcunet", "t=3")][6]


def test_bad_base_is_a_user_error(capsys):
    assert main(["models", "--params", "--base", "0"]) == 2
    assert "--base 0 is invalid" in capsys.readouterr().err
