"""lesionlib.train: seeding, devices, loaders, the training loop and prediction (CPU, tiny data)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR
from torch.utils.data import DataLoader, TensorDataset

from lesionlib import train
from lesionlib.datasets import load_table, restrict_classes, split_table
from lesionlib.images import load_image
from lesionlib.models import build_model
from lesionlib.synthetic import write_isic2019_sample
from lesionlib.train import (
    FitResult,
    TrainingError,
    best_epoch_of,
    class_weights_from,
    fit,
    get_device,
    load_checkpoint,
    make_loaders,
    predict,
    seed_everything,
    seed_worker,
)
from lesionlib.transforms import eval_transform, normalize, train_transform

HISTORY_KEYS = {
    "epoch",
    "train_loss",
    "train_accuracy",
    "train_balanced_accuracy",
    "val_loss",
    "val_accuracy",
    "val_balanced_accuracy",
    "lr",
    "seconds",
}


def _data(n: int = 48, seed: int = 0, classes: int = 3) -> TensorDataset:
    """16x16 images whose class is the channel with the largest mean (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g)
    y = torch.arange(n) % classes
    x[torch.arange(n), y] += 1.0  # brighten the class channel
    return TensorDataset(x, y)


def _mlp(classes: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(3 * 16 * 16, 16), nn.ReLU(), nn.Linear(16, classes)
    )


