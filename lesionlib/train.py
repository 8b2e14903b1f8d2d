"""Loaders, the training loop (best epoch kept, checkpoint/resume) and prediction.

``fit`` trains with cross-entropy, Adam or SGD, the one-cycle schedule (stepped per batch, as in
seed 002) and mixed precision on CUDA, keeps the epoch with the best validation balanced accuracy
and loads it into the model at the end. With ``checkpoint_path`` it saves everything needed to
continue after each epoch, so an interrupted Colab session resumes with ``resume=True`` and ends
with exactly the weights an uninterrupted run would have.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchvision
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset, WeightedRandomSampler
from tqdm.auto import tqdm

import lesionlib
from lesionlib.datasets import SPLITS, LesionDataset, jpeg_decoder
from lesionlib.models import build_model
from lesionlib.settings import smoke_mode
from lesionlib.transforms import eval_transform, train_transform

CHECKPOINT_KIND = "checkpoint"
MODEL_KIND = "model"
_FORMAT_VERSION = 1
_START_OVER = "pass resume=False (command line: leave out --resume) to train from the start"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format: a zip archive


class TrainingError(RuntimeError):
    """Training cannot go on (diverged loss, GPU out of memory); the message says what to change."""


class CheckpointError(RuntimeError):
    """A checkpoint or model file is unreadable, foreign, or does not match the current run."""


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``history`` has one dict per epoch (see :func:`fit`). ``monitor`` names the metric that chose
    ``best_epoch``: ``"val_balanced_accuracy"``, or ``"last_epoch"`` when there was no ``"val"``
    loader (then the last epoch is kept and ``best_metric`` is its train balanced accuracy).
    ``seconds`` sums the epochs' times, including epochs run before a resume. ``speed`` says
    what the run used, e.g. ``"cuda (NVIDIA H100): bfloat16 mixed precision, channels_last,
    2 loader workers, pinned memory, no torch.compile"``; ``fit`` prints it when it starts.
    """

    history: list[dict[str, Any]]
    best_epoch: int
    best_metric: float
    device: str
    seconds: float
    monitor: str = "val_balanced_accuracy"
    speed: str = ""

    def as_frame(self) -> pd.DataFrame:
        """The history as a DataFrame, one row per epoch."""
        return pd.DataFrame(self.history)


