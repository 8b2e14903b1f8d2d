"""lesionlib.train checkpoints: exact resume after an interruption, safe loading, model files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lesionlib.metrics import load_results, save_results
from lesionlib.models import build_model
from lesionlib.train import (
    CheckpointError,
    RunRecord,
    fit,
    load_checkpoint,
    load_model,
    predict,
    save_model,
    seed_everything,
)

CLASSES = ["MEL", "NV", "BCC"]


class NoisyData(Dataset):
    """Tiny 3-class images with random noise and flips drawn from torch's and Python's global RNGs
    (like augmentation), which raises KeyboardInterrupt after ``interrupt_after`` items."""

    def __init__(self, n: int = 40) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 16, 16, generator=g)
        self.y = torch.arange(n) % 3
        self.x[torch.arange(n), self.y] += 1.0
        self.interrupt_after: int | None = None
        self.served = 0
        self.classes = CLASSES

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        if self.interrupt_after is not None and self.served >= self.interrupt_after:
            raise KeyboardInterrupt  # the student stops the cell / Colab disconnects
        self.served += 1
        image = self.x[i] + 0.1 * torch.randn(3, 16, 16)
        if random.random() < 0.5:
            image = image.flip(-1)
        return image, self.y[i]


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(768, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)
    )


def _loaders(train: Dataset) -> dict[str, DataLoader]:
    val_images = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    val = TensorDataset(val_images, torch.arange(12) % 3)
    return {
        "train": DataLoader(
            train, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)
        ),
        "val": DataLoader(val, batch_size=6),
    }


def _fit(model, loaders, path, epochs=3, **kw):
    """fit with Adam and OneCycleLR (lr 1e-2), checkpointing to ``path``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = OneCycleLR(optimizer, 1e-2, epochs=epochs, steps_per_epoch=len(loaders["train"]))
    return fit(
        model, loaders, optimizer, epochs, scheduler=scheduler, checkpoint_path=path,
        progress=False, **kw,
    )  # fmt: skip


def _same_tensors(a: dict, b: dict) -> bool:
    """Same keys and values, compared on the CPU (a model may be on CUDA, a checkpoint is not)."""
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, capsys):
    seed_everything(0, deterministic=True)
    model = _mlp()
    straight = _fit(model, _loaders(NoisyData()), tmp_path / "straight.pt")
    straight_weights = model.state_dict()

    seed_everything(0, deterministic=True)
    data = NoisyData()
    loaders = _loaders(data)
    data.interrupt_after = len(data)  # the first batch of epoch 2 never arrives
    with pytest.raises(KeyboardInterrupt):
        _fit(_mlp(), loaders, tmp_path / "resumed.pt")
    assert load_checkpoint(tmp_path / "resumed.pt")["epoch"] == 1
    assert "Interrupted in epoch 2" in capsys.readouterr().out

    seed_everything(123)  # a new session: other seeds, fresh model, optimizer and loaders
    data.interrupt_after = None
    model = _mlp()
    resumed = _fit(model, _loaders(data), tmp_path / "resumed.pt", resume=True)

    assert _same_tensors(model.state_dict(), straight_weights)
    assert resumed.best_epoch == straight.best_epoch
    without_time = [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history]
    assert without_time == [
        {k: v for k, v in row.items() if k != "seconds"} for row in straight.history
    ]
    a, b = (load_checkpoint(tmp_path / name) for name in ("straight.pt", "resumed.pt"))
    assert _same_tensors(a["model"], b["model"])  # the last epoch's weights too, not just the best
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"]
    assert a["scheduler"] == b["scheduler"]


def test_a_float16_run_checkpoints_its_grad_scaler_and_resumes_with_it(tmp_path):
    """The T4's float16 + GradScaler path, forced on the CPU: the scaler's state (its scale and
    its count of steps since the last overflow) goes into every checkpoint and comes back."""
    seed_everything(0, deterministic=True)
    straight = _fit(_mlp(), _loaders(NoisyData()), tmp_path / "straight.pt", amp="float16")
    assert straight.setup.startswith("cpu: float16 mixed precision")
    scaler = load_checkpoint(tmp_path / "straight.pt")["scaler"]
    assert scaler["scale"] > 0 and scaler["_growth_tracker"] > 0  # an enabled scaler stepped

    seed_everything(0, deterministic=True)
    data = NoisyData()
    data.interrupt_after = len(data)  # stopped at the start of epoch 2
    with pytest.raises(KeyboardInterrupt):
        _fit(_mlp(), _loaders(data), tmp_path / "resumed.pt", amp="float16")
    after_one = load_checkpoint(tmp_path / "resumed.pt")["scaler"]
    seed_everything(123)
    data.interrupt_after = None
    resumed = _fit(_mlp(), _loaders(data), tmp_path / "resumed.pt", amp="float16", resume=True)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in straight.history
    ]
    # a fresh scaler after the resume would count only epochs 2-3 since its start
    assert load_checkpoint(tmp_path / "resumed.pt")["scaler"] == scaler != after_one


