"""tools/retarget.py: one setting says where the course lives; badges, set-up cells follow."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "retarget.py"
COLAB = "https://colab.research.google.com/github/"


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("retarget", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


retarget = _load_tool()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, check=False
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The files the tool touches, copied from the repository."""
    root = tmp_path / "course"
    (root / "data").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copy(ROOT / "README.md", root / "README.md")
    shutil.copy(ROOT / "data" / "README.md", root / "data" / "README.md")
    shutil.copytree(ROOT / "docs", root / "docs")
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".*"))
    return root


def _notebooks(root: Path) -> list[Path]:
    paths = sorted((root / "notebooks").glob("*.ipynb"))
    assert paths, "no notebooks found"
    return paths


def test_committed_files_agree_with_the_setting() -> None:
    setting = retarget.read_setting(ROOT)
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", setting.repository)
    assert retarget.mismatches(ROOT) == []


def test_retarget_points_everything_at_a_fork_and_is_idempotent(copy: Path) -> None:
    before = _snapshot(copy)
    done = _run("someone/their-fork", "--ref", "v9.9", "--root", str(copy))
    assert done.returncode == 0, done.stderr
    assert "README.md: 7" in done.stdout and "pyproject.toml: 2" in done.stdout

    assert retarget.mismatches(copy) == []
    setting = retarget.read_setting(copy)
    assert (setting.repository, setting.ref) == ("someone/their-fork", "v9.9")
    after = _snapshot(copy)
    assert after.keys() == before.keys()
    for rel, data in after.items():
        assert b"lesion-course/lesion-course" not in data, rel
        # Links to other projects stay exactly as they were.
        other = re.compile(
            rb"https://github\.com/(?!someone/their-fork|lesion-course/)[\w.-]+/[\w.-]+"
        )
        assert other.findall(data) == other.findall(before[rel]), rel

    readme = (copy / "README.md").read_text(encoding="utf-8")
    names = re.findall(r"blob/v9\.9/notebooks/([\w.-]+\.ipynb)\)", readme)
    assert sorted(names) == [path.name for path in _notebooks(copy)]

    for path in _notebooks(copy):
        old = json.loads(before[f"notebooks/{path.name}"])
        new = json.loads(path.read_text(encoding="utf-8"))
        text = "".join("".join(cell["source"]) for cell in new["cells"])
        badges = re.findall(rf"{re.escape(COLAB)}[^)\s]+", text)
        assert badges == [f"{COLAB}someone/their-fork/blob/v9.9/notebooks/{path.name}"]
        assert 'COURSE_SOURCE = "git+https://github.com/someone/their-fork@v9.9"\n' in text
        # Same cells, same metadata; only the retargeted strings differ.
        assert [c["id"] for c in new["cells"]] == [c["id"] for c in old["cells"]]
        assert {k: v for k, v in new.items() if k != "cells"} == {
            k: v for k, v in old.items() if k != "cells"
        }
        for old_cell, new_cell in zip(old["cells"], new["cells"], strict=True):
            assert {k: v for k, v in new_cell.items() if k != "source"} == {
                k: v for k, v in old_cell.items() if k != "source"
            }
            undo = "".join(new_cell["source"])
            undo = undo.replace("someone/their-fork", "lesion-course/lesion-course")
            undo = undo.replace("/blob/v9.9/", "/blob/v0.1.0/").replace("@v9.9", "@v0.1.0")
            original = "".join(old_cell["source"]).replace("/blob/main/", "/blob/v0.1.0/")
            assert undo == original
        # Plain-text rewrite: line structure (the JSON formatting) is unchanged.
        old_lines = before[f"notebooks/{path.name}"].decode().splitlines()
        new_lines = path.read_text(encoding="utf-8").splitlines()
        assert len(new_lines) == len(old_lines)
        assert sum(a != b for a, b in zip(old_lines, new_lines, strict=True)) >= 2

    once = _snapshot(copy)
    again = _run("someone/their-fork", "--ref", "v9.9", "--root", str(copy))
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stdout
    assert _snapshot(copy) == once
    assert _run("--check", "--root", str(copy)).returncode == 0