def seed_everything(seed: int = 0, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a torch generator for DataLoaders.

    ``deterministic=True`` also asks torch for deterministic algorithms (``warn_only``: ops with
    no deterministic version warn instead of failing) and turns off cuDNN benchmarking; with
    ``False`` those switches are reset (cuDNN benchmarking on: faster for fixed image sizes).
    """
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


def print_environment() -> None:
    """Print the library versions, the device, the JPEG decoder and whether smoke mode is on."""
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    elif torch.backends.mps.is_available():
        device = "mps (Apple GPU)"
    else:
        device = (
            "cpu (no GPU: training is slow; on Colab choose Runtime → Change runtime type → GPU)"
        )
    lines = [
        f"python {platform.python_version()} | torch {torch.__version__} | "
        f"torchvision {torchvision.__version__} | lesionlib {lesionlib.__version__}",
        f"device: {device}",
        f"JPEG decoder: {jpeg_decoder()[0]}",
        f"smoke mode: {'ON (tiny synthetic run)' if smoke_mode() else 'off'}",
    ]
    print("\n".join(lines))


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """The best available device (CUDA, then Apple MPS, then CPU), or ``prefer`` if available."""
    if prefer is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(prefer)
    except RuntimeError as error:
        raise ValueError(f"unknown device {prefer!r}: use 'cuda', 'mps' or 'cpu'") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {prefer!r} requested but no CUDA GPU is available (on Colab: Runtime > "
            "Change runtime type > GPU); pass prefer=None to use the best device present"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device {prefer!r} requested but Apple MPS is not available on this machine; "
            "pass prefer=None to use the best device present"
        )
    return device


def make_loaders(
    table: pd.DataFrame,
    image_size: int,
    batch_size: int = 32,
    augment: str = "basic",
    balanced_sampler: bool = False,
    num_workers: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, DataLoader]:
    """One DataLoader per value of ``table["split"]`` (train, val, test).

    The train loader uses ``train_transform(image_size, augment)`` and shuffles, or with
    ``balanced_sampler`` draws ``len(train)`` images with replacement, each with weight
    1/(count of its class), so every class is drawn about equally often. A last train batch of a
    single image is dropped (BatchNorm cannot train on one). The other loaders use
    ``eval_transform(image_size)`` in table order. ``num_workers`` defaults to 0 in smoke mode,
    else ``min(cpu_count, 8)``; memory is pinned when ``device`` (default: :func:`get_device`) is
    CUDA. Each loader has its own generator seeded with ``seed`` and workers are seeded with
    :func:`seed_worker`, so shuffling and augmentation repeat for a seed.
    """
    if "split" not in table.columns:
        raise ValueError(
            "the table has no 'split' column: add one with "
            "lesionlib.datasets.split_table(table) before make_loaders"
        )
    if num_workers is None:
        num_workers = 0 if smoke_mode() else min(os.cpu_count() or 1, 8)
    pin_memory = get_device(device).type == "cuda"
    order = {split: i for i, split in enumerate(SPLITS)}
    splits = sorted(table["split"].dropna().unique(), key=lambda s: (order.get(s, len(order)), s))
    if not splits:
        raise ValueError("the table's 'split' column is empty: run datasets.split_table(table)")
    loaders = {}
    for split in splits:
        part = table[table["split"] == split].reset_index(drop=True)
        training = split == "train"
        transform = train_transform(image_size, augment) if training else eval_transform(image_size)
        generator = torch.Generator().manual_seed(seed)
        sampler = None
        if training and balanced_sampler:
            class_counts = part["target"].map(part["target"].value_counts())
            sampler = WeightedRandomSampler(
                torch.as_tensor(1.0 / class_counts.to_numpy(dtype=np.float64)),
                num_samples=len(part),
                replacement=True,
                generator=generator,
            )
        loaders[str(split)] = DataLoader(
            LesionDataset(part, transform=transform),
            batch_size=batch_size,
            shuffle=training and sampler is None,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            worker_init_fn=seed_worker,
            generator=generator,
            drop_last=training and len(part) % batch_size == 1,
        )
    return loaders


def class_weights_from(
    table_or_targets: pd.DataFrame | Sequence[int] | np.ndarray | torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Inverse-frequency class weights for the cross-entropy, float32 of length ``num_classes``.

    scikit-learn's ``compute_class_weight("balanced")`` (n_samples / (n_present * count)) rescaled
    to mean 1 over the classes present; rescaling leaves the weighted mean loss unchanged. Classes
    absent from the targets get weight 1 (neutral where they do occur, e.g. in validation). Pass
    the training rows (a table with a ``target`` column) or their targets.
    """
    if isinstance(table_or_targets, pd.DataFrame):
        if "target" not in table_or_targets.columns:
            raise ValueError("class_weights_from needs a table with a 'target' column")
        table_or_targets = table_or_targets["target"].to_numpy()
    targets = np.asarray(table_or_targets, dtype=np.int64).reshape(-1)
    if targets.size == 0:
        raise ValueError("class_weights_from got no targets: pass the training split's targets")
    if targets.min() < 0 or targets.max() >= num_classes:
        raise ValueError(
            f"targets must lie in [0, {num_classes - 1}] for num_classes={num_classes}; "
            f"got values from {targets.min()} to {targets.max()}"
        )
    present = np.unique(targets)
    balanced = compute_class_weight("balanced", classes=present, y=targets)
    weights = np.ones(num_classes, dtype=np.float64)
    weights[present] = balanced / balanced.mean()
    return torch.tensor(weights, dtype=torch.float32)


def fit(
    model: nn.Module,
    loaders: Mapping[str, DataLoader],
    epochs: int,
    *,
    optimizer: str = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    scheduler: str | None = "onecycle",
    grad_clip: float | None = None,
    class_weights: bool | torch.Tensor = False,
    device: str | torch.device | None = None,
    amp: bool = True,
    channels_last: bool | None = None,
    compile: bool | str | Callable[..., Any] = False,
    progress: bool = True,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    settings: dict[str, Any] | None = None,
    classes: Sequence[str] | None = None,
) -> FitResult:
    """Train ``model`` on ``loaders["train"]`` for ``epochs``; keep the best epoch on ``"val"``.

    - ``optimizer``: ``"adam"`` (Adam with ``weight_decay``) or ``"sgd"`` (``momentum``, no
      Nesterov). ``scheduler="onecycle"``: ``OneCycleLR`` peaking at ``lr``, stepped every batch;
      ``None``: constant ``lr``.
    - ``grad_clip``: clip each gradient value to [-grad_clip, grad_clip]
      (``clip_grad_value_``, as the seed 002 recipe with ``grad_clip=0.1``).
    - ``class_weights``: ``True`` weights the cross-entropy with :func:`class_weights_from` the
      train dataset's targets (``.targets``, or a TensorDataset's second tensor) over
      ``len(classes)`` (else the dataset's ``.classes``, else the highest target + 1) classes;
      or pass the weights as a tensor.
    - On CUDA with ``amp``: bfloat16 autocast on GPUs with bfloat16 hardware (compute capability
      >= 8.0), else float16 with a GradScaler (the T4).
      ``channels_last`` defaults to True on CUDA only.
    - ``compile``: ``True`` compiles the model in place (``model.compile()``, TorchInductor)
      before the first step; a string or callable is passed on as ``torch.compile``'s
      ``backend``. It pays off on a GPU for long runs (the first batches wait for the
      compilation); the weights, checkpoints and saved models are the same as without it.
    - Best epoch: highest ``val_balanced_accuracy``, ties broken by the lower ``val_loss`` (then
      the earliest); its weights (kept on the CPU) are loaded into the model at the end. Without
      a ``"val"`` loader the last epoch is kept and ``val_*`` entries are None.
    - ``checkpoint_path``: after every epoch, atomically save model, optimizer, scheduler, scaler,
      history, best weights, RNG states, ``settings`` (JSON-safe dict) and ``classes``; the
      previous epoch's file is kept beside it as ``<name>.previous<suffix>``.
      ``resume=True`` continues from that file (or starts fresh when it does not exist yet);
      when it is missing or unreadable (e.g. cut short by a disconnect while Drive synced it)
      it warns and continues from the previous epoch's file. A checkpoint of a run with other
      epochs, optimiser settings or classes raises :class:`CheckpointError`.

    History rows: ``epoch`` (1-based), ``train_loss``, ``train_accuracy``,
    ``train_balanced_accuracy``, ``val_loss``, ``val_accuracy``, ``val_balanced_accuracy``, ``lr``
    (at the end of the epoch), ``seconds``. Raises :class:`TrainingError` on a NaN/inf loss or
    when the GPU runs out of memory, with the fix in the message.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if "train" not in loaders:
        raise ValueError(f"loaders must contain 'train'; got {sorted(loaders)}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path (the file to continue from)")
    settings = _json_safe(settings or {}, "settings")
    classes = None if classes is None else [str(c) for c in classes]
    train_loader, val_loader = loaders["train"], loaders.get("val")
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError("the train loader yields no batches: check the train split and batch size")
    device = get_device(device)
    if channels_last is None:
        channels_last = device.type == "cuda"
    amp_dtype = _amp_dtype(device, amp)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        model.compile(**({} if compile is True else {"backend": compile}))

    weight = _loss_weight(class_weights, train_loader.dataset, classes)
    weight = None if weight is None else weight.to(device)
    opt = _make_optimizer(model, optimizer, lr, weight_decay, momentum)
    if scheduler == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch
        )
    elif scheduler is None:
        sched = None
    else:
        raise ValueError(f"unknown scheduler {scheduler!r}: use 'onecycle' or None")
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    run = {
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "optimizer": optimizer,
        "lr": lr,
        "weight_decay": weight_decay,
        "momentum": momentum,
        "scheduler": scheduler,
        "grad_clip": grad_clip,
        "images per split (hash)": _data_fingerprint(loaders),
    }

    history: list[dict[str, Any]] = []
    best_epoch, best_state = 0, None
    path = None if checkpoint_path is None else Path(checkpoint_path)
    found = _resume_from(path) if resume else None
    if found is not None:
        state, source = found
        _check_resumable(state, run, classes, source)
        _restore(state, source, model, opt, sched, scaler, loaders)
        history, best_epoch, best_state = state["history"], state["best_epoch"], state["best_state"]
        tqdm.write(f"Resuming from {source}: {state['epoch']} of {epochs} epochs done")
    elif resume:
        tqdm.write(f"No checkpoint at {path} yet: training from the start")

    monitor = "val_balanced_accuracy" if val_loader is not None else "last_epoch"
    speed = _speed_summary(device, amp_dtype, channels_last, bool(compile), train_loader)
    if progress:
        tqdm.write(f"Training on {speed}")
    with tqdm(
        range(len(history) + 1, epochs + 1),
        desc="epochs",
        initial=len(history),
        total=epochs,
        leave=True,
        disable=not progress,
    ) as bar:
        for epoch in bar:
            start = time.perf_counter()
            try:
                row = _train_epoch(
                    model, train_loader, opt, sched, scaler, weight, device, amp_dtype,
                    channels_last, grad_clip, epoch, progress,
                )  # fmt: skip
                row.update(val_loss=None, val_accuracy=None, val_balanced_accuracy=None)
                if val_loader is not None:
                    row.update(
                        _validate(
                            model, val_loader, weight, device, amp_dtype, channels_last,
                            epoch, progress,
                        )
                    )  # fmt: skip
            except KeyboardInterrupt:
                if path is not None and history:
                    tqdm.write(
                        f"Interrupted in epoch {epoch}: {path} holds epochs 1-{epoch - 1}; "
                        "run fit again with resume=True (command line: --resume) to continue"
                    )
                raise
            except torch.cuda.OutOfMemoryError as error:
                raise TrainingError(
                    f"the GPU ran out of memory in epoch {epoch}: use a smaller batch size "
                    "(--batch-size / batch_size=) or image size (--image-size / image_size=), "
                    f"or a smaller model. ({error})"
                ) from error
            row = {"epoch": epoch, **row, "lr": float(opt.param_groups[0]["lr"])}
            row["seconds"] = time.perf_counter() - start
            history.append(row)
            if best_state is None or best_epoch_of(history) == epoch:
                best_epoch, best_state = epoch, _cpu_state(model)
            if path is not None:
                _write_checkpoint(
                    {
                        "lesionlib": CHECKPOINT_KIND,
                        "version": _FORMAT_VERSION,
                        "epoch": epoch,
                        "run": run,
                        "model": _cpu_state(model),
                        "optimizer": opt.state_dict(),
                        "scheduler": None if sched is None else sched.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                        "history": history,
                        "best_epoch": best_epoch,
                        "best_state": best_state,
                        "rng": _rng_state(loaders),
                        "settings": settings,
                        "classes": classes,
                    },
                    path,
                )
            postfix = {"loss": f"{row['train_loss']:.3f}"}
            if row["val_balanced_accuracy"] is not None:
                postfix["val_bal_acc"] = f"{row['val_balanced_accuracy']:.3f}"
            bar.set_postfix(postfix)

    model.load_state_dict(best_state)
    best = history[best_epoch - 1]
    best_metric = best["train_balanced_accuracy" if monitor == "last_epoch" else monitor]
    return FitResult(
        history=history,
        best_epoch=best_epoch,
        best_metric=float(best_metric),
        device=str(device),
        seconds=float(sum(r["seconds"] for r in history)),
        monitor=monitor,
        speed=speed,
    )


def predict(
    model: nn.Module,
    loader: DataLoader,
    device: str | torch.device | None = None,
    tta: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities ``[N, C]`` (float32) and targets ``[N]`` (int64) over ``loader``.

    ``device`` defaults to where the model's parameters are. Runs in float32 (no autocast), so the
    probabilities are precise enough for AUC and calibration. ``tta=True`` averages the softmax of
    the image, its horizontal flip and its vertical flip.
    """
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else get_device()
    device = get_device(device)
    model.to(device)
    logits, targets = _infer(
        model, loader, device, None, False, tta=tta, desc="predict", progress=False
    )
    probs = logits.softmax(1).numpy().astype(np.float32)
    return probs, targets.numpy().astype(np.int64)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint written by :func:`fit` (``torch.load`` with weights_only)."""
    return _load_file(path, CHECKPOINT_KIND, map_location)


def save_model(
    path: str | Path, model: nn.Module, classes: Sequence[str], settings: dict[str, Any]
) -> Path:
    """Save the weights, class list and settings for :func:`load_model` (atomically).

    ``settings`` must be JSON-safe and name the ``"model"`` (a ``models.MODEL_NAMES`` entry) and
    the ``"image_size"``; ``num_classes`` is added from ``classes``.
    """
    path = Path(path)
    settings = _json_safe(settings, "settings")
    missing = [key for key in ("model", "image_size") if key not in settings]
    if missing:
        raise ValueError(
            f"save_model needs settings[{missing[0]!r}] so that load_model can rebuild the "
            f"network for {path}; add {missing} to the settings dict"
        )
    classes = [str(c) for c in classes]
    payload = {
        "lesionlib": MODEL_KIND,
        "version": _FORMAT_VERSION,
        "model": _cpu_state(model),
        "classes": classes,
        "settings": {**settings, "num_classes": len(classes)},
    }
    _save_atomic(payload, path)
    return path


def load_model(
    path: str | Path, device: str | torch.device | None = None
) -> tuple[nn.Module, list[str], dict[str, Any]]:
    """Rebuild the network saved by :func:`save_model`; returns ``(model, classes, settings)``.

    The model is rebuilt with ``models.build_model(settings["model"], len(classes),
    pretrained=False, image_size=settings["image_size"])``, loaded, moved to ``device`` (default:
    :func:`get_device`) and put in eval mode.
    """
    payload = _load_file(path, MODEL_KIND, "cpu")
    classes, settings = payload.get("classes"), payload.get("settings") or {}
    try:
        model = build_model(
            settings["model"], len(classes), pretrained=False, image_size=settings["image_size"]
        )
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        network = settings.get("model", "?")
        raise CheckpointError(
            f"{path}: the stored weights do not rebuild the {network!r} network its settings "
            f"name ({type(error).__name__}: {_brief(error)}); the file was edited, damaged "
            "or written by another lesionlib version: train again, or use the lesionlib version "
            "that wrote it"
        ) from error
    return model.to(get_device(device)).eval(), classes, settings


# --- internals -------------------------------------------------------------------------------


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """Autocast dtype on CUDA, None elsewhere: bfloat16 where the GPU computes it in hardware
    (compute capability >= 8.0: A100, L4, H100), else float16 with a GradScaler (T4, V100).

    ``torch.cuda.is_bf16_supported()`` alone answers True on a T4, through slow emulation.
    """
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16


def _make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: use 'adam' or 'sgd'")


def _loss_weight(
    class_weights: bool | torch.Tensor, dataset: Dataset, classes: list[str] | None
) -> torch.Tensor | None:
    """The cross-entropy class weights asked for by ``fit(class_weights=...)``, or None."""
    if isinstance(class_weights, torch.Tensor):
        return class_weights.float()
    if not class_weights:
        return None
    if hasattr(dataset, "targets"):
        targets = dataset.targets
    elif isinstance(dataset, TensorDataset):
        targets = dataset.tensors[1]
    else:
        raise TypeError(
            f"class_weights=True cannot find the targets of a {type(dataset).__name__}: pass "
            "class_weights=class_weights_from(train_targets, num_classes) instead"
        )
    targets = np.asarray(targets, dtype=np.int64)
    known = classes if classes is not None else getattr(dataset, "classes", None)
    num_classes = len(known) if known else int(targets.max()) + 1
    return class_weights_from(targets, num_classes)


def _speed_summary(
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    compiled: bool,
    loader: DataLoader,
) -> str:
    """One line on what a run uses: device, precision, memory format, loading, compilation."""
    where = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type
    parts = [
        f"{str(amp_dtype).removeprefix('torch.')} mixed precision" if amp_dtype else "float32",
        "channels_last" if channels_last else "NCHW",
        f"{loader.num_workers} loader workers",
        *(["pinned memory"] if loader.pin_memory else []),
        "torch.compile" if compiled else "no torch.compile",
    ]
    return f"{where}: {', '.join(parts)}"


def _to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    if channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler,
    weight: torch.Tensor | None,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    grad_clip: float | None,
    epoch: int,
    progress: bool,
) -> dict[str, float]:
    """One pass over the training data; returns train_loss/accuracy/balanced_accuracy."""
    model.train()
    total_loss, seen, predictions, targets = 0.0, 0, [], []
    with tqdm(loader, desc=f"epoch {epoch} train", leave=False, disable=not progress) as bar:
        for batch, (images, labels) in enumerate(bar, start=1):
            images = _to_device(images, device, channels_last)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images)
                loss = F.cross_entropy(logits, labels, weight=weight)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingError(
                    f"the loss became {value} in epoch {epoch}, batch {batch} of {len(loader)} "
                    f"(learning rate {optimizer.param_groups[0]['lr']:.3g}): training diverged. "
                    "Lower the learning rate (lr=) or enable gradient clipping (grad_clip=0.1)."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_value_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            total_loss += value * len(labels)
            seen += len(labels)
            predictions.append(logits.detach().argmax(1))
            targets.append(labels)
            bar.set_postfix(loss=f"{value:.3f}")
    accuracy, balanced = _scores(torch.cat(targets).cpu(), torch.cat(predictions).cpu())
    return {
        "train_loss": total_loss / seen,
        "train_accuracy": accuracy,
        "train_balanced_accuracy": balanced,
    }


def _validate(
    model: nn.Module,
    loader: DataLoader,
    weight: torch.Tensor | None,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    epoch: int,
    progress: bool,
) -> dict[str, float]:
    """val_loss (same weighted cross-entropy as training), val_accuracy, val_balanced_accuracy."""
    logits, targets = _infer(
        model, loader, device, amp_dtype, channels_last, tta=False,
        desc=f"epoch {epoch} val", progress=progress,
    )  # fmt: skip
    loss = F.cross_entropy(logits, targets, weight=None if weight is None else weight.cpu())
    accuracy, balanced = _scores(targets, logits.argmax(1))
    return {"val_loss": loss.item(), "val_accuracy": accuracy, "val_balanced_accuracy": balanced}


@torch.inference_mode()
def _infer(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    *,
    tta: bool,
    desc: str,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits ``[N, C]`` and int64 targets ``[N]`` on the CPU, model in eval mode.

    With ``tta`` the logits are the log of the mean softmax over identity and the two flips, so
    their softmax is that mean.
    """
    model.eval()
    all_logits, all_targets = [], []
    for images, labels in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images = _to_device(images, device, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if tta:
                views = (images, images.flip(-1), images.flip(-2))
                log_probs = torch.stack([model(v).float().log_softmax(1) for v in views])
                logits = log_probs.logsumexp(0) - math.log(len(views))
            else:
                logits = model(images).float()
        all_logits.append(logits)
        all_targets.append(torch.as_tensor(labels))
    if not all_logits:
        raise ValueError(f"{desc}: the loader yields no batches (empty split?)")
    return torch.cat(all_logits).cpu(), torch.cat(all_targets).long().cpu()


def _scores(targets: torch.Tensor, predictions: torch.Tensor) -> tuple[float, float]:
    """(accuracy, balanced accuracy) as plain floats."""
    y_true, y_pred = targets.numpy(), predictions.numpy()
    with warnings.catch_warnings():
        # A class predicted but absent from y_true is normal for small validation splits.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = balanced_accuracy_score(y_true, y_pred)
    return float(accuracy_score(y_true, y_pred)), float(balanced)


def best_epoch_of(history: Sequence[Mapping[str, Any]]) -> int:
    """The epoch (1-based) that :func:`fit` keeps: highest ``val_balanced_accuracy``, ties broken
    by the lower ``val_loss``, then the earlier epoch; the last epoch when there is no validation.
    """
    scored = [r for r in history if r.get("val_balanced_accuracy") is not None]
    if not scored:
        return int(history[-1]["epoch"])
    best = max(scored, key=lambda r: (r["val_balanced_accuracy"], -r["val_loss"], -r["epoch"]))
    return int(best["epoch"])


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state dict on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _json_safe(settings: dict[str, Any], what: str) -> dict[str, Any]:
    """``settings`` unchanged if it holds only JSON values, else a ValueError naming the fix."""
    try:
        json.dumps(settings)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{what} must hold only JSON-safe values (str, int, float, bool, None, lists, dicts) "
            f"so it can be stored in a checkpoint: {error}; convert e.g. Paths with str()"
        ) from error
    return dict(settings)


def _data_fingerprint(loaders: Mapping[str, DataLoader]) -> str:
    """A short hash of the images in each split, so a resume on changed data is refused."""
    digest = hashlib.sha1()
    for name in sorted(loaders):
        dataset = loaders[name].dataset
        items = getattr(dataset, "paths", None)
        digest.update(f"{name}:{len(dataset)}:".encode())
        if items is not None:
            digest.update("\n".join(map(str, items)).encode())
    return digest.hexdigest()[:12]


def _loader_generators(loader: DataLoader) -> list[torch.Generator]:
    """The loader's own generator and its sampler's (each once): they drive shuffling."""
    found: list[torch.Generator] = []
    for generator in (loader.generator, getattr(loader.sampler, "generator", None)):
        if generator is not None and all(generator is not g for g in found):
            found.append(generator)
    return found


def _rng_state(loaders: Mapping[str, DataLoader]) -> dict[str, Any]:
    """Every random state that influences the next epoch, as plain data and tensors."""
    version, internal, gauss_next = random.getstate()
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loaders": {
            name: [g.get_state() for g in _loader_generators(loader)]
            for name, loader in loaders.items()
        },
    }


