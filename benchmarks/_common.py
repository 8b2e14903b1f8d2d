"""Helpers shared by the benchmark scripts: default data, the image table, machine, results."""

from __future__ import annotations

import datetime
import json
import os
import platform
import warnings
from pathlib import Path

import pandas as pd
import torch

from lesionlib.datasets import LesionDataset, read_isic2016, read_isic2019
from lesionlib.images import load_image
from lesionlib.settings import real_data_dir
from lesionlib.synthetic import write_isic2019_sample

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SAMPLE = "isic2016-sample"


class PillowDataset(LesionDataset):
    """The seeds' way of reading an image (what torchvision's ImageFolder does): Pillow decodes
    the whole file, and the transform gets the PIL image. lesionlib's LesionDataset decodes
    JPEGs with TorchCodec into a tensor instead (lesionlib.datasets.read_image)."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_image(self.paths[index])), int(self.targets[index])


def default_data() -> Path | None:
    """The real ISIC 2016 originals: ``$LESIONLIB_REAL_DATA/isic2016-sample``, else
    ``../shared/data/isic2016-sample`` next to the repo; None when neither exists."""
    candidates = [REPO.parent / "shared" / "data" / SAMPLE]
    if real_data_dir() is not None:
        candidates.insert(0, real_data_dir() / SAMPLE)
    return next((path for path in candidates if path.is_dir()), None)


def benchmark_table(data: Path | None, scratch: Path, synthetic_images: int = 64) -> pd.DataFrame:
    """The images to time: an ISIC 2016 folder (only the images present), or, when ``data`` is
    None, ``synthetic_images`` synthetic 1024x1024 JPEGs written under ``scratch``."""
    if data is None:
        root = write_isic2019_sample(
            scratch / "synthetic-1024",
            n_lesions=synthetic_images,
            images_per_lesion=(1, 1),
            image_size=1024,
        )
        return read_isic2019(root)
    with warnings.catch_warnings():  # the sample holds 120 of the 900 listed images, on purpose
        warnings.simplefilter("ignore", UserWarning)
        return read_isic2016(data, split="train", missing="drop")


def describe(data: Path | None) -> str:
    """How the results name the data: the folder's name, or the synthetic fallback."""
    return data.name if data is not None else "synthetic 1024x1024 JPEGs"


def machine() -> str:
    """CPU model, core count, RAM and GPU (or 'no GPU'), in one line."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = models[0] if models else cpu
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {ram_gib:.0f} GiB RAM, {gpu}"


def finish(result: dict, out: Path) -> None:
    """Add machine, load average (1/5/15 min: other work on a shared machine skews the figures)
    and date; print ``result`` as ONE JSON line and write it to ``out``."""
    result = {
        **result,
        "machine": machine(),
        "load_avg": [round(load, 2) for load in os.getloadavg()],
        "date": datetime.date.today().isoformat(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
