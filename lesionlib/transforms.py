"""Image pipelines (torchvision.transforms.v2): a uint8 3×H×W RGB tensor (what
:func:`lesionlib.images.read_image` returns) or a PIL RGB image in, normalised float32 C×S×S out
(or, with ``normalize=False``, the uint8 pixels C×S×S, which :func:`normalize` turns into the same
floats later, e.g. on the GPU).
"""

from __future__ import annotations

from functools import cache

import torch
from torchvision.transforms import v2

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""The statistics the torchvision ImageNet weights were trained with (used for every model)."""

AUGMENT_PRESETS: tuple[str, ...] = ("none", "basic", "strong")
"""``none``: resize + centre crop only; ``basic``: mild crops (85-100 % of the area of the central
square), flips and right-angle rotations; ``strong``: wider crops plus colour jitter, blur,
sharpening and affine warps."""


def _last_steps(normalize: bool) -> list[v2.Transform]:
    """uint8 [0, 255] -> float32 [0, 1] -> ImageNet-normalised plain tensor; without
    ``normalize``, the uint8 pixels as a plain tensor."""
    to_float = [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ]
    return [*(to_float if normalize else []), v2.ToPureTensor()]


def random_symmetry(image: torch.Tensor) -> torch.Tensor:
    """One of the 8 symmetries of a square C×S×S image, each with probability 1/8: a rotation by
    0, 90, 180 or 270 degrees, mirrored or not (flips and right-angle rotations, in one step).

    Dermoscopy has no canonical orientation (the dermatoscope is placed at any angle), so every
    flip and right-angle rotation is as plausible as the original. Unlike a free rotation (e.g.
    ±20°), right angles are exact on square images: no interpolation blur and no black corners
    that the network could learn as an artefact. (One draw and two tensor operations: the same
    distribution as a random horizontal flip, vertical flip and right-angle rotation in turn, for
    a fraction of their cost in a loader worker; see docs/benchmarks.md.)
    """
    k = int(torch.randint(8, ()))
    turned = torch.rot90(image, k % 4, dims=(-2, -1))
    return turned.flip(-1) if k >= 4 else turned


def central_square(image: torch.Tensor) -> torch.Tensor:
    """The largest centred square of a C×H×W image (a view: no copy, no resampling).

    The training crops are taken inside it. ``RandomResizedCrop`` measures ``scale`` against the
    whole image: on a 4:3 photo (HAM10000, ISIC 2019, the cache) no near-square crop of 85 % of
    the area fits, and after 10 tries it falls back to one fixed centre crop, every time. On the
    square it crops as documented, and it is the region ``eval_transform`` shows the network.
    """
    side = min(image.shape[-2:])
    return v2.functional.center_crop(image, [side, side])


def eval_transform(image_size: int, normalize: bool = True) -> v2.Compose:
    """Deterministic pipeline for validation/test: the :func:`central_square`, resized to
    ``image_size``. (The same picture as resizing the shorter side and centre-cropping, with
    fewer pixels to resample.) ``normalize=False`` ends in uint8 pixels (see :func:`normalize`).
    """
    return v2.Compose(
        [
            v2.ToImage(),
            central_square,
            v2.Resize([image_size, image_size], antialias=True),
            *_last_steps(normalize),
        ]
    )


def train_transform(image_size: int, augment: str = "basic", normalize: bool = True) -> v2.Compose:
    """Training pipeline for one of :data:`AUGMENT_PRESETS`: ``basic`` crops mildly inside the
    :func:`central_square`, flips and rotates by right angles; ``strong`` adds wider crops, small
    affine warps, colour jitter, blur and sharpening (docs/results.md says how they were chosen).
    ``normalize=False`` ends in uint8 pixels, with the same random draws (see :func:`normalize`).
    """
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augment preset {augment!r}; choose one of {AUGMENT_PRESETS}")
    if augment == "none":
        return eval_transform(image_size, normalize)
    min_scale = 0.85 if augment == "basic" else 0.7
    geometric = [
        central_square,
        v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), ratio=(0.9, 1.1), antialias=True),
        random_symmetry,
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
    return v2.Compose([v2.ToImage(), *geometric, *photometric, *_last_steps(normalize)])


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised float32 of a uint8 image or batch (C×H×W or N×C×H×W), computed on the
    tensor's own device and in its memory layout.

    ``make_loaders`` hands over uint8 batches (4× smaller than float32, so cheaper to pass from
    the loader's workers and to copy to the GPU); ``fit``, ``predict`` and hand-written loops
    call this right after ``images.to(device)``. A floating-point input is returned unchanged: it
    counts as already normalised (what ``eval_transform``/``train_transform`` give by default).
    """
    _check_shape(images, "normalize")
    if images.is_floating_point():
        return images
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 pixels or a float tensor, got {images.dtype}")
    shift, scale = _shift_and_scale(images.device)
    # (images / 255 - mean) / std, in place in the one new float32 tensor
    return images.float().sub_(shift).div_(scale)


@cache
def _shift_and_scale(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """255 × the ImageNet mean and std as 3×1×1 float32 tensors on ``device``, made once per
    device: making them for every batch would copy them to the GPU and wait for the copy.
    (Made outside inference mode, so that autograd may use them later.)"""
    with torch.inference_mode(False):
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (255 * mean).to(device), (255 * std).to(device)


def denormalize(tensor: torch.Tensor) -> torch.Tensor:
    """The picture in [0, 1] (float32) of a C×H×W or N×C×H×W tensor, e.g. for ``imshow``: the
    ImageNet normalisation undone and clamped, or, for uint8 pixels (never normalised; what
    ``make_loaders``' batches hold), the pixels divided by 255."""
    _check_shape(tensor, "denormalize")
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255
    shift, scale = _shift_and_scale(tensor.device)
    return ((tensor.float() * scale + shift) / 255).clamp(0.0, 1.0)


def _check_shape(tensor: torch.Tensor, name: str) -> None:
    """Raise a ValueError unless ``tensor`` is a 3-channel C×H×W or N×C×H×W tensor."""
    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        raise ValueError(
            f"{name} expects a 3-channel C×H×W or N×C×H×W tensor, got shape {tuple(tensor.shape)}"
        )
