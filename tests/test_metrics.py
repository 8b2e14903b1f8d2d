"""Metrics: agreement with scikit-learn, binary metrics by hand, thresholds, ECE, results files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from lesionlib.metrics import (
    _headline,
    binary_metrics,
    bootstrap_ci,
    ci_frame,
    evaluate_predictions,
    expected_calibration_error,
    headline,
    load_results,
    reliability_bins,
    save_results,
    threshold_for_sensitivity,
    with_ci,
)

CLASSES = ["MEL", "NV", "BCC", "AK"]


def _random_predictions(n: int = 200, n_classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return targets, probs


def test_evaluate_predictions_equals_scikit_learn() -> None:
    targets, probs = _random_predictions()
    preds = probs.argmax(axis=1)
    result = evaluate_predictions(targets, probs, CLASSES)
    assert result["accuracy"] == pytest.approx(accuracy_score(targets, preds))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(targets, preds))
    expected_auc = roc_auc_score(targets, probs, multi_class="ovr", average="macro")
    assert result["macro_auc"] == pytest.approx(expected_auc)
    precision, recall, f1, support = precision_recall_fscore_support(targets, preds)
    for i, name in enumerate(CLASSES):
        scores = result["per_class"][name]
        assert scores["precision"] == pytest.approx(precision[i])
        assert scores["recall"] == pytest.approx(recall[i])
        assert scores["f1"] == pytest.approx(f1[i])
        assert scores["support"] == support[i]
    assert result["confusion_matrix"] == confusion_matrix(targets, preds).tolist()
    assert result["classes"] == CLASSES
    assert "binary" not in result
    json.dumps(result, allow_nan=False)  # plain Python values only


def test_absent_class_gets_zero_support_and_auc_over_present_classes() -> None:
    targets, probs = _random_predictions(n_classes=3)
    probs = np.hstack([probs * 0.9, np.full((len(probs), 1), 0.1)])  # class 3 never a target
    result = evaluate_predictions(targets, probs, CLASSES)
    assert result["per_class"]["AK"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert len(result["confusion_matrix"]) == 4
    expected = np.mean([roc_auc_score(targets == c, probs[:, c]) for c in range(3)])
    assert result["macro_auc"] == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn's, expected here
def test_macro_auc_is_none_for_a_single_class() -> None:
    probs = np.array([[0.7, 0.2, 0.1, 0.0], [0.5, 0.3, 0.1, 0.1]])
    assert evaluate_predictions([0, 0], probs, CLASSES)["macro_auc"] is None


def test_two_classes_add_binary_metrics_and_binary_auc() -> None:
    targets, probs = _random_predictions(n_classes=2, seed=1)
    result = evaluate_predictions(targets, probs, ["benign", "malignant"])
    assert result["macro_auc"] == pytest.approx(roc_auc_score(targets, probs[:, 1]))
    assert result["binary"] == binary_metrics(targets, probs[:, 1])


def test_binary_metrics_by_hand() -> None:
    targets = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    probs = [0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.05, 0.5]
    result = binary_metrics(targets, probs)
    # predicted positive (p >= 0.5): 0.9, 0.8, 0.6 (TP) and 0.7, 0.5 (FP)
    assert result["sensitivity"] == pytest.approx(3 / 4)
    assert result["specificity"] == pytest.approx(4 / 6)
    assert result["threshold"] == 0.5
    # 24 positive/negative pairs, of which 20 are ranked correctly
    assert result["auc"] == pytest.approx(20 / 24)
    assert 0 < result["average_precision"] <= 1
    assert binary_metrics(targets, probs, threshold=0.25)["sensitivity"] == 1.0


def test_binary_metrics_with_one_class_and_bad_input() -> None:
    result = binary_metrics([0, 0, 0], [0.1, 0.6, 0.2])
    assert result["auc"] is None and result["sensitivity"] is None
    assert result["specificity"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="targets in"):
        binary_metrics([0, 2], [0.1, 0.2])


@pytest.mark.parametrize("target", [0.5, 0.9, 1.0])
def test_threshold_for_sensitivity_reaches_the_target(target: float) -> None:
    targets, probs = _random_predictions(n=300, n_classes=2, seed=2)
    found = threshold_for_sensitivity(targets, probs[:, 1], target)
    assert found["sensitivity"] >= target
    at_threshold = binary_metrics(targets, probs[:, 1], found["threshold"])
    assert at_threshold["sensitivity"] == pytest.approx(found["sensitivity"])
    assert at_threshold["specificity"] == pytest.approx(found["specificity"])
    # the highest such threshold: the next higher score gives less than the target
    scores = np.unique(probs[:, 1])
    higher = scores[scores > found["threshold"]]
    if len(higher):
        assert binary_metrics(targets, probs[:, 1], higher.min())["sensitivity"] < target


def test_threshold_for_sensitivity_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="both classes"):
        threshold_for_sensitivity([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="target_sensitivity"):
        threshold_for_sensitivity([0, 1], [0.2, 0.3], 0)


def test_ece_is_zero_when_calibrated_and_positive_when_overconfident() -> None:
    # 10 predictions at confidence 0.8 (8 right) and 10 at 0.6 (6 right)
    probs = np.array([[0.8, 0.2]] * 10 + [[0.4, 0.6]] * 10)
    calibrated = np.array([0] * 8 + [1] * 2 + [1] * 6 + [0] * 4)
    assert expected_calibration_error(calibrated, probs) == pytest.approx(0, abs=1e-12)
    # same confidences, half of them right: |0.5 - 0.8| and |0.5 - 0.6| weighted equally
    overconfident = np.array([0] * 5 + [1] * 5 + [1] * 5 + [0] * 5)
    assert expected_calibration_error(overconfident, probs) == pytest.approx(0.2)


def test_reliability_bins_counts_and_means() -> None:
    targets, probs = _random_predictions(n=100)
    bins = reliability_bins(targets, probs, n_bins=10)
    assert len(bins["bin_edges"]) == 11
    assert sum(bins["count"]) == 100
    confidence = probs.max(axis=1)
    for lower, upper, n, mean in zip(
        bins["bin_edges"][:-1],
        bins["bin_edges"][1:],
        bins["count"],
        bins["confidence"],
        strict=True,
    ):
        inside = confidence[(confidence > lower) & (confidence <= upper)]
        assert n == len(inside)
        assert mean is None if n == 0 else mean == pytest.approx(inside.mean())
    json.dumps(bins, allow_nan=False)


def test_save_and_load_results_round_trip_with_numpy(tmp_path: Path) -> None:
    results = {
        "accuracy": np.float32(0.75),
        "counts": np.array([3, 4]),
        "best_epoch": np.int64(2),
        "missing": float("nan"),
        "history": [{"epoch": 1, "loss": np.float64(0.5)}],
    }
    path = save_results("03_resnet", results, tmp_path / "results")
    assert path == tmp_path / "results" / "03_resnet.json"
    on_disk = json.loads(path.read_text())
    assert on_disk == {
        "accuracy": 0.75,
        "best_epoch": 2,
        "counts": [3, 4],
        "history": [{"epoch": 1, "loss": 0.5}],
        "missing": None,
    }
    assert list(on_disk) == sorted(on_disk)
    assert load_results(tmp_path / "results") == {"03_resnet": on_disk}


def test_results_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain file stem"):
        save_results("../escape", {}, tmp_path)
    with pytest.raises(TypeError, match="cannot store a set"):
        save_results("x", {"a": {1, 2}}, tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        load_results(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "absent")


def _noisy_predictions(n: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n)
    probs = rng.dirichlet(np.ones(classes), n)
    probs[np.arange(n), targets] += 0.4
    return targets, probs / probs.sum(1, keepdims=True)


@pytest.mark.parametrize("classes", [2, 5])
def test_bootstrap_intervals_hold_the_estimate_and_shrink_with_more_images(classes: int) -> None:
    names = [f"c{i}" for i in range(classes)]
    small = evaluate_predictions(*_noisy_predictions(100, classes), names, resamples=300)
    large = evaluate_predictions(*_noisy_predictions(2000, classes), names, resamples=300)
    headline = ["accuracy", "balanced_accuracy", "macro_auc"]
    headline += ["auc", "average_precision", "sensitivity", "specificity"] if classes == 2 else []
    assert sorted(small["ci95"]) == sorted(headline)
    for name in headline:
        value = small.get(name, small.get("binary", {}).get(name))
        low, high = small["ci95"][name]
        assert low <= value <= high and high - low > 0.02
        width_large = np.subtract(*large["ci95"][name][::-1])
        assert width_large < (high - low) / 2  # 20x the images: about a 4.5x narrower interval
    assert small["bootstrap"] == {
        "resamples": 300,
        "seed": 0,
        "unit": "image",
        "stratified_by": "class",
    }
    assert bootstrap_ci(*_noisy_predictions(100, classes), resamples=300) == {
        k: small[k] for k in ("ci95", "bootstrap")
    }  # same seed, same interval


def test_bootstrap_resamples_whole_lesions() -> None:
    targets, probs = _noisy_predictions(200, 3)
    lesions = np.arange(200) // 4  # four images per lesion, all four alike
    targets = targets[lesions * 4]
    probs = probs[lesions * 4]
    by_lesion = bootstrap_ci(targets, probs, groups=lesions, resamples=500)
    by_image = bootstrap_ci(targets, probs, resamples=500)
    assert by_lesion["bootstrap"]["unit"] == "lesion"
    width = {k: np.subtract(*r["ci95"]["accuracy"][::-1]) for k, r in
             (("lesion", by_lesion), ("image", by_image))}  # fmt: skip
    assert width["lesion"] > 1.5 * width["image"]  # 50 independent lesions, not 200 images


def test_headline_metrics_of_a_resample_equal_scikit_learns() -> None:
    targets, probs = _noisy_predictions(300, 2)
    probs[:10, 1] = probs[10:20, 1]  # ties
    probs[:, 0] = 1 - probs[:, 1]
    mine = _headline(targets, probs)
    assert mine["macro_auc"] == pytest.approx(roc_auc_score(targets, probs[:, 1]))
    assert mine["average_precision"] == pytest.approx(average_precision_score(targets, probs[:, 1]))
    binary = binary_metrics(targets, probs[:, 1])
    assert mine["sensitivity"] == pytest.approx(binary["sensitivity"])
    assert mine["specificity"] == pytest.approx(binary["specificity"])


def test_with_ci_formats_a_value_and_its_interval() -> None:
    results = evaluate_predictions(*_noisy_predictions(100, 2), ["a", "b"], resamples=50)
    low, high = results["ci95"]["sensitivity"]
    expected = f"{results['binary']['sensitivity']:.3f} [{low:.3f}, {high:.3f}]"
    assert with_ci(results, "sensitivity") == expected
    assert with_ci(
        evaluate_predictions([0, 1], np.eye(2), ["a", "b"], resamples=0), "accuracy"
    ) == ("1.000")


def test_headline_and_ci_frame_show_every_metric_with_its_interval() -> None:
    binary = evaluate_predictions(*_noisy_predictions(100, 2), ["a", "b"], resamples=50)
    multi = evaluate_predictions(*_noisy_predictions(100, 3), ["a", "b", "c"], resamples=50)
    saved = headline(binary)
    assert saved["sensitivity"] == binary["binary"]["sensitivity"]
    assert saved["ci95"] == binary["ci95"] and set(saved["per_class_recall"]) == {"a", "b"}
    frame = ci_frame({"binary": saved, "three classes": multi})
    assert frame.loc["binary", "sensitivity [95 % CI]"] == with_ci(binary, "sensitivity")
    assert frame.loc["three classes", "macro auc [95 % CI]"] == with_ci(multi, "macro_auc")
    assert frame.loc["three classes", "sensitivity [95 % CI]"] == "n/a"  # binary only
