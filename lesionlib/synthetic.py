"""A small, learnable, dermoscopy-like sample in the official layouts: each lesion is a blob on skin
whose colour, size, border and dots follow its class, varied per lesion and per image."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.random import Generator
from PIL import Image

from lesionlib import layouts
from lesionlib.layouts import BINARY_CLASSES, ISIC2019_CLASSES
from lesionlib.settings import cache_dir

SAMPLE_VERSION = "v2"
ISIC2019_COUNTS = dict(MEL=4522, NV=12875, BCC=3323, AK=867, BKL=2624, DF=239, VASC=253, SCC=628)
"""Images per class in the ISIC 2019 training set: the synthetic sample's class proportions."""
MIN_LESIONS_PER_CLASS = 4

# Per class: lesion colour (RGB), radius (share of the half-width), border wobble, dot colour.
_STYLES = {
    "MEL": ((80, 50, 40), 0.58, 0.15, (30, 20, 20)),
    "NV": ((145, 95, 65), 0.44, 0.04, (95, 60, 40)),
    "BCC": ((205, 150, 150), 0.46, 0.08, (95, 105, 125)),
    "AK": ((200, 115, 105), 0.50, 0.10, (238, 228, 215)),
    "BKL": ((175, 125, 90), 0.48, 0.08, (225, 210, 180)),
    "DF": ((155, 110, 85), 0.32, 0.05, (240, 232, 225)),
    "VASC": ((155, 45, 75), 0.34, 0.05, (110, 15, 45)),
    "SCC": ((215, 175, 160), 0.60, 0.10, (175, 35, 45)),
}
_BINARY_STYLES = {"benign": ("NV", "BKL"), "malignant": ("MEL",)}
_SITES = ("anterior torso", "posterior torso", "lower extremity", "upper extremity", "head/neck",
          "lateral torso", "palms/soles", "oral/genital", "")  # fmt: skip


