"""Cleanup of killed writes touches only rrcunet's own temporaries of processes that are gone."""

from __future__ import annotations

import os
import subprocess
import sys

from rrcunet.io.atomic import atomic_write_text, remove_stale_temporaries, temporary_prefix


def test_user_files_that_look_like_temporaries_are_never_removed(tmp_path):
    mine = [tmp_path / n for n in (".notes.partial.txt", ".env.party", ".thesis.part2", ".x.abc123.part.nii.gz")]
    for p in mine:
        p.write_text("the user's")
    dead = tmp_path / ".case_seg.rrcunet-999999999-k1ll3d.part.nii.gz"
    dead.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert all(p.read_text() == "the user's" for p in mine)


def test_a_live_runs_temporaries_are_left_alone(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f".case.rrcunet-{proc.pid}-abc.part.nii.gz"
        live.write_bytes(b"being written")
        assert remove_stale_temporaries(tmp_path) == [] and live.exists()
    finally:
        proc.kill()
        proc.wait()
    assert remove_stale_temporaries(tmp_path) == [live]


def test_atomic_writes_use_the_named_temporaries(tmp_path):
    assert temporary_prefix("a").endswith(f".rrcunet-{os.getpid()}-")
    atomic_write_text(tmp_path / "a.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