def _set_rng_state(state: dict[str, Any], loaders: Mapping[str, DataLoader]) -> None:
    """Restore what :func:`_rng_state` captured."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, loader in loaders.items():
        for generator, saved in zip(
            _loader_generators(loader), state["loaders"].get(name, []), strict=False
        ):
            generator.set_state(saved)


def _restore(
    state: dict[str, Any],
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler,
    loaders: Mapping[str, DataLoader],
) -> None:
    """Put model, optimizer, scheduler, scaler and RNGs back as the checkpoint left them."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"{path} holds the weights or optimiser of a different model or set of trained "
            f"layers ({_brief(error)}); resume with the same model and options, or "
            f"{_START_OVER}"
        ) from error
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler.is_enabled() and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"], loaders)


def _check_resumable(
    state: dict[str, Any], run: dict[str, Any], classes: list[str] | None, path: Path
) -> None:
    """Refuse to resume a checkpoint written by a run with other epochs/optimiser/classes."""
    changed = [
        f"{key}: {state['run'].get(key)!r} in the checkpoint, {value!r} now"
        for key, value in run.items()
        if state["run"].get(key) != value
    ]
    if state["classes"] != classes:
        changed.append(f"classes: {state['classes']} in the checkpoint, {classes} now")
    if changed:
        raise CheckpointError(
            f"cannot resume from {path}: it was written by a different run ("
            + "; ".join(changed)
            + f"). Use the same settings, or {_START_OVER}."
        )


