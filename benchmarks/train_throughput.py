"""Training throughput: the seeds' pipeline vs the fast path, same device, same run.

    python benchmarks/train_throughput.py [--model resnet50] [--image-size 224] [--batch-size 64]
        [--steps 20] [--repeats 2] [--workers 2] [--device auto] [--compile] [--threads N]
        [--out FILE]

Both runs train with :func:`lesionlib.train.fit` (random initialisation, Adam, constant lr,
``train_transform(image_size, "basic")``) for one warm-up epoch, then ``--repeats`` timed
epochs of ``--steps`` batches each; images/second = images of an epoch / its ``seconds`` (the
fastest epoch: other work on a shared machine only ever slows it down).

- baseline ("seeds' pipeline"): full-size JPEGs decoded by Pillow every epoch (as torchvision's
  ImageFolder does), fp32, NCHW, no pinned memory, workers restarted every epoch;
- fast path: the resized cache (:func:`lesionlib.cache.prepare_cache`, shorter side
  ``--cache-size``, default image_size * 8/7) read by LesionDataset (TorchCodec JPEG decode),
  AMP (bfloat16 where supported, else float16 with a GradScaler; CUDA only), channels_last,
  pinned memory (CUDA) + non_blocking copies, persistent workers, optionally
  ``fit(compile=True)`` (``--compile``). The cache's one-off cost is reported as ``prepare_s``.

On a CPU, AMP is off, so the ratio there is mostly the decode saving. Default data: as
benchmarks/loader.py. Ends with ONE JSON line, also written to --out.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from _common import RESULTS, PillowDataset, benchmark_table, default_data, describe, finish
from torch.utils.data import DataLoader, RandomSampler

from lesionlib.cache import prepare_cache
from lesionlib.datasets import LesionDataset, classes_of
from lesionlib.models import build_model
from lesionlib.train import fit, get_device, seed_everything
from lesionlib.transforms import train_transform


def train_img_s(
    table: pd.DataFrame, args: argparse.Namespace, device: torch.device, fast: bool
) -> tuple[float, str]:
    """Images/second of the best of ``args.repeats`` timed epochs (after a warm-up epoch), and
    what ``fit`` says the run used (``FitResult.speed``)."""
    generator = seed_everything(0)
    dataset_class = LesionDataset if fast else PillowDataset
    dataset = dataset_class(table, transform=train_transform(args.image_size, "basic"))
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=RandomSampler(
            dataset, num_samples=args.steps * args.batch_size, generator=generator
        ),  # epochs of --steps batches, whatever the number of images
        num_workers=args.workers,
        pin_memory=fast and device.type == "cuda",
        persistent_workers=fast and args.workers > 0,
    )
    model = build_model(args.model, len(classes_of(table)), pretrained=False)
    result = fit(
        model,
        {"train": loader},
        epochs=1 + args.repeats,
        scheduler=None,
        device=device,
        amp=fast,
        channels_last=fast,
        compile=fast and args.compile,
        progress=False,
    )
    fastest = min(row["seconds"] for row in result.history[1:])
    return args.steps * args.batch_size / fastest, result.speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--cache-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="batches per epoch")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs (best is kept)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    parser.add_argument("--compile", action="store_true", help="fit(compile=True) on the fast path")
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
        baseline, baseline_speed = train_img_s(table, args, device, fast=False)
        start = time.perf_counter()
        cached = prepare_cache(
            table, size=cache_size, cache_root=scratch / "cache", workers=args.workers
        )
        prepare_s = time.perf_counter() - start
        fast, fast_speed = train_img_s(cached, args, device, fast=True)

    finish(
        {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
            "baseline_img_s": round(baseline, 2),
            "fast_img_s": round(fast, 2),
            "ratio": round(fast / baseline, 2),
            "baseline_path": baseline_speed,
            "fast_path": fast_speed,
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
