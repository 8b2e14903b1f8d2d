"""Image pipelines (torchvision.transforms.v2): a uint8 3×H×W RGB tensor (what
:func:`lesionlib.images.read_image` returns) or a PIL RGB image in, normalised float32 C×S×S out.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""The statistics the torchvision ImageNet weights were trained with (used for every model)."""

AUGMENT_PRESETS: tuple[str, ...] = ("none", "basic", "strong")
"""``none``: resize + centre crop only; ``basic``: mild crops (85-100 % of the area of the central
square), flips and right-angle rotations; ``strong``: wider crops plus colour jitter, blur,
sharpening and affine warps."""


def _normalize() -> list[v2.Transform]:
    """uint8 [0, 255] -> float32 [0, 1] -> ImageNet-normalised plain tensor."""
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        v2.ToPureTensor(),
    ]


def _right_angle_rotation() -> v2.Transform:
    """Rotate by 0, 90, 180 or 270 degrees, each with probability 1/4.

    Dermoscopy has no canonical orientation (the dermatoscope is placed at any angle), so every
    right-angle rotation is as plausible as the original. Unlike a free rotation (e.g. ±20°),
    right angles are exact on square images: no interpolation blur and no black corners that the
    network could learn as an artefact. Together with the two flips this covers all 8 symmetries
    of the square.
    """
    return v2.RandomChoice([v2.RandomRotation(degrees=(a, a)) for a in (0, 90, 180, 270)])


def central_square(image: torch.Tensor) -> torch.Tensor:
    """The largest centred square of a C×H×W image (a view: no copy, no resampling).

    The training crops are taken inside it. ``RandomResizedCrop`` measures ``scale`` against the
    whole image: on a 4:3 photo (HAM10000, ISIC 2019, the cache) no near-square crop of 85 % of
    the area fits, and after 10 tries it falls back to one fixed centre crop, every time. On the
    square it crops as documented, and it is the region ``eval_transform`` shows the network.
    """
    side = min(image.shape[-2:])
    return v2.functional.center_crop(image, [side, side])


def eval_transform(image_size: int) -> v2.Compose:
    """Deterministic pipeline for validation/test: the :func:`central_square`, resized to
    ``image_size``. (The same picture as resizing the shorter side and centre-cropping, with
    fewer pixels to resample.)"""
    return v2.Compose(
        [
            v2.ToImage(),
            central_square,
            v2.Resize([image_size, image_size], antialias=True),
            *_normalize(),
        ]
    )


def train_transform(image_size: int, augment: str = "basic") -> v2.Compose:
    """Training pipeline for one of :data:`AUGMENT_PRESETS`: ``basic`` crops mildly inside the
    :func:`central_square`, flips and rotates by right angles; ``strong`` adds wider crops, small
    affine warps, colour jitter, blur and sharpening (docs/results.md says how they were chosen).
    """
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augment preset {augment!r}; choose one of {AUGMENT_PRESETS}")
    if augment == "none":
        return eval_transform(image_size)
    min_scale = 0.85 if augment == "basic" else 0.7
    geometric = [
        central_square,
        v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        _right_angle_rotation(),
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
    return v2.Compose([v2.ToImage(), *geometric, *photometric, *_normalize()])


def denormalize(tensor: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation of a C×H×W or N×C×H×W tensor; values clamped to [0, 1]."""
    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        raise ValueError(
            "denormalize expects a 3-channel C×H×W or N×C×H×W tensor, "
            f"got shape {tuple(tensor.shape)}"
        )
    mean = torch.tensor(IMAGENET_MEAN, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    return (tensor * std + mean).clamp(0.0, 1.0)
