"""The shape of lesionlib that students read: imports run one way, and ``fit`` fits one sitting."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import lesionlib
from lesionlib.train import fit

PACKAGE = Path(lesionlib.__file__).parent


def _imports() -> dict[str, set[str]]:
    """module -> the lesionlib modules it imports (anywhere in its code)."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph = {}
    for path in PACKAGE.glob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "lesionlib":
                names |= {alias.name for alias in node.names}  # from lesionlib import cli
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lesionlib."):
                names.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                names |= {a.name.split(".")[1] for a in node.names if "lesionlib." in a.name}
        graph[path.stem] = (names & modules) - {path.stem}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*trail, nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_lesionlib_has_no_import_cycle() -> None:
    graph = _imports()
    assert {"datasets", "images", "layouts", "train"} <= graph.keys()
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"
    assert not graph["settings"] and graph["layouts"] <= {"settings"}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_fit_reads_in_one_sitting() -> None:
    lines, _ = inspect.getsourcelines(fit)
    assert len(lines) <= 80 and len(inspect.signature(fit).parameters) <= 12
