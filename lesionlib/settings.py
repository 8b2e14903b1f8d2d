"""What the course reads from the environment (smoke mode, real data, cache) and the error base."""

from __future__ import annotations

import os
from pathlib import Path

SMOKE_ENV = "LESIONLIB_SMOKE"
REAL_DATA_ENV = "LESIONLIB_REAL_DATA"
CACHE_ENV = "LESIONLIB_CACHE"


def smoke_mode() -> bool:
    """True when ``LESIONLIB_SMOKE`` is set (not ``0``/``false``): tiny, fast runs."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def real_data_dir() -> Path | None:
    """The folder named by ``LESIONLIB_REAL_DATA`` (the real samples), or None when unset."""
    value = os.environ.get(REAL_DATA_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def cache_dir() -> Path:
    """Where lesionlib keeps samples and caches: ``LESIONLIB_CACHE`` or ``~/.cache/lesionlib``."""
    value = os.environ.get(CACHE_ENV, "").strip()
    path = Path(value).expanduser() if value else Path.home() / ".cache" / "lesionlib"
    path.mkdir(parents=True, exist_ok=True)
    return path


class LesionlibError(Exception):
    """An error lesionlib explains: its message names the file at fault and the fix."""
