"""Image pipelines (torchvision v2): PIL or uint8 tensor in, normalised (or uint8) C×S×S out."""

from __future__ import annotations

from functools import cache

import torch
from torchvision.transforms import v2

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""The statistics the torchvision ImageNet weights were trained with (used for every model)."""

AUGMENT_PRESETS: tuple[str, ...] = ("none", "basic", "strong")
"""none: resize only; basic: crops, flips, right-angle turns; strong: also warps, colour, blur."""


def random_symmetry(image: torch.Tensor) -> torch.Tensor:
    """One of the square's 8 symmetries, uniformly: lesions have no up, right angles no blur."""
    k = int(torch.randint(8, ()))
    turned = torch.rot90(image, k % 4, dims=(-2, -1))
    return turned.flip(-1) if k >= 4 else turned


def central_square(image: torch.Tensor) -> torch.Tensor:
    """Largest centred square: RandomResizedCrop cannot fit near-square crops in a 4:3 photo."""
    return v2.functional.center_crop(image, [min(image.shape[-2:])] * 2)


def _pipeline(steps: list, normalize: bool) -> v2.Compose:
    to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose([v2.ToImage(), *steps, *(to_float if normalize else []), v2.ToPureTensor()])


def eval_transform(image_size: int, normalize: bool = True) -> v2.Compose:
    """Validation/test pipeline: the :func:`central_square` resized to ``image_size``."""
    return _pipeline([central_square, v2.Resize([image_size] * 2, antialias=True)], normalize)


def train_transform(image_size: int, augment: str = "basic", normalize: bool = True) -> v2.Compose:
    """Training pipeline for one of :data:`AUGMENT_PRESETS` (chosen in docs/results.md);
    ``normalize=False`` ends in uint8 pixels, with the same random draws, for :func:`normalize`."""
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augment preset {augment!r}; choose one of {AUGMENT_PRESETS}")
    if augment == "none":
        return eval_transform(image_size, normalize)
    scale = (0.85 if augment == "basic" else 0.7, 1.0)
    crop = v2.RandomResizedCrop(image_size, scale=scale, ratio=(0.9, 1.1), antialias=True)
    steps = [central_square, crop, random_symmetry]
    if augment == "strong":
        steps += [
            v2.RandomAffine(degrees=15, translate=(0.05, 0.05), scale=(0.9, 1.1), shear=5),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0))], p=0.3),
            v2.RandomAdjustSharpness(sharpness_factor=2.0, p=0.3),
        ]
    return _pipeline(steps, normalize)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised float32 of uint8 pixels on their device; floats pass unchanged."""
    _check_shape(images, "normalize")
    if images.is_floating_point():
        return images
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 pixels or a float tensor, got {images.dtype}")
    shift, scale = _shift_and_scale(images.device)
    return images.float().sub_(shift).div_(scale)  # (x / 255 - mean) / std, in place


@cache
def _shift_and_scale(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """255 × ImageNet mean and std (3×1×1), made outside inference mode so autograd may use them."""
    with torch.inference_mode(False):
        mean, std = (255 * torch.tensor(s).view(3, 1, 1) for s in (IMAGENET_MEAN, IMAGENET_STD))
        return mean.to(device), std.to(device)


def denormalize(tensor: torch.Tensor) -> torch.Tensor:
    """The picture in [0, 1] of a normalised C×H×W or N×C×H×W tensor (uint8 pixels: / 255)."""
    _check_shape(tensor, "denormalize")
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255
    shift, scale = _shift_and_scale(tensor.device)
    return ((tensor.float() * scale + shift) / 255).clamp(0.0, 1.0)


def _check_shape(tensor: torch.Tensor, name: str) -> None:
    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        raise ValueError(f"{name} expects a 3-channel (N×)C×H×W tensor, got {tuple(tensor.shape)}")
