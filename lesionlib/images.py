"""Decoding and checking images: Pillow for every format, a faster JPEG decoder when one works;
every error names the file and the fix."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import io
import os
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2.functional import pil_to_tensor
from tqdm.contrib.concurrent import thread_map

from lesionlib.layouts import DatasetError

_VALIDATE = (
    "run `python -m lesionlib validate` to list every bad image, or train with --skip-bad-images"
)


def load_image(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """An image as 8-bit RGB, EXIF orientation applied, fully decoded (errors surface here);
    ``draft_size``: a JPEG decoded at a 1/2-1/8 scale still at least that big (much faster)."""
    try:
        with Image.open(path) as img:
            if draft_size is not None:
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError as err:
        raise DatasetError(
            f"cannot read image {path}: it is too large to decode safely ({err}). Replace it with "
            f"a smaller copy or delete it; {_VALIDATE}."
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(
            f"cannot read image {path}: {err}. The file is missing, empty, truncated or not an "
            f"image: delete or replace it (re-download it); {_VALIDATE}."
        ) from err


def _to_rgb(img: Image.Image) -> Image.Image:
    """16-bit greyscale scaled to 8 bits, transparency composited on white, the rest converted."""
    if img.mode.startswith("I"):  # I;16 or I: 0..65535 to 0..255
        eight_bit = np.clip(np.rint(np.asarray(img, dtype=np.float64) / 257.0), 0, 255)
        return Image.fromarray(eight_bit.astype(np.uint8), mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _torchcodec_decoder() -> Callable[[bytes], torch.Tensor]:
    from torchcodec.decoders import decode_jpeg  # image decoding came in TorchCodec 0.16

    return lambda data: decode_jpeg(data, mode="RGB")


def _torchvision_decoder() -> Callable[[bytes], torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(data: bytes) -> torch.Tensor:
        with warnings.catch_warnings():  # deprecated from torchvision 0.29 in favour of TorchCodec
            warnings.simplefilter("ignore")
            encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, apply_exif_orientation=True)

    return decode


JPEG_DECODERS: dict[str, Callable[[], Callable[[bytes], torch.Tensor]]] = {
    "torchcodec": _torchcodec_decoder,
    "torchvision.io": _torchvision_decoder,
}
"""JPEG decoders in the order :func:`jpeg_decoder` tries them; Pillow is the last resort."""


@functools.cache
def jpeg_decoder() -> tuple[str, Callable[[bytes], torch.Tensor] | None]:
    """``(description, decode)`` of the first of :data:`JPEG_DECODERS` that decodes a test image
    (a build for another torch may import, then fail), else ``("Pillow (why)", None)``."""
    probe = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(probe, "JPEG")
    failures = []
    for name, make in JPEG_DECODERS.items():
        try:
            decode = make()
            if decode(probe.getvalue()).shape != (3, 8, 8):
                raise RuntimeError("decoded the test image to the wrong shape")
        except Exception as err:  # not installed, built for another torch/CUDA, no image decoder
            why = (str(err).strip().splitlines() or [""])[0][:120]  # load errors run to pages
            failures.append(f"{name}: {type(err).__name__}: {why}")
            continue
        return f"{name} {importlib.metadata.version(name.split('.')[0])}", decode
    return f"Pillow {Image.__version__} ({'; '.join(failures)})", None


def read_image(path: str | Path) -> torch.Tensor:
    """The image at ``path`` as a uint8 3×H×W RGB tensor: a JPEG through :func:`jpeg_decoder`,
    anything else (or anything it rejects) through :func:`load_image`: the same pixels."""
    decode = jpeg_decoder()[1]
    if decode is not None:
        with contextlib.suppress(Exception):  # absent, truncated, 12-bit...: load_image says why
            data = Path(path).read_bytes()
            if data.startswith(b"\xff\xd8\xff"):  # the JPEG magic number
                Image.open(io.BytesIO(data)).close()  # the header only: Pillow's bomb check
                return decode(data)
    return pil_to_tensor(load_image(path))


def save_uploads(value: Any, folder: str | Path) -> list[Path]:
    """Write the files of a notebook upload into ``folder`` and return their paths: ``value`` is
    an ipywidgets 8 or 7 ``FileUpload.value`` or ``google.colab.files.upload()``'s dict."""
    if isinstance(value, dict):
        files = [(name, f["content"] if isinstance(f, dict) else f) for name, f in value.items()]
    else:
        files = [(f["name"], f["content"]) for f in value]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / Path(name).name for name, _ in files]  # never a folder the browser names
    for path, (_, content) in zip(paths, files, strict=True):
        path.write_bytes(bytes(content))
    return paths


def _scan_image(path: str) -> tuple[str, tuple[int, int], str] | str:
    """``(sha1, size after EXIF orientation, stored mode)`` of a readable image, else the error."""
    try:
        size = load_image(path).size
    except DatasetError as err:
        return str(err)
    with Image.open(path) as header:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest(), size, header.mode


def validate_table(table: pd.DataFrame, progress: bool = True) -> dict[str, Any]:
    """Decode every image of ``table`` (a few threads); report, JSON-safe, what would break or
    bias training: ``images``, ``classes``, ``unreadable`` ([{path, error}]), ``duplicates``
    (identical files), ``duplicate_ids``, ``size_range`` and ``modes`` (stored PIL modes)."""
    paths = list(dict.fromkeys(table["path"].astype(str)))
    bar = {"max_workers": min(8, os.cpu_count() or 1), "desc": "validating images"}
    scans = thread_map(_scan_image, paths, **bar, disable=not progress)
    scans = dict(zip(paths, scans, strict=True))
    readable = {p: s for p, s in scans.items() if not isinstance(s, str)}
    by_digest: dict[str, list[str]] = {}
    for path, (digest, _, _) in readable.items():
        by_digest.setdefault(digest, []).append(path)
    ids = table["image_id"].astype(str) if "image_id" in table.columns else pd.Series(dtype=str)
    widths, heights = ([size[i] for _, size, _ in readable.values()] for i in (0, 1))
    return {
        "images": len(table),
        "classes": {str(c): int(n) for c, n in table["label"].value_counts(sort=False).items()},
        "unreadable": [{"path": p, "error": s} for p, s in scans.items() if isinstance(s, str)],
        "duplicates": [{"sha1": d, "paths": g} for d, g in by_digest.items() if len(g) > 1],
        "duplicate_ids": ids[ids.duplicated()].unique().tolist(),
        "size_range": {
            f"{f.__name__}_{side}": f(values, default=None)
            for side, values in (("width", widths), ("height", heights))
            for f in (min, max)
        },
        "modes": dict(Counter(mode for _, _, mode in readable.values())),
    }


def drop_unreadable(table: pd.DataFrame, report: dict[str, Any]) -> pd.DataFrame:
    """``table`` without the rows ``report`` lists as unreadable; DatasetError if none is left."""
    keep = ~table["path"].astype(str).isin({entry["path"] for entry in report["unreadable"]})
    if not keep.any():
        raise DatasetError(
            f"none of the {len(table)} images can be read, e.g. {report['unreadable'][0]['error']}"
        )
    return table.loc[keep].reset_index(drop=True)