def test_ref_defaults_to_the_current_one(copy: Path) -> None:
    done = _run("someone/their-fork", "--root", str(copy))
    assert done.returncode == 0, done.stderr
    current = retarget.read_setting(ROOT).ref
    assert retarget.read_setting(copy).ref == current
    assert retarget.mismatches(copy) == []
    assert f"someone/their-fork/blob/{current}/notebooks/" in (copy / "README.md").read_text()


@pytest.mark.parametrize(
    "args",
    [
        ["nonsense"],
        ["a/b/c"],
        ["someone/their-fork", "--ref", "v 1"],
        ["someone/their-fork", "--ref", 'v1"'],
        ["bad-/repo"],
        ["someone/repo name"],
    ],
)
def test_bad_input_exits_2_and_changes_nothing(copy: Path, args: list[str]) -> None:
    before = _snapshot(copy)
    done = _run(*args, "--root", str(copy))
    assert done.returncode == 2
    message = done.stderr.strip()
    assert message.startswith("retarget.py: error: ") and "\n" not in message
    assert _snapshot(copy) == before


def test_missing_setting_is_a_clear_error(copy: Path) -> None:
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(text.replace("[tool.lesion-course]", "[tool.other]"), encoding="utf-8")
    with pytest.raises(retarget.RetargetError, match=r"no \[tool\.lesion-course\] table"):
        retarget.read_setting(copy)
    done = _run("--check", "--root", str(copy))
    assert done.returncode == 2 and "[tool.lesion-course]" in done.stderr


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_mismatches_reports_hand_edited_badges_and_source_lines(copy: Path) -> None:
    setting = retarget.read_setting(copy)
    first, second, third = _notebooks(copy)[:3]
    badge = f"{COLAB}{setting.repository}/blob/{setting.ref}/notebooks/"
    _edit(
        first,
        f"{badge}{first.name}",
        f"{COLAB}other/repo/blob/{setting.ref}/notebooks/{first.name}",
    )
    _edit(second, f"{badge}{second.name}", f"{badge}{first.name}")
    _edit(copy / "README.md", f"{badge}{third.name}", f"{badge}99_missing.ipynb")
    _edit(third, f'@{setting.ref}\\"', '@main\\"')

    problems = retarget.mismatches(copy)
    assert len(problems) == 4, problems
    assert any(p.startswith(f"notebooks/{first.name}:") and "other/repo" in p for p in problems)
    assert any(
        p.startswith(f"notebooks/{second.name}:") and "not this notebook" in p for p in problems
    )
    assert any(p.startswith("README.md:") and "does not exist" in p for p in problems)
    assert any(p.startswith(f"notebooks/{third.name}:") and "COURSE_SOURCE" in p for p in problems)
    done = _run("--check", "--root", str(copy))
    assert done.returncode == 1 and "4 mismatch" in done.stdout

    # Retargeting repairs the repository, ref and set-up line, but never guesses a notebook name.
    assert _run(setting.repository, "--root", str(copy)).returncode == 0
    remaining = retarget.mismatches(copy)
    assert len(remaining) == 2 and all(
        "not this notebook" in p or "does not exist" in p for p in remaining
    )


def test_mismatches_reports_a_notebook_without_badge_or_source(copy: Path) -> None:
    path = _notebooks(copy)[0]
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        cell["source"] = [
            line
            for line in cell["source"]
            if "colab-badge" not in line and "COURSE_SOURCE =" not in line
        ]
    path.write_text(json.dumps(notebook, indent=1), encoding="utf-8")
    problems = retarget.mismatches(copy)
    assert f"notebooks/{path.name}: no 'Open in Colab' badge" in problems
    assert f"notebooks/{path.name}: no COURSE_SOURCE line in a code cell" in problems
    assert len(problems) == 2
