"""Fault injection: every bad input is made on the fly in tmp_path and must give a clear message
naming the file and the fix, or be skipped and reported when asked; never a crash in an epoch.

Faults already covered elsewhere are not repeated here: docs/reliability.md maps each fault of
the issue to the test that proves it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lesionlib.cli import main
from lesionlib.datasets import (
    LesionDataset,
    classes_of,
    read_imagefolder,
    read_isic2019,
    split_table,
    split_warnings,
)
from lesionlib.images import drop_unreadable, validate_table
from lesionlib.layouts import DatasetError
from lesionlib.models import build_model
from lesionlib.synthetic import write_imagefolder_sample, write_isic2019_sample
from lesionlib.train import (
    CheckpointError,
    RunRecord,
    fit,
    load_checkpoint,
    load_model,
    save_model,
)

ROOT = Path(__file__).resolve().parents[1]


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
    # fractions 0: seven images are far too few to hold out (that fault has its own test)
    no_split = ["--val-fraction", "0", "--test-fraction", "0"]
    args = ["validate", "--data", str(root), "--layout", "imagefolder", *no_split]
    assert main(args) == 0
    assert "No problems found." in capsys.readouterr().out

    broken = _write(root / "malignant" / "broken.jpg", _noise_jpeg_bytes()[:300])
    out = tmp_path / "reports" / "report.json"
    assert main([*args, "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "1 unreadable image(s)" in printed and "--skip-bad-images" in printed
    assert f"cannot read image {broken.resolve()}" in printed
    assert not printed.lstrip().startswith("{")  # people get a summary; JSON only with --out
    table = read_imagefolder(root)
    expected = {**validate_table(table, False), "split_warnings": split_warnings(table, 0, 0)}
    assert json.loads(out.read_text()) == expected


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
    assert sum(metrics["run"]["split_sizes"].values()) == n_images - 1


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
    assert a["run"]["split_sizes"] == b["run"]["split_sizes"]
    assert a["confusion_matrix"] == b["confusion_matrix"]
    weights = [load_model(d / "model.pt", "cpu")[0].state_dict() for d in (straight, resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# --------------------------------------------------------------------------- degenerate tables


def _one_error_line(err: str) -> str:
    """The single ``error: ...`` line the command line prints; fails on anything more."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _ham10000(root: Path, dx: list[str]) -> Path:
    """A HAM10000 folder: the metadata CSV (always with its header) and one image per row."""
    rows = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for i, label in enumerate(dx):
        image = Image.new("RGB", (16, 16), (20 * i, 90, 60))
        _save(root / "HAM10000_images" / f"ISIC_{i:07d}.jpg", image)
        rows.append(f"HAM_{i:07d},ISIC_{i:07d},{label},histo,45.0,female,back")
    _write(root / "HAM10000_metadata.csv", ("\n".join(rows) + "\n").encode())
    return root


@pytest.mark.parametrize(
    ("dx", "expected"),
    [
        ([], ("lists no images (a header and no rows)", "replace it with the official file")),
        (["nv"] * 6, ("all 6 images are of one class ('NV')", "Add the images of the other")),
    ],
    ids=["header only", "one class"],
)
def test_cli_refuses_a_table_without_rows_or_with_a_single_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dx: list[str], expected: tuple[str, str]
) -> None:
    data = _ham10000(tmp_path / "ham", dx)
    out = tmp_path / "run"
    common = ["--data", str(data), "--layout", "ham10000"]
    for args in (["validate", *common], ["train", *common, "--quiet", "--out", str(out)]):
        assert main(args) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: {data / 'HAM10000_metadata.csv'}")
        assert all(part in line for part in expected), line
    assert not out.exists()  # refused before anything was trained or written


