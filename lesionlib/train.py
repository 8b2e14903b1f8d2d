"""Loaders, the training loop, prediction, checkpoints and saved models.

Each epoch of ``fit`` is seeded from ``(seed, epoch)``, so a run killed after any epoch and resumed
gives the same history as one never stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchvision
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm.auto import tqdm

import lesionlib
from lesionlib.datasets import LesionDataset
from lesionlib.images import jpeg_decoder
from lesionlib.layouts import SPLITS
from lesionlib.models import build_model
from lesionlib.settings import LesionlibError, smoke_mode
from lesionlib.transforms import eval_transform, normalize, train_transform

_FORMAT_VERSION = 2  # 2: run record in saved models; per-epoch seeding instead of RNG states
_START_OVER = "pass resume=False (command line: leave out --resume) to train from the start"
_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}  # fit(amp=...) forced
_READ_EVERY = 20  # training batches between read-backs of the loss (each one waits for the GPU)


class TrainingError(LesionlibError, RuntimeError):
    """Training cannot go on (diverged loss, GPU out of memory); the message says what to change."""


class CheckpointError(LesionlibError, RuntimeError):
    """A checkpoint or model file is unreadable, foreign, or does not match the current run."""


# --- set-up -----------------------------------------------------------------------------------


def seed_everything(seed: int = 0, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for DataLoaders.
    ``deterministic=True`` also asks for deterministic algorithms and no cuDNN benchmarking."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    return torch.Generator().manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed NumPy and ``random`` from the worker's torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """``prefer`` (e.g. ``"cpu"``), else the best device present: CUDA, Apple MPS, the CPU."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


def print_environment() -> None:
    """Print the library versions, the device, the JPEG decoder and whether smoke mode is on."""
    device = get_device()
    name = "cpu (no GPU: training is slow; on Colab choose Runtime → Change runtime type → GPU)"
    if device.type == "cuda":
        name = f"cuda ({torch.cuda.get_device_name(device)})"
    elif device.type == "mps":
        name = "mps (Apple GPU)"
    print(
        f"python {platform.python_version()} | torch {torch.__version__} | "
        f"torchvision {torchvision.__version__} | lesionlib {lesionlib.__version__}\n"
        f"device: {name}\nJPEG decoder: {jpeg_decoder()[0]}\n"
        f"smoke mode: {'ON (tiny synthetic run)' if smoke_mode() else 'off'}"
    )


def make_loaders(
    table: pd.DataFrame,
    image_size: int,
    batch_size: int = 32,
    augment: str = "basic",
    balanced_sampler: bool = False,
    num_workers: int | None = None,
    seed: int = 0,
) -> dict[str, DataLoader]:
    """One DataLoader per value of ``table["split"]``: train augmented and shuffled (or drawn
    with replacement, weighted 1/class count, with ``balanced_sampler``), the others in table
    order. Batches hold uint8 pixels, a quarter of float32's bytes: ``fit``/``predict`` normalise
    them on the device (your own loop: ``transforms.normalize(images.to(device))``)."""
    if "split" not in table.columns or table["split"].dropna().empty:
        raise ValueError("the table has no split: add one with datasets.split_table(table)")
    if num_workers is None:
        num_workers = 0 if smoke_mode() else min(os.cpu_count() or 1, 8)
    order = {split: i for i, split in enumerate(SPLITS)}
    splits = sorted(table["split"].dropna().unique(), key=lambda s: (order.get(s, 9), s))
    loaders = {}
    for split in splits:
        part = table[table["split"] == split].reset_index(drop=True)
        training = split == "train"
        if training:
            transform = train_transform(image_size, augment, normalize=False)
        else:
            transform = eval_transform(image_size, normalize=False)
        generator = torch.Generator().manual_seed(seed)
        sampler = None
        if training and balanced_sampler:
            counts = part["target"].map(part["target"].value_counts()).to_numpy(dtype=np.float64)
            sampler = WeightedRandomSampler(
                torch.as_tensor(1.0 / counts), len(part), replacement=True, generator=generator
            )
        loaders[str(split)] = DataLoader(
            LesionDataset(part, transform=transform),
            batch_size=batch_size,
            shuffle=training and sampler is None,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=seed_worker,
            generator=generator,
            drop_last=training and len(part) % batch_size == 1,  # BatchNorm cannot train on one
        )
    return loaders