def test_checkpoint_is_plain_data_loadable_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = _mlp()
    result = _fit(model, _loaders(NoisyData()), tmp_path / "run" / "checkpoint.pt")
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3 and state["run"]["classes"] == CLASSES and state["run"]["seed"] == 0
    assert state["history"] == result.history
    assert _same_tensors(state["best_state"], model.state_dict())
    assert "rng" not in state  # each epoch is seeded from (seed, epoch): no RNG state to save
    assert not (tmp_path / "run" / "checkpoint.pt.tmp").exists()


def test_resume_of_a_finished_run_trains_no_more(tmp_path):
    torch.manual_seed(0)
    first = _fit(_mlp(), _loaders(NoisyData()), tmp_path / "c.pt")
    data = NoisyData()
    model = _mlp()
    again = _fit(model, _loaders(data), tmp_path / "c.pt", resume=True)
    assert data.served == 0
    assert again.history == first.history and again.best_epoch == first.best_epoch
    assert _same_tensors(model.state_dict(), load_checkpoint(tmp_path / "c.pt")["best_state"])


def test_resume_without_a_checkpoint_starts_fresh_and_says_so(tmp_path, capsys):
    torch.manual_seed(0)
    result = _fit(_mlp(), _loaders(NoisyData()), tmp_path / "new.pt", resume=True)
    assert len(result.history) == 3 and (tmp_path / "new.pt").is_file()
    assert f"No checkpoint at {tmp_path / 'new.pt'}" in capsys.readouterr().out
    with pytest.raises(ValueError, match="resume=True needs checkpoint_path"):
        _fit(_mlp(), _loaders(NoisyData()), None, resume=True)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "c.pt"
    _fit(_mlp(), _loaders(NoisyData()), path)
    with pytest.raises(CheckpointError, match=r"epochs: 3 in the checkpoint, 5 now") as info:
        _fit(_mlp(), _loaders(NoisyData()), path, epochs=5, resume=True)
    assert str(path) in str(info.value)
    relabelled = NoisyData()
    relabelled.classes = ["benign", "malignant", "other"]
    with pytest.raises(CheckpointError, match=r"classes: \['MEL', 'NV', 'BCC'\] in the checkpoint"):
        _fit(_mlp(), _loaders(relabelled), path, resume=True)
    with pytest.raises(CheckpointError, match=r"seed: 0 in the checkpoint, 1 now"):
        _fit(_mlp(), _loaders(NoisyData()), path, resume=True, seed=1)
    with pytest.raises(
        CheckpointError,
        match=(
            r"optimizer: 'Adam\(lr=0.01, betas=\(0.9, 0.999\), weight_decay=0\)' in the "
            r"checkpoint, 'SGD\(lr=0.01, momentum=0, weight_decay=0\)' now; "
            r"scheduler: 'OneCycleLR' in the checkpoint, None now"
        ),
    ):
        model = _mlp()
        sgd = torch.optim.SGD(model.parameters(), lr=1e-2)
        fit(model, _loaders(NoisyData()), sgd, 3, checkpoint_path=path, resume=True, progress=False)
    wider = nn.Sequential(nn.Flatten(), nn.Linear(768, 32), nn.ReLU(), nn.Linear(32, 3))
    with pytest.raises(CheckpointError, match="different model"):
        _fit(wider, _loaders(NoisyData()), path, resume=True)


def test_resume_refuses_a_checkpoint_trained_on_other_images(tmp_path):
    """A split that changed (images added, dropped or moved) must not be resumed silently."""
    torch.manual_seed(0)
    path = tmp_path / "c.pt"
    before, after = NoisyData(), NoisyData()
    before.paths = [f"ISIC_{i:07d}.jpg" for i in range(len(before))]
    after.paths = before.paths[:-1] + ["ISIC_9999999.jpg"]
    _fit(_mlp(), _loaders(before), path)
    with pytest.raises(CheckpointError, match=r"images per split \(hash\)"):
        _fit(_mlp(), _loaders(after), path, resume=True)


