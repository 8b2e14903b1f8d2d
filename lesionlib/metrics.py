"""Evaluation with scikit-learn; every value returned is JSON-safe (floats, ints, lists, None)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)


def _as_arrays(targets: Any, probs: Any, n_classes: int | None = None) -> tuple[np.ndarray, ...]:
    """Targets as int 1-D and probabilities as float N×C, checked against each other."""
    targets = np.asarray(targets).astype(np.int64).ravel()
    probs = np.asarray(probs, dtype=np.float64)
    if len(targets) == 0 or probs.ndim != 2 or len(probs) != len(targets):
        raise ValueError(
            f"need N > 0 targets and N×C probs, got {len(targets)} targets, probs {probs.shape}"
        )
    if n_classes is not None and probs.shape[1] != n_classes:
        raise ValueError(f"probs has {probs.shape[1]} columns but there are {n_classes} classes")
    if targets.min() < 0 or targets.max() >= probs.shape[1]:
        raise ValueError(f"targets must lie in 0..{probs.shape[1] - 1}, got {np.unique(targets)}")
    return targets, probs


def _binary_arrays(targets: Any, probs_pos: Any) -> tuple[np.ndarray, np.ndarray]:
    """Targets (0/1) and positive-class probabilities as 1-D arrays of equal length."""
    targets = np.asarray(targets).astype(np.int64).ravel()
    probs_pos = np.asarray(probs_pos, dtype=np.float64).ravel()
    if len(targets) != len(probs_pos) or not np.isin(targets, (0, 1)).all():
        raise ValueError(
            "binary metrics need targets in {0, 1} and one positive-class probability each; "
            f"got targets {np.unique(targets)} ({len(targets)}), {len(probs_pos)} probabilities"
        )
    return targets, probs_pos


def evaluate_predictions(targets: Any, probs: Any, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro AUC (mean one-vs-rest AUC of the classes present; None
    if fewer than two), per-class scores and confusion matrix; with two classes also ``"binary"``
    (:func:`binary_metrics` of the second)."""
    classes = list(classes)
    targets, probs = _as_arrays(targets, probs, len(classes))
    predictions = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    scores = precision_recall_fscore_support(targets, predictions, labels=labels, zero_division=0)
    present = np.unique(targets)
    if len(present) < 2:
        macro_auc = None
    elif len(classes) == 2:
        macro_auc = float(roc_auc_score(targets, probs[:, 1]))
    else:  # sklearn's multi_class="ovr" needs every class present
        macro_auc = float(np.mean([roc_auc_score(targets == c, probs[:, c]) for c in present]))
    results: dict[str, Any] = {
        "accuracy": float(accuracy_score(targets, predictions)),
        "balanced_accuracy": float(balanced_accuracy_score(targets, predictions)),
        "macro_auc": macro_auc,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for name, p, r, f, n in zip(classes, *scores, strict=True)
        },
        "confusion_matrix": confusion_matrix(targets, predictions, labels=labels).tolist(),
        "classes": classes,
    }
    if len(classes) == 2:
        results["binary"] = binary_metrics(targets, probs[:, 1])
    return results


def binary_metrics(targets: Any, probs_pos: Any, threshold: float = 0.5) -> dict[str, Any]:
    """AUC, average precision, and sensitivity/specificity predicting 1 when p >= threshold;
    a value that needs a class absent from ``targets`` is None."""
    targets, probs_pos = _binary_arrays(targets, probs_pos)
    tn, fp, fn, tp = confusion_matrix(targets, probs_pos >= threshold, labels=[0, 1]).ravel()
    pos, neg = tp + fn, tn + fp  # positive and negative targets
    return {
        "auc": float(roc_auc_score(targets, probs_pos)) if pos and neg else None,
        "average_precision": float(average_precision_score(targets, probs_pos)) if pos else None,
        "sensitivity": float(tp / pos) if pos else None,
        "specificity": float(tn / neg) if neg else None,
        "threshold": float(threshold),
    }


def threshold_for_sensitivity(
    targets: Any, probs_pos: Any, target_sensitivity: float = 0.9
) -> dict[str, float]:
    """The highest threshold whose sensitivity (p >= threshold) reaches ``target_sensitivity``."""
    if not 0 < target_sensitivity <= 1:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
    targets, probs_pos = _binary_arrays(targets, probs_pos)
    if len(np.unique(targets)) < 2:
        raise ValueError("threshold_for_sensitivity needs both classes (0 and 1) in targets")
    # every threshold: dropping collinear points could skip the highest one that qualifies
    fpr, tpr, thresholds = roc_curve(targets, probs_pos, drop_intermediate=False)
    i = int(np.argmax(tpr >= target_sensitivity))
    return {
        "threshold": float(thresholds[i]),
        "sensitivity": float(tpr[i]),
        "specificity": float(1 - fpr[i]),
    }


def reliability_bins(targets: Any, probs: Any, n_bins: int = 15) -> dict[str, list]:
    """Top-label ``confidence`` and ``accuracy`` (None when empty) and ``count`` per bin of
    ``n_bins`` equal-width (lower, upper] bins (the first also holds 0), and the ``bin_edges``."""
    targets, probs = _as_arrays(targets, probs)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    return {
        "bin_edges": edges.tolist(),
        "confidence": [float(s / n) if n else None for s, n in zip(conf_sum, count, strict=True)],
        "accuracy": [float(s / n) if n else None for s, n in zip(correct_sum, count, strict=True)],
        "count": count.tolist(),
    }


def expected_calibration_error(targets: Any, probs: Any, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over the :func:`reliability_bins`."""
    bins = reliability_bins(targets, probs, n_bins)
    total = sum(bins["count"])
    gaps = zip(bins["accuracy"], bins["confidence"], bins["count"], strict=True)
    return float(sum(n / total * abs(acc - conf) for acc, conf, n in gaps if n))


def _json_safe(value: Any) -> Any:
    """Plain Python version of ``value`` (numpy values, tuples, Paths); NaN and inf become None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, np.generic)):
        value = value.tolist()  # Python lists and scalars
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(
        f"cannot store a {type(value).__name__} in results JSON; convert it to a number, string, "
        "list or dict first"
    )


def save_results(name: str, results: dict[str, Any], folder: str | Path = "results") -> Path:
    """Write ``results`` to ``folder/<name>.json`` (indented, sorted keys) and return the path."""
    if not name or Path(name).name != name or name.endswith(".json"):
        raise ValueError(f"name must be a plain file stem such as '03_resnet50', got {name!r}")
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_json_safe(results), indent=2, sort_keys=True, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def load_results(folder: str | Path = "results") -> dict[str, dict[str, Any]]:
    """Every ``folder/*.json`` as ``{file stem: results}``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"results folder {folder.resolve()} does not exist; run the notebooks that write "
            "results (save_results) first, or pass the folder that holds them"
        )
    loaded: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path} is not valid JSON ({err}); delete it or re-run the notebook that writes it"
            ) from err
        if not isinstance(content, dict):
            raise ValueError(f"{path} holds a {type(content).__name__}, not a results dict")
        loaded[path.stem] = content
    return loaded
