"""A small, learnable, dermoscopy-like synthetic sample written in the official layouts: each
lesion is a blob on skin under a vignette, its colour, size, border and textures set by its class
and varied per lesion and per image, so that no single pixel decides it."""

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

SAMPLE_VERSION = "v1"
ISIC2019_COUNTS = dict(MEL=4522, NV=12875, BCC=3323, AK=867, BKL=2624, DF=239, VASC=253, SCC=628)
"""Images per class in the ISIC 2019 training set: the synthetic sample's class proportions."""
MIN_LESIONS_PER_CLASS = 4

_TEXTURES = ("dots", "streaks", "network", "veil", "vessels", "scale", "white_centre", "lacunae")
_TEXTURE_COLOURS = {
    "streaks": (45, 30, 25), "network": (70, 45, 30), "veil": (75, 82, 105),
    "vessels": (175, 35, 45), "scale": (238, 228, 215), "white_centre": (240, 232, 225),
    "lacunae": (110, 15, 45),
}  # fmt: skip
# colour (RGB), radius (fraction of the half-width), border irregularity, eccentricity, edge
# sharpness, colour of the dots, and the strength of each texture (0 = never).
_STYLES: dict[str, dict] = {
    "MEL": dict(colour=(80, 50, 40), radius=0.58, irregular=0.14, ecc=0.30, sharp=9,
                dot_colour=(30, 20, 20), dots=0.7, streaks=0.7, network=0.3, veil=0.45),
    "NV": dict(colour=(145, 95, 65), radius=0.44, irregular=0.04, ecc=0.15, sharp=14,
               dot_colour=(95, 60, 40), dots=0.3, network=0.6),
    "BCC": dict(colour=(205, 150, 150), radius=0.46, irregular=0.08, ecc=0.20, sharp=7,
                dot_colour=(95, 105, 125), dots=0.5, vessels=0.8),
    "AK": dict(colour=(200, 115, 105), radius=0.50, irregular=0.09, ecc=0.25, sharp=3,
               dot_colour=(170, 80, 75), scale=0.6, dots=0.2),
    "BKL": dict(colour=(175, 125, 90), radius=0.48, irregular=0.08, ecc=0.25, sharp=12,
                dot_colour=(225, 210, 180), dots=0.6, network=0.2),
    "DF": dict(colour=(155, 110, 85), radius=0.32, irregular=0.05, ecc=0.10, sharp=5,
               dot_colour=(120, 80, 60), white_centre=0.8, network=0.3),
    "VASC": dict(colour=(155, 45, 75), radius=0.34, irregular=0.05, ecc=0.20, sharp=14,
                 dot_colour=(110, 15, 45), lacunae=0.8),
    "SCC": dict(colour=(215, 175, 160), radius=0.60, irregular=0.10, ecc=0.20, sharp=6,
                dot_colour=(190, 120, 110), scale=0.7, vessels=0.3, white_centre=0.3),
}  # fmt: skip
_BINARY_STYLES = {"benign": ("NV", "BKL"), "malignant": ("MEL",)}
_SITES = ("anterior torso", "posterior torso", "lower extremity", "upper extremity", "head/neck",
          "lateral torso", "palms/soles", "oral/genital", "")  # fmt: skip
_CHUNK = 256


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


def _lesion_params(styles: Sequence[str], rng: Generator) -> dict[str, np.ndarray]:
    """Per-lesion appearance: the class style with random variation."""
    n, table = len(styles), [_STYLES[s] for s in styles]

    def column(key: str) -> np.ndarray:
        return np.array([t.get(key, 0.0) for t in table], dtype=float)

    def colour(key: str, shade: tuple[float, float], spread: float) -> np.ndarray:
        base = np.array([t[key] for t in table], dtype=float)
        return base * rng.uniform(*shade, (n, 1)) + rng.normal(0, spread, (n, 3))

    skin = np.array([226.0, 186, 160]) * rng.uniform(0.78, 1.04, (n, 1)) + rng.normal(0, 4, (n, 3))
    params = {
        "skin": skin,
        "colour": colour("colour", (0.8, 1.15), 7),
        "dot_colour": colour("dot_colour", (0.85, 1.15), 8),
        "radius": column("radius") * rng.uniform(0.75, 1.25, n),
        "irregular": column("irregular") * rng.uniform(0.5, 1.5, n),
        "ecc": np.clip(column("ecc") * rng.uniform(0.3, 1.5, n), 0, 0.6),
        "sharp": column("sharp") * rng.uniform(0.7, 1.3, n),
        "angle": rng.uniform(0, 2 * np.pi, n),
        "lobes": rng.integers(2, 7, (n, 2)).astype(float),
        "lobe_phase": rng.uniform(0, 2 * np.pi, (n, 2)),
        "freq": rng.uniform(10, 16, n),
        "tex_phase": rng.uniform(0, 2 * np.pi, (n, 4)),
        "skin_wave": rng.normal(0, 0.04, (n, 2)),
    }
    for name in _TEXTURES:
        present = rng.random(n) < 0.85
        params[name] = column(name) * present * rng.uniform(0.5, 1.1, n)
    return params


