"""Loader throughput: full-size JPEG decode every epoch vs the resized cache (lesionlib.cache);
with ``--preset``, the training loader's float32 batches (before issue 11) vs its uint8 ones.

    python benchmarks/loader.py [--data DIR] [--size 256] [--workers 2] [--epoch-images 600]
        [--repeats 2] [--out FILE]
    python benchmarks/loader.py --preset basic [--repeats 5] [--epoch-images 1200] [--out FILE]

Three runs push images through eval_transform(224) in a torch DataLoader with ``--workers``
worker processes (persistent):

- ``raw_img_s``: the full-size originals read the seeds' way (Pillow decodes the whole file, as
  torchvision's ImageFolder does; ``_common.PillowDataset``);
- ``raw_lesionlib_img_s``: the same originals through lesionlib's LesionDataset (TorchCodec JPEG
  decode straight into a tensor), i.e. lesionlib without the cache;
- ``cached_img_s``: LesionDataset on the resized cache.

``ratio`` = cached / raw (the goal: >= 10); ``ratio_vs_raw_lesionlib`` = cached / raw_lesionlib.
``cached_uint8_img_s`` times the cache once more with ``eval_transform(image_size,
normalize=False)``: uint8 batches, as ``make_loaders`` gives them since issue 11.
An epoch is ``--epoch-images`` random draws from the data (a real epoch is long: ISIC 2019 has
25,331 images, the sample 120). One warm-up epoch starts the workers and fills the page cache,
then the best of ``--repeats`` epochs is kept: the figure is decode + transform throughput, not
disk speed. The cache is prepared in a temporary
folder and its one-off cost is reported separately (``prepare_s``). Default data: the real
ISIC 2016 originals (``$LESIONLIB_REAL_DATA/isic2016-sample`` or
``../shared/data/isic2016-sample``), else 64 synthetic 1024x1024 JPEGs. Ends with ONE JSON line,
also written to --out.

``--preset PRESET`` times the training loader itself, side by side on the cache: the train loader
of ``make_loaders(table, image_size, augment=PRESET, num_workers=--workers)`` (workers started
anew every epoch, as in training) with four pipelines:

- ``before_img_s``: the one it had before issue 11 (:func:`train_transform_before_issue_11`:
  float32 normalised in the workers, flips and rotation as three torchvision transforms);
- ``float_img_s``: ``train_transform(image_size, PRESET)``, today's float32 pipeline (flips and
  rotation in one step, :func:`lesionlib.transforms.random_symmetry`);
- ``uint8_img_s``: ``train_transform(image_size, PRESET, normalize=False)``, what it uses now;
- ``uint8_normalized_img_s``: the same, each batch then normalised in the main process, as
  ``fit`` does when the model is on the CPU.

An epoch is the data repeated to ``--epoch-images`` images. After one warm-up epoch of each, the
four alternate for ``--repeats`` rounds (other work on a shared machine then hits them alike);
every round is reported, with ``ratios`` = uint8 / before per round and their median.
"""

from __future__ import annotations

import argparse
import statistics
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
from lesionlib.train import make_loaders
from lesionlib.transforms import (
    AUGMENT_PRESETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    central_square,
    eval_transform,
    normalize,
    train_transform,
)


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


def train_transform_before_issue_11(image_size: int, augment: str) -> v2.Compose:
    """``train_transform`` as it was before issue 11 (commit c686791), for the side-by-side."""
    if augment == "none":
        return eval_transform(image_size)  # unchanged since
    rotations = [v2.RandomRotation(degrees=(a, a)) for a in (0, 90, 180, 270)]
    min_scale = 0.85 if augment == "basic" else 0.7
    geometric = [
        central_square,
        v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomChoice(rotations),
    ]
    photometric: list[v2.Transform] = []
    if augment == "strong":
        geometric.append(
            v2.RandomAffine(degrees=15, translate=(0.05, 0.05), scale=(0.9, 1.1), shear=5)
        )
        photometric = [
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0))], p=0.3),
            v2.RandomAdjustSharpness(sharpness_factor=2.0, p=0.3),
        ]
    to_float = [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        v2.ToPureTensor(),
    ]
    return v2.Compose([v2.ToImage(), *geometric, *photometric, *to_float])


