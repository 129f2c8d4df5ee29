"""The import contract: a lower layer never imports a higher one, and the packages import without a cycle.

The layers, bottom first (README "What is inside", docs/architecture.md "How the package is
layered"). A package may import its own layer and the layers below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rrcunet"

LAYERS: list[set[str]] = [
    {"<root>", "errors", "config", "tasks", "scores", "formatting", "heap", "io"},
    {"preprocessing", "lungmask", "models", "losses"},
    {"data", "synthetic"},
    {"training", "inference"},
    {"evaluation", "visualization", "response"},
    {"experiments"},
    {"cli", "__main__"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _package(module: str) -> str:
    """``rrcunet.io.image`` → ``io``; ``rrcunet`` (its ``__init__``) → ``<root>``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def _imports() -> list[tuple[str, str, str, int]]:
    """(importing package, imported package, file, line) for every ``rrcunet`` import in the source."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        first = path.relative_to(SRC).with_suffix("").parts[0]
        here = "<root>" if first == "__init__" else first
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
                if node.module == "rrcunet":  # from rrcunet import errors / __version__
                    names = [f"rrcunet.{a.name}" if f"rrcunet.{a.name}" != "rrcunet.__version__" else "rrcunet"
                             for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name == "rrcunet" or name.startswith("rrcunet."):
                    target = _package(name)
                    if target != here:
                        found.append((here, target, str(path.relative_to(SRC)), node.lineno))
    return found


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py")} - {"__init__"}
    missing = sorted((packages | modules) - set(LAYER_OF) - {"weights", "configs"})
    assert not missing, f"add these to a layer in LAYERS: {missing}"


def upward_imports(imports: list[tuple[str, str, str, int]]) -> list[str]:
    return [f"{file}:{line}: {here} (layer {LAYER_OF[here]}) imports {target} (layer {LAYER_OF[target]})"
            for here, target, file, line in imports if LAYER_OF[target] > LAYER_OF[here]]


def cycles(imports: list[tuple[str, str, str, int]]) -> list[str]:
    graph: dict[str, set[str]] = {}
    for here, target, _, _ in imports:
        graph.setdefault(here, set()).add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    return sorted(f"{a} -> {b} -> ... -> {a}" for a in graph for b in graph[a] if reaches(b, a, {b}))


def test_no_lower_layer_imports_a_higher_one():
    bad = upward_imports(_imports())
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_packages():
    found = cycles(_imports())
    assert not found, "\n".join(found)


def test_the_contract_can_fail():
    assert upward_imports([("io", "cli", "io/x.py", 3)]) == ["io/x.py:3: io (layer 0) imports cli (layer 6)"]
    assert cycles([("evaluation", "visualization", "a", 1), ("visualization", "evaluation", "b", 1)])
    assert not cycles([("evaluation", "visualization", "a", 1)])


IMPORT = ("from ", "import ")


def function_local_imports() -> list[tuple[str, int, bool]]:
    """(file, line, has a comment) for every import inside a function; the comment is on the line
    itself or on a comment line directly above it (or above its group of imports)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        i = node.lineno - 1
                        while i > 0 and (not lines[i - 1].strip() or lines[i - 1].strip().startswith(IMPORT)):
                            i -= 1  # the top of a group of imports
                        commented = "#" in lines[node.lineno - 1] or lines[i - 1].strip().startswith("#")
                        found.append((str(path.relative_to(SRC)), node.lineno, commented))
    return found


def test_every_function_local_import_says_why():
    bare = [f"{file}:{line}" for file, line, commented in function_local_imports() if not commented]
    assert not bare, "function-local imports without a comment saying why:\n" + "\n".join(bare)


if __name__ == "__main__":  # python tests/test_layering.py: the count quoted in docs/architecture.md
    print(f"{len(function_local_imports())} function-local imports in src/rrcunet")
