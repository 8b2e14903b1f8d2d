"""Resize once, train many times: downsized JPEG copies of a table's images (decoding full-size
originals every epoch starves the GPU; docs/benchmarks.md)."""

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from lesionlib.images import load_image
from lesionlib.layouts import DatasetError
from lesionlib.settings import cache_dir

QUALITY = 95  # JPEG quality of the copies


def load_resized(path: str | Path, size: int) -> Image.Image:
    """``path`` as RGB, its shorter side resized to ``size`` with Lanczos; never enlarged."""
    image = load_image(path, draft_size=size)
    scale = size / min(image.size)
    if scale >= 1:
        return image
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _cache_key(path: str) -> str:
    """Hash of (absolute path, size, mtime_ns, quality): a changed source gets a new key."""
    source = Path(path).resolve()
    try:
        stat = source.stat()
    except OSError as exc:
        raise DatasetError(
            f"Cannot cache {source}: {exc.strerror or exc}. Fix the path, or pass missing='drop'."
        ) from exc
    text = f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}\0{QUALITY}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _write_copy(job: tuple[str, str, int]) -> None:
    """Worker: resize ``source`` and write it to ``target`` atomically (temp name, then rename)."""
    source, target, size = job
    temp = f"{target}.{os.getpid()}.tmp"
    try:
        load_resized(source, size).save(temp, format="JPEG", quality=QUALITY)
        os.replace(temp, target)
    finally:
        Path(temp).unlink(missing_ok=True)


def prepare_cache(
    table: pd.DataFrame,
    size: int = 256,
    cache_root: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    image_size: int | None = None,
) -> pd.DataFrame:
    """A copy of ``table`` whose ``path`` is a copy resized to ``size`` (shorter side), made once
    in ``cache_root/<size>/`` by ``workers`` processes; ``source_path`` keeps the original."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if image_size is not None and size < image_size:
        raise ValueError(
            f"cache size {size} is smaller than image_size={image_size}: the network would see "
            "upscaled images. Use a cache size >= image_size, or no cache."
        )
    folder = Path(cache_root or cache_dir() / "resized").expanduser().resolve() / str(size)
    folder.mkdir(parents=True, exist_ok=True)
    sources = table["source_path" if "source_path" in table.columns else "path"].astype(str)
    targets = {src: str(folder / f"{_cache_key(src)}.jpg") for src in sources.unique()}
    jobs = [(src, dst, size) for src, dst in targets.items() if not os.path.exists(dst)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    chunksize = max(1, len(jobs) // (workers * 8))
    done = pool.map(_write_copy, jobs, chunksize=chunksize) if pool else map(_write_copy, jobs)
    bar = {"total": len(jobs), "desc": f"caching at {size}px", "unit": "img"}
    try:
        for _ in tqdm(done, **bar, disable=not progress or not jobs):
            pass
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)  # after a bad image or Ctrl-C: stop the rest
    return table.assign(source_path=sources.to_numpy(), path=sources.map(targets).to_numpy())