def _class_counts(classes: Sequence[str], n_lesions: int, imbalance: bool) -> np.ndarray:
    """Lesions per class: ISIC 2019 proportions (or equal), at least a few of each."""
    k = len(classes)
    if n_lesions < k:
        raise ValueError(f"n_lesions={n_lesions} is below the number of classes ({k})")
    floor = min(MIN_LESIONS_PER_CLASS, n_lesions // k)
    weights = np.array([ISIC2019_COUNTS[c] if imbalance else 1 for c in classes], dtype=float)
    share = (n_lesions - floor * k) * weights / weights.sum()
    counts = np.floor(share).astype(int)
    rest = n_lesions - floor * k - counts.sum()
    counts[np.argsort(-(share - counts), kind="stable")[:rest]] += 1
    return counts + floor


def _lesion(style: str, rng: Generator) -> dict:
    """One lesion's look: its class style with its own shade, size, shape and skin."""
    colour, radius, wobble, dots = _STYLES[style]
    return {
        "skin": np.array([226, 186, 160]) * rng.uniform(0.8, 1.04) + rng.normal(0, 4, 3),
        "colour": np.array(colour) * rng.uniform(0.85, 1.15) + rng.normal(0, 7, 3),
        "dots": np.array(dots),
        "radius": radius * rng.uniform(0.8, 1.2),
        "wobble": wobble * rng.uniform(0.5, 1.5),
        "lobes": rng.integers(2, 7),
        "phase": rng.uniform(0, 2 * np.pi),
        "freq": rng.uniform(10, 16),
    }


def _draw(lesion: dict, size: int, rng: Generator) -> np.ndarray:
    """A ``size``² RGB image of ``lesion``, moved, turned and lit anew, under vignette and noise."""
    grid = np.linspace(-1, 1, size)
    y, x = np.meshgrid(grid - rng.normal(0, 0.06), grid - rng.normal(0, 0.06), indexing="ij")
    theta = np.arctan2(y, x) + rng.normal(0, 0.3)
    wave = np.sin(lesion["lobes"] * theta + lesion["phase"])
    border = lesion["radius"] * (1 + lesion["wobble"] * wave)
    inside = (1 / (1 + np.exp(12 * (np.hypot(x, y) / border - 1))))[..., None]  # a soft edge
    dotted = np.sin(lesion["freq"] * x) * np.sin(lesion["freq"] * y) > 0.6
    image = lesion["skin"] * (1 - inside) + lesion["colour"] * inside
    image += 0.6 * (dotted[..., None] * inside) * (lesion["dots"] - image)
    vignette = 1 - 0.6 * np.clip(np.hypot(*np.meshgrid(grid, grid)) - 0.8, 0, 1)
    image *= vignette[..., None] * rng.uniform(0.9, 1.1)
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def _write_images(looks: Sequence[dict], paths: Sequence[Path], size: int, rng: Generator) -> None:
    """Save one JPEG per path, showing the lesion at the same index of ``looks``."""
    for lesion, path in zip(looks, paths, strict=True):
        Image.fromarray(_draw(lesion, size, rng)).save(path, quality=92)


def write_isic2019_sample(
    root: str | Path,
    n_lesions: int = 96,
    images_per_lesion: tuple[int, int] = (1, 3),
    image_size: int = 64,
    classes: Sequence[str] = ISIC2019_CLASSES,
    seed: int = 0,
    imbalance: bool = True,
) -> Path:
    """Write ``root`` in the official ISIC 2019 layout: CRLF CSVs, 0.0/1.0 one-hot (+ UNK), 5-column
    metadata (no lesion id for some lone images), JPEGs; ISIC 2019 shares with ``imbalance``."""
    if unknown := [c for c in classes if c not in ISIC2019_CLASSES]:
        raise ValueError(f"unknown ISIC 2019 classes {unknown}; choose from {ISIC2019_CLASSES}")
    low, high = images_per_lesion
    if not 1 <= low <= high:
        raise ValueError(f"images_per_lesion must be (low, high), 1 <= low <= high: {low, high}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / layouts.ISIC2019_IMAGES).mkdir(parents=True, exist_ok=True)
    counts = _class_counts(classes, n_lesions, imbalance)
    lesion_class = rng.permutation(np.repeat(np.asarray(classes), counts))
    n_images = rng.integers(low, high + 1, n_lesions)
    lesion_of_image = rng.permutation(np.repeat(np.arange(n_lesions), n_images))
    ids = [f"ISIC_{i:07d}" for i in range(len(lesion_of_image))]
    paths = [root / layouts.ISIC2019_IMAGES / f"{i}.jpg" for i in ids]
    looks = [_lesion(style, rng) for style in lesion_class]
    _write_images([looks[i] for i in lesion_of_image], paths, image_size, rng)
    crlf: dict = dict(index=False, lineterminator="\r\n")  # as in the official files
    onehot = {c: (lesion_class[lesion_of_image] == c) * 1.0 for c in (*ISIC2019_CLASSES, "UNK")}
    pd.DataFrame({"image": ids} | onehot).to_csv(root / layouts.ISIC2019_GROUND_TRUTH, **crlf)
    lesion_ids = np.array([f"IL_{i:07d}" for i in rng.permutation(n_lesions)], dtype=object)
    lesion_ids[(n_images == 1) & (rng.random(n_lesions) < 0.1)] = ""
    per_lesion = {
        "age_approx": rng.integers(4, 18, n_lesions) * 5.0,
        "anatom_site_general": rng.choice(_SITES, n_lesions),
        "lesion_id": lesion_ids,
        "sex": rng.choice(["male", "female", ""], n_lesions, p=[0.48, 0.48, 0.04]),
    }
    meta = {"image": ids} | {k: v[lesion_of_image] for k, v in per_lesion.items()}
    pd.DataFrame(meta).to_csv(root / layouts.ISIC2019_METADATA, **crlf)
    return root


def write_imagefolder_sample(
    root: str | Path,
    classes: Sequence[str] = BINARY_CLASSES,
    n_per_class: int = 40,
    image_size: int = 64,
    seed: int = 0,
    splits: Sequence[str] = ("train", "test"),
) -> Path:
    """Write ``root/<split>/<class>/*.jpg`` (``root/<class>/`` without ``splits``), one image per
    lesion; classes: ISIC 2019 codes, ``benign`` (NV/BKL-like) or ``malignant`` (MEL-like)."""
    allowed = (*ISIC2019_CLASSES, *_BINARY_STYLES)
    if unknown := [c for c in classes if c not in allowed]:
        raise ValueError(f"no synthetic appearance for classes {unknown}; choose from {allowed}")
    rng = np.random.default_rng(seed)
    styles, paths = [], []
    for split in splits or ("",):
        for name in classes:
            folder = Path(root, split, name)
            folder.mkdir(parents=True, exist_ok=True)
            styles.extend(rng.choice(_BINARY_STYLES.get(name, (name,)), n_per_class))
            paths += [folder / f"{name}_{split or 'all'}_{i:04d}.jpg" for i in range(n_per_class)]
    _write_images([_lesion(style, rng) for style in styles], paths, image_size, rng)
    return Path(root)


def default_sample(layout: str = "isic2019") -> Path:
    """The default sample (``"isic2019"``: 8 classes; ``"imagefolder"``: benign/malignant), written
    once under ``cache_dir()``: in a temporary folder then renamed, never half."""
    writers = {"isic2019": write_isic2019_sample, "imagefolder": write_imagefolder_sample}
    if layout not in writers:
        raise ValueError(f"unknown synthetic layout {layout!r}; expected one of {list(writers)}")
    target = cache_dir() / f"synthetic-{layout}-{SAMPLE_VERSION}"
    if target.is_dir():
        return target
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as partial:
        writers[layout](partial)
        try:
            os.replace(partial, target)
        except OSError:
            if not target.is_dir():  # not a concurrent writer that finished first
                raise
    return target
