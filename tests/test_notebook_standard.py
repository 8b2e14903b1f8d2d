"""Every course notebook: committed without outputs, and built on the shared cell skeleton.

Colab badge → learning objectives → guarded setup → imports (versions, device) → parameters
(papermill tag, smoke override) → the story → results (saved JSON) → exercises.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = [
    "01_data_exploration",
    "02_simple_cnn_from_scratch",
    "03_resnet50_transfer_learning",
    "04_binary_melanoma",
    "05_augmentation_and_class_imbalance",
    "06_evaluation_and_explainability",
    "07_results_report",
]


def _first(cells: list, predicate, start: int = 0) -> int:
    """Index of the first cell from ``start`` satisfying ``predicate``, or -1."""
    return next((i for i in range(start, len(cells)) if predicate(cells[i])), -1)


def _is_code(cell, pattern: str) -> bool:
    return cell.cell_type == "code" and re.search(pattern, cell.source, re.M) is not None


def _is_md(cell, pattern: str) -> bool:
    return cell.cell_type == "markdown" and re.search(pattern, cell.source, re.M | re.I) is not None


def test_every_course_notebook_is_present() -> None:
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: clear them"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cell_skeleton(path: Path) -> None:
    cells = nbformat.read(path, as_version=4).cells
    badge = f"colab.research.google.com/github/.+/notebooks/{path.name}"
    assert _is_md(cells[0], r"^# ") and re.search(badge, cells[0].source), (
        f"{path.name}: first cell must be the title with an 'Open in Colab' badge to itself"
    )
    steps = [
        ("learning objectives", lambda c: _is_md(c, r"^#+ .*learning objectives")),
        (
            "guarded setup",
            lambda c: _is_code(c, r"find_spec\(\"lesionlib\"\)") and _is_code(c, r"pip"),
        ),
        ("imports + versions + device", lambda c: _is_code(c, r"print_environment\(")),
        (
            "parameters",
            lambda c: c.cell_type == "code" and "parameters" in c.metadata.get("tags", []),
        ),
        ("smoke override", lambda c: _is_code(c, r"^if smoke_mode\(\):")),
        ("results heading", lambda c: _is_md(c, r"^#+ .*results")),
        ("results saved", lambda c: _is_code(c, r"save_results\(")),
        ("exercises", lambda c: _is_md(c, r"^#+ .*exercises")),
    ]
    position = 1
    for name, predicate in steps:
        found = _first(cells, predicate, position)
        assert found >= 0, (
            f"{path.name}: '{name}' cell missing or out of order (after cell {position})"
        )
        position = found + 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_never_upgrades_torch(path: Path) -> None:
    setup = "\n".join(
        c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
    )
    assert not re.search(r"pip install[^\n]*(-U|--upgrade)[^\n]*torch", setup), path.name
    assert not re.search(r"pip install[^\n]*\btorch(vision)?\b", setup), (
        f"{path.name} installs torch: Colab's own build must be kept"
    )
