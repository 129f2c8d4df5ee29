"""``rrcunet experiment merge-datasets``: one manifest over several prepared datasets, files inside the
new root (hard links or copies), a patient-level split, test lists, id clashes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rrcunet.data.manifest import DatasetManifest
from rrcunet.errors import InputError
from rrcunet.experiments.merge import merge_datasets


def _source(root: Path, name: str, cases: list[tuple[str, str]], test: tuple[str, ...] = ()) -> Path:
    """A prepared dataset whose files hold their own name (the merge never reads them as images)."""
    entries = []
    for cid, patient in cases:
        for folder in ("images", "labels", "lungs"):
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"{cid}.nii.gz").write_bytes(f"{name}/{folder}/{cid}".encode())
        entries.append({"case_id": cid, "image": f"images/{cid}.nii.gz", "label": f"labels/{cid}.nii.gz",
                        "lung": f"lungs/{cid}.nii.gz", "patient": patient, "source": {"dataset": name}})
    ids = [c for c, _ in cases if c not in test]
    manifest = {"version": 1, "name": name, "cases": entries,
                "split": {"seed": 0, "train": ids[1:], "val": ids[:1], "test": list(test)}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture
def sources(tmp_path: Path) -> list[Path]:
    # patient P01 has three scans (the split must keep them together); lung1 holds out L9 as test
    a = _source(tmp_path / "interobs", "interobs", [("P01_a", "P01"), ("P01_b", "P01"), ("P01_c", "P01"),
                                                     ("P02", "P02"), ("P03", "P03")])
    b = _source(tmp_path / "lung1", "lung1", [(f"L{i}", f"L{i}") for i in range(1, 10)], test=("L9",))
    c = _source(tmp_path / "msd", "msd", [(f"lung_{i:03d}", f"lung_{i:03d}") for i in range(1, 7)])
    return [a, b, c]


def test_merge_keeps_patients_together_and_paths_inside_the_root(tmp_path: Path, sources: list[Path]):
    out = tmp_path / "merged"
    m = merge_datasets(sources, out, seed=3, val_fraction=0.2, test_list=["P02"])
    loaded = DatasetManifest.load(out)  # refuses any path that leaves the root
    assert len(loaded.cases) == 5 + 9 + 6 == len(m.cases)
    s = loaded.split
    assert set(s.test) == {"L9", "P02"}  # the source's test split + the test list
    assert not (set(s.train) & set(s.val)) and len(s.train) + len(s.val) + len(s.test) == 20
    sides = {cid: side for side in ("train", "val", "test") for cid in getattr(s, side)}
    assert len({sides[c] for c in ("P01_a", "P01_b", "P01_c")}) == 1  # one patient, one side
    # 3 + 9 + 6 = 18 patients, 16 outside the test (P02, L9); round(0.2 * 16) = 3 of them in validation
    val_patients = {loaded.case(c).patient_id for c in s.val}
    assert len(val_patients) == 3
    for case in loaded.cases:
        for rel in (case.image, case.label, case.lung):
            assert not rel.startswith("/") and ".." not in rel
            path = (out / rel).resolve()
            assert out.resolve() in path.parents and path.is_file() and not (out / rel).is_symlink()
        origin = case.source["merged_from"]
        src = Path(origin["root"]) / "images" / f"{origin['case_id']}.nii.gz"
        assert os.path.samefile(src, out / case.image)  # hard-linked (same file system in the test)
        assert (out / case.image).read_bytes() == src.read_bytes()
    assert loaded.case("lung_003").source["dataset"] == "msd"


def test_same_seed_same_split_and_copy_mode(tmp_path: Path, sources: list[Path]):
    a = merge_datasets(sources, tmp_path / "m1", seed=7, link="copy")
    b = merge_datasets(sources, tmp_path / "m2", seed=7)
    assert a.split == b.split
    case = a.cases[0]
    assert not os.path.samefile(tmp_path / "m1" / case.image, Path(case.source["merged_from"]["root"]) / "images" /
                                f"{case.source['merged_from']['case_id']}.nii.gz")
    with pytest.raises(InputError, match="already holds a dataset"):
        merge_datasets(sources, tmp_path / "m1", seed=7)
    c = merge_datasets(sources, tmp_path / "m1", seed=8, overwrite=True)
    assert c.split.seed == 8


def test_clashing_ids_are_refused_unless_prefixed(tmp_path: Path, sources: list[Path]):
    twin = _source(tmp_path / "twin", "twin", [("L1", "L1"), ("X", "X")])
    with pytest.raises(InputError, match=r"case ids clash between sources: L1 .*--prefix-ids"):
        merge_datasets([sources[1], twin], tmp_path / "bad")
    m = merge_datasets([sources[1], twin], tmp_path / "ok", prefix_ids=True)
    ids = {c.case_id for c in m.cases}
    assert {"lung1__L1", "twin__L1", "twin__X"} <= ids
    assert m.case("twin__L1").patient_id == "twin__L1"  # patients prefixed too: two different people
    assert m.split.test == ("lung1__L9",)


def test_bad_outputs_and_test_ids_are_refused(tmp_path: Path, sources: list[Path]):
    with pytest.raises(InputError, match="overlap"):
        merge_datasets(sources, sources[0] / "merged")
    with pytest.raises(InputError, match="neither a case nor a patient"):
        merge_datasets(sources, tmp_path / "m", test_list=["nobody"])
    test_file = tmp_path / "test.txt"
    test_file.write_text("# held out\nP01\n\nlung_002  # a case id\n")
    m = merge_datasets(sources, tmp_path / "m2", test_list=test_file)
    assert set(m.split.test) == {"P01_a", "P01_b", "P01_c", "lung_002", "L9"}


def test_cli_merge(tmp_path: Path, sources: list[Path], capsys: pytest.CaptureFixture[str]):
    from rrcunet.cli.main import main

    assert main(["experiment", "merge-datasets", *map(str, sources), "-o", str(tmp_path / "cli"), "--seed", "1",
                 "--copy"]) == 0
    assert "20 cases from 3 dataset(s)" in capsys.readouterr().out
    assert main(["experiment", "merge-datasets", str(sources[0]), str(sources[0]), "-o", str(tmp_path / "x")]) == 2
    assert "listed twice" in capsys.readouterr().err
