"""docs/reliability.md stays accurate: every test it names exists, every open problem (a test marked
``xfail(strict=True)`` in tests/reliability) is listed under "Open problems", and the stated count of
hostile-input kinds matches the corpora."""

from __future__ import annotations

import ast
import re

import pytest

from tests.reliability.rel_helpers import REPO_ROOT

DOC = REPO_ROOT / "docs" / "reliability.md"
REFERENCE = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)")


def _doc() -> str:
    if not DOC.is_file():
        pytest.fail(f"{DOC} is missing")
    return DOC.read_text(encoding="utf-8")


def _test_functions(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_test_named_in_the_doc_exists():
    refs = REFERENCE.findall(_doc())
    assert len(refs) > 40
    missing = []
    for rel, name in sorted(set(refs)):
        path = REPO_ROOT / rel
        if not path.is_file() or name not in _test_functions(path):
            missing.append(f"{rel}::{name}")
    assert not missing, "docs/reliability.md names tests that do not exist: " + ", ".join(missing)


def _known_failures() -> dict[str, str]:
    import tests.reliability.test_rel_bad_inputs as bad

    return bad.KNOWN_FAILURES


def _xfail_tests() -> set[str]:
    """``file::test`` of every test in tests/reliability carrying an xfail mark (on itself or a parameter)."""
    found = set()
    for path in sorted((REPO_ROOT / "tests" / "reliability").glob("test_rel_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                text = "".join(ast.unparse(d) for d in node.decorator_list)
                if "xfail" in text and ("KNOWN_FAILURES" not in text or _known_failures()):
                    found.add(f"tests/reliability/{path.name}::{node.name}")
    return found


def test_every_open_problem_is_listed():
    doc = _doc()
    open_section = doc.split("## Open problems", 1)[1].split("\n## ", 1)[0]
    listed = {f"{a}::{b}" for a, b in REFERENCE.findall(open_section)}
    xfails = _xfail_tests()
    assert not xfails - listed, f"xfail tests missing from 'Open problems': {sorted(xfails - listed)}"


def test_the_stated_count_of_hostile_input_kinds():
    import tests.reliability.test_rel_bad_inputs as bad
    import tests.reliability.test_rel_untrusted as untrusted

    model_files = 2 + len(untrusted.CORRUPT) + len(untrusted.BAD_DESCRIPTIONS) + 1 + 1  # pickle ×2, labels, huge
    dataset_descriptions = 1 + 3 + 1  # manifest symlink, nnU-Net escapes, ../ case name
    others = 2 + 1 + 1  # constant CTs, NIfTI-2 huge grid, label maps on different grids
    total = len(bad.CORPUS) + model_files + dataset_descriptions + others
    doc = _doc()
    m = re.search(r"\*\*(\d+) hostile-input kinds\*\* have a dedicated test: (\d+) in the command-line", doc)
    assert m, "the count sentence of docs/reliability.md changed shape"
    assert (int(m.group(1)), int(m.group(2))) == (total, len(bad.CORPUS))
    assert f"{model_files} model\nfiles" in doc or f"{model_files} model files" in doc
    assert f"{len(untrusted.CORRUPT)} corrupt safetensors" in doc
    assert f"{len(untrusted.BAD_DESCRIPTIONS)} bad descriptions" in doc
