"""Transforms: output shape/dtype, exact normalisation, centre crop, augmentation, the uint8
pipelines with normalize(), denormalize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lesionlib.transforms import (
    AUGMENT_PRESETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    denormalize,
    eval_transform,
    normalize,
    random_symmetry,
    train_transform,
)


def _noise_image(width: int = 48, height: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("augment", AUGMENT_PRESETS)
def test_train_transform_output_is_normalised_float_square(augment: str) -> None:
    out = train_transform(32, augment)(_noise_image())
    assert type(out) is torch.Tensor
    assert out.dtype == torch.float32
    assert out.shape == (3, 32, 32)
    assert out.min() < 0  # normalised, not [0, 1]


def test_eval_transform_normalises_exactly() -> None:
    pixel = (255, 0, 128)
    image = Image.new("RGB", (40, 30), pixel)
    out = eval_transform(24)(image)
    assert out.shape == (3, 24, 24)
    channels = zip(pixel, IMAGENET_MEAN, IMAGENET_STD, strict=True)
    for channel, (value, mean, std) in enumerate(channels):
        expected = torch.full((24, 24), (value / 255 - mean) / std)
        torch.testing.assert_close(out[channel], expected)


def test_eval_transform_keeps_the_central_square() -> None:
    # 96×32: red | green | blue thirds. A squashing resize would keep red and blue;
    # shorter side to 32 + centre crop keeps only the green middle.
    array = np.zeros((32, 96, 3), dtype=np.uint8)
    array[:, :32, 0] = 255
    array[:, 32:64, 1] = 255
    array[:, 64:, 2] = 255
    out = denormalize(eval_transform(32)(Image.fromarray(array, "RGB")))
    torch.testing.assert_close(out[1], torch.ones(32, 32), atol=1e-5, rtol=0)
    assert out[0].max() < 1e-5 and out[2].max() < 1e-5


def test_eval_transform_is_deterministic_and_none_preset_matches_it() -> None:
    image = _noise_image()
    first = eval_transform(32)(image)
    torch.testing.assert_close(eval_transform(32)(image), first)
    torch.testing.assert_close(train_transform(32, "none")(image), first)


@pytest.mark.parametrize("augment", ["basic", "strong"])
def test_augmentation_is_random(augment: str) -> None:
    torch.manual_seed(0)
    transform = train_transform(32, augment)
    image = _noise_image()
    outputs = [transform(image) for _ in range(4)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


def test_basic_crops_are_random_and_inside_the_central_square_of_a_4_by_3_image() -> None:
    # Channel 0 holds each pixel's x coordinate and channel 1 its y (times 2): the output's value
    # ranges tell which columns and rows the crop covered, whatever flip or rotation followed.
    height, width = 96, 128
    coords = torch.zeros(3, height, width, dtype=torch.uint8)
    coords[0] = torch.arange(width, dtype=torch.uint8).view(1, width) * 2
    coords[1] = torch.arange(height, dtype=torch.uint8).view(height, 1) * 2
    transform = train_transform(32, "basic")
    torch.manual_seed(0)
    boxes = set()
    for _ in range(30):
        x, y = (denormalize(transform(coords))[:2] * 255 / 2).round()
        boxes.add((int(x.min()), int(x.max()), int(y.min()), int(y.max())))
        left = (width - height) // 2  # the central square spans columns 16..111
        assert left - 1 <= x.min() and x.max() <= left + height, (x.min(), x.max())
        # >= 85 % of the square's area, less the half output pixel lost at each border
        assert (x.max() - x.min()) * (y.max() - y.min()) >= 0.75 * height**2
    assert len(boxes) > 10, f"the crop hardly moves: {sorted(boxes)}"


def test_random_symmetry_draws_each_of_the_8_symmetries_of_the_square_alike() -> None:
    image = torch.arange(3 * 4 * 4, dtype=torch.uint8).view(3, 4, 4)  # no symmetry of its own
    expected = {
        tuple(torch.rot90(mirrored, k, dims=(-2, -1)).flatten().tolist())
        for mirrored in (image, image.flip(-2))
        for k in range(4)
    }
    assert len(expected) == 8
    torch.manual_seed(0)
    drawn = [tuple(random_symmetry(image).flatten().tolist()) for _ in range(1600)]
    counts = {symmetry: drawn.count(symmetry) for symmetry in set(drawn)}
    assert set(counts) == expected  # only symmetries, and all of them
    assert all(150 <= n <= 250 for n in counts.values()), counts  # 200 each expected


def test_basic_preset_keeps_colours_and_strong_changes_them() -> None:
    # A plain-colour image stays that colour under crops, flips and right-angle rotations, so
    # "basic" (geometric only, docs/results.md) returns it exactly; "strong" jitters colours.
    torch.manual_seed(0)
    image = Image.new("RGB", (48, 40), (200, 120, 90))
    expected = eval_transform(32)(image)
    for _ in range(5):
        torch.testing.assert_close(train_transform(32, "basic")(image), expected)
    strong = [train_transform(32, "strong")(image) for _ in range(5)]
    assert any(not torch.allclose(out, expected, atol=1e-3) for out in strong)


def test_unknown_preset_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown augment preset 'heavy'") as info:
        train_transform(32, "heavy")
    for preset in AUGMENT_PRESETS:
        assert preset in str(info.value)


def test_denormalize_inverts_eval_transform_for_single_and_batch() -> None:
    image = _noise_image(32, 32)
    original = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    normalised = eval_transform(32)(image)
    torch.testing.assert_close(denormalize(normalised), original, atol=1e-5, rtol=0)
    batch = denormalize(torch.stack([normalised, normalised]))
    assert batch.shape == (2, 3, 32, 32)
    torch.testing.assert_close(batch[1], original, atol=1e-5, rtol=0)


def test_denormalize_clamps_and_rejects_wrong_shapes() -> None:
    out = denormalize(torch.full((3, 4, 4), 100.0))
    assert out.max() == 1.0
    with pytest.raises(ValueError, match="3-channel"):
        denormalize(torch.zeros(1, 4, 4))


@pytest.mark.parametrize("augment", AUGMENT_PRESETS)
def test_uint8_pipelines_then_normalize_give_the_float_pipelines_output(augment: str) -> None:
    # normalize=False changes the last steps only: the same random draws, the same pixels, and
    # normalize() on the uint8 batch (what fit does on the device) gives today's floats.
    images = [_noise_image(seed=seed) for seed in range(3)]
    torch.manual_seed(5)
    floats = torch.stack([train_transform(32, augment)(image) for image in images])
    torch.manual_seed(5)
    pixels = torch.stack([train_transform(32, augment, normalize=False)(image) for image in images])
    assert type(pixels) is torch.Tensor and pixels.dtype == torch.uint8
    assert pixels.shape == (3, 3, 32, 32)
    out = normalize(pixels)
    assert out.dtype == torch.float32 and out.shape == floats.shape
    torch.testing.assert_close(out, floats, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(normalize(pixels[0]), floats[0], atol=1e-5, rtol=1e-6)  # C×H×W
    single = eval_transform(32, normalize=False)(images[0])
    assert single.dtype == torch.uint8
    torch.testing.assert_close(normalize(single), eval_transform(32)(images[0]), atol=1e-5, rtol=0)


def test_normalize_returns_floats_unchanged_keeps_channels_last_and_rejects_other_input() -> None:
    floats = torch.randn(2, 3, 8, 8)
    assert normalize(floats) is floats  # already normalised: the default transforms' output
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    last = normalize(pixels.contiguous(memory_format=torch.channels_last))
    assert last.is_contiguous(memory_format=torch.channels_last)  # as fit sends it on CUDA
    torch.testing.assert_close(last, normalize(pixels))
    white = normalize(torch.full((3, 2, 2), 255, dtype=torch.uint8))
    for channel, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)):
        torch.testing.assert_close(white[channel], torch.full((2, 2), (1 - mean) / std))
    with pytest.raises(TypeError, match="uint8"):
        normalize(torch.zeros(3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="3-channel"):
        normalize(torch.zeros(4, 4, dtype=torch.uint8))


def test_denormalize_shows_uint8_pixels_and_normalised_floats_alike() -> None:
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(denormalize(pixels), pixels.float() / 255)
    torch.testing.assert_close(denormalize(normalize(pixels)), pixels.float() / 255)
    half = denormalize(normalize(pixels).to(torch.bfloat16))  # an autocast batch
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, pixels.float() / 255, atol=2e-2, rtol=0)
