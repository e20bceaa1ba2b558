"""The structure docs/ARCHITECTURE.md describes, held against the code: no import cycles, leaf
modules that stay leaves, a display that only draws, a training loop that knows nothing of Optuna."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hpo"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def imports_of(source: str) -> set[str]:
    """Every module of hpo that `source` imports, at the top or deferred inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "hpo":
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hpo."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("hpo.")}
    return found


def graph() -> dict[str, set[str]]:
    return {m: imports_of((PACKAGE / f"{m}.py").read_text()) - {m} for m in MODULES}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]):
        state[m] = 1
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                return path + [m, d]
            if d not in state and (found := visit(d, path + [m])):
                return found
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m, [])):
            return found[found.index(found[-1]):]
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert imports_of("from hpo import records, nothing\nimport hpo.storage\ndef f():\n    from hpo.x import y\n") \
        >= {"records", "storage"}


def test_no_import_cycles_in_hpo():
    assert find_cycle(graph()) is None


@pytest.mark.parametrize("module, allowed", [
    ("records", set()),              # what a trial records: everyone reads it, it reads no one
    ("errors", set()),
    ("limits", set()),               # imported by the CLI before anything heavy
    ("datasets", {"errors", "owndata"}),  # a dataset is a description, no torch; own data is read to describe it
    ("owndata", {"errors"}),         # numpy (and Pillow) readers of a user's own data
    ("retry", set()),
    ("processes", set()),            # how workers start: hpo run calls it before it imports torch
])
def test_leaf_modules_stay_leaves(module, allowed):
    assert graph()[module] <= allowed


@pytest.mark.parametrize("module, forbidden", [
    ("display", {"trainer", "runner", "worker", "objective", "storage"}),  # it draws; the CLI composes
    ("trainer", {"objective", "worker", "runner", "study", "space", "records"}),  # the loop knows nothing of Optuna
    ("backend", {"objective", "records"}),
])
def test_modules_do_not_reach_past_their_concern(module, forbidden):
    assert not graph()[module] & forbidden


def test_the_training_loop_does_not_import_optuna():
    for module in ("trainer", "backend", "models", "data", "augment", "optim"):
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(name.startswith("optuna") for name in names), module