def _render(p: dict[str, np.ndarray], size: int, rng: Generator) -> np.ndarray:
    """Draw ``len(p['cx'])`` images of ``size`` x ``size`` pixels: uint8 array (N, H, W, 3)."""
    p = {key: value.astype(np.float32) for key, value in p.items()}  # float32: twice as fast
    n = len(p["cx"])
    col = {key: value[:, None, None] for key, value in p.items()}  # broadcast over the pixels
    grid = np.linspace(-1, 1, size, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    x, y = xx[None] - col["cx"], yy[None] - col["cy"]
    cos, sin = np.cos(col["angle"]), np.sin(col["angle"])
    u = cos * x + sin * y
    v = (-sin * x + cos * y) / (1 - col["ecc"])
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    lobes, phase = p["lobes"][:, :, None, None], p["lobe_phase"][:, :, None, None]
    wobble = (np.sin(lobes * theta[:, None] + phase) * [[[[1.0]], [[0.6]]]]).sum(axis=1)
    d = rho / (col["radius"] * (1 + col["irregular"] * wobble))  # < 1 inside the lesion
    inside = 1 / (1 + np.exp(-(1 - d) * col["sharp"]))
    wave = p["skin_wave"][:, :, None, None]
    skin_shade = 1 + wave[:, 0] * np.sin(2.5 * xx + 1.3) + wave[:, 1] * np.cos(3.1 * yy)
    skin = p["skin"][:, None, None, :] * skin_shade[..., None]
    lesion = p["colour"][:, None, None, :] * (0.78 + 0.3 * np.clip(d, 0, 1))[..., None]
    f, ph = col["freq"], p["tex_phase"][:, :, None, None]
    core = d < 0.95
    fields = {
        "dots": (np.sin(f * u + ph[:, 0]) * np.sin(f * v + ph[:, 1]) > 0.75) & core,
        "streaks": (np.cos(np.round(f) * theta + ph[:, 2]) > 0.5) & (d > 0.55) & core,
        "network": (np.abs(np.sin(f * u + ph[:, 2])) < 0.25) | (np.abs(np.sin(f * v)) < 0.25),
        "veil": (u * np.cos(ph[:, 3]) + v * np.sin(ph[:, 3]) > 0) & (d < 0.8),
        "vessels": np.abs(np.sin(0.8 * f * u + 2.5 * np.sin(4 * v + ph[:, 0]))) < 0.15,
        "scale": rng.random((n, size, size), dtype=np.float32) > 0.8,
        "white_centre": np.exp(-((d / 0.45) ** 2)),
        "lacunae": (np.sin(0.6 * f * u + ph[:, 1]) * np.sin(0.6 * f * v + ph[:, 2]) > 0.45) & core,
    }
    for name, field in fields.items():
        colour = p["dot_colour"] if name == "dots" else np.float32(_TEXTURE_COLOURS[name])
        alpha = (col[name] * field * (d < 1))[..., None]
        lesion += alpha * (np.broadcast_to(colour, (n, 3))[:, None, None, :] - lesion)
    image = skin * (1 - inside[..., None]) + lesion * inside[..., None]
    edge = np.clip((np.hypot(xx, yy) - 0.8) / 0.45, 0, 1)[None] ** 1.5
    image = image * ((1 - col["vignette"] * edge) * col["brightness"])[..., None]
    image += 6 * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _write_images(
    styles: Sequence[str], lesions: np.ndarray, paths: Sequence[Path], size: int, rng: Generator
) -> None:
    """Save one JPEG per path: image i shows lesion ``lesions[i]`` (of style ``styles[lesions[i]]``)
    with a slightly different crop, rotation and brightness each time."""
    lesion = _lesion_params(styles, rng)
    for start in range(0, len(paths), _CHUNK):
        index = lesions[start : start + _CHUNK]
        p, n = {key: value[index] for key, value in lesion.items()}, len(index)
        p.update(cx=rng.normal(0, 0.06, n), cy=rng.normal(0, 0.06, n))
        p.update(angle=p["angle"] + rng.normal(0, 0.3, n))
        p.update(radius=p["radius"] * rng.uniform(0.93, 1.07, n))
        p.update(brightness=rng.uniform(0.88, 1.1, n), vignette=rng.uniform(0.5, 0.9, n))
        pixels = _render(p, size, rng)
        for array, path in zip(pixels, paths[start : start + _CHUNK], strict=True):
            Image.fromarray(array).save(path, quality=92)


def write_isic2019_sample(
    root: str | Path,
    n_lesions: int = 96,
    images_per_lesion: tuple[int, int] = (1, 3),
    image_size: int = 64,
    classes: Sequence[str] = ISIC2019_CLASSES,
    seed: int = 0,
    imbalance: bool = True,
) -> Path:
    """Write a synthetic sample in the official ISIC 2019 layout under ``root`` and return it:
    like the real files, 0.0/1.0 one-hot (+ UNK) with CRLF, the 5-column metadata with lesion ids
    (empty for some single-image lesions), JPEGs; ISIC 2019 class proportions with ``imbalance``."""
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
    _write_images(lesion_class, lesion_of_image, paths, image_size, rng)
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
    root = Path(root)
    styles, paths = [], []
    for split in splits or ("",):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            styles.extend(rng.choice(_BINARY_STYLES.get(name, (name,)), n_per_class))
            paths += [folder / f"{name}_{split or 'all'}_{i:04d}.jpg" for i in range(n_per_class)]
    _write_images(styles, np.arange(len(paths)), paths, image_size, rng)
    return root


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
