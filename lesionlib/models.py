"""Networks: the seeds' SimpleCNN and torchvision ResNet/VGG with a new classification head."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.models import WeightsEnum

from lesionlib.download import _sha256
from lesionlib.settings import LesionlibError

_TORCHVISION = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.DEFAULT),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.DEFAULT),
    "vgg19": (tvm.vgg19, tvm.VGG19_Weights.DEFAULT),
}
MODEL_NAMES: tuple[str, ...] = ("simplecnn", *_TORCHVISION)

RANDOM_INIT = "none (random init)"
"""``model.pretrained_source`` of a model that starts from random weights."""


class WeightsUnavailableError(LesionlibError, RuntimeError):
    """Pretrained weights could not be downloaded or read; the message says where to put them."""


class SimpleCNN(nn.Module):
    """The seeds' small network: two 5×5 convolutions with max pooling, then three linear layers."""

    def __init__(self, num_classes: int = 8, image_size: int = 224) -> None:
        super().__init__()
        if image_size < 16:
            raise ValueError(f"SimpleCNN needs image_size >= 16, got {image_size}")
        self.image_size = image_size
        self.flat_features = 32 * (((image_size - 4) // 2 - 4) // 2) ** 2  # 32·53·53 at 224
        self.conv1 = nn.Conv2d(3, 16, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(16, 32, 5)
        self.fc1 = nn.Linear(self.flat_features, 1200)
        self.fc2 = nn.Linear(1200, 840)
        self.fc3 = nn.Linear(840, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)``."""
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)  # keeps the batch dimension, unlike the seeds' view(-1, ...)
        if x.shape[1] != self.flat_features:
            raise ValueError(
                f"SimpleCNN was built for {self.image_size}×{self.image_size} images, got "
                f"{tuple(x.shape)} features: build it with the transforms' image_size"
            )
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def _check_cached_hash(path: Path) -> None:
    """Check a cached file against the SHA-256 prefix in its name (torch hub checks downloads)."""
    match = torch.hub.HASH_REGEX.search(path.name)
    if match and not _sha256(path, progress=False).startswith(match.group(1)):
        raise RuntimeError(
            f"the cached file's SHA-256 does not start with {match.group(1)} as its name says "
            "(a corrupt, partial or different file); delete it to download it again"
        )


def load_pretrained_state(weights: WeightsEnum, check_hash: bool = True) -> dict[str, torch.Tensor]:
    """The state dict of torchvision ``weights``, from the torch hub cache (hash checked) or
    downloaded into it; any failure raises :class:`WeightsUnavailableError` with the fixes."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    try:
        if check_hash and path.is_file():
            _check_cached_hash(path)
        return weights.get_state_dict(progress=True, check_hash=check_hash)
    except Exception as err:  # network, hash, disk or unpickling: all mean "no weights"
        raise WeightsUnavailableError(
            f"pretrained weights {weights!r} are unavailable ({type(err).__name__}: {err}).\n"
            f"  Fix 1: download {weights.url}\n         and save it as {path}\n  Fix 2: train "
            "from random initialisation: pretrained=False (command line: --no-pretrained)."
        ) from err


def build_model(
    name: str,
    num_classes: int,
    pretrained: bool = True,
    freeze_backbone: bool = False,
    image_size: int = 224,
    *,
    check_hash: bool = True,
) -> nn.Module:
    """One of :data:`MODEL_NAMES` with a ``num_classes`` head (``image_size``: simplecnn only), from
    ImageNet weights if ``pretrained`` (``.pretrained_source``); ``freeze_backbone``: head only."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {MODEL_NAMES}")
    if name == "simplecnn" and pretrained:
        raise ValueError("simplecnn has no pretrained weights; use pretrained=False")
    if freeze_backbone and not pretrained:
        raise ValueError(
            "freeze_backbone=True needs pretrained=True: a frozen random backbone never learns"
        )
    if name == "simplecnn":
        model: nn.Module = SimpleCNN(num_classes, image_size)
        model.pretrained_source = RANDOM_INIT
        return model
    constructor, weights = _TORCHVISION[name]
    model = constructor(weights=None)
    if pretrained:
        model.load_state_dict(load_pretrained_state(weights, check_hash=check_hash))
    model.pretrained_source = repr(weights) if pretrained else RANDOM_INIT
    model.requires_grad_(not freeze_backbone)
    if name.startswith("resnet"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        model.classifier[6] = nn.Linear(model.classifier[6].in_features, num_classes)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