TargetsLike = pd.DataFrame | Sequence[int] | np.ndarray | torch.Tensor


def _training_targets(table_or_targets: TargetsLike, num_classes: int, caller: str) -> np.ndarray:
    """The training targets as int64, each checked to lie in ``[0, num_classes)``."""
    if isinstance(table_or_targets, pd.DataFrame):
        table_or_targets = table_or_targets["target"]
    targets = np.asarray(table_or_targets, dtype=np.int64).reshape(-1)
    if targets.size == 0 or targets.min() < 0 or targets.max() >= num_classes:
        raise ValueError(
            f"{caller} needs the training targets, each in [0, {num_classes - 1}] "
            f"for num_classes={num_classes}"
        )
    return targets


def class_weights_from(table_or_targets: TargetsLike, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights for the cross-entropy: sklearn's "balanced" weights of
    the training targets rescaled to mean 1 (the loss keeps its scale); absent classes get 1."""
    targets = _training_targets(table_or_targets, num_classes, "class_weights_from")
    present = np.unique(targets)
    balanced = compute_class_weight("balanced", classes=present, y=targets)
    weights = np.ones(num_classes)
    weights[present] = balanced / balanced.mean()
    return torch.tensor(weights, dtype=torch.float32)


def class_prior(table_or_targets: TargetsLike, num_classes: int) -> torch.Tensor:
    """Each class's share of the training targets (an absent class counts as one image)."""
    targets = _training_targets(table_or_targets, num_classes, "class_prior")
    counts = np.maximum(np.bincount(targets, minlength=num_classes), 1).astype(np.float64)
    return torch.tensor(counts / counts.sum(), dtype=torch.float32)


class LogitAdjustedLoss(nn.Module):
    """Cross-entropy on the logits plus ``tau * log(class prior)`` (Menon et al., ICLR 2021): the
    model's plain argmax then aims at balanced accuracy instead of favouring frequent classes."""

    def __init__(self, prior: torch.Tensor, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = tau
        self.register_buffer("log_prior", torch.as_tensor(prior, dtype=torch.float32).log())

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits + self.tau * self.log_prior, targets)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, prior={self.log_prior.exp().tolist()}"


# --- training ---------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What :func:`fit` returns: one history row per epoch, the epoch it kept and its score
    (``monitor``: ``"last_epoch"`` without validation, the score then the train one)."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_metric: float
    device: str
    seconds: float
    monitor: str = "val_balanced_accuracy"
    setup: str = ""  # device, precision, memory format, loader


def fit(
    model: nn.Module,
    loaders: Mapping[str, DataLoader],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    grad_clip: float | None = None,
    amp: bool | str = True,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` (on its device) for ``epochs`` and load the weights of the best epoch on
    ``loaders["val"]`` (:func:`best_epoch_of`). ``scheduler`` steps after every batch (as
    ``OneCycleLR`` wants); ``loss_fn`` (default cross-entropy) also gives the val loss;
    ``grad_clip`` clips each gradient value. ``amp=True``: on CUDA, bfloat16 where the GPU has
    it, else float16 with a GradScaler; ``"float16"``/``"bfloat16"`` force it on any device.
    ``checkpoint_path`` saves the whole state every epoch; ``resume=True`` continues from it.
    Raises :class:`TrainingError` on a NaN/inf loss or a GPU out of memory."""
    if epochs < 1 or "train" not in loaders or len(loaders["train"]) == 0:
        raise ValueError("fit needs epochs >= 1 and a 'train' loader that yields batches")
    step = _Step(model, optimizer, scheduler, loss_fn or nn.CrossEntropyLoss(), grad_clip, amp)
    run = _run_identity(loaders, step, epochs, seed)
    path = None if checkpoint_path is None else Path(checkpoint_path)
    history, best_state = _resume(path, run, step) if resume else ([], None)
    setup = step.describe(loaders["train"])
    if progress:
        tqdm.write(f"Training on {setup}")
    todo = range(len(history) + 1, epochs + 1)
    bar = tqdm(todo, "epochs", epochs, initial=len(history), disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        _seed_epoch(loaders["train"], seed, epoch)
        with _explained_interruptions(path, epoch, bool(history)):
            row = {"epoch": epoch, **step.train_epoch(loaders["train"], epoch, progress)}
            row.update(step.validate(loaders.get("val"), epoch, progress))
        row.update(lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - start)
        history.append(row)
        if best_epoch_of(history) == epoch:
            best_state = _cpu_state(model)
        if path is not None:
            state = {"epoch": epoch, "run": run, "history": history, "best_state": best_state}
            _write_checkpoint({**state, **step.state_dict()}, path)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}")
    model.load_state_dict(best_state)
    best = history[best_epoch_of(history) - 1]
    monitor = "val_balanced_accuracy" if best["val_loss"] is not None else "last_epoch"
    score = float(best["train_balanced_accuracy" if monitor == "last_epoch" else monitor])
    seconds = sum(row["seconds"] for row in history)
    return FitResult(history, best["epoch"], score, str(step.device), seconds, monitor, setup)


def best_epoch_of(history: Sequence[Mapping[str, Any]]) -> int:
    """The epoch that :func:`fit` keeps: highest ``val_balanced_accuracy``, then lowest
    ``val_loss``, then the earliest; the last epoch when there is no validation."""
    scored = [r for r in history if r.get("val_balanced_accuracy") is not None]
    if not scored:
        return int(history[-1]["epoch"])
    best = max(scored, key=lambda r: (r["val_balanced_accuracy"], -r["val_loss"], -r["epoch"]))
    return int(best["epoch"])


def predict(
    model: nn.Module, loader: DataLoader, tta: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities ``[N, C]`` (float32) and targets ``[N]`` over ``loader``;
    ``tta=True`` averages the image and its two flips."""
    logits, targets = _infer(model, loader, None, tta=tta, desc="predict", progress=False)
    return logits.softmax(1).numpy().astype(np.float32), targets.numpy().astype(np.int64)


class _Step:
    """One training or validation pass with the run's loss, precision and clipping."""

    def __init__(self, model, optimizer, scheduler, loss_fn, grad_clip, amp) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.loss_fn, self.grad_clip = loss_fn, grad_clip
        self.device = next(model.parameters()).device
        self.amp_dtype = _amp_dtype(self.device, amp)
        float16 = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=float16)
        if self.device.type == "cuda":
            model.to(memory_format=torch.channels_last)

    def describe(self, loader: DataLoader) -> str:
        """What the run uses: device, precision, memory format, batch, loader workers."""
        cuda = self.device.type == "cuda"
        where = f"cuda ({torch.cuda.get_device_name(self.device)})" if cuda else self.device.type
        parts = [
            f"{str(self.amp_dtype)[6:]} mixed precision" if self.amp_dtype else "float32",
            "channels_last" if cuda else "NCHW",
            f"batch {loader.batch_size}",
            f"{loader.num_workers} loader workers",
            *(["pinned memory"] if loader.pin_memory else []),
        ]
        return f"{where}: {', '.join(parts)}"

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, scheduler and scaler states, for a checkpoint."""
        return {
            "model": _cpu_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`state_dict` saved."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])

    def train_epoch(self, loader: DataLoader, epoch: int, progress: bool) -> dict[str, float]:
        """One pass over the training data: train_loss, _accuracy, _balanced_accuracy (losses
        read back every ``_READ_EVERY`` batches, so the CPU queues batches meanwhile)."""
        self.model.train()
        total, pending, predictions, targets = 0.0, [], [], []
        batches = tqdm(loader, desc=f"epoch {epoch} train", leave=False, disable=not progress)
        for batch, (images, labels) in enumerate(batches, start=1):
            targets.append(labels)
            images = _to_device(images, self.device)
            labels = labels.to(self.device, non_blocking=True)
            lr = self.optimizer.param_groups[0]["lr"]
            with torch.autocast(self.device.type, self.amp_dtype, self.amp_dtype is not None):
                logits = self.model(images)
                loss = self.loss_fn(logits, labels)
            pending.append((batch, lr, loss.detach(), len(labels)))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_value_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None:
                self.scheduler.step()
            predictions.append(logits.detach().argmax(1))
            if len(pending) == _READ_EVERY or batch == len(loader):
                total += _read_losses(pending, epoch, len(loader))
                pending.clear()
                batches.set_postfix(loss=f"{total / sum(map(len, targets)):.3f}")  # epoch mean
        y, p = torch.cat(targets), torch.cat(predictions).cpu()
        return {"train_loss": total / len(y), **_scores(y, p, "train")}

    def validate(self, loader: DataLoader | None, epoch: int, progress: bool) -> dict[str, Any]:
        """val_loss (the training loss function), val_accuracy, val_balanced_accuracy."""
        if loader is None:
            return {"val_loss": None, "val_accuracy": None, "val_balanced_accuracy": None}
        desc = f"epoch {epoch} val"
        logits, targets = _infer(self.model, loader, self.amp_dtype, desc=desc, progress=progress)
        loss = self.loss_fn(logits.to(self.device), targets.to(self.device)).item()
        return {"val_loss": loss, **_scores(targets, logits.argmax(1), "val")}


def _read_losses(
    pending: list[tuple[int, float, torch.Tensor, int]], epoch: int, batches: int
) -> float:
    """The summed loss of ``pending`` (batch, lr, loss, size) batches, read back in one go;
    a :class:`TrainingError` names the first batch whose loss is NaN/inf."""
    values = torch.stack([loss.float() for _, _, loss, _ in pending]).tolist()
    for (batch, lr, _, _), value in zip(pending, values, strict=True):
        if not math.isfinite(value):
            raise TrainingError(
                f"the loss became {value} in epoch {epoch}, batch {batch} of {batches} "
                f"(learning rate {lr:.3g}): training diverged. Lower the learning rate or clip "
                "the gradients (grad_clip=0.1)."
            )
    return sum(value * size for (*_, size), value in zip(pending, values, strict=True))


def _amp_dtype(device: torch.device, amp: bool | str) -> torch.dtype | None:
    """The autocast dtype of ``fit(amp=...)``; with ``True``, bfloat16 on GPUs of compute
    capability >= 8.0, else float16 (``is_bf16_supported()`` says True on a T4: emulated)."""
    if isinstance(amp, str):
        if amp not in _PRECISIONS:
            raise ValueError(f"amp={amp!r}: use True, False, 'float16' or 'bfloat16'")
        return _PRECISIONS[amp]
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16


def _seed_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Seed all an epoch draws from (shuffling, workers, augmentation, dropout) from ``(seed,
    epoch)`` alone, as ``DistributedSampler.set_epoch`` does."""
    epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    random.seed(epoch_seed)
    np.random.seed(epoch_seed)
    torch.manual_seed(epoch_seed)  # also the loaders and samplers without a generator of their own
    for generator in (loader.generator, getattr(loader.sampler, "generator", None)):
        if generator is not None:
            generator.manual_seed(epoch_seed)


@contextmanager
def _explained_interruptions(path: Path | None, epoch: int, resumable: bool) -> Iterator[None]:
    """Say how to resume after Ctrl+C; turn a GPU out of memory into a :class:`TrainingError`."""
    try:
        yield
    except KeyboardInterrupt:
        if path is not None and resumable:
            tqdm.write(
                f"Interrupted in epoch {epoch}: {path} holds epochs 1-{epoch - 1}; run again "
                "with resume=True (command line: --resume) to continue"
            )
        raise
    except torch.cuda.OutOfMemoryError as error:
        raise TrainingError(
            f"the GPU ran out of memory in epoch {epoch}: use a smaller batch size or image "
            f"size (--batch-size, --image-size), or a smaller model. ({error})"
        ) from error


def _to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch copied to ``device`` (without waiting), normalised there; channels-last on CUDA."""
    images = images.to(device, non_blocking=True)
    if device.type == "cuda" and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)  # still uint8: cheaper
    return normalize(images)


@torch.inference_mode()
def _infer(
    model: nn.Module, loader: DataLoader, amp_dtype, *, desc: str, progress: bool, tta: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits ``[N, C]`` and targets ``[N]`` on the CPU (model in eval mode); with
    ``tta`` the log of the mean softmax over the image and its two flips."""
    model.eval()
    device = next(model.parameters()).device
    all_logits, all_targets = [], []
    for images, labels in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images = _to_device(images, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            views = (images, images.flip(-1), images.flip(-2)) if tta else (images,)
            log_probs = torch.stack([model(v).float().log_softmax(1) for v in views])
            logits = log_probs.logsumexp(0) - math.log(len(views)) if tta else log_probs[0]
        all_logits.append(logits)
        all_targets.append(torch.as_tensor(labels))
    if not all_logits:
        raise ValueError(f"{desc}: the loader yields no batches (empty split?)")
    return torch.cat(all_logits).cpu(), torch.cat(all_targets).long()


def _scores(targets: torch.Tensor, predictions: torch.Tensor, prefix: str) -> dict[str, float]:
    """``<prefix>_accuracy`` and ``<prefix>_balanced_accuracy`` as plain floats."""
    y, p = targets.numpy(), predictions.numpy()
    with warnings.catch_warnings():  # a class predicted but absent from a small split is normal
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(y, p))  # plain floats: checkpoints load them
    return {
        f"{prefix}_accuracy": float(accuracy_score(y, p)),
        f"{prefix}_balanced_accuracy": balanced,
    }


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --- checkpoints ------------------------------------------------------------------------------


def _run_identity(
    loaders: Mapping[str, DataLoader], step: _Step, epochs: int, seed: int
) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint."""
    digest = hashlib.sha1()
    for name in sorted(loaders):
        dataset = loaders[name].dataset
        digest.update(f"{name}:{len(dataset)}:".encode())
        digest.update("\n".join(map(str, getattr(dataset, "paths", []))).encode())
    keys = ("lr", "momentum", "betas", "weight_decay")
    hyper = ", ".join(f"{k}={v}" for k, v in step.optimizer.defaults.items() if k in keys)
    loss = getattr(step.loss_fn, "__name__", repr(step.loss_fn))  # a function, or a module
    weight = getattr(step.loss_fn, "weight", None)
    return {
        "epochs": epochs,
        "classes": getattr(loaders["train"].dataset, "classes", None),
        "steps_per_epoch": len(loaders["train"]),
        "seed": seed,
        "optimizer": f"{type(step.optimizer).__name__}({hyper})",
        "scheduler": None if step.scheduler is None else type(step.scheduler).__name__,
        "loss": f"{loss} weight={None if weight is None else weight.tolist()}",
        "grad_clip": step.grad_clip,
        "images per split (hash)": digest.hexdigest()[:12],
    }


def _previous_path(path: Path) -> Path:
    """Where the previous epoch's checkpoint is kept: ``checkpoint.previous.pt``."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def _write_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Save atomically, keeping the file it replaces as the previous epoch's copy (a Drive mount
    that loses its connection can cut a file short after the rename); epoch 1 drops an old copy."""
    previous = _previous_path(path)
    if state["epoch"] == 1:
        previous.unlink(missing_ok=True)
    payload = {"lesionlib": "checkpoint", "version": _FORMAT_VERSION, **state}
    _save_atomic(payload, path, keep=None if state["epoch"] == 1 else previous)


def _resume(path: Path | None, run: dict[str, Any], step: _Step) -> tuple[list, dict | None]:
    """Load the checkpoint at ``path`` into the run's objects and return ``(history,
    best_state)``; when it is missing or damaged, the previous epoch's copy (with a warning)."""
    if path is None:
        raise ValueError("resume=True needs checkpoint_path (the file to continue from)")
    previous = _previous_path(path)
    try:
        state, source = load_checkpoint(path), path
    except (FileNotFoundError, CheckpointError) as error:
        if not previous.is_file() and isinstance(error, FileNotFoundError):
            tqdm.write(f"No checkpoint at {path} yet: training from the start")
            return [], None
        if not previous.is_file():
            raise
        try:
            state, source = load_checkpoint(previous), previous
        except CheckpointError as second:
            raise CheckpointError(
                f"cannot resume: neither {path} nor the previous epoch's copy {previous} can be "
                f"read ({_brief(second)}); {_START_OVER}"
            ) from second
        if path.exists():
            os.replace(path, path.with_name(path.name + ".damaged"))
        warnings.warn(
            f"{error} -- resuming from the previous epoch's copy {previous} (epoch "
            f"{state['epoch']}) instead: at most one epoch is trained again",
            stacklevel=3,
        )
    saved = state["run"]
    if changed := [k for k in run if saved.get(k) != run[k]]:
        was = "; ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {run[k]!r} now" for k in changed)
        raise CheckpointError(
            f"cannot resume from {source}: it was written by a different run ({was}). "
            f"Use the same settings, or {_START_OVER}."
        )
    try:
        step.load_state_dict(state)
    except (RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"{source} holds the weights or optimiser of a different model ({_brief(error)}); "
            f"resume with the same model and options, or {_START_OVER}"
        ) from error
    tqdm.write(f"Resuming from {source}: {state['epoch']} of {run['epochs']} epochs done")
    return state["history"], state["best_state"]


def _save_atomic(payload: dict[str, Any], path: Path, keep: Path | None = None) -> None:
    """torch.save to ``<path>.tmp`` then rename, so a crash never leaves a half-written file;
    with ``keep``, the file at ``path`` is first renamed to ``keep``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    if keep is not None and path.is_file():
        os.replace(path, keep)
    os.replace(tmp, path)


def _brief(error: BaseException, limit: int = 300) -> str:
    """An error's message on one line, shortened: torch's run over many lines."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint written by :func:`fit` (``torch.load`` with weights_only)."""
    return _load_file(path, "checkpoint")


def _load_file(path: str | Path, kind: str) -> dict[str, Any]:
    """A lesionlib ``kind`` file, loaded weights-only; errors name the file at fault and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such lesionlib {kind} file")
    foreign = f"{path} is not a lesionlib {kind} file"
    fix = f"pass the {kind}.pt file that lesionlib wrote"
    with path.open("rb") as file:
        head = file.read(4)
    if not b"PK\x03\x04".startswith(head):  # torch.save writes a zip; a cut file is not foreign
        raise CheckpointError(f"{foreign}: it is not a file written by torch.save; {fix}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file fails in many ways (OSError, EOFError, KeyError..)
        again = "copy it again from where the run saved it, or train again"
        if kind == "checkpoint":
            again = "resume falls back to the previous epoch's copy if any, else train again"
        raise CheckpointError(
            f"{path} cannot be read as a lesionlib {kind}: the file is truncated or corrupt "
            f"(a disconnect while it was written can do this): {again}. ({_brief(error, 160)})"
        ) from error
    found = payload.get("lesionlib") if isinstance(payload, dict) else None
    if found != kind:
        hint = f" (it is a lesionlib {found} file)" if found else ""
        raise CheckpointError(f"{foreign}{hint}; {fix}")
    if payload.get("version") != _FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has lesionlib file format version {payload.get('version')}; this lesionlib "
            f"reads version {_FORMAT_VERSION}: use the lesionlib that wrote it, or train again"
        )
    return payload


# --- saved models and their run record ----------------------------------------------------------


@dataclass
class RunRecord:
    """What a run was: enough to rebuild its network and test split, and to report it (saved
    with models, in the CLI's metrics.json and in every notebook's results JSON)."""

    model: str  # a models.MODEL_NAMES entry
    classes: list[str]
    image_size: int
    weights: str  # the weights actually used: an ImageNet enum name or models.RANDOM_INIT
    data: str  # the data folder
    layout: str  # its official layout
    seed: int = 0  # of the split and of training
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_sizes: dict[str, int] = field(default_factory=dict)
    cache_size: int | None = None  # images read from the resize cache at this size
    recipe: dict[str, Any] = field(default_factory=dict)  # epochs, optimizer, lr, loss, ...

    def __post_init__(self) -> None:
        try:
            json.dumps(asdict(self))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"a RunRecord holds only JSON values (str, int, float, bool, None, lists, dicts) "
                f"({error}); convert e.g. Paths with str()"
            ) from error

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-safe plain data."""
        return asdict(self)

    def same_data(self, other: RunRecord) -> bool:
        """Whether both runs used the same data folder, layout and split (comparable tests)."""
        split = ("layout", "seed", "val_fraction", "test_fraction")
        return Path(self.data).resolve() == Path(other.data).resolve() and all(
            getattr(self, key) == getattr(other, key) for key in split
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunRecord:
        """The record of ``as_dict`` output (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def save_model(path: str | Path, model: nn.Module, record: RunRecord) -> Path:
    """Save the weights and the run record for :func:`load_model` (atomically)."""
    path = Path(path)
    payload = {"lesionlib": "model", "version": _FORMAT_VERSION, "run": record.as_dict()}
    _save_atomic({**payload, "model": _cpu_state(model)}, path)
    return path


def load_model(
    path: str | Path, device: str | torch.device | None = None
) -> tuple[nn.Module, RunRecord]:
    """Rebuild the network saved by :func:`save_model` on ``device`` (default: the best one), in
    eval mode; returns ``(model, record)``."""
    payload = _load_file(path, "model")
    try:
        record = RunRecord.from_dict(payload["run"])
        model = build_model(
            record.model, len(record.classes), pretrained=False, image_size=record.image_size
        )
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path}: the stored weights do not rebuild the {payload['run'].get('model')!r} "
            f"network its record names ({_brief(error)}); the file was edited, damaged or "
            "written by another lesionlib version: train again with this one"
        ) from error
    return model.to(get_device(device)).eval(), record
