"""Evaluation with scikit-learn; every value returned is JSON-safe (floats, ints, lists, None)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from lesionlib.settings import smoke_mode


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


HEADLINE = ("accuracy", "balanced_accuracy", "macro_auc")
BINARY_HEADLINE = ("auc", "average_precision", "sensitivity", "specificity")


def evaluate_predictions(
    targets: Any,
    probs: Any,
    classes: Sequence[str],
    *,
    groups: Any = None,
    resamples: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro AUC (mean one-vs-rest AUC of the classes present; None
    if fewer than two), per-class scores, confusion matrix, for two classes ``"binary"`` (of the
    second) and the :func:`bootstrap_ci` over ``resamples`` (default 1000, 200 in smoke mode; 0:
    none), by lesion when ``groups`` holds the images' lesion ids."""
    classes = list(classes)
    targets, probs = _as_arrays(targets, probs, len(classes))
    predictions = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    scores = precision_recall_fscore_support(targets, predictions, labels=labels, zero_division=0)
    headline = _headline(targets, probs)
    results: dict[str, Any] = {
        **{name: headline[name] for name in HEADLINE},
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for name, p, r, f, n in zip(classes, *scores, strict=True)
        },
        "confusion_matrix": confusion_matrix(targets, predictions, labels=labels).tolist(),
        "classes": classes,
    }
    if len(classes) == 2:
        results["binary"] = binary_metrics(targets, probs[:, 1])
    if resamples is None:
        resamples = 200 if smoke_mode() else 1000
    if resamples > 0:
        results.update(bootstrap_ci(targets, probs, groups, resamples=resamples, seed=seed))
    return results


def _auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC from ranks (Mann-Whitney U; ties count half): fast enough to bootstrap."""
    n_pos = positive.sum()
    n_neg = len(positive) - n_pos
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _headline(targets: np.ndarray, probs: np.ndarray) -> dict[str, float | None]:
    """:data:`HEADLINE` of one (re)sample, plus :data:`BINARY_HEADLINE` for two classes."""
    predictions = probs.argmax(axis=1)
    present = np.unique(targets)
    recalls = [np.mean(predictions[targets == c] == c) for c in present]
    aucs = [_auc(targets == c, probs[:, c]) for c in present] if len(present) > 1 else [None]
    values = {
        "accuracy": float(np.mean(predictions == targets)),
        "balanced_accuracy": float(np.mean(recalls)),
        "macro_auc": None if aucs[0] is None else float(np.mean(aucs)),
    }
    if probs.shape[1] == 2:
        binary = binary_metrics(targets, probs[:, 1])
        values.update({name: binary[name] for name in BINARY_HEADLINE})
    return values


def bootstrap_ci(
    targets: Any, probs: Any, groups: Any = None, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """95 % percentile intervals of the headline metrics over ``resamples`` resamples stratified by
    class, by lesion when ``groups`` (lesion ids) are given: ``{"ci95": {metric: [low, high]},
    "bootstrap": {...}}``. A few hundred test images pin a metric down only to a few points."""
    targets, probs = _as_arrays(targets, probs)
    groups = np.arange(len(targets)) if groups is None else np.asarray(groups).astype(str)
    _, group_index = np.unique(groups, return_inverse=True)
    order = np.argsort(group_index, kind="stable")  # images of one lesion side by side
    starts = np.searchsorted(group_index[order], np.arange(group_index.max() + 1))
    sizes = np.bincount(group_index)
    group_class = targets[order[starts]]  # a lesion's diagnosis: its first image's
    by_class = [np.flatnonzero(group_class == c) for c in np.unique(group_class)]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        chosen = np.concatenate([rng.choice(g, len(g)) for g in by_class])
        lengths = sizes[chosen]
        offsets = np.repeat(starts[chosen] - np.cumsum(lengths) + lengths, lengths)
        rows = order[offsets + np.arange(lengths.sum())]
        for name, value in _headline(targets[rows], probs[rows]).items():
            draws.setdefault(name, []).append(np.nan if value is None else value)
    intervals = {
        name: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]
        for name, v in draws.items()
        if not np.isnan(v).all()  # a metric no resample could compute
    }
    unit = "image" if len(sizes) == len(targets) else "lesion"
    drawn = {"resamples": resamples, "seed": seed, "unit": unit, "stratified_by": "class"}
    return {"ci95": intervals, "bootstrap": drawn}


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """What a notebook saves: headline metrics of ``results``, their ``ci95``, recall per class."""
    values = {name: results[name] for name in HEADLINE}
    if "binary" in results:
        values.update({name: results["binary"][name] for name in BINARY_HEADLINE})
    recall = {name: row["recall"] for name, row in results["per_class"].items()}
    return {**values, "ci95": results.get("ci95", {}), "per_class_recall": recall}


def ci_frame(runs: dict[str, dict[str, Any]], digits: int = 3) -> pd.DataFrame:
    """A row per run of ``{name: evaluate_predictions or headline results}``, a column per
    headline metric any run has, each cell "value [95 % interval]"."""
    names = HEADLINE + BINARY_HEADLINE[1:]  # a binary "auc" is its macro AUC
    rows = {run: {n: with_ci(r, n, digits) for n in names} for run, r in runs.items()}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame = frame.loc[:, (frame != "n/a").any()]
    return frame.rename(columns=lambda n: n.replace("_", " ") + " [95 % CI]")


def with_ci(results: dict[str, Any], name: str, digits: int = 3) -> str:
    """``"0.812 [0.771, 0.850]"``: a headline metric (also under ``"binary"``) and its interval."""
    value = results.get(name, results.get("binary", {}).get(name))
    if value is None:
        return "n/a"
    low_high = results.get("ci95", {}).get(name)
    text = f"{value:.{digits}f}"
    return f"{text} [{low_high[0]:.{digits}f}, {low_high[1]:.{digits}f}]" if low_high else text


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
    """Top-label ``confidence``, ``accuracy`` (None when empty) and ``count`` per equal-width
    (lower, upper] bin (the first also holds 0), and the ``bin_edges``."""
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
