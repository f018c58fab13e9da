"""The import graph: floors that import only downwards, and no loop between files.

docs/architecture.md draws the same floors. A package may import its own floor's
packages and those below, never one above: the batch contract never knows the engine,
a loss never knows the trainer, statistics know nothing of radpath at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "radpath"

FLOORS = (
    ("errors", "atomic", "parallel", "registry", "stats"),
    ("data",),
    ("batch", "slides"),
    ("models", "objectives", "augment"),
    ("algorithms", "adapt"),
    ("engine",),
    ("explain", "evaluation"),
    ("serve", "demo", "api"),
    ("cli", "__main__"),
)
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def _module(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "radpath"}


def _graph() -> dict[str, set[str]]:
    modules = {_module(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else "radpath"


def test_every_package_has_a_floor():
    packages = {_package(m) for m in _graph()} - {"radpath"}
    assert packages <= FLOOR.keys(), f"give these a floor: {sorted(packages - FLOOR.keys())}"


def test_no_import_runs_back_up_a_floor():
    upward = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets
                    if _package(a) != "radpath" and _package(b) != "radpath"
                    and FLOOR[_package(b)] > FLOOR[_package(a)])
    assert not upward, "imports that run back up a floor:\n" + "\n".join(upward)


def test_no_loop_of_imports_between_files():
    graph = _graph()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            loop = [*path[path.index(node):], node]
            raise AssertionError("import loop: " + " -> ".join(loop))
        if node in done:
            return
        for target in sorted(graph[node]):
            # A package's __init__ re-exporting its own modules is its face, not a loop.
            if not target.startswith(node + "."):
                visit(target, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


def test_no_loop_between_packages_of_one_floor():
    edges = {(_package(a), _package(b)) for a, targets in _graph().items() for b in targets
             if _package(a) != _package(b)}
    for a, b in edges:
        assert (b, a) not in edges, f"packages {a} and {b} import each other"
