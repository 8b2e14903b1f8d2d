"""Which format should the resized cache use? JPEG q95 vs PNG vs one uint8 memmap array.

    python benchmarks/cache_formats.py [--data DIR] [--size 256] [--repeats 3] [--out FILE]

Every source is decoded and resized once (shorter side = size, lesionlib.cache.load_resized),
then written as (a) JPEG quality 95, (b) PNG, (c) a row of one ``[N, size, size, 3]`` uint8
``.npy`` memmap (center-cropped to a square). Reported per format: disk size, write time,
read+decode throughput to a uint8 3×H×W tensor (``read_image``, as LesionDataset does; a row
copy for the memmap) and the same followed by ``eval_transform(224)``, in one process with one torch
thread, as in a DataLoader worker (files in the page cache, as from the second epoch on). For
reference, decoding the originals at full size with Pillow (the seeds' way) and with ``draft`` +
resize (what ``prepare_cache`` does) is timed too. Ends
with one JSON line, also written to --out.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, benchmark_table, default_data, describe, finish
from PIL import Image

from lesionlib.cache import load_resized
from lesionlib.images import load_image, read_image
from lesionlib.transforms import eval_transform


def _rate(count: int, work: Callable[[], None], repeats: int) -> float:
    """Best images/second over ``repeats`` runs of ``work`` (which handles ``count`` images)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return count / best


def _center_square(image: Image.Image, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` pixels of an image whose shorter side is ``size``."""
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "cache_formats.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker: figures are per CPU core

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        sources = list(benchmark_table(args.data, scratch)["path"])
        n = len(sources)

        transform = eval_transform(224)

        def decode_full() -> None:
            for path in sources:
                load_image(path)

        def pipeline_full() -> None:
            for path in sources:
                transform(load_image(path))

        for path in sources:  # page cache: time decoding, not the disk
            Path(path).read_bytes()
        raw_full = _rate(n, decode_full, 1)
        raw_pipeline = _rate(n, pipeline_full, 1)
        start = time.perf_counter()
        resized = [load_resized(path, args.size) for path in sources]
        draft = n / (time.perf_counter() - start)
        source_mb = sum(Path(path).stat().st_size for path in sources) / 1e6

        files: dict[str, list[Path]] = {"jpeg_q95": [], "png": []}
        write_s: dict[str, float] = {}
        for name, suffix, options in (("jpeg_q95", "jpg", {"quality": 95}), ("png", "png", {})):
            (scratch / name).mkdir()
            start = time.perf_counter()
            for i, image in enumerate(resized):
                files[name].append(scratch / name / f"{i}.{suffix}")
                image.save(files[name][-1], **options)
            write_s[name] = time.perf_counter() - start
        array_path = scratch / "images.npy"
        start = time.perf_counter()
        array = np.lib.format.open_memmap(
            array_path, mode="w+", dtype=np.uint8, shape=(n, args.size, args.size, 3)
        )
        for i, image in enumerate(resized):
            array[i] = _center_square(image, args.size)
        array.flush()
        del array
        write_s["memmap_npy"] = time.perf_counter() - start

        images = np.load(array_path, mmap_mode="r")
        readers: dict[str, Callable[[int], torch.Tensor]] = {
            "jpeg_q95": lambda i: read_image(files["jpeg_q95"][i]),  # what LesionDataset does
            "png": lambda i: read_image(files["png"][i]),
            "memmap_npy": lambda i: torch.from_numpy(np.array(images[i])).permute(2, 0, 1),
        }
        formats = {}
        for name, read in readers.items():

            def decode(read=read) -> None:
                for i in range(n):
                    read(i)

            def pipeline(read=read) -> None:
                for i in range(n):
                    transform(read(i))

            paths = files.get(name, [array_path])
            formats[name] = {
                "decode_img_s": _rate(n, decode, args.repeats),
                "decode_eval_transform_img_s": _rate(n, pipeline, args.repeats),
                "disk_mb": sum(path.stat().st_size for path in paths) / 1e6,
            }
        for name, values in formats.items():
            values["write_s"] = write_s[name]
            values["kb_per_image"] = 1000 * values["disk_mb"] / n
            values["isic2019_gb"] = values["kb_per_image"] * 25_331 / 1e6
            values.update({k: round(v, 3) for k, v in values.items()})

    finish(
        {
            "images": n,
            "size": args.size,
            "source_mb": round(source_mb, 1),
            "raw_full_decode_img_s": round(raw_full, 2),
            "raw_full_decode_eval_transform_img_s": round(raw_pipeline, 2),
            "draft_decode_resize_img_s": round(draft, 2),
            "formats": formats,
            "data": describe(args.data),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
