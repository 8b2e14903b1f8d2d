"""Loader throughput: full-size JPEG decode every epoch vs the resized cache (lesionlib.cache).

    python benchmarks/loader.py [--data DIR] [--size 256] [--workers 2] [--epoch-images 600]
        [--repeats 2] [--out FILE]

Three runs push images through eval_transform(224) in a torch DataLoader with ``--workers``
worker processes (persistent):

- ``raw_img_s``: the full-size originals read the seeds' way (Pillow decodes the whole file, as
  torchvision's ImageFolder does; ``_common.PillowDataset``);
- ``raw_lesionlib_img_s``: the same originals through lesionlib's LesionDataset (TorchCodec JPEG
  decode straight into a tensor), i.e. lesionlib without the cache;
- ``cached_img_s``: LesionDataset on the resized cache.

``ratio`` = cached / raw (the goal: >= 10); ``ratio_vs_raw_lesionlib`` = cached / raw_lesionlib.
``cached_uint8_img_s`` times the cache once more with uint8 batches (no float conversion or
normalisation in the workers: what a loop that normalises on the GPU would need).
An epoch is ``--epoch-images`` random draws from the data (a real epoch is long: ISIC 2019 has
25,331 images, the sample 120). One warm-up epoch starts the workers and fills the page cache,
then the best of ``--repeats`` epochs is kept: the figure is decode + transform throughput, not
disk speed. The cache is prepared in a temporary
folder and its one-off cost is reported separately (``prepare_s``). Default data: the real
ISIC 2016 originals (``$LESIONLIB_REAL_DATA/isic2016-sample`` or
``../shared/data/isic2016-sample``), else 64 synthetic 1024x1024 JPEGs. Ends with ONE JSON line,
also written to --out.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from _common import RESULTS, PillowDataset, benchmark_table, default_data, describe, finish
from torch.utils.data import DataLoader, RandomSampler
from torchvision.transforms import v2

from lesionlib.cache import prepare_cache
from lesionlib.datasets import LesionDataset
from lesionlib.images import jpeg_decoder
from lesionlib.transforms import eval_transform


def uint8_eval_transform(image_size: int) -> v2.Compose:
    """eval_transform without the float conversion and normalisation: uint8 batches, 4x smaller,
    for a training loop that normalises on the GPU (an option measured here, not what lesionlib
    does)."""
    steps = eval_transform(image_size).transforms
    return v2.Compose([t for t in steps if not isinstance(t, (v2.ToDtype, v2.Normalize))])


def loader_img_s(
    dataset_class: type[LesionDataset],
    table: pd.DataFrame,
    transform: Callable[[Any], torch.Tensor],
    batch_size: int,
    workers: int,
    epoch_images: int,
    repeats: int,
) -> float:
    """Images per second of the best of ``repeats`` timed epochs of ``epoch_images`` random
    draws from ``table``, after a warm-up epoch (worker start-up, page cache)."""
    dataset = dataset_class(table, transform=transform)
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RandomSampler(dataset, num_samples=epoch_images, generator=generator),
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    for _ in loader:  # warm-up epoch
        pass
    best = 0.0
    for _ in range(repeats):  # best of: other work on a shared machine only ever slows it down
        start = time.perf_counter()
        images = sum(len(batch) for batch, _targets in loader)
        best = max(best, images / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--size", type=int, default=256, help="cache size (shorter side)")
    parser.add_argument("--image-size", type=int, default=224, help="eval_transform size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--epoch-images", type=int, default=600, help="images per epoch (drawn from the data)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs (best is kept)")
    parser.add_argument("--out", type=Path, default=RESULTS / "loader.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        table = benchmark_table(args.data, scratch)
        timing = (args.batch_size, args.workers, args.epoch_images, args.repeats)
        transform = eval_transform(args.image_size)
        raw = loader_img_s(PillowDataset, table, transform, *timing)
        raw_lesionlib = loader_img_s(LesionDataset, table, transform, *timing)
        start = time.perf_counter()
        cached_table = prepare_cache(
            table, size=args.size, cache_root=scratch / "cache", workers=args.workers
        )
        prepare_s = time.perf_counter() - start
        cached = loader_img_s(LesionDataset, cached_table, transform, *timing)
        uint8 = uint8_eval_transform(args.image_size)
        cached_uint8 = loader_img_s(LesionDataset, cached_table, uint8, *timing)

    finish(
        {
            "raw_img_s": round(raw, 2),
            "raw_lesionlib_img_s": round(raw_lesionlib, 2),
            "cached_img_s": round(cached, 2),
            "ratio": round(cached / raw, 2),
            "ratio_vs_raw_lesionlib": round(cached / raw_lesionlib, 2),
            "cached_uint8_img_s": round(cached_uint8, 2),
            "jpeg_decoder": jpeg_decoder()[0],
            "prepare_s": round(prepare_s, 2),
            "images": len(table),
            "size": args.size,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "epoch_images": args.epoch_images,
            "repeats": args.repeats,
            "data": describe(args.data),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
