"""tools/render_course.py: which data each notebook gets, its arguments, and one smoke render."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import render_course  # noqa: E402


def test_parameters_pick_the_dataset_folders(tmp_path: Path) -> None:
    (tmp_path / "ham10000-dev").mkdir()
    (tmp_path / "melanoma-binary-dev").mkdir()
    results = tmp_path / "out" / "results"
    p02 = render_course.parameters("02", tmp_path, results, cpu=True, smoke=False)
    assert p02["data_dir"] == str(tmp_path / "ham10000-dev") and p02["layout"] == "ham10000"
    assert p02["image_size"] == 64 and p02["results_dir"] == str(results)
    p04 = render_course.parameters("04", tmp_path, results, cpu=False, smoke=False)
    assert p04["layout"] == "imagefolder" and "image_size" not in p04
    assert render_course.parameters("06", tmp_path, results, False, False)["checkpoint"] == str(
        results / "03_resnet50.pt"
    )
    (tmp_path / "isic2019").mkdir()
    assert render_course.parameters("01", tmp_path, results, False, False)["layout"] == "isic2019"


def test_bad_arguments_exit_with_a_message(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit, match="no dataset folder"):
        render_course.parameters("03", tmp_path, tmp_path, cpu=False, smoke=False)
    with pytest.raises(SystemExit):
        render_course.main([str(tmp_path / "missing"), str(tmp_path / "out")])
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        render_course.main([str(tmp_path), str(tmp_path / "out"), "--notebooks", "99"])
    assert "no notebook" in capsys.readouterr().err


def test_smoke_render_of_one_notebook(tmp_path: Path) -> None:
    out = tmp_path / "render"
    assert render_course.main([str(tmp_path), str(out), "--smoke", "--notebooks", "01"]) == 0
    html = (out / "01_data_exploration.html").read_text(encoding="utf-8")
    assert "Smoke mode" in html and "Traceback" not in html
    assert html.count("data:image/png;base64") >= 3  # the figures are in the page
    assert (out / "executed" / "01_data_exploration.ipynb").is_file()
    assert (out / "results" / "01_data_exploration.json").is_file()
    assert "01_data_exploration" in json.loads((out / "timings.json").read_text())