def _epoch_img_s(loader: DataLoader, on_batch: Callable[[torch.Tensor], Any]) -> float:
    """Images per second of one pass over ``loader``, calling ``on_batch`` on every batch."""
    start = time.perf_counter()
    images = 0
    for batch, _targets in loader:
        on_batch(batch)
        images += len(batch)
    return images / (time.perf_counter() - start)


def train_loader_side_by_side(cached: pd.DataFrame, args: argparse.Namespace) -> dict[str, Any]:
    """``--preset``: make_loaders' train loader with the pipeline of before issue 11, today's
    float32 one and its uint8 one, alternating, every round reported."""
    copies = -(-args.epoch_images // len(cached))  # the data repeated to one epoch
    table = pd.concat([cached] * copies, ignore_index=True).assign(split="train")

    def train_loader(transform: v2.Compose | None = None) -> DataLoader:
        loader = make_loaders(
            table,
            args.image_size,
            batch_size=args.batch_size,
            augment=args.preset,
            num_workers=args.workers,
        )["train"]
        if transform is not None:
            loader.dataset.transform = transform
        return loader

    size, preset = args.image_size, args.preset
    runs: dict[str, tuple[DataLoader, Callable[[torch.Tensor], Any]]] = {
        "before": (train_loader(train_transform_before_issue_11(size, preset)), len),
        "float": (train_loader(train_transform(size, preset)), len),
        "uint8": (train_loader(), len),
        "uint8_normalized": (train_loader(), normalize),
    }
    for loader, on_batch in runs.values():  # warm-up: page cache, first imports in the workers
        _epoch_img_s(loader, on_batch)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (loader, on_batch) in runs.items():
            rates[name].append(round(_epoch_img_s(loader, on_batch), 2))
    ratios = [round(u / b, 3) for u, b in zip(rates["uint8"], rates["before"], strict=True)]
    first = runs["uint8"][0]
    return {
        "preset": args.preset,
        **{f"{name}_img_s": values for name, values in rates.items()},
        "ratios": ratios,
        "median_ratio": round(statistics.median(ratios), 3),
        "epoch_images": len(table),
        "persistent_workers": first.persistent_workers,
        "pin_memory": first.pin_memory,
    }


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
    parser.add_argument(
        "--preset", choices=AUGMENT_PRESETS, default=None, help="time the train loader instead"
    )
    parser.add_argument("--out", type=Path, default=None, help="default: results/loader*.json")
    args = parser.parse_args()
    name = "loader.json" if args.preset is None else f"loader_train_{args.preset}.json"
    args.out = args.out or RESULTS / name
    common = {
        "jpeg_decoder": jpeg_decoder()[0],
        "size": args.size,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "repeats": args.repeats,
        "data": describe(args.data),
    }
    if args.preset is not None:
        with tempfile.TemporaryDirectory() as scratch_name:
            scratch = Path(scratch_name)
            table = benchmark_table(args.data, scratch)
            cached = prepare_cache(
                table, size=args.size, cache_root=scratch / "cache", workers=args.workers
            )
            result = train_loader_side_by_side(cached, args)
        finish({**result, "images": len(table), **common}, args.out)
        return

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
        uint8 = eval_transform(args.image_size, normalize=False)
        cached_uint8 = loader_img_s(LesionDataset, cached_table, uint8, *timing)

    finish(
        {
            "raw_img_s": round(raw, 2),
            "raw_lesionlib_img_s": round(raw_lesionlib, 2),
            "cached_img_s": round(cached, 2),
            "ratio": round(cached / raw, 2),
            "ratio_vs_raw_lesionlib": round(cached / raw_lesionlib, 2),
            "cached_uint8_img_s": round(cached_uint8, 2),
            "prepare_s": round(prepare_s, 2),
            "images": len(table),
            "epoch_images": args.epoch_images,
            **common,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