def _save_atomic(payload: dict[str, Any], path: Path, keep: Path | None = None) -> None:
    """torch.save to ``<path>.tmp`` then rename, so a crash never leaves a half-written file.

    With ``keep``, once the new file is written, the one at ``path`` is renamed to ``keep`` before
    the new one takes its place (renames only: a crash between them leaves ``keep`` and the
    complete ``.tmp``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    if keep is not None and path.is_file():
        os.replace(path, keep)
    os.replace(tmp, path)


def _previous_path(path: Path) -> Path:
    """Where the previous epoch's checkpoint is kept: ``run/checkpoint.previous.pt`` for
    ``run/checkpoint.pt``."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def _write_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Save a checkpoint atomically and keep the one it replaces as the previous epoch's copy.

    Renamed files can still arrive cut short (a Drive mount that loses its connection while
    syncing), so resume has the copy to fall back on. Epoch 1 starts a run: a copy left by an
    earlier run is deleted instead of kept, so no resume can fall back on it.
    """
    previous = _previous_path(path)
    first = payload["epoch"] == 1
    if first:
        previous.unlink(missing_ok=True)
    _save_atomic(payload, path, keep=None if first else previous)


def _resume_from(path: Path) -> tuple[dict[str, Any], Path] | None:
    """The checkpoint to resume and its file: ``path``, or, when that is missing or unreadable,
    the previous epoch's copy (with a warning); None when neither exists.

    A damaged ``path`` is renamed to ``<path>.damaged``, so that the next save does not keep it
    as the previous epoch's copy.
    """
    previous = _previous_path(path)
    try:
        return load_checkpoint(path), path
    except (FileNotFoundError, CheckpointError) as error:
        if not previous.is_file():
            if isinstance(error, FileNotFoundError):
                return None
            raise
        problem = error
    try:
        state = load_checkpoint(previous)
    except CheckpointError as error:
        raise CheckpointError(
            f"cannot resume: neither {path} nor the previous epoch's copy {previous} can be "
            f"read ({_brief(error)}); {_START_OVER}"
        ) from error
    if path.exists():
        os.replace(path, path.with_name(path.name + ".damaged"))
    warnings.warn(
        f"{problem} -- resuming from the previous epoch's copy {previous} (epoch "
        f"{state['epoch']}) instead: at most one epoch is trained again",
        UserWarning,
        stacklevel=3,
    )
    return state, previous


def _brief(error: BaseException, limit: int = 300) -> str:
    """An error's message on one line, shortened: torch's run over many lines."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_DAMAGED_FIX = {
    CHECKPOINT_KIND: "train --resume / fit(resume=True) falls back to the previous epoch's copy "
    "when there is one; else delete it and train again",
    MODEL_KIND: "copy it again from where the run saved it, or train again",
}


