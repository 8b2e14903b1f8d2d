"""solutions/: one notebook per course notebook, on the course skeleton, answering every check."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import nbformat
import pytest

import lesioncheck

ROOT = Path(__file__).resolve().parents[1]
COURSE = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*_solutions.ipynb"))
CHECK_CALL = re.compile(r"\bcheck\.(ex\d_\d)\(")


def _code(path: Path) -> str:
    cells = nbformat.read(path, as_version=4).cells
    return "\n".join(c.source for c in cells if c.cell_type == "code")


def test_one_solutions_notebook_per_course_notebook() -> None:
    assert [p.name.removesuffix("_solutions.ipynb") for p in SOLUTIONS] == [p.stem for p in COURSE]


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solutions_skeleton(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    badge = f"colab.research.google.com/github/.+/solutions/{path.name}"
    assert cells[0].cell_type == "markdown" and re.search(badge, cells[0].source), path.name
    code = [c for c in cells if c.cell_type == "code"]
    assert 'find_spec("lesionlib")' in code[0].source and "pip" in code[0].source
    assert "print_environment()" in code[1].source
    assert "parameters" in code[2].metadata.get("tags", [])
    assert code[3].source.startswith("if smoke_mode():")
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear outputs"


@pytest.mark.parametrize("course", COURSE, ids=lambda p: p.stem)
def test_every_check_of_a_notebook_is_answered_by_its_solution(course: Path) -> None:
    asked = set(CHECK_CALL.findall(_code(course)))
    solution = ROOT / "solutions" / f"{course.stem}_solutions.ipynb"
    answered = set(CHECK_CALL.findall(_code(solution)))
    assert asked <= answered, f"{solution.name} does not call {sorted(asked - answered)}"
    assert "import lesioncheck as check" in _code(course) or not asked


def test_every_check_is_asked_by_a_notebook() -> None:
    checks = {name for name, _ in inspect.getmembers(lesioncheck, inspect.isfunction)}
    asked = set().union(*(CHECK_CALL.findall(_code(p)) for p in COURSE))
    assert {c for c in checks if re.fullmatch(r"ex\d_\d", c)} == asked