def _loaders(train: TensorDataset, val: TensorDataset | None = None, batch_size: int = 8):
    loaders = {
        "train": DataLoader(
            train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
    }
    if val is not None:
        loaders["val"] = DataLoader(val, batch_size=16)
    return loaders


def _fit(model, loaders, epochs, lr=1e-2, onecycle=True, **kw) -> FitResult:
    """fit with Adam at ``lr`` and, with ``onecycle``, OneCycleLR peaking at it (the defaults)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = len(loaders["train"])
    scheduler = (
        OneCycleLR(optimizer, lr, epochs=epochs, steps_per_epoch=steps) if onecycle else None
    )
    return fit(model, loaders, optimizer, epochs, scheduler=scheduler, progress=False, **kw)


def test_fit_lowers_the_loss_and_records_every_epoch():
    torch.manual_seed(0)
    result = _fit(_mlp(), _loaders(_data(), _data(24, seed=1)), 4)
    assert isinstance(result, FitResult)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert all(set(row) == HISTORY_KEYS for row in result.history)
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    assert result.history[-1]["val_balanced_accuracy"] > 0.9
    assert result.monitor == "val_balanced_accuracy"
    assert result.best_metric == max(r["val_balanced_accuracy"] for r in result.history)
    assert result.device == "cpu"  # the model's device
    assert result.setup == "cpu: float32, NCHW, batch 8, 0 loader workers"
    assert result.seconds == pytest.approx(sum(r["seconds"] for r in result.history))
    frame = pd.DataFrame(result.history)
    assert list(frame["epoch"]) == [1, 2, 3, 4] and set(frame.columns) == HISTORY_KEYS


def test_best_epoch_weights_are_loaded_at_the_end():
    # Validation labels are the opposite of what training teaches: the more the model learns,
    # the worse validation gets, so the best epoch is an early one, not the last.
    torch.manual_seed(0)
    train = _data(48, classes=2)
    flipped = TensorDataset(train.tensors[0], 1 - train.tensors[1])
    loaders = {**_loaders(train), "val": DataLoader(flipped, batch_size=16)}
    model = _mlp(2)
    # on the CPU (the model's device): the loss recomputed below in float32 matches the history
    # to 4 digits only without CUDA's autocast
    result = _fit(model, loaders, 4, onecycle=False)
    history = result.history
    assert result.best_epoch < 4
    ranked = max(history, key=lambda r: (r["val_balanced_accuracy"], -r["val_loss"]))
    assert result.best_epoch == ranked["epoch"] == best_epoch_of(history)
    # the model now reproduces the best epoch's validation numbers, not the last epoch's
    probs, targets = predict(model, loaders["val"])
    best = history[result.best_epoch - 1]
    assert np.mean(probs.argmax(1) == targets) == pytest.approx(best["val_accuracy"])
    loss = nn.functional.cross_entropy(
        torch.log(torch.from_numpy(probs)), torch.from_numpy(targets)
    )
    assert loss.item() == pytest.approx(best["val_loss"], rel=1e-4)
    assert loss.item() != pytest.approx(history[-1]["val_loss"], rel=1e-4)


def test_without_validation_the_last_epoch_is_kept():
    torch.manual_seed(0)
    result = _fit(_mlp(), _loaders(_data()), 2)
    assert result.best_epoch == 2 and result.monitor == "last_epoch"
    assert result.best_metric == result.history[-1]["train_balanced_accuracy"]
    assert all(row["val_loss"] is None for row in result.history)


def test_onecycle_learning_rate_rises_then_ends_lower_and_none_keeps_it_constant():
    torch.manual_seed(0)
    cycle = _fit(_mlp(), _loaders(_data()), 5).history
    lrs = [row["lr"] for row in cycle]
    peak = int(np.argmax(lrs))
    assert 0 < peak < 4 and lrs[peak] <= 1e-2
    assert lrs[-1] < lrs[peak] / 100 and lrs[0] < lrs[peak]
    constant = _fit(_mlp(), _loaders(_data()), 2, onecycle=False)
    assert [row["lr"] for row in constant.history] == [1e-2, 1e-2]


def test_sgd_with_momentum_and_grad_clipping_trains():
    torch.manual_seed(0)
    model, loaders = _mlp(), _loaders(_data())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = OneCycleLR(optimizer, 0.05, epochs=4, steps_per_epoch=len(loaders["train"]))
    result = fit(model, loaders, optimizer, 4, scheduler=scheduler, grad_clip=0.1, progress=False)
    assert result.history[-1]["train_loss"] < 0.7 * result.history[0]["train_loss"]


def test_grad_clip_clips_each_gradient_value(monkeypatch):
    clipped: list[float] = []
    real = nn.utils.clip_grad_value_
    monkeypatch.setattr(nn.utils, "clip_grad_value_", lambda p, v: (clipped.append(v), real(p, v)))
    _fit(_mlp(), _loaders(_data()), 1, grad_clip=0.1)
    assert clipped == [0.1] * 6  # once per batch


def test_class_weights_from_is_balanced_with_mean_one_and_neutral_absent_classes():
    targets = np.array([0] * 6 + [1] * 2 + [3] * 1)  # class 2 absent
    weights = class_weights_from(targets, num_classes=4)
    assert weights.dtype == torch.float32 and weights.shape == (4,)
    sklearn = compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=targets)
    np.testing.assert_allclose(weights[[0, 1, 3]].numpy(), sklearn / sklearn.mean(), rtol=1e-6)
    assert weights[[0, 1, 3]].mean().item() == pytest.approx(1.0)
    assert weights[2].item() == 1.0
    assert weights[3] > weights[1] > weights[0]  # rarer class, larger weight
    table = pd.DataFrame({"target": targets})
    assert torch.equal(class_weights_from(table, 4), weights)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        class_weights_from(targets, num_classes=3)


def test_class_weights_change_the_loss_and_true_uses_the_train_targets():
    data = _data(48)
    keep = torch.cat([torch.nonzero(data.tensors[1] == 0).flatten(), torch.tensor([1, 2, 4, 5])])
    imbalanced = TensorDataset(data.tensors[0][keep], data.tensors[1][keep])

    def run(loss_fn):
        torch.manual_seed(0)
        return _fit(_mlp(), _loaders(imbalanced), 1, loss_fn=loss_fn).history[0]["train_loss"]

    weights = class_weights_from(imbalanced.tensors[1], 3)
    plain, weighted = run(None), run(nn.CrossEntropyLoss(weight=weights))
    assert weighted != pytest.approx(plain)
    assert plain == pytest.approx(run(nn.functional.cross_entropy))  # the default loss
    by_hand = run(lambda logits, y: nn.functional.cross_entropy(logits, y, weight=weights))
    assert by_hand == pytest.approx(weighted)


def test_a_diverging_loss_raises_training_error_naming_epoch_batch_and_lr():
    torch.manual_seed(0)
    with pytest.raises(TrainingError) as info:
        model = _mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e10)
        fit(model, _loaders(_data()), optimizer, 2, progress=False)
    message = str(info.value)
    assert "epoch 1, batch" in message and "of 6" in message
    assert "learning rate 1e+10" in message and "grad_clip" in message


def test_cuda_out_of_memory_becomes_training_error_with_the_fix():
    class Exhausted(nn.Module):  # stands in for a forward pass that fills the GPU
        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model = nn.Sequential(_mlp(), Exhausted())
    with pytest.raises(TrainingError, match="smaller batch size") as info:
        _fit(model, _loaders(_data()), 1)
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)


def test_seed_everything_makes_training_repeatable():
    def weights_after_two_epochs(seed):
        generator = seed_everything(seed, deterministic=True)
        model = nn.Sequential(_mlp(), nn.Dropout(0.2))
        loader = DataLoader(_data(), batch_size=8, shuffle=True, generator=generator)
        _fit(model, {"train": loader}, 2)
        return model.state_dict()

    first, second, other = (weights_after_two_epochs(s) for s in (7, 7, 8))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["0.1.weight"], other["0.1.weight"])
    assert torch.are_deterministic_algorithms_enabled()
    seed_everything(7)
    assert not torch.are_deterministic_algorithms_enabled()


def test_compile_captures_graphs_trains_like_eager_and_keeps_plain_weight_names(tmp_path):
    graphs: list[torch.fx.GraphModule] = []

    def recording_backend(graph: torch.fx.GraphModule, example_inputs: list) -> Callable:
        graphs.append(graph)
        return graph.forward  # run the captured graph as it is: same numbers as eager

    def train(compile: bool | Callable) -> tuple[nn.Module, FitResult]:
        generator = seed_everything(3)
        model = _mlp()
        train_loader = DataLoader(_data(), batch_size=8, shuffle=True, generator=generator)
        loaders = {"train": train_loader, "val": DataLoader(_data(seed=1), batch_size=16)}
        path = tmp_path / f"{'compiled' if compile else 'plain'}.pt"
        if compile:
            model.compile(backend=compile)  # in place, as notebook 03 and train --compile do
        return model, _fit(model, loaders, 2, checkpoint_path=path)  # CPU float32: exact losses

    plain_model, plain = train(False)
    compiled_model, compiled = train(recording_backend)
    assert graphs, "model.compile() before fit did not compile the model"
    for ours, theirs in zip(compiled.history, plain.history, strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert ours["val_balanced_accuracy"] == theirs["val_balanced_accuracy"]
    compiled_state, plain_state = compiled_model.state_dict(), plain_model.state_dict()
    assert list(compiled_state) == list(plain_state)  # no "_orig_mod." prefix
    assert all(torch.allclose(compiled_state[k], plain_state[k], atol=1e-5) for k in plain_state)
    fresh = _mlp()
    fresh.load_state_dict(load_checkpoint(tmp_path / "compiled.pt")["model"])


def test_seed_worker_seeds_numpy_and_random_from_the_torch_seed():
    torch.manual_seed(1234)  # in a DataLoader worker torch sets base_seed + worker_id
    seed_worker(0)
    drawn = (np.random.rand(), random.random())
    np.random.seed(1234)
    random.seed(1234)
    assert drawn == (np.random.rand(), random.random())


def test_get_device(monkeypatch):
    assert get_device("cpu") == torch.device("cpu")
    assert get_device().type in {"cuda", "mps", "cpu"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")


def test_predict_returns_float32_softmax_and_tta_averages_flips():
    torch.manual_seed(0)
    model, data = _mlp(), _data(20)
    loader = DataLoader(data, batch_size=8)
    probs, targets = predict(model, loader)
    assert probs.dtype == np.float32 and probs.shape == (20, 3)
    assert targets.dtype == np.int64 and np.array_equal(targets, data.tensors[1].numpy())
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    x = data.tensors[0]
    with torch.no_grad():
        views = [model(x).softmax(1), model(x.flip(-1)).softmax(1), model(x.flip(-2)).softmax(1)]
    tta, _ = predict(model, loader, tta=True)
    np.testing.assert_allclose(tta, torch.stack(views).mean(0).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(tta, probs)


# --- make_loaders on tables ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_table(tmp_path_factory) -> pd.DataFrame:
    """A 3-class synthetic ISIC 2019 sample at 32 px, split into train/val/test."""
    root = tmp_path_factory.mktemp("synthetic")
    write_isic2019_sample(
        root, n_lesions=60, image_size=32, classes=("MEL", "NV", "BCC"), imbalance=False
    )
    table = restrict_classes(load_table(root, "isic2019"))
    return split_table(table, val_fraction=0.2, test_fraction=0.2, seed=0)


def test_make_loaders_gives_one_loader_per_split_with_the_right_transforms(
    sample_table, monkeypatch
):
    loaders = make_loaders(sample_table, 32, batch_size=8, num_workers=0)
    assert list(loaders) == ["train", "val", "test"]
    for split, loader in loaders.items():
        assert len(loader.dataset) == int((sample_table["split"] == split).sum())
    images, targets = next(iter(loaders["train"]))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8  # normalised by fit
    assert targets.dtype == torch.int64
    basic = train_transform(32, "basic", normalize=False)
    assert repr(loaders["train"].dataset.transform) == repr(basic)
    first_val = sample_table[sample_table["split"] == "val"].iloc[0]
    val_images, _ = next(iter(loaders["val"]))
    expected = eval_transform(32)(load_image(first_val["path"]))  # today's float pipeline
    assert val_images.dtype == torch.uint8  # eval loaders keep table order, no augmentation:
    torch.testing.assert_close(normalize(val_images[0]), expected, atol=1e-5, rtol=1e-6)
    monkeypatch.setenv("LESIONLIB_SMOKE", "1")
    assert make_loaders(sample_table, 32)["train"].num_workers == 0
    monkeypatch.setenv("LESIONLIB_SMOKE", "0")
    workers = make_loaders(sample_table, 32)["train"]
    # not persistent: every epoch's workers are seeded anew from (seed, epoch) by fit
    assert workers.num_workers >= 1 and not workers.persistent_workers
    assert workers.worker_init_fn is seed_worker
    with pytest.raises(ValueError, match="split_table"):
        make_loaders(sample_table.drop(columns="split"), 32)


def test_balanced_sampler_draws_every_class_about_equally():
    counts = {"MEL": 30, "NV": 240, "BCC": 10}
    labels = [c for c, n in counts.items() for _ in range(n)]
    label = pd.Categorical(labels, categories=list(counts))
    table = pd.DataFrame(
        {"path": [f"/nowhere/{i}.jpg" for i in range(len(labels))], "label": label}
    ).assign(target=label.codes.astype("int64"), split="train")
    loader = make_loaders(table, 32, balanced_sampler=True, num_workers=0, seed=0)["train"]
    drawn = np.bincount(table["target"].to_numpy()[list(loader.sampler)], minlength=3)
    assert drawn.sum() == len(table)
    assert drawn.min() > 0.75 * len(table) / 3 and drawn.max() < 1.25 * len(table) / 3
    shuffled = make_loaders(table, 32, num_workers=0)["train"]
    assert np.array_equal(
        np.bincount(table["target"].to_numpy()[list(shuffled.sampler)]), [30, 240, 10]
    )


def test_simplecnn_beats_chance_on_the_synthetic_sample(sample_table):
    seed_everything(0)
    loaders = make_loaders(sample_table, 32, batch_size=16, augment="none", num_workers=0)
    model = build_model("simplecnn", 3, pretrained=False, image_size=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    result = fit(model, loaders, optimizer, 4, progress=True)
    assert result.best_metric > 0.6  # chance balanced accuracy is 1/3
    probs, targets = predict(model, loaders["test"])
    assert probs.shape == (len(loaders["test"].dataset), 3)


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((7, 5), torch.float16),
        ((7, 0), torch.float16),
        ((8, 0), torch.bfloat16),
        ((9, 0), torch.bfloat16),
    ],
    ids=["T4", "V100", "A100", "H100"],
)
def test_bfloat16_only_where_the_gpu_has_it(monkeypatch, capability, expected):
    # a T4 answers True to is_bf16_supported() (emulation): the capability decides, not that call
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert train._amp_dtype(torch.device("cuda"), amp=True) == expected
    assert train._amp_dtype(torch.device("cuda"), amp=False) is None
    assert train._amp_dtype(torch.device("cpu"), amp=True) is None


def test_amp_strings_force_the_precision_on_any_device_and_typos_are_refused():
    for device in (torch.device("cpu"), torch.device("cuda")):
        assert train._amp_dtype(device, "float16") == torch.float16
        assert train._amp_dtype(device, "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="'float16' or 'bfloat16'"):
        train._amp_dtype(torch.device("cpu"), "fp16")


def test_forced_float16_trains_on_the_cpu_through_an_enabled_grad_scaler(monkeypatch):
    # The T4's path (float16 autocast + GradScaler), run on the CPU: torch has both there.
    scales, dtypes = [], []
    scale = torch.amp.GradScaler.scale

    def spy(self, outputs):  # what the scaler multiplies the loss by before backward
        scaled = scale(self, outputs)
        scales.append((scaled / outputs).item())
        return scaled

    monkeypatch.setattr(torch.amp.GradScaler, "scale", spy)
    torch.manual_seed(0)
    model = _mlp()
    model[1].register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    result = _fit(model, _loaders(_data(), _data(24, seed=1)), 4, amp="float16")
    assert result.setup == "cpu: float16 mixed precision, NCHW, batch 8, 0 loader workers"
    assert set(dtypes) == {torch.float16}  # training and validation ran under float16 autocast
    assert scales and all(s >= 2**10 for s in scales)  # the scaler is enabled and its scale used
    rows = result.history
    assert all(math.isfinite(r[k]) for r in rows for k in ("train_loss", "val_loss"))
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]
    assert result.best_metric > 0.9

    scales.clear()
    torch.manual_seed(0)
    _fit(_mlp(), _loaders(_data()), 1)  # float32 on the CPU: a disabled scaler multiplies by 1
    assert set(scales) == {1.0}


def _float_pipeline(loaders: dict[str, DataLoader], image_size: int, augment: str) -> None:
    """Give make_loaders' loaders their former pipeline: float32, normalised in the workers."""
    for split, loader in loaders.items():
        training = split == "train"
        loader.dataset.transform = (
            train_transform(image_size, augment) if training else eval_transform(image_size)
        )


def test_fit_and_predict_on_uint8_batches_match_the_float_pipeline(sample_table):
    runs = {}
    for name in ("uint8", "float32"):
        loaders = make_loaders(sample_table, 32, batch_size=16, num_workers=0, seed=0)
        if name == "float32":
            _float_pipeline(loaders, 32, "basic")
        assert next(iter(loaders["train"]))[0].dtype == getattr(torch, name)
        seed_everything(0)
        model = build_model("simplecnn", 3, pretrained=False, image_size=32)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        result = fit(model, loaders, optimizer, 3, progress=False)
        runs[name] = result, predict(model, loaders["test"]), predict(model, loaders["val"], True)
    (pixels, *pixel_probs), (floats, *float_probs) = runs["uint8"], runs["float32"]
    for ours, theirs in zip(pixels.history, floats.history, strict=True):
        for key in ("train_loss", "val_loss", "train_accuracy", "val_balanced_accuracy"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), key
    assert pixels.best_epoch == floats.best_epoch
    for (ours, targets), (theirs, expected) in zip(pixel_probs, float_probs, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
        assert np.array_equal(targets, expected)


def test_logit_adjusted_loss_is_cross_entropy_on_logits_shifted_by_the_log_prior() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(16, 3), torch.randint(0, 3, (16,))
    prior = train.class_prior([0] * 8 + [1] * 3 + [2], 3)  # 8 : 3 : 1
    assert torch.allclose(prior, torch.tensor([8, 3, 1]) / 12)
    loss = train.LogitAdjustedLoss(prior, tau=1.0)
    expected = nn.functional.cross_entropy(logits + prior.log(), targets)
    assert torch.isclose(loss(logits, targets), expected)
    uniform = train.LogitAdjustedLoss(torch.full((3,), 1 / 3), tau=2.0)
    assert torch.isclose(uniform(logits, targets), nn.functional.cross_entropy(logits, targets))
    # trained on the same data, the loss raises a rare class's own logit: the argmax favours it more
    fitted = {}
    for name, loss_fn in {"plain": nn.CrossEntropyLoss(), "adjusted": loss}.items():
        bias = torch.zeros(3, requires_grad=True)
        optimizer = torch.optim.SGD([bias], lr=0.5)
        for _ in range(200):
            optimizer.zero_grad()
            loss_fn(bias.expand(12, 3), torch.tensor([0] * 8 + [1] * 3 + [2])).backward()
            optimizer.step()
        fitted[name] = bias.detach()
    assert fitted["plain"].argmax() == 0  # the majority class
    assert torch.allclose(fitted["adjusted"] - fitted["adjusted"].mean(), torch.zeros(3), atol=0.05)


def test_class_prior_counts_an_absent_class_as_one_image() -> None:
    prior = train.class_prior(np.array([0, 0, 0]), 2)
    assert torch.allclose(prior, torch.tensor([0.75, 0.25]))


def test_class_prior_reads_a_table_and_refuses_targets_outside_the_classes() -> None:
    table = pd.DataFrame({"target": [0, 1, 1, 1]})
    assert torch.allclose(train.class_prior(table, 2), torch.tensor([0.25, 0.75]))
    with pytest.raises(
        ValueError, match=r"class_prior needs the training targets, each in \[0, 1\]"
    ):
        train.class_prior([0, 2], 2)
    assert "tau=0.0" in repr(train.LogitAdjustedLoss(torch.tensor([0.5, 0.5]), tau=0.0))
