"""The two switches the whole course reads from the environment: smoke mode and real data."""

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
    """Where lesionlib keeps generated samples, downloads and resized caches.

    ``LESIONLIB_CACHE`` if set, else ``~/.cache/lesionlib``.
    """
    value = os.environ.get(CACHE_ENV, "").strip()
    path = Path(value).expanduser() if value else Path.home() / ".cache" / "lesionlib"
    path.mkdir(parents=True, exist_ok=True)
    return path


def print_environment() -> None:
    """Print the library versions, the device, the JPEG decoder and whether smoke mode is on."""
    import platform

    import torch
    import torchvision

    import lesionlib
    from lesionlib.datasets import jpeg_decoder

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    elif torch.backends.mps.is_available():
        device = "mps (Apple GPU)"
    else:
        device = (
            "cpu (no GPU: training is slow; on Colab choose Runtime → Change runtime type → GPU)"
        )
    lines = [
        f"python {platform.python_version()} | torch {torch.__version__} | "
        f"torchvision {torchvision.__version__} | lesionlib {lesionlib.__version__}",
        f"device: {device}",
        f"JPEG decoder: {jpeg_decoder()[0]}",
        f"smoke mode: {'ON (tiny synthetic run)' if smoke_mode() else 'off'}",
    ]
    print("\n".join(lines))