def _load_file(path: str | Path, kind: str, map_location: str | torch.device) -> dict[str, Any]:
    """Load a lesionlib checkpoint/model file with ``weights_only=True``; clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such lesionlib {kind} file")
    with path.open("rb") as file:
        head = file.read(len(_ZIP_MAGIC))
    if not _ZIP_MAGIC.startswith(head):  # a file cut to a few bytes is truncated, not foreign
        raise CheckpointError(
            f"{path} is not a lesionlib {kind} file: it is not a file written by torch.save (it "
            f"starts with {head!r}); pass the {kind}.pt file that lesionlib wrote"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a damaged file fails in many ways (OSError, EOFError, KeyError..)
        raise CheckpointError(
            f"{path} cannot be read as a lesionlib {kind}: the file is truncated or corrupt "
            f"({path.stat().st_size:,} bytes; a disconnect while it was written or synced can do "
            f"this): {_DAMAGED_FIX[kind]}. (torch.load: {_brief(error, 160)})"
        ) from error
    if not isinstance(payload, dict) or payload.get("lesionlib") != kind:
        found = payload.get("lesionlib") if isinstance(payload, dict) else None
        hint = f" (it is a lesionlib {found} file)" if found else ""
        raise CheckpointError(
            f"{path} is not a lesionlib {kind} file{hint}; pass the {kind}.pt file that "
            f"lesionlib wrote"
        )
    if payload.get("version") != _FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has lesionlib file format version {payload.get('version')}; this lesionlib "
            f"reads version {_FORMAT_VERSION}: use the lesionlib version that wrote it, or train "
            "again with this one"
        )
    return payload
