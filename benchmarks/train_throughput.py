"""Training throughput against the model's own ceiling: the model alone, fit's fast path and the
seeds' pipeline, in one run, on one device, with one model, batch size and optimizer.

    python benchmarks/train_throughput.py [--model resnet50] [--image-size 224] [--batch-size 64]
        [--steps 20] [--repeats 2] [--workers 2] [--precision auto] [--device auto] [--compile]
        [--threads N] [--out FILE]

All three train a randomly initialised ``--model`` with Adam at a constant learning rate:

- ceiling (the model alone): train steps on one synthetic batch already on the device
  (normalised float32, channels_last on CUDA), in the precision ``fit`` picks for
  ``--precision`` (autocast; a GradScaler for float16), no read-back of the loss: what the
  device does when it never waits for data. ``--steps`` warm-up steps, then the best of
  ``--repeats`` runs of ``--steps`` steps, timed between device synchronisations.
- fast path: :func:`lesionlib.train.fit` on the resized cache (:func:`lesionlib.cache.
  prepare_cache`, shorter side ``--cache-size``, default image_size * 8/7) read by LesionDataset
  (TorchCodec JPEG decode) with ``train_transform(image_size, "basic", normalize=False)``: uint8
  batches, normalised by ``fit`` on the device, as ``make_loaders`` builds them; pinned memory on
  CUDA. Its workers are persistent (``make_loaders``' restart every epoch, which over these short
  epochs would be a large share of the time, and over a real epoch a small one). One warm-up
  epoch, then the best of ``--repeats`` epochs of ``--steps`` batches (``fit``'s ``seconds``).
- baseline (the seeds' pipeline): a plain loop as the seeds wrote it: full-size originals decoded
  by Pillow every epoch (as torchvision's ImageFolder does), ``train_transform(image_size,
  "basic")`` in the workers (float32 batches), float32, NCHW, no pinned memory, workers started
  anew every epoch, ``loss.item()`` every batch. Epochs as for the fast path.

``fast_over_ceiling`` = fast / ceiling (the goal on a GPU: >= 0.85); ``ratio`` = fast /
baseline. On a CPU the model and the loader's workers share the cores, so there the figures only
show that the script runs. Default data: as benchmarks/loader.py. Ends with ONE JSON line, also
written to --out.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from _common import RESULTS, PillowDataset, benchmark_table, default_data, describe, finish
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from lesionlib.cache import prepare_cache
from lesionlib.cli import PRECISIONS
from lesionlib.datasets import LesionDataset, classes_of
from lesionlib.models import build_model
from lesionlib.train import _amp_dtype, fit, get_device, seed_everything
from lesionlib.transforms import train_transform

LR = 1e-4


def _sync(device: torch.device) -> None:
    """Wait until the device has done all it was given (timings end there)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _model(args: argparse.Namespace, classes: int, device: torch.device) -> nn.Module:
    """A fresh randomly initialised ``--model`` on ``device`` (compiled with ``--compile``)."""
    seed_everything(0)
    model = build_model(args.model, classes, pretrained=False, image_size=args.image_size)
    model = model.to(device)
    if args.compile:
        model.compile()  # in place, as notebook 03 and train --compile do
    return model


def ceiling_img_s(
    args: argparse.Namespace, classes: int, device: torch.device
) -> tuple[list[float], str]:
    """Images/second of each timed run of the model alone, and the precision it used."""
    model = _model(args, classes, device).train()
    dtype = _amp_dtype(device, PRECISIONS[args.precision])  # the rule fit applies
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(classes, (args.batch_size,), device=device)
    if device.type == "cuda":  # as fit does on CUDA
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step() -> None:
        with torch.autocast(device.type, dtype, dtype is not None):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(args.steps):  # warm-up: cuDNN's algorithm search, allocator, compilation
        step()
    runs = []
    for _ in range(args.repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        runs.append(args.steps * args.batch_size / (time.perf_counter() - start))
    return runs, "float32" if dtype is None else f"{str(dtype)[6:]} mixed precision"


def _loader(
    dataset: LesionDataset, args: argparse.Namespace, pinned: bool, persistent: bool
) -> DataLoader:
    """Epochs of ``--steps`` random batches, whatever the number of images."""
    generator = torch.Generator().manual_seed(0)
    sampler = RandomSampler(dataset, num_samples=args.steps * args.batch_size, generator=generator)
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        pin_memory=pinned,
        persistent_workers=persistent and args.workers > 0,
    )


def fast_img_s(
    table: pd.DataFrame, args: argparse.Namespace, device: torch.device
) -> tuple[list[float], str]:
    """Images/second of each timed epoch of ``fit`` on the cache, and ``FitResult.setup``."""
    transform = train_transform(args.image_size, "basic", normalize=False)
    loader = _loader(LesionDataset(table, transform), args, device.type == "cuda", True)
    model = _model(args, len(classes_of(table)), device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    amp = PRECISIONS[args.precision]
    result = fit(model, {"train": loader}, optimizer, 1 + args.repeats, amp=amp, progress=False)
    images = args.steps * args.batch_size
    return [images / row["seconds"] for row in result.history[1:]], result.setup


def baseline_img_s(
    table: pd.DataFrame, args: argparse.Namespace, device: torch.device
) -> list[float]:
    """Images/second of each timed epoch of the seeds' loop on the originals."""
    dataset = PillowDataset(table, transform=train_transform(args.image_size, "basic"))
    loader = _loader(dataset, args, pinned=False, persistent=False)
    model = _model(args, len(classes_of(table)), device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    epochs: list[float] = []
    for _ in range(1 + args.repeats):
        _sync(device)
        start = time.perf_counter()
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            loss.item()  # the seeds print or sum the loss of every batch
        _sync(device)
        epochs.append(args.steps * args.batch_size / (time.perf_counter() - start))
    return epochs[1:]  # the first epoch is the warm-up


def _release(device: torch.device) -> None:
    """Give the previous measurement's memory back before the next one."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--cache-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="batches per epoch")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs/epochs (best kept)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="auto")
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    parser.add_argument("--compile", action="store_true", help="model.compile() (ceiling, fast)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cache_size = args.cache_size or round(args.image_size * 8 / 7)
    device = get_device(None if args.device == "auto" else args.device)

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        table = benchmark_table(args.data, scratch)
        ceiling, precision = ceiling_img_s(args, len(classes_of(table)), device)
        _release(device)
        start = time.perf_counter()
        cached = prepare_cache(
            table, size=cache_size, cache_root=scratch / "cache", workers=args.workers
        )
        prepare_s = time.perf_counter() - start
        fast, fast_setup = fast_img_s(cached, args, device)
        _release(device)
        baseline = baseline_img_s(table, args, device)

    finish(
        {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
            "ceiling_img_s": round(max(ceiling), 2),
            "fast_img_s": round(max(fast), 2),
            "baseline_img_s": round(max(baseline), 2),
            "fast_over_ceiling": round(max(fast) / max(ceiling), 3),
            "ratio": round(max(fast) / max(baseline), 2),
            "ceiling_runs": [round(v, 2) for v in ceiling],
            "fast_epochs": [round(v, 2) for v in fast],
            "baseline_epochs": [round(v, 2) for v in baseline],
            "precision": precision,
            "fast_path": fast_setup,
            "model": args.model,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "repeats": args.repeats,
            "workers": args.workers,
            "threads": torch.get_num_threads(),
            "cache_size": cache_size,
            "prepare_s": round(prepare_s, 2),
            "compile": args.compile,
            "images": len(table),
            "data": describe(args.data),
            "torch": torch.__version__,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