def test_unreadable_or_foreign_files_give_an_error_naming_them(tmp_path):
    torch.manual_seed(0)
    good = tmp_path / "good.pt"
    _fit(_mlp(), _loaders(NoisyData()), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_checkpoint(truncated)
    assert str(truncated) in str(info.value)
    with pytest.raises(CheckpointError, match="truncated.pt"):
        _fit(_mlp(), _loaders(NoisyData()), truncated, resume=True)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": _mlp().state_dict()}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt is not a lesionlib checkpoint"):
        load_checkpoint(foreign)
    future = tmp_path / "future.pt"
    torch.save({"lesionlib": "checkpoint", "version": 99}, future)
    with pytest.raises(CheckpointError, match="future.pt has lesionlib file format version 99"):
        load_checkpoint(future)
    with pytest.raises(CheckpointError, match="it is a lesionlib checkpoint file"):
        load_model(good)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def _record(**changes) -> RunRecord:
    values = dict(model="simplecnn", classes=CLASSES, image_size=32, weights="none (random init)")
    return RunRecord(**{**values, "data": "data/x", "layout": "isic2019", **changes})


def test_the_run_record_must_be_json_safe(tmp_path):
    with pytest.raises(ValueError, match="JSON values.*str\\(\\)"):
        _record(data=tmp_path)
    with pytest.raises(TypeError, match="image_size"):
        RunRecord(model="simplecnn", classes=CLASSES, weights="x", data="d", layout="isic2019")


def test_save_model_and_load_model_round_trip_gives_identical_predictions(tmp_path):
    torch.manual_seed(0)
    model = build_model("simplecnn", 3, pretrained=False, image_size=32).eval()
    record = _record(recipe={"epochs": 2}, split_sizes={"train": 7, "test": 3})
    path = save_model(tmp_path / "out" / "model.pt", model, record)
    loaded, stored = load_model(path, device="cpu")
    assert stored == record and stored.classes == CLASSES and stored.recipe == {"epochs": 2}
    assert not loaded.training
    images = torch.randn(10, 3, 32, 32)
    loader = DataLoader(TensorDataset(images, torch.arange(10) % 3), batch_size=4)
    expected, _ = predict(model, loader)
    got, _ = predict(loaded, loader)
    assert (expected == got).all()
    with pytest.raises(CheckpointError, match="model.pt is not a lesionlib checkpoint"):
        load_checkpoint(path)


def test_a_run_killed_after_an_epoch_resumes_to_the_uninterrupted_history(tmp_path):
    """The issue's reproduction: SIGKILL as soon as the first checkpoint exists, as a Colab
    disconnect kills a run, then the same command with --resume, in new processes."""
    command = [sys.executable, "-m", "lesionlib", "train", "--model", "simplecnn", "--seed", "3"]
    command += ["--image-size", "32", "--epochs", "3", "--num-workers", "2", "--quiet", "--out"]
    subprocess.run([*command, str(tmp_path / "A")], check=True, capture_output=True)
    killed = subprocess.Popen([*command, str(tmp_path / "B")], stdout=subprocess.DEVNULL)
    checkpoint = tmp_path / "B" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert load_checkpoint(checkpoint)["epoch"] < 3
    subprocess.run([*command, str(tmp_path / "B"), "--resume"], check=True, capture_output=True)
    a, b = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in "AB")

    def without_time(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    assert len(a["history"]) == 3 and without_time(b["history"]) == without_time(a["history"])
    assert b["balanced_accuracy"] == a["balanced_accuracy"] and b["accuracy"] == a["accuracy"]


def test_a_record_read_back_from_results_json_knows_the_same_data(tmp_path):
    """Notebook 03 compares notebook 02's results with its own run: both store the data folder
    in their run record (before, 02 stored a display name and 03 compared a folder with it)."""
    ours = _record(data=str(tmp_path / "isic2019"), seed=0)
    save_results("02_simple_cnn_from_scratch", {"run": ours.as_dict()}, folder=tmp_path)
    stored = RunRecord.from_dict(load_results(tmp_path)["02_simple_cnn_from_scratch"]["run"])
    relative = _record(data=os.path.relpath(tmp_path / "isic2019"), model="resnet50")
    assert stored == ours and stored.same_data(relative)
    assert not stored.same_data(_record(data=str(tmp_path / "ham10000")))
    assert not stored.same_data(_record(data=ours.data, seed=1))  # another split
    assert not stored.same_data(_record(data=ours.data, layout="ham10000"))