def test_split_table_refuses_no_rows_and_one_class_and_is_quiet_on_the_normal_samples(
    tmp_path: Path,
) -> None:
    table = read_isic2019(write_isic2019_sample(tmp_path / "isic", image_size=16))
    folder = read_imagefolder(write_imagefolder_sample(tmp_path / "folder", image_size=16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default synthetic samples split without a warning
        split_table(table)
        split_table(folder)
        assert split_warnings(table) == [] and split_warnings(folder) == []
    source = str(tmp_path / "isic" / "ISIC_2019_Training_GroundTruth.csv")
    with pytest.raises(DatasetError, match="has no images") as info:
        split_table(table.iloc[:0])  # e.g. a filter that kept nothing
    assert str(info.value).startswith(source)
    with pytest.raises(DatasetError, match=r"all \d+ images are of one class \('NV'\)"):
        split_table(table[table["label"] == "NV"])


def _image_folder(root: Path, counts: dict[str, int]) -> Path:
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            _save(root / name / f"{i}.png", Image.new("RGB", (16, 16), (30 * i, 200 * c, 90)))
    return root


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (
            {"benign": 12, "malignant": 1},
            "1 class(es) have fewer lesions than the 3 splits (train, val, test): "
            "'malignant': 1 image(s) of 1 lesion(s). The split puts them in train first",
        ),
        (
            {"benign": 3, "malignant": 2},
            "5 images are too few for val_fraction=0.15 and test_fraction=0.15: they ask for val "
            "about 0.8, test about 0.8 images, less than one per class (2 classes)",
        ),
    ],
    ids=["a class of one image", "five images"],
)
def test_cli_warns_of_classes_and_sets_too_small_to_split_and_then_trains_soundly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], counts: dict[str, int], expected: str
) -> None:
    data = _image_folder(tmp_path / "data", counts)
    assert main(["validate", "--data", str(data), "--layout", "imagefolder"]) == 1
    printed = capsys.readouterr().out
    assert "warning(s) on splitting the data into train/val/test" in printed
    assert f"  {data}: {expected}" in printed

    out = tmp_path / "run"
    args = [
        "train", "--data", str(data), "--layout", "imagefolder", "--epochs", "1",
        "--image-size", "16", "--augment", "none", "--num-workers", "0", "--quiet",
        "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"warning: {data}: {expected}" in err and "Traceback" not in err
    sizes = json.loads((out / "metrics.json").read_text())["run"]["split_sizes"]
    assert sum(sizes.values()) == sum(counts.values())
    with pytest.warns(UserWarning):
        split = split_table(read_imagefolder(data), seed=0)  # what train did (seed 0)
    assert set(split.loc[split["split"] == "train", "label"]) == set(counts)  # every class learnt

    # the fix the warnings offer: hold nothing out (train and report on every image)
    out = tmp_path / "all"
    assert main([*args, "--val-fraction", "0", "--test-fraction", "0", "--out", str(out)]) == 0
    assert "warning:" not in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluated_on"] == "train"
    assert metrics["run"]["split_sizes"] == {"train": sum(counts.values())}


# --------------------------------------------------------------------------- damaged checkpoints


def _tiny_fit(path: Path, epochs: int = 2, resume: bool = False) -> tuple[nn.Module, object]:
    """A linear model on 16 fixed 8x8 images of two classes; a checkpoint per epoch at ``path``."""
    torch.manual_seed(0)
    images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    data = TensorDataset(images, torch.arange(16) % 2)
    loader = DataLoader(
        data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
    optimizer = torch.optim.Adam(model.parameters())
    result = fit(
        model, {"train": loader}, optimizer, epochs, progress=False, checkpoint_path=path,
        resume=resume,
    )  # fmt: skip
    return model, result


def _saved_model(path: Path, network: str = "simplecnn") -> Path:
    """A SimpleCNN saved by save_model, its run record naming ``network``."""
    model = build_model("simplecnn", 2, pretrained=False, image_size=16)
    return save_model(path, model, RunRecord(network, ["a", "b"], 16, "none", "d", "imagefolder"))


def _cut_lengths(size: int) -> list[int]:
    """Where to cut a file of ``size`` bytes: the first bytes, 24 points through it, the end."""
    return sorted({0, 1, 3, 10, 100, *range(0, size, size // 24), size - 100, size - 1})


def test_any_cut_of_a_checkpoint_or_model_file_is_named_with_the_fix(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    _tiny_fit(checkpoint)
    model = _saved_model(tmp_path / "model.pt")
    fixes = {
        load_checkpoint: "falls back to the previous epoch's copy",
        load_model: "copy it again from where the run saved it, or train again",
    }
    for whole, load in ((checkpoint, load_checkpoint), (model, load_model)):
        data = whole.read_bytes()
        cut = tmp_path / f"cut-{whole.name}"
        for length in _cut_lengths(len(data)):
            cut.write_bytes(data[:length])
            with pytest.raises(CheckpointError) as info:
                load(cut)
            message = str(info.value)
            assert message.startswith(f"{cut} cannot be read"), (length, message)
            assert "truncated or corrupt" in message and fixes[load] in message
            assert "\n" not in message

    notes = _write(tmp_path / "notes.txt", b"epoch 3: val 0.61\n")
    weights_only = tmp_path / "weights.pt"
    torch.save(
        build_model("simplecnn", 2, pretrained=False, image_size=16).state_dict(), weights_only
    )
    future = tmp_path / "future.pt"
    torch.save({"lesionlib": "model", "version": 99}, future)
    other_network = _saved_model(tmp_path / "resnet.pt", network="resnet18")
    expected = {
        notes: "is not a lesionlib model file: it is not a file written by torch.save",
        weights_only: "is not a lesionlib model file; pass the model.pt file",
        future: "has lesionlib file format version 99; this lesionlib reads version 2",
        other_network: "the stored weights do not rebuild the 'resnet18' network",
    }
    for path, text in expected.items():
        with pytest.raises(CheckpointError) as info:
            load_model(path)
        assert str(info.value).startswith(str(path)) and text in str(info.value)
        assert "\n" not in str(info.value)


def test_cli_evaluate_with_a_damaged_or_foreign_model_file_prints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = _saved_model(tmp_path / "model.pt")
    cut = _write(tmp_path / "cut.pt", whole.read_bytes()[: whole.stat().st_size // 3])
    notes = _write(tmp_path / "notes.txt", b"epoch 3: val 0.61\n")
    for path, text in ((cut, "truncated or corrupt"), (notes, "is not a lesionlib model file")):
        assert main(["evaluate", "--checkpoint", str(path)]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: {path}") and text in line
    # the same as students run it, in a process of its own
    run = subprocess.run(
        [sys.executable, "-m", "lesionlib", "evaluate", "--checkpoint", str(notes)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert run.returncode == 2
    assert _one_error_line(run.stderr).startswith(f"error: {notes} is not a lesionlib model file")


def test_resume_falls_back_to_the_previous_epoch_and_says_when_it_cannot(tmp_path: Path) -> None:
    path, previous = tmp_path / "c.pt", tmp_path / "c.previous.pt"
    straight, _ = _tiny_fit(path, epochs=2)
    assert load_checkpoint(path)["epoch"] == 2 and load_checkpoint(previous)["epoch"] == 1

    path.unlink()  # e.g. the runtime died between the two renames of a save
    with pytest.warns(UserWarning, match=r"no such lesionlib checkpoint file -- resuming from"):
        model, result = _tiny_fit(path, epochs=2, resume=True)
    assert [row["epoch"] for row in result.history] == [1, 2]
    weights = straight.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())

    for file in (path, previous):
        file.write_bytes(file.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="neither .* nor the previous epoch's copy"):
        _tiny_fit(path, epochs=2, resume=True)
    _tiny_fit(path, epochs=1)  # a run that starts afresh drops the old copy: nothing stale left
    assert not previous.exists() and load_checkpoint(path)["epoch"] == 1


def test_cli_resume_survives_a_checkpoint_cut_short_by_going_back_one_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _sample(tmp_path / "data")
    out = tmp_path / "run"
    newest, previous = out / "checkpoint.pt", out / "checkpoint.previous.pt"
    assert main(_train_args(data, out, epochs=2)) == 0
    straight = json.loads((out / "metrics.json").read_text())
    straight_weights = load_model(out / "model.pt", "cpu")[0].state_dict()
    assert load_checkpoint(newest)["epoch"] == 2 and load_checkpoint(previous)["epoch"] == 1
    capsys.readouterr()

    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a Drive disconnect
    assert main(_train_args(data, out, "--resume", epochs=2)) == 0
    captured = capsys.readouterr()
    assert f"Resuming from {previous}: 1 of 2 epochs done" in captured.out
    warned = [line for line in captured.err.splitlines() if "resuming from" in line]
    assert len(warned) == 1 and warned[0].startswith(f"warning: {newest} cannot be read")
    assert f"resuming from the previous epoch's copy {previous} (epoch 1)" in warned[0]
    resumed = json.loads((out / "metrics.json").read_text())
    assert _without_time(resumed["history"]) == _without_time(straight["history"])
    assert resumed["confusion_matrix"] == straight["confusion_matrix"]
    weights = load_model(out / "model.pt", "cpu")[0].state_dict()
    assert all(torch.equal(weights[k], straight_weights[k]) for k in weights)
    assert (out / "checkpoint.pt.damaged").is_file()  # set aside, never kept as the copy
    assert load_checkpoint(newest)["epoch"] == 2 and load_checkpoint(previous)["epoch"] == 1

    previous.unlink()  # nothing to fall back on: one clear line
    newest.write_bytes(newest.read_bytes()[:1000])
    assert main(_train_args(data, out, "--resume", epochs=2)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {newest} cannot be read") and "train again" in line


_KILLED_IN_THE_THIRD_SAVE = """
import resource, signal, sys
import lesionlib.train as train
from lesionlib.cli import main

save, saves = train._save_atomic, []

def save_but_die_halfway_through_the_third(payload, path, keep=None):
    saves.append(path)
    if len(saves) == 3:  # the kernel kills the process once the new file is half the last one
        limit = path.stat().st_size // 2
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores SIGXFSZ by default
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    save(payload, path, keep)

train._save_atomic = save_but_die_halfway_through_the_third
sys.exit(main(sys.argv[1:]))
"""


def test_a_train_killed_while_writing_its_checkpoint_resumes_from_a_whole_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real ``train`` process dies halfway through writing epoch 3's checkpoint (a file size
    limit makes the kernel kill it there, as a runtime that dies mid-write would). checkpoint.pt
    still holds epoch 2, so resume loses nothing. Where the half-written file took its place
    anyway (a Drive mount that synced the rename but not all the bytes), resume goes back to
    epoch 1's copy. Both end exactly as an uninterrupted run."""
    pytest.importorskip("resource")  # POSIX only
    data = _sample(tmp_path / "data")
    straight, killed, drive = tmp_path / "straight", tmp_path / "killed", tmp_path / "drive"
    assert main(_train_args(data, straight, epochs=3)) == 0

    child = subprocess.run(
        [sys.executable, "-c", _KILLED_IN_THE_THIRD_SAVE, *_train_args(data, killed, epochs=3)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert child.returncode == -signal.SIGXFSZ, child.stderr
    half = killed / "checkpoint.pt.tmp"
    assert 0 < half.stat().st_size <= (killed / "checkpoint.pt").stat().st_size // 2
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(half)
    assert load_checkpoint(killed / "checkpoint.pt")["epoch"] == 2
    assert load_checkpoint(killed / "checkpoint.previous.pt")["epoch"] == 1
    assert not (killed / "model.pt").exists()
    shutil.copytree(killed, drive)
    os.replace(drive / "checkpoint.pt.tmp", drive / "checkpoint.pt")
    capsys.readouterr()

    expected = json.loads((straight / "metrics.json").read_text())
    weights = load_model(straight / "model.pt", "cpu")[0].state_dict()
    for out, source, done in (
        (killed, killed / "checkpoint.pt", 2),
        (drive, drive / "checkpoint.previous.pt", 1),
    ):
        assert main(_train_args(data, out, "--resume", epochs=3)) == 0
        assert f"Resuming from {source}: {done} of 3 epochs done" in capsys.readouterr().out
        got = json.loads((out / "metrics.json").read_text())
        assert _without_time(got["history"]) == _without_time(expected["history"])
        assert got["confusion_matrix"] == expected["confusion_matrix"]
        resumed = load_model(out / "model.pt", "cpu")[0].state_dict()
        assert all(torch.equal(resumed[k], weights[k]) for k in weights)
