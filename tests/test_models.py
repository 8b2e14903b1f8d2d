"""Models: SimpleCNN sizes, build_model heads and errors, weights cache/download paths, counts."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from torchvision.models import ResNet18_Weights, resnet18

from lesionlib.models import (
    MODEL_NAMES,
    SimpleCNN,
    WeightsUnavailableError,
    build_model,
    count_parameters,
    load_pretrained_state,
)
from lesionlib.models import _check_cached_hash as check_cached_hash

WEIGHTS = ResNet18_Weights.DEFAULT


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub folder (through TORCH_HOME) so no test touches the user's cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    hub = Path(torch.hub.get_dir())
    assert hub == tmp_path / "hub"
    return hub


@pytest.fixture
def cached_resnet18(hub_dir: Path) -> dict[str, torch.Tensor]:
    """A randomly initialised resnet18 saved where torch hub expects ResNet18_Weights' file."""
    torch.manual_seed(0)
    state = resnet18(weights=None).state_dict()
    path = hub_dir / "checkpoints" / Path(urlparse(WEIGHTS.url).path).name
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def test_simplecnn_matches_the_seeds_at_224() -> None:
    # on the meta device: real shapes, no 108-million-weight initialisation on the CI's CPU
    with torch.device("meta"):
        model = SimpleCNN()
        out = model(torch.zeros(2, 3, 224, 224))
    assert model.flat_features == 32 * 53 * 53 == 89_888
    assert model.fc1.in_features == 89_888
    assert out.shape == (2, 8)


@pytest.mark.parametrize(("size", "batch"), [(64, 3), (96, 1)])
def test_simplecnn_other_sizes_keep_samples_apart(size: int, batch: int) -> None:
    torch.manual_seed(0)
    model = SimpleCNN(num_classes=5, image_size=size).eval()
    x = torch.randn(batch, 3, size, size)
    out = model(x)
    assert out.shape == (batch, 5)
    # each sample's logits depend on that sample only (view(-1, ...) would mix them)
    torch.testing.assert_close(model(x[-1:]), out[-1:])


def test_simplecnn_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="image_size >= 16"):
        SimpleCNN(image_size=15)
    with pytest.raises(ValueError, match="built for 64×64"):
        SimpleCNN(image_size=64)(torch.zeros(1, 3, 96, 96))


# the big ones (25 and 143 million weights) on the meta device: real shapes, no CPU-heavy init
_CASES = [("simplecnn", "cpu"), ("resnet18", "cpu"), ("resnet50", "meta"), ("vgg19", "meta")]


def test_every_model_name_is_covered() -> None:
    assert [name for name, _ in _CASES] == list(MODEL_NAMES)


@pytest.mark.parametrize(("name", "device"), _CASES)
def test_build_model_random_init_output_shape(name: str, device: str) -> None:
    with torch.device(device), torch.no_grad():
        model = build_model(name, 3, pretrained=False, image_size=32).eval()
        out = model(torch.randn(1, 3, 32, 32))
    assert model.pretrained_source == "none (random init)"
    assert out.shape == (1, 3)


def test_build_model_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet34'") as info:
        build_model("resnet34", 2, pretrained=False)
    assert all(name in str(info.value) for name in MODEL_NAMES)
    with pytest.raises(ValueError, match="no pretrained weights.*pretrained=False"):
        build_model("simplecnn", 2, pretrained=True)
    with pytest.raises(ValueError, match="frozen random backbone"):
        build_model("resnet18", 2, pretrained=False, freeze_backbone=True)


def test_count_parameters_matches_torchvision_arithmetic() -> None:
    model = build_model("resnet18", 2, pretrained=False)
    # torchvision's 1000-class count minus its fc (512·1000 + 1000) plus ours (512·2 + 2)
    expected = WEIGHTS.meta["num_params"] - (512 * 1000 + 1000) + (512 * 2 + 2)
    assert count_parameters(model) == expected == 11_177_538
    assert count_parameters(model, trainable_only=True) == expected


def test_load_pretrained_state_reads_the_cached_file(cached_resnet18) -> None:
    state = load_pretrained_state(WEIGHTS, check_hash=False)
    assert state.keys() == cached_resnet18.keys()
    torch.testing.assert_close(state["conv1.weight"], cached_resnet18["conv1.weight"])


def test_freeze_backbone_trains_only_the_new_head(cached_resnet18) -> None:
    model = build_model("resnet18", 3, pretrained=True, freeze_backbone=True, check_hash=False)
    assert model.pretrained_source == "ResNet18_Weights.IMAGENET1K_V1"
    torch.testing.assert_close(model.conv1.weight, cached_resnet18["conv1.weight"])
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    assert count_parameters(model, trainable_only=True) == 512 * 3 + 3
    assert model.fc.out_features == 3


def test_cached_file_with_wrong_hash_is_refused(cached_resnet18, hub_dir: Path) -> None:
    # our random weights do not match the SHA-256 prefix in torchvision's file name
    path = hub_dir / "checkpoints" / Path(urlparse(WEIGHTS.url).path).name
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("resnet18", 2, pretrained=True)
    message = str(info.value)
    assert str(path) in message and "SHA-256" in message and "pretrained=False" in message


def test_hash_check_accepts_a_file_named_after_its_own_sha256(tmp_path: Path) -> None:
    # the production path (check_hash=True) must accept genuine files, which CI cannot download
    content = b"some checkpoint bytes"
    good = tmp_path / f"model-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    good.write_bytes(content)
    check_cached_hash(good)
    bad = tmp_path / "model-00000000.pth"
    bad.write_bytes(content)
    with pytest.raises(RuntimeError, match="does not start with 00000000"):
        check_cached_hash(bad)


def test_corrupt_cached_file_is_reported(hub_dir: Path) -> None:
    path = hub_dir / "checkpoints" / Path(urlparse(WEIGHTS.url).path).name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="--no-pretrained") as info:
        load_pretrained_state(WEIGHTS, check_hash=False)
    assert str(path) in str(info.value)


def test_unreachable_network_names_url_and_path(
    hub_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a proxy on a port nobody listens on: urllib's connection is refused at once
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for variable in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{port}")
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("resnet18", 2, pretrained=True)
    path = hub_dir / "checkpoints" / Path(urlparse(WEIGHTS.url).path).name
    message = str(info.value)
    assert WEIGHTS.url in message and str(path) in message and "pretrained=False" in message
    assert not path.exists()
