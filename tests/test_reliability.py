"""Fault injection: every bad input is made on the fly in tmp_path and must give a clear message
naming the file and the fix, or be skipped and reported when asked; never a crash in an epoch.

Faults already covered elsewhere are not repeated here: docs/reliability.md maps each fault of
the issue to the test that proves it.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lesionlib.cli import main
from lesionlib.datasets import (
    DatasetError,
    LesionDataset,
    classes_of,
    drop_unreadable,
    read_imagefolder,
    read_isic2019,
    validate_table,
)
from lesionlib.synthetic import write_isic2019_sample
from lesionlib.train import load_model


def _noise_jpeg_bytes(size: int = 32) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _save(path: Path, image: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kw)
    return path


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _odd_but_valid_images(folder: Path) -> dict[str, Path]:
    """One 8x8 image per unusual but readable kind, plus a 16x8 JPEG with EXIF 'rotate 90'."""
    exif = Image.Exif()
    exif[0x0112] = 6
    deep = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    return {
        "cmyk": _save(folder / "cmyk.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0))),
        "rgba": _save(folder / "rgba.png", Image.new("RGBA", (8, 8), (255, 0, 0, 128))),
        "16-bit": _save(folder / "deep.png", Image.fromarray(deep)),
        "grey": _save(folder / "grey.png", Image.new("L", (8, 8), 90)),
        "plain": _save(folder / "plain.jpg", Image.new("RGB", (8, 8), (200, 150, 120))),
        "exif": _save(folder / "rotated.jpg", Image.new("RGB", (16, 8), (1, 2, 3)), exif=exif),
    }


def _broken_images(folder: Path) -> dict[str, Path]:
    """Files with an image name that cannot be decoded (the 40x40 one only under a low limit)."""
    whole = _noise_jpeg_bytes()
    return {
        "truncated": _write(folder / "truncated.jpg", whole[: len(whole) // 2]),
        "zero-byte": _write(folder / "empty.jpg", b""),
        "not an image": _write(folder / "page.jpg", b"<html>Access denied</html>"),
        "bomb": _save(folder / "bomb.png", Image.new("RGB", (40, 40))),
        "missing": _save(folder / "gone.jpg", Image.new("RGB", (8, 8))),  # deleted after reading
    }


def test_validate_table_reports_every_unreadable_file_and_accepts_odd_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _odd_but_valid_images(tmp_path / "benign")
    bad = _broken_images(tmp_path / "malignant")
    table = read_imagefolder(tmp_path)
    bad["missing"].unlink()  # e.g. Google Drive unmounted after the table was read
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)  # 40x40 > 2 * 150: a decompression bomb

    report = validate_table(table, progress=False)

    assert json.loads(json.dumps(report)) == report  # JSON-safe: plain types only
    assert report["images"] == 11
    assert report["classes"] == {"benign": 6, "malignant": 5}
    errors = {entry["path"]: entry["error"] for entry in report["unreadable"]}
    assert set(errors) == {str(path.resolve()) for path in bad.values()}
    for path, error in errors.items():
        assert f"cannot read image {path}" in error
    assert "too large to decode safely" in errors[str(bad["bomb"].resolve())]
    assert "delete or replace it" in errors[str(bad["truncated"].resolve())]
    assert report["modes"] == {"CMYK": 1, "RGBA": 1, "I;16": 1, "L": 1, "RGB": 2}
    # every readable image is 8x8 except the EXIF-rotated one, stored 16x8 and seen as 8x16
    assert report["size_range"] == {
        "min_width": 8,
        "max_width": 8,
        "min_height": 8,
        "max_height": 16,
    }
    assert report["duplicates"] == [] and report["duplicate_ids"] == []

    kept = drop_unreadable(table, report)
    assert sorted(kept["path"]) == sorted(str(p.resolve()) for p in good.values())
    assert classes_of(kept) == ["benign", "malignant"]  # the class list survives
    dataset = LesionDataset(kept)
    images = [dataset[i][0] for i in range(len(dataset))]  # a whole epoch loads
    assert all(image.dtype == torch.uint8 and image.shape[0] == 3 for image in images)


def test_validate_table_finds_identical_files_and_repeated_ids(tmp_path: Path) -> None:
    original = _save(tmp_path / "nevus" / "a.jpg", Image.new("RGB", (8, 8), (10, 20, 30)))
    copy = tmp_path / "melanoma" / "a-copy.jpg"
    copy.parent.mkdir()
    shutil.copyfile(original, copy)
    _save(tmp_path / "nevus" / "b.jpg", Image.new("RGB", (8, 8), (90, 20, 30)))
    table = read_imagefolder(tmp_path)
    doubled = pd.concat([table, table[table["image_id"] == "nevus/b"]], ignore_index=True)

    report = validate_table(doubled, progress=False)

    digest = hashlib.sha1(original.read_bytes()).hexdigest()
    assert report["duplicates"] == [
        {"sha1": digest, "paths": [str(copy.resolve()), str(original.resolve())]}
    ]
    assert report["duplicate_ids"] == ["nevus/b"]
    assert report["images"] == 4 and report["classes"] == {"melanoma": 1, "nevus": 3}
    assert report["unreadable"] == []


def test_drop_unreadable_refuses_to_leave_nothing(tmp_path: Path) -> None:
    broken = _write(tmp_path / "benign" / "x.jpg", b"")
    table = read_imagefolder(tmp_path)
    with pytest.raises(DatasetError, match="none of the 1 images can be read") as info:
        drop_unreadable(table, validate_table(table, progress=False))
    assert str(broken.resolve()) in str(info.value)


def test_cli_validate_names_the_broken_image_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    _odd_but_valid_images(root / "benign")
    _save(root / "malignant" / "ok.jpg", Image.new("RGB", (8, 8)))
    args = ["validate", "--data", str(root), "--layout", "imagefolder"]
    assert main(args) == 0
    assert "No problems found." in capsys.readouterr().out

    broken = _write(root / "malignant" / "broken.jpg", _noise_jpeg_bytes()[:300])
    out = tmp_path / "reports" / "report.json"
    assert main([*args, "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "1 unreadable image(s)" in printed and "--skip-bad-images" in printed
    assert f"cannot read image {broken.resolve()}" in printed
    assert not printed.lstrip().startswith("{")  # people get a summary; JSON only with --out
    assert json.loads(out.read_text()) == validate_table(read_imagefolder(root), progress=False)


def _sample(root: Path) -> Path:
    """A tiny 2-class synthetic ISIC 2019 sample (32 px), enough for a 3-way split."""
    return write_isic2019_sample(
        root, n_lesions=16, image_size=32, classes=("MEL", "NV"), imbalance=False
    )


def _train_args(data: Path, out: Path, *extra: str, epochs: int = 1) -> list[str]:
    """A tiny, quiet CPU training run: one batch per epoch, no augmentation, no workers."""
    return [
        "train", "--data", str(data), "--layout", "isic2019", "--epochs", str(epochs),
        "--image-size", "32", "--batch-size", "32", "--augment", "none", "--num-workers", "0",
        "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip


def _without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_cli_train_with_a_corrupt_jpeg_fails_clearly_or_skips_it_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _sample(tmp_path / "data")
    n_images = len(read_isic2019(data))
    corrupt = sorted((data / "ISIC_2019_Training_Input").glob("*.jpg"))[3]
    corrupt.write_bytes(corrupt.read_bytes()[:200])

    assert main(_train_args(data, tmp_path / "plain")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read image {corrupt.resolve()}")
    assert "python -m lesionlib validate" in err and "Traceback" not in err

    out = tmp_path / "skipping"
    assert main(_train_args(data, out, "--skip-bad-images")) == 0
    printed = capsys.readouterr().out
    assert f"left out 1 of {n_images} images that cannot be read" in printed
    assert str(corrupt.resolve()) in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert sum(metrics["settings"]["split_sizes"].values()) == n_images - 1


def test_cli_train_resume_ends_as_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _sample(tmp_path / "data")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(_train_args(data, straight, epochs=2)) == 0

    load = LesionDataset.__getitem__

    def disconnect_after_the_first_checkpoint(self: LesionDataset, index: int):
        if (resumed / "checkpoint.pt").exists():
            raise KeyboardInterrupt  # the Colab runtime disconnects in epoch 2
        return load(self, index)

    with monkeypatch.context() as patch:
        patch.setattr(LesionDataset, "__getitem__", disconnect_after_the_first_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            main(_train_args(data, resumed, epochs=2))
    assert not (resumed / "model.pt").exists()
    capsys.readouterr()

    assert main(_train_args(data, resumed, "--resume", epochs=2)) == 0
    assert (
        f"Resuming from {resumed / 'checkpoint.pt'}: 1 of 2 epochs done" in capsys.readouterr().out
    )
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (straight, resumed))
    assert [row["epoch"] for row in b["history"]] == [1, 2]
    assert _without_time(a["history"]) == _without_time(b["history"])
    assert a["settings"]["split_sizes"] == b["settings"]["split_sizes"]
    assert a["confusion_matrix"] == b["confusion_matrix"]
    weights = [load_model(d / "model.pt", "cpu")[0].state_dict() for d in (straight, resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
