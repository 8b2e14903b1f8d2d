"""Shared fixtures: the real-data folder (skipped when unset) and an isolated cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from lesionlib.settings import real_data_dir


@pytest.fixture
def real_data() -> Path:
    """The folder named by LESIONLIB_REAL_DATA; skips the test when unset or absent."""
    root = real_data_dir()
    if root is None or not root.is_dir():
        pytest.skip("LESIONLIB_REAL_DATA is not set to an existing folder (real samples absent)")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point LESIONLIB_CACHE at a per-session temp folder so tests never touch ~/.cache."""
    monkeypatch.setenv("LESIONLIB_CACHE", str(tmp_path_factory.getbasetemp() / "lesionlib-cache"))
