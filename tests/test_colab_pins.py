"""What the set-up cell asks of a Colab runtime: nothing Colab has in another version.

Google's list of a fresh Colab GPU runtime (../shared/colab/pip-freeze.gpu.txt) is the reference;
these tests skip where it is absent (a user's clone), and run in CI, where it is present.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
COLAB_FREEZE = ROOT.parent / "shared" / "colab" / "pip-freeze.gpu.txt"
COLAB_LACKS = {"grad-cam"}  # the one package the notebooks need that Colab does not ship


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _pins(lines: list[str]) -> dict[str, str]:
    """name -> version of the ``name==version`` lines (comments, URLs and blanks skipped)."""
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line and "@" not in line:
            name, version = line.split("==", 1)
            pins[_name(name)] = version
    return pins


@pytest.fixture(scope="module")
def colab() -> dict[str, str]:
    if not COLAB_FREEZE.is_file():
        pytest.skip(f"{COLAB_FREEZE} absent (Google's Colab package list ships beside CI only)")
    return _pins(COLAB_FREEZE.read_text().splitlines())


def _requirements() -> list[Requirement]:
    """lesionlib's dependencies and its ``notebooks`` extra, read from pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    extra = re.search(r"^notebooks = \[(.*?)\]", text, re.M).group(1)
    return [Requirement(r) for r in re.findall(r'"([^"]+)"', deps + extra)]


def test_the_ci_pins_are_colabs_versions(colab: dict[str, str]) -> None:
    pins = _pins((ROOT / ".ci" / "colab-pins.txt").read_text().splitlines())
    assert len(pins) >= 20
    assert {k: v for k, v in pins.items() if colab.get(k) != v} == {}


def test_colab_satisfies_every_requirement_but_grad_cam(colab: dict[str, str]) -> None:
    unmet = {
        str(req): colab.get(_name(req.name))
        for req in _requirements()
        if _name(req.name) not in COLAB_LACKS
        and not (
            _name(req.name) in colab
            and req.specifier.contains(Version(colab[_name(req.name)]), prereleases=True)
        )
    }
    assert unmet == {}, "the set-up cell would have to replace these Colab packages"
    names = {_name(r.name) for r in _requirements()}
    assert "torchcodec" not in names  # optional: Colab's 0.11 has no image decoder
    assert names >= COLAB_LACKS and not COLAB_LACKS & colab.keys()


def test_the_matcher_catches_a_requirement_colab_cannot_meet(colab: dict[str, str]) -> None:
    req = Requirement("ipywidgets>=8")  # what the notebooks extra asked for before
    assert not req.specifier.contains(Version(colab["ipywidgets"]))
