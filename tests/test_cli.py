"""``python -m lesionlib train/evaluate`` in-process on the embedded sample and tiny folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lesionlib import cli
from lesionlib.cli import main
from lesionlib.datasets import load_table
from lesionlib.layouts import DatasetError
from lesionlib.models import build_model
from lesionlib.settings import cache_dir
from lesionlib.synthetic import default_sample
from lesionlib.train import RunRecord, load_checkpoint, load_model, save_model

# one epoch of 32-px images without augmentation, in the main process: a run in seconds
TINY = ["--epochs", "1", "--image-size", "32", "--augment", "none", "--num-workers", "0"]

METRIC_KEYS = {
    "accuracy",
    "balanced_accuracy",
    "macro_auc",
    "per_class",
    "confusion_matrix",
    "classes",
}


def test_train_on_the_embedded_sample_then_evaluate_its_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    tiny = ["--epochs", "1", "--image-size", "32", "--batch-size", "64", "--augment", "none"]
    assert main(["train", *tiny, "--num-workers", "0", "--quiet", "--out", str(out)]) == 0
    assert "No --data given: using the embedded synthetic sample" in capsys.readouterr().out

    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS | {"history", "run"} <= set(metrics)
    _, record = load_model(out / "model.pt", "cpu")
    classes = record.classes
    assert metrics["classes"] == classes == list(metrics["per_class"])
    assert record.image_size == 32 and record.recipe["epochs"] == 1
    assert metrics["run"] == record.as_dict()  # one run record: the model file and metrics.json
    assert record.data == str(default_sample()) and record.layout == "isic2019"
    assert [row["epoch"] for row in metrics["history"]] == [1]
    test_size = metrics["run"]["split_sizes"]["test"]
    assert sum(map(sum, metrics["confusion_matrix"])) == test_size

    report = tmp_path / "eval" / "metrics.json"
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--out", str(report)]) == 0
    evaluated = json.loads(report.read_text())
    assert set(evaluated) >= METRIC_KEYS and evaluated["classes"] == classes
    every_image = len(load_table(default_sample(), "isic2019"))
    assert sum(map(sum, evaluated["confusion_matrix"])) == every_image
    for result in (metrics, evaluated):  # every headline number has its interval
        for name in ("accuracy", "balanced_accuracy", "macro_auc"):
            low, high = result["ci95"][name]
            assert low <= result[name] <= high
    assert "balanced accuracy" in capsys.readouterr().out  # printed with its interval


def test_cv_scores_every_non_test_image_once_and_summarises_the_folds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cv"
    assert main(["cv", "--folds", "3", *TINY, "--tta", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "cv.json").read_text())
    folds = report["folds"]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    table = load_table(default_sample(), "isic2019")
    held_out = report["run"]["split_sizes"]["train"] + folds[-1]["images"]
    assert held_out == sum(f["images"] for f in folds) < len(table)  # the test split stays out
    for name, (mean, sd) in report["mean_sd"].items():
        values = [f[name] for f in folds]
        assert mean == pytest.approx(np.mean(values)) and sd == pytest.approx(
            np.std(values, ddof=1)
        )
    assert {"balanced_accuracy", "macro_auc", "balanced_accuracy_without_tta"} <= set(folds[0])
    assert "3-fold cross-validation" in capsys.readouterr().out


def _folder(root: Path, classes: list[str]) -> Path:
    for i, cls in enumerate(classes):
        for j in range(2):
            path = root / cls / f"{j}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 24), (40 * i + 60, 90, 30 * j + 80)).save(path)
    return root


def _untrained_model(path: Path, classes: list[str]) -> Path:
    model = build_model("simplecnn", len(classes), pretrained=False, image_size=32)
    record = RunRecord("simplecnn", classes, 32, model.pretrained_source, "data/x", "imagefolder")
    return save_model(path, model, record)


def test_evaluate_scores_with_the_checkpoints_classes(tmp_path: Path) -> None:
    model = _untrained_model(tmp_path / "model.pt", ["MEL", "NV", "BCC"])
    data = _folder(tmp_path / "two-classes", ["NV", "MEL"])  # folder order: MEL, NV
    out = tmp_path / "metrics.json"
    args = ["evaluate", "--checkpoint", str(model), "--data", str(data)]
    assert main([*args, "--layout", "imagefolder", "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["classes"] == ["MEL", "NV", "BCC"]
    assert [row["support"] for row in metrics["per_class"].values()] == [2, 2, 0]
    assert len(metrics["confusion_matrix"]) == 3


def test_evaluate_on_a_class_the_model_does_not_know_fails_clearly(tmp_path: Path) -> None:
    model = _untrained_model(tmp_path / "model.pt", ["MEL", "NV"])
    data = _folder(tmp_path / "data", ["MEL", "DF"])
    args = ["evaluate", "--checkpoint", str(model), "--data", str(data), "--layout", "imagefolder"]
    with pytest.raises(SystemExit, match=r"classes \['DF'\] that the model .* was not trained on"):
        main(args)


def test_layout_without_data_and_data_without_layout_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--layout needs --data"):
        main(["train", "--layout", "isic2019", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="say which layout .* has: --layout"):
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path)])


class _Broken(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int):
        raise DatasetError("cannot read /data/ISIC_0000001.jpg: delete or replace it")


def test_errors_from_dataloader_workers_are_printed_as_one_line():
    """A worker wraps the error in its traceback; the CLI prints only the message."""
    loader = torch.utils.data.DataLoader(_Broken(), num_workers=1)
    with pytest.raises(DatasetError) as info:
        next(iter(loader))
    assert "DataLoader worker" in str(info.value)
    assert cli._one_line(info.value) == "cannot read /data/ISIC_0000001.jpg: delete or replace it"


def test_prepare_writes_the_cache_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LESIONLIB_CACHE", str(tmp_path / "cache"))  # this test's cache only
    folder = _folder(tmp_path / "data", ["benign", "malignant"])
    args = ["prepare", "--data", str(folder), "--layout", "imagefolder", "--size", "16"]
    assert main([*args, "--workers", "1"]) == 0
    assert "cached 4 images at 16 px" in capsys.readouterr().out
    copies = sorted((cache_dir() / "resized" / "16").glob("*.jpg"))
    assert len(copies) == 4 and all(Image.open(p).size == (16, 16) for p in copies)
    stamps = [p.stat().st_mtime_ns for p in copies]
    assert main(args) == 0  # a second run finds every copy and writes nothing
    assert [p.stat().st_mtime_ns for p in copies] == stamps
    with pytest.raises(SystemExit):  # --cache-size belongs to train/evaluate, not prepare
        main([*args, "--cache-size", "32"])


def test_evaluate_reads_images_through_the_cache_the_model_was_trained_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LESIONLIB_CACHE", str(tmp_path / "cache"))
    out, report = tmp_path / "run", tmp_path / "eval.json"
    tiny = ["--epochs", "1", "--image-size", "32", "--num-workers", "0", "--quiet"]
    assert main(["train", *tiny, "--cache-size", "40", "--out", str(out)]) == 0
    assert load_model(out / "model.pt", "cpu")[1].cache_size == 40
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--out", str(report)]) == 0
    assert json.loads(report.read_text())["evaluation"]["cache_size"] == 40
    assert len(list((tmp_path / "cache" / "resized" / "40").glob("*.jpg"))) > 0


def test_train_precision_float16_trains_through_the_grad_scaler_even_on_the_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--precision", "float16", "--out", str(out)]) == 0
    assert "Training on cpu: float16 mixed precision, NCHW, batch 32" in capsys.readouterr().out
    assert load_model(out / "model.pt", "cpu")[1].recipe["precision"] == "float16"
    assert load_checkpoint(out / "checkpoint.pt")["scaler"]["_growth_tracker"] > 0  # enabled
    assert cli.build_parser().parse_args(["train"]).precision == "auto"


def test_train_refuses_an_unknown_optimizer_or_scheduler(capsys: pytest.CaptureFixture[str]):
    for option in (["--optimizer", "rmsprop"], ["--scheduler", "cosine"], ["--precision", "fp8"]):
        with pytest.raises(SystemExit) as info:
            main(["train", *option])
        assert info.value.code == 2
        assert "invalid choice" in capsys.readouterr().err


def test_an_ensemble_is_trained_saved_and_evaluated_as_the_mean_of_its_models(
    tmp_path: Path,
) -> None:
    out = tmp_path / "ens"
    assert main(["train", *TINY, "--ensemble", "2", "--quiet", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["run"]["recipe"]["ensemble"] == 2
        and len(metrics["run"]["recipe"]["best_epoch"]) == 2
    )
    assert set(metrics["one_model"]) == {"accuracy", "balanced_accuracy", "macro_auc"}
    first, _ = load_model(out / "model.pt", "cpu")
    second, _ = load_model(out / "model-2.pt", "cpu")  # another seed: other weights
    assert not torch.equal(first.conv1.weight, second.conv1.weight)
    report = tmp_path / "eval.json"
    models = [str(out / "model.pt"), str(out / "model-2.pt")]
    assert main(["evaluate", "--checkpoint", *models, "--out", str(report)]) == 0
    assert json.loads(report.read_text())["evaluation"]["checkpoint"] == models


def test_train_with_a_logit_adjusted_loss_records_it_and_refuses_class_weights_beside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "la"
    assert main(["train", *TINY, "--logit-adjust", "1", "--out", str(out)]) == 0
    assert load_model(out / "model.pt", "cpu")[1].recipe["logit_adjust"] == 1.0
    assert "LogitAdjustedLoss(tau=1.0" in load_checkpoint(out / "checkpoint.pt")["run"]["loss"]
    with pytest.raises(SystemExit) as info:
        main(["train", *TINY, "--logit-adjust", "1", "--class-weights"])
    assert info.value.code == 2
    assert "pass one" in capsys.readouterr().err
