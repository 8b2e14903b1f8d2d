"""Resize once, train many times: a JPEG cache of downsized images.

Full-size ISIC JPEGs (up to 3072x2304) cost tens of milliseconds each to decode; on Colab's
2 vCPUs that starves the GPU every epoch. :func:`prepare_cache` decodes each source once (with
libjpeg's DCT-domain downscaling via ``Image.draft``), resizes it so the shorter side is ``size``
and stores it as a quality-95 JPEG. The format was chosen by measurement (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from lesionlib.datasets import DatasetError, load_image
from lesionlib.settings import cache_dir


def load_resized(path: str | Path, size: int) -> Image.Image:
    """Decode ``path`` as RGB (EXIF-oriented) with its shorter side resized to ``size``.

    JPEGs are decoded at the smallest 1/2, 1/4 or 1/8 scale that keeps both sides >= ``size``,
    then resized exactly with Lanczos. Images already smaller than ``size`` are not enlarged.
    """
    image = load_image(path, draft_size=size)
    width, height = image.size
    scale = size / min(width, height)
    if scale >= 1:
        return image
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _cache_key(path: str | Path, quality: int = 95) -> str:
    """Hash of (absolute path, file size, mtime_ns, quality): changes whenever the source does."""
    source = Path(path).resolve()
    try:
        stat = source.stat()
    except OSError as exc:
        raise DatasetError(
            f"Cannot cache {source}: {exc.strerror or exc}. Fix the path in the table, or read "
            "the data with missing='drop' to leave absent images out."
        ) from exc
    text = f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}\0{quality}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _write_resized(job: tuple[str, str, int, int]) -> None:
    """Worker: resize ``source`` and write it to ``target`` atomically (temp name, then rename)."""
    source, target, size, quality = job
    image = load_resized(source, size)
    temp = f"{target}.{os.getpid()}.tmp"
    try:
        image.save(temp, format="JPEG", quality=quality)
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def prepare_cache(
    table: pd.DataFrame,
    size: int = 256,
    cache_root: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    quality: int = 95,
    image_size: int | None = None,
) -> pd.DataFrame:
    """Write a resized JPEG copy of every image in ``table`` once; return the table pointing at it.

    Each source ``path`` is stored as ``cache_root/<size>/<key>.jpg`` (``cache_root`` defaults to
    ``cache_dir()/"resized"``), ``key`` from :func:`_cache_key`, so a changed source gets a new
    file and files already cached are skipped. Work runs in ``workers`` processes (default: all
    CPUs). Returns a copy of ``table`` whose ``path`` is the cached file and whose new
    ``source_path`` column holds the original (kept when ``table`` already has one, so a cached
    table can be re-cached at another size from the originals). An image that cannot be decoded
    raises :class:`~lesionlib.datasets.DatasetError` naming it. With ``image_size`` (what the
    network will see), a ``size`` below it is refused: the images would be upscaled.
    """
    if "path" not in table.columns:
        raise DatasetError(
            "prepare_cache needs a table with a 'path' column: build it with a lesionlib.datasets "
            "reader (load_table, read_isic2019, ...)."
        )
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if image_size is not None and size < image_size:
        raise ValueError(
            f"cache size {size} is smaller than image_size={image_size}: the network would see "
            "upscaled images. Use a cache size >= image_size, or no cache."
        )
    folder = Path(cache_root) if cache_root is not None else cache_dir() / "resized"
    folder = folder.expanduser().resolve() / str(size)
    folder.mkdir(parents=True, exist_ok=True)

    sources = table["source_path"] if "source_path" in table.columns else table["path"]
    sources = sources.astype(str)
    targets = {src: str(folder / f"{_cache_key(src, quality)}.jpg") for src in sources.unique()}
    jobs = [(src, dst, size, quality) for src, dst in targets.items() if not os.path.exists(dst)]

    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    quiet = not progress or not jobs
    with tqdm(total=len(jobs), desc=f"caching at {size}px", unit="img", disable=quiet) as bar:
        if workers == 1:
            for job in jobs:
                _write_resized(job)
                bar.update()
        else:
            chunksize = max(1, len(jobs) // (workers * 8))
            with ProcessPoolExecutor(max_workers=workers) as pool:
                try:
                    for _ in pool.map(_write_resized, jobs, chunksize=chunksize):
                        bar.update()
                except BaseException:
                    pool.shutdown(cancel_futures=True)  # a bad image or Ctrl-C: stop the rest
                    raise

    result = table.copy()
    result["source_path"] = sources.to_numpy()
    result["path"] = sources.map(targets).to_numpy()
    return result
