"""Shared fixtures: the real-data folder (skipped when unset) and an isolated cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


@pytest.fixture(autouse=True)
def _restore_determinism():
    """seed_everything changes process-wide torch switches: put them back after every test."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]
