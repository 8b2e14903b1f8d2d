"""lesioncheck: every exercise check accepts the solutions' answer and explains typical mistakes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import lesioncheck as check
from lesionlib.datasets import classes_of, load_table, split_table
from lesionlib.metrics import threshold_for_sensitivity
from lesionlib.models import SimpleCNN, build_model, count_parameters
from lesionlib.train import class_weights_from
from lesionlib.transforms import train_transform


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    from lesionlib.synthetic import default_sample

    return load_table(default_sample(), "isic2019")


@pytest.fixture(scope="module")
def split(table) -> pd.DataFrame:
    return split_table(table, seed=0)


@pytest.fixture(scope="module")
def train_rows(split) -> pd.DataFrame:
    return split[split["split"] == "train"]


def verdict(capsys, call) -> tuple[bool, str]:
    ok = call()
    return ok, capsys.readouterr().out.strip()


def test_unanswered_is_not_an_error(capsys, table, train_rows) -> None:
    for call in (lambda: check.ex2_3(64, None), lambda: check.class_weights(train_rows, None, 8)):
        ok, out = verdict(capsys, call)
        assert not ok and out.startswith("✗ Not answered yet")


def test_class_weights(capsys, split, train_rows) -> None:
    right = class_weights_from(train_rows, 8)
    assert verdict(capsys, lambda: check.ex2_1(train_rows, right))[0]
    assert verdict(capsys, lambda: check.ex3_2(train_rows, right.numpy().tolist()))[0]
    wrong = {
        "training rows only": lambda: check.class_weights(split, right, 8),
        "wrong order": lambda: check.class_weights(train_rows, np.sort(right.numpy()), 8),
        "other scale": lambda: check.class_weights(train_rows, 3 * right, 8),
        "grow with class size": lambda: check.class_weights(
            train_rows, np.bincount(train_rows["target"], minlength=8), 8
        ),
    }
    for hint, call in wrong.items():
        ok, out = verdict(capsys, call)
        assert not ok and out.startswith("✗") and hint in out, out


def test_binary_class_weights(capsys) -> None:
    rows = pd.DataFrame({"target": [0] * 8 + [1] * 2})
    assert verdict(capsys, lambda: check.ex4_4(rows, class_weights_from(rows, 2)))[0]
    ok, out = verdict(capsys, lambda: check.ex4_4(rows, [1.0, 1.0]))
    assert not ok and "expected [0.4, 1.6]" in out


def test_ex1_1_random_guessing(capsys, table) -> None:
    counts = table["label"].value_counts()
    shares = counts / counts.sum()
    assert verdict(capsys, lambda: check.ex1_1(counts, (shares**2).sum(), 1 / len(counts)))[0]
    ok, out = verdict(capsys, lambda: check.ex1_1(counts, shares.max()))
    assert not ok and "always-majority" in out
    ok, out = verdict(capsys, lambda: check.ex1_1(counts, (shares**2).sum(), (shares**2).sum()))
    assert not ok and "mean recall" in out


def test_ex1_2_grouped_split_per_seed(capsys, table) -> None:
    splits = {seed: split_table(table, seed=seed) for seed in (0, 1)}
    ok, out = verdict(capsys, lambda: check.ex1_2(table, splits))
    assert ok and "No shared lesion" in out
    ok, out = verdict(capsys, lambda: check.ex1_2(table, {1: splits[0]}))
    assert not ok and "not split_table(table, seed=1)" in out
    leaky = table.assign(lesion_id="L" + (table.index // 2).astype(str))  # two photos per lesion
    random_split = leaky.assign(split=np.where(np.arange(len(leaky)) % 2, "train", "test"))
    ok, out = verdict(capsys, lambda: check.ex1_2(leaky, {0: random_split}))
    assert not ok and "lesions in two splits" in out


def test_ex1_4_age_rule(capsys, table) -> None:
    older = table.loc[table["age"] >= 40, "label"].value_counts().idxmax()
    rule = np.where(table["age"] < 40, "NV", older)
    assert verdict(capsys, lambda: check.ex1_4(table, (rule == table["label"]).mean()))[0]
    if older != "NV":
        ok, out = verdict(capsys, lambda: check.ex1_4(table, (table["label"] == "NV").mean()))
        assert not ok and "always-NV" in out


def test_ex1_5_missing_class(capsys) -> None:
    assert verdict(capsys, lambda: check.ex1_5("SCC"))[0]
    assert verdict(capsys, lambda: check.ex1_5("squamous cell carcinoma"))[0]
    ok, out = verdict(capsys, lambda: check.ex1_5("AK"))
    assert not ok and "akiec" in out


def test_ex2_2_balanced_draws(capsys) -> None:
    rows = pd.DataFrame({"label": ["NV"] * 300 + ["DF"] * 30 + ["MEL"] * 70})
    assert verdict(capsys, lambda: check.ex2_2(rows, {"NV": 140, "DF": 128, "MEL": 132}))[0]
    ok, out = verdict(capsys, lambda: check.ex2_2(rows, rows["label"].value_counts()))
    assert not ok and "balanced_sampler=True" in out
    ok, out = verdict(capsys, lambda: check.ex2_2(rows, {"NV": 10, "DF": 10, "MEL": 10}))
    assert not ok and "len(train) = 400" in out


def test_ex2_3_parameters_and_flat_size(capsys) -> None:
    for size in (64, 128, 224):
        n = count_parameters(SimpleCNN(8, size))
        assert verdict(capsys, lambda n=n, s=size: check.ex2_3(s, n))[0]
    ok, out = verdict(capsys, lambda: check.ex2_3(224, None, flat_features=89_888))
    assert not ok and "Not answered" in out  # the flat size passed, the count is missing
    model = SimpleCNN(8, 64)
    weights_only = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    mistakes = {
        weights_only: "biases",
        count_parameters(model.fc1): "fc1 alone",
        count_parameters(SimpleCNN(1000, 64)): "1000 classes",
    }
    for answer, hint in mistakes.items():
        ok, out = verdict(capsys, lambda a=answer: check.ex2_3(64, a))
        assert not ok and hint in out
    for flat, hint in {32 * 54 * 54: "Off by one", 16 * 53 * 53: "32 channels"}.items():
        ok, out = verdict(capsys, lambda f=flat: check.ex2_3(224, 1, flat_features=f))
        assert not ok and hint in out


def test_ex2_4_best_validation_epoch(capsys) -> None:
    curves = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4],
            "val_balanced_accuracy": [0.2, 0.5, 0.4, 0.45],
            "test_balanced_accuracy": [0.2, 0.3, 0.4, 0.6],
        }
    )
    assert verdict(capsys, lambda: check.ex2_4(curves, 2))[0]
    assert "best *test* epoch" in verdict(capsys, lambda: check.ex2_4(curves, 4))[1]
    assert "Off by one" in verdict(capsys, lambda: check.ex2_4(curves, 1))[1]


def test_ex3_1_and_ex3_4_resnet_counts(capsys) -> None:
    model = build_model("resnet50", 8, pretrained=False)
    total = count_parameters(model)
    model.requires_grad_(False)
    model.layer4.requires_grad_(True)
    model.fc.requires_grad_(True)
    n = count_parameters(model, trainable_only=True)
    assert verdict(capsys, lambda: check.ex3_1(n))[0]
    assert "trainable_only=True" in verdict(capsys, lambda: check.ex3_1(total))[1]
    head = count_parameters(model.fc)
    assert "layer4 is still frozen" in verdict(capsys, lambda: check.ex3_1(head))[1]
    small = count_parameters(build_model("resnet18", 8, pretrained=False))
    assert verdict(capsys, lambda: check.ex3_4("resnet18", small))[0]
    assert "resnet18's count" in verdict(capsys, lambda: check.ex3_4("resnet50", small))[1]
    imagenet = count_parameters(build_model("resnet18", 1000, pretrained=False))
    assert "ImageNet" in verdict(capsys, lambda: check.ex3_4("resnet18", imagenet))[1]


def test_ex3_5_training_shares(capsys, split, train_rows) -> None:
    classes = classes_of(split)
    shares = train_rows["label"].value_counts(normalize=True)
    assert verdict(capsys, lambda: check.ex3_5(train_rows, shares.reindex(classes), classes))[0]
    assert verdict(capsys, lambda: check.ex3_5(train_rows, shares, classes))[0]  # by name
    ok, out = verdict(capsys, lambda: check.ex3_5(train_rows, shares.to_numpy(), classes))
    assert not ok and "value_counts sorts by size" in out
    counts = train_rows["label"].value_counts().reindex(classes)
    assert (
        "Counts, not shares" in verdict(capsys, lambda: check.ex3_5(train_rows, counts, classes))[1]
    )
    assert "training rows only" in verdict(capsys, lambda: check.ex3_5(split, shares, classes))[1]


def _binary(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random(n) < 0.3).astype(int)
    return targets, np.clip(0.3 * targets + rng.random(n) * 0.7, 0, 1)


def test_ex4_1_threshold(capsys) -> None:
    targets, probs = _binary()
    right = threshold_for_sensitivity(targets, probs, 0.95)["threshold"]
    assert verdict(capsys, lambda: check.ex4_1(targets, probs, right))[0]
    assert "misses the target" in verdict(capsys, lambda: check.ex4_1(targets, probs, 0.9))[1]
    assert "a higher one does too" in verdict(capsys, lambda: check.ex4_1(targets, probs, 0.0))[1]


def test_ex4_2_bootstrap(capsys) -> None:
    targets, probs = _binary()
    rng = np.random.default_rng(1)
    aucs = []
    for _ in range(1000):
        idx = rng.integers(0, len(targets), len(targets))
        aucs.append(roc_auc_score(targets[idx], probs[idx]))
    assert verdict(capsys, lambda: check.ex4_2(targets, probs, aucs))[0]
    same = [roc_auc_score(targets, probs)] * 1000  # permutations: every AUC equal
    assert "with replacement" in verdict(capsys, lambda: check.ex4_2(targets, probs, same))[1]
    assert "about 1,000" in verdict(capsys, lambda: check.ex4_2(targets, probs, aucs[:50]))[1]


def test_ex4_3_vgg_feature_extraction(capsys) -> None:
    assert verdict(capsys, lambda: check.ex4_3(4096 * 2 + 2))[0]
    assert "bias" in verdict(capsys, lambda: check.ex4_3(4096 * 2))[1]
    assert "ImageNet's head" in verdict(capsys, lambda: check.ex4_3(4_097_000))[1]
    classifier = 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 2 + 2
    assert verdict(capsys, lambda: check.ex4_3(classifier, unfrozen_classifier=True))[0]
    assert "fc6, fc7" in verdict(capsys, lambda: check.ex4_3(classifier))[1]


def test_ex5_2_both_fixes_at_once(capsys, split, train_rows) -> None:
    classes = classes_of(split)
    weights = class_weights_from(train_rows, len(classes)).numpy()
    assert verdict(capsys, lambda: check.ex5_2(train_rows, weights / weights.sum(), classes))[0]
    equal = np.full(len(classes), 1 / len(classes))
    assert "one fix alone" in verdict(capsys, lambda: check.ex5_2(train_rows, equal, classes))[1]


def test_ex5_3_geometric_preset(capsys) -> None:
    strong = train_transform(32, "strong")
    selective = type(strong)([t for t in strong.transforms if type(t).__name__ != "RandomAffine"])
    selective.transforms = [t for t in selective.transforms if type(t).__name__ not in check.COLOUR]
    selective.transforms = [t for t in selective.transforms if type(t).__name__ != "RandomApply"]
    assert verdict(capsys, lambda: check.ex5_3(selective))[0]
    assert "ColorJitter" in verdict(capsys, lambda: check.ex5_3(strong))[1]
    assert "No random move" in verdict(capsys, lambda: check.ex5_3(train_transform(32, "none")))[1]


def test_ex5_4_precision_drop(capsys) -> None:
    plain = {"per_class": {"NV": {"precision": 0.8}, "DF": {"precision": 0.5}}}
    over = {"per_class": {"NV": {"precision": 0.9}, "DF": {"precision": 0.2}}}
    assert verdict(capsys, lambda: check.ex5_4(plain, over, ["DF"]))[0]
    assert "per_class" in verdict(capsys, lambda: check.ex5_4(plain, over, ["NV"]))[1]


def _overconfident(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[targets]
    return targets, torch.softmax(torch.tensor(logits * 3), 1).numpy()  # sharpened: T ≈ 3


def test_ex6_1_temperature(capsys) -> None:
    targets, probs = _overconfident()
    logits = np.log(probs)
    grid = np.linspace(0.5, 5, 46)
    nll = [
        torch.nn.functional.cross_entropy(torch.tensor(logits / t), torch.tensor(targets))
        for t in grid
    ]
    best = float(grid[int(np.argmin(nll))])
    assert verdict(capsys, lambda: check.ex6_1(targets, probs, best))[0]
    assert "Divide" in verdict(capsys, lambda: check.ex6_1(targets, probs, 1 / best))[1]
    assert not verdict(capsys, lambda: check.ex6_1(targets, probs, 1.0))[0]


def test_ex6_4_referrals(capsys) -> None:
    targets, probs = _overconfident()
    confidence, correct = probs.max(1), probs.argmax(1) == targets
    order = np.argsort(-confidence, kind="stable")
    running = np.cumsum(correct[order]) / np.arange(1, len(targets) + 1)
    right = len(targets) - (np.flatnonzero(running >= 0.9).max() + 1)
    assert verdict(capsys, lambda: check.ex6_4(targets, probs, right))[0]
    assert "Off by one" in verdict(capsys, lambda: check.ex6_4(targets, probs, right + 1))[1]
