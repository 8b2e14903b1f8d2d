"""Figures for the course, each returned as its ``Figure`` (Jupyter shows it; no ``plt.show()``)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter
from sklearn.metrics import precision_recall_curve, roc_curve

from lesionlib.datasets import classes_of
from lesionlib.images import load_image
from lesionlib.layouts import SPLITS, full_name
from lesionlib.metrics import binary_metrics
from lesionlib.train import best_epoch_of
from lesionlib.transforms import denormalize

PALETTE: list[tuple[float, float, float]] = list(sns.color_palette("colorblind"))
"""The course palette (seaborn's colour-blind-safe set): splits, runs, metrics in order."""
WRONG_COLOR = "tab:red"  # title colour of wrongly predicted images in show_batch
_REFERENCE = {"ls": "--", "lw": 1, "color": "0.45"}  # chance, perfect calibration, best epoch
_LABELS = {"loss": "Cross-entropy loss", "auc": "ROC AUC", "f1": "F1 score"}  # else capitalised
_FRACTIONS = {"accuracy", "balanced_accuracy", "auc", "average_precision", "sensitivity"}
_FRACTIONS |= {"specificity", "precision", "recall", "f1"}  # metrics shown in %


def set_style() -> None:
    """Apply the course look: seaborn ``whitegrid``, ``notebook`` context, the fixed palette."""
    rc = {"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"}
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, rc=rc)


def _grid(rows: int, cols: int, figsize: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """A new figure with a ``rows`` × ``cols`` array of axes."""
    return plt.subplots(rows, cols, figsize=figsize, squeeze=False, layout="constrained")


def _class_label(code: str, sep: str = " — ") -> str:
    """``'MEL — Melanoma'``; codes whose full name adds nothing stay as they are."""
    name = full_name(code)
    return f"{code}{sep}{name}" if name.lower() != code.lower() else code


def _metric_label(name: str) -> str:
    return _LABELS.get(name, name.replace("_", " ").capitalize())


def _percent(*axes: Any) -> None:
    """Show 0–1 axes (``ax.xaxis``, ``ax.yaxis``) as percentages."""
    for axis in axes:
        axis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))


def _bars(
    ax: Axes, frame: pd.DataFrame, label: Callable[[Any, Any], str], padding=2, inside=False
) -> None:
    """Write ``label(value, column)`` on (or ``inside``) each bar of ``frame``, none on a NaN."""
    bars = [c for c in ax.containers if isinstance(c, BarContainer)][-frame.shape[1] :]
    for container, column in zip(bars, frame.columns, strict=True):
        labels = ["" if pd.isna(v) else label(v, column) for v in frame[column]]
        where = {"label_type": "center", "color": "white"} if inside else {"padding": padding}
        ax.bar_label(container, labels=labels, fontsize="small", **where)


def _to_numpy(values: Any) -> np.ndarray:
    """A NumPy array from a tensor (any device), list or array."""
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def plot_class_distribution(table: pd.DataFrame, title: str | None = None, log=False) -> Figure:
    """Images per class (count and share) as horizontal bars; with a ``split`` column, per split."""
    classes = classes_of(table)  # raises, naming the fix, when there is no 'label' column
    by_split = "split" in table
    if by_split:
        counts = pd.crosstab(table["label"].astype(str), table["split"].astype(str))
        splits = [s for s in SPLITS if s in counts] + sorted(set(counts.columns) - set(SPLITS))
        counts = counts.reindex(index=classes, columns=splits, fill_value=0)
    else:
        counts = table["label"].value_counts().reindex(classes, fill_value=0).to_frame("images")
    counts.index = [_class_label(c) for c in counts.index]
    height = 1.0 + (0.22 if by_split else 0.32) * counts.size
    fig, ax = plt.subplots(figsize=(6.5, height), layout="constrained")
    counts.plot.barh(ax=ax, color=PALETTE[: counts.shape[1]], width=0.8, legend=by_split)
    ax.invert_yaxis()  # first class on top
    total = counts.sum()
    _bars(ax, counts, lambda n, s: f"{n:,} ({n / total[s]:.1%})" if total[s] else "0", padding=3)
    ax.margins(x=0.3 if log else 0.2)
    ax.set(xscale="log" if log else "linear", ylabel="Class")
    ax.set_xlabel("Images (count, log scale)" if log else "Images (count)")
    if by_split:
        ax.legend(title="Split", loc="lower right")
    default = "Images per class and split" if by_split else "Images per class"
    ax.set_title(title or f"{default} (n = {len(table):,})")
    return fig


def plot_image_grid(table: pd.DataFrame, per_class: int = 4, seed: int = 0) -> Figure:
    """A row per class of ``per_class`` random thumbnails (fixed by ``seed``), named and counted."""
    classes = classes_of(table)
    fig, axes = _grid(len(classes), per_class, (1.5 * per_class + 1.8, 1.5 * len(classes)))
    for row, code in zip(axes, classes, strict=True):
        members = table[table["label"] == code]
        chosen = members.sample(n=min(per_class, len(members)), random_state=seed)
        for ax, path in zip(row, chosen["path"], strict=False):
            image = load_image(path)
            image.thumbnail((128, 128))
            ax.imshow(image)
        for ax in row:
            ax.set(xticks=[], yticks=[], frame_on=False)
        label = _class_label(code, sep="\n") + f"\n(n = {len(members):,})"
        row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    return fig


def show_batch(
    images: torch.Tensor, targets: Any, classes: Sequence[str], probs: Any = None, n: int = 16
) -> Figure:
    """The first ``n`` images of a batch (uint8 or normalised) titled with the true class and,
    with ``probs``, the predicted one and its probability (in red when wrong)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
        raise ValueError(
            "show_batch expects a non-empty N×C×H×W tensor: take one from a DataLoader, "
            "images, targets = next(iter(loader))"
        )
    n = min(n, len(images))
    targets = _to_numpy(targets)[:n]
    probs = None if probs is None else _to_numpy(probs)[:n]
    pictures = denormalize(images[:n].detach().cpu()).permute(0, 2, 3, 1).numpy()
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = _grid(rows, cols, (1.9 * cols, 2.1 * rows))
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(pictures[i])
        title, style = f"true: {classes[targets[i]]}", {}
        if probs is not None:
            pred = probs[i].argmax()
            title += f"\npred: {classes[pred]} ({probs[i, pred]:.0%})"
            style = {"color": WRONG_COLOR} if pred != targets[i] else {}
        ax.set_title(title, fontsize="small", **style)
    return fig


def plot_history(history: Sequence[Mapping[str, Any]] | pd.DataFrame) -> Figure:
    """Loss, accuracy and balanced accuracy per epoch of ``FitResult.history`` (or its
    DataFrame): train and validation curves, the epoch ``fit`` keeps dashed."""
    frame = pd.DataFrame(history).apply(pd.to_numeric, errors="coerce")  # None -> NaN
    if frame.empty or "epoch" not in frame.columns:
        raise ValueError("plot_history needs one row per epoch with an 'epoch' column")
    best = None  # the epoch fit keeps, drawn only when there is validation
    if frame.get("val_balanced_accuracy", pd.Series()).notna().any():
        best = best_epoch_of(frame.dropna(subset=["val_balanced_accuracy"]).to_dict("records"))
    metrics = ("loss", "accuracy", "balanced_accuracy")
    curves = (("train", "train", PALETTE[0]), ("val", "validation", PALETTE[1]))
    fig, axes = _grid(1, len(metrics), (4.0 * len(metrics), 3.2))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for split, name, color in curves:
            values = frame.get(f"{split}_{metric}")
            if values is not None and values.notna().any():
                ax.plot(frame["epoch"], values, marker="o", ms=3, color=color, label=name)
        if best is not None:
            ax.axvline(best, **_REFERENCE, label="best epoch")
        ax.set(xlabel="Epoch", ylabel=_metric_label(metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric != "loss":
            _percent(ax.yaxis)
    axes[0][0].legend(fontsize="small")
    if best is not None:
        fig.suptitle(f"Training evolution (best epoch: {best})")
    return fig


def plot_confusion_matrix(
    cm: Any, classes: Sequence[str], both: bool = False, title: str | None = None
) -> Figure:
    """Heatmap of ``evaluate_predictions(...)["confusion_matrix"]`` (rows = true class), rows
    normalised (recall on the diagonal, %); ``both=True``: the counts beside it."""
    if np.shape(cm) != (len(classes), len(classes)):
        raise ValueError(
            f"confusion matrix of shape {np.shape(cm)} does not match {len(classes)} classes "
            f"{list(classes)}; pass evaluate_predictions(...)['confusion_matrix'] and its 'classes'"
        )
    counts = pd.DataFrame(np.asarray(cm), index=list(classes), columns=list(classes))
    side = max(3.0, 0.55 * len(classes) + 1.2)  # room for "100%" in every cell
    fig, axes = _grid(1, 1 + both, ((1 + both) * (side + 1.3), side))  # + the colour bar
    panels = [(False, "Counts"), (True, "Row-normalised (recall)")] if both else [(True, None)]
    style = {"cmap": "Blues", "vmin": 0, "square": True, "linewidths": 0.5, "linecolor": "white"}
    for ax, (norm, panel_title) in zip(axes[0], panels, strict=True):
        bar = {"shrink": 0.8, "label": "Share of the true class" if norm else "Images (count)"}
        cells = {"annot": True, "fmt": ".0%" if norm else "g", "annot_kws": {"fontsize": "small"}}
        values = counts.div(counts.sum(axis=1), axis=0) if norm else counts  # no images: blank
        sns.heatmap(values, ax=ax, vmax=1.0 if norm else None, cbar_kws=bar, **cells, **style)
        if norm:
            _percent(ax.collections[0].colorbar.ax.yaxis)
        ax.tick_params(axis="x", labelrotation=90 if len(classes) > 10 else 0)
        ax.tick_params(axis="y", labelrotation=0)
        ax.set(xlabel="Predicted class", ylabel="True class")
        ax.set_title(panel_title or title or "Confusion matrix (row-normalised)")
    if both and title:
        fig.suptitle(title)
    return fig


def plot_per_class_recall(results: Mapping[str, Any], ax: Axes | None = None) -> Figure:
    """Recall per class with a dashed chance line at ``1 / n_classes``, of one
    ``evaluate_predictions`` dict or of ``{run_name: results}`` (grouped bars, same classes)."""
    runs = {"_single": results} if "per_class" in results else dict(results)  # "_": no legend
    classes = list(next(iter(runs.values()))["classes"])
    for name, run in runs.items():
        if list(run["classes"]) != classes:
            raise ValueError(
                f"run {name!r} has classes {list(run['classes'])}, the first run {classes}: "
                "compare runs evaluated on the same classes"
            )
    recalls = {name: [run["per_class"][c]["recall"] for c in classes] for name, run in runs.items()}
    frame = pd.DataFrame(recalls, index=classes).astype(float)  # a None recall: NaN, no bar
    if ax is None:
        width = min(10.0, max(4.5, 1.5 + 0.25 * len(classes) * (1 + len(runs))))
        ax = plt.subplots(figsize=(width + 1.5, 3.5), layout="constrained")[1]
    frame.plot.bar(ax=ax, color=PALETTE[: len(runs)], width=0.8, legend=False)
    if len(runs) == 1:
        _bars(ax, frame, lambda v, _: f"{v:.0%}")
    chance = 1 / len(classes)
    ax.axhline(chance, **_REFERENCE, label=f"chance ({chance:.0%})")
    ax.set_ylim(0, 1.1)
    _percent(ax.yaxis)
    ax.tick_params(axis="x", labelrotation=0)
    ax.set(xlabel="True class", ylabel="Recall (sensitivity)", title="Recall per class")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax.figure


def plot_roc_pr(
    targets: Any,
    probs_pos: Any,
    label: str | None = None,
    axes: Sequence[Axes] | None = None,
    thresholds: Sequence[float] = (),
) -> Figure:
    """ROC and precision–recall curves of ``probs_pos`` (``probs[:, 1]``), AUC and AP in the
    legends; ``axes=fig.axes`` overlays another model, ``thresholds`` mark operating points."""
    probs_pos = _to_numpy(probs_pos).astype(float)
    y = _to_numpy(targets).astype(int)
    if probs_pos.ndim != 1 or probs_pos.shape != y.shape or set(np.unique(y)) != {0, 1}:
        raise ValueError(
            "plot_roc_pr needs 0/1 targets (both present) and one positive-class probability each "
            f"(probs[:, 1], not the whole probs array); got targets {np.unique(y)} of shape "
            f"{y.shape} and probabilities of shape {probs_pos.shape}"
        )
    roc_ax, pr_ax = _grid(1, 2, (8.5, 4.0))[1][0] if axes is None else axes
    name = label or "model"
    if not any(line.get_gid() == "chance" for line in roc_ax.lines):  # once per figure
        roc_ax.plot([0, 1], [0, 1], label="chance", gid="chance", **_REFERENCE)
        prevalence = f"chance (prevalence {y.mean():.0%})"
        pr_ax.axhline(y.mean(), label=prevalence, gid="chance", **_REFERENCE)
    scores = binary_metrics(y, probs_pos)  # AUC and average precision
    fpr, tpr, _ = roc_curve(y, probs_pos)
    (line,) = roc_ax.plot(fpr, tpr, label=f"{name} (AUC = {scores['auc']:.3f})")
    color = line.get_color()
    precision, recall, _ = precision_recall_curve(y, probs_pos)
    ap_label = f"{name} (AP = {scores['average_precision']:.3f})"
    pr_ax.plot(recall, precision, drawstyle="steps-post", color=color, label=ap_label)
    bbox = {"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none"}
    note = {"textcoords": "offset points", "fontsize": "small", "color": color, "bbox": bbox}
    for threshold in thresholds:
        predicted = probs_pos >= threshold
        sensitivity, fall_out = predicted[y == 1].mean(), predicted[y == 0].mean()
        ppv = y[predicted].mean() if predicted.any() else 1.0
        for ax, point in ((roc_ax, (fall_out, sensitivity)), (pr_ax, (sensitivity, ppv))):
            ax.plot(*point, "o", color=color, markeredgecolor="white", label="_nolegend_")
            offset = (6, -12 - 11 * len(ax.texts))  # each label one line below the last
            ax.annotate(f"t = {threshold:.2f}", point, offset, **note)
    roc_ax.set(title="ROC curve", xlabel="False positive rate (1 − specificity)", aspect="equal")
    roc_ax.set_ylabel("True positive rate (sensitivity)")
    pr_ax.set(
        title="Precision–recall curve", xlabel="Recall (sensitivity)", ylabel="Precision (PPV)"
    )
    for ax, where in ((roc_ax, "lower right"), (pr_ax, "lower left")):
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        _percent(ax.xaxis, ax.yaxis)
        ax.legend(loc=where, fontsize="small")
    return roc_ax.figure


def plot_reliability(
    bins: Mapping[str, Sequence[float | None]], ece: float | None = None, ax: Axes | None = None
) -> Figure:
    """Reliability diagram of ``metrics.reliability_bins``: accuracy against confidence per
    non-empty bin (marker area ~ images), the diagonal = perfectly calibrated."""
    keys = ("confidence", "accuracy", "count")
    if missing := [key for key in keys if key not in bins]:
        raise ValueError(f"reliability bins lack {missing}; pass metrics.reliability_bins(...)")
    frame = pd.DataFrame({k: bins[k] for k in keys}, dtype=float)
    frame = frame[frame["count"] > 0]
    conf, acc = frame["confidence"], frame["accuracy"]
    if ax is None:
        ax = plt.subplots(figsize=(4.2, 4.2), layout="constrained")[1]
    ax.plot([0, 1], [0, 1], **_REFERENCE, label="perfect calibration")
    ax.fill_between(conf, acc, conf, color=PALETTE[3], alpha=0.2, label="gap")
    ax.plot(conf, acc, color=PALETTE[0], label="model")
    sizes = 15 + 150 * frame["count"] / max(frame["count"].max(), 1)
    ax.scatter(conf, acc, s=sizes, color=PALETTE[0], zorder=3)
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
    _percent(ax.xaxis, ax.yaxis)
    ax.set(xlabel="Confidence (mean top probability)", ylabel="Accuracy (share correct)")
    ax.set_title("Reliability diagram" + ("" if ece is None else f" (ECE = {ece:.3f})"))
    ax.legend(loc="upper left", fontsize="small")
    return ax.figure


def plot_metric_comparison(
    frame: pd.DataFrame, x: str, metrics: Sequence[str] = ("accuracy", "balanced_accuracy")
) -> Figure:
    """Bars of ``metrics`` per value of column ``x`` (the mean of repeated rows: seeds, folds);
    error bars: the 95 % interval of ``<metric>_low``/``_high`` columns, else the repeats' SD."""
    metrics = list(metrics)
    if missing := [c for c in (x, *metrics) if c not in frame.columns]:
        raise ValueError(f"columns {missing} are not in the frame; it has {list(frame.columns)}")
    numbers = frame.apply(pd.to_numeric, errors="coerce").groupby(frame[x], sort=False)
    wide = numbers[metrics].mean()
    errors = numbers[metrics].std().to_numpy().T if numbers.size().max() > 1 else None
    if {f"{m}_{end}" for m in metrics for end in ("low", "high")} <= set(frame.columns):
        low = wide.to_numpy() - numbers[[f"{m}_low" for m in metrics]].mean().to_numpy()
        high = numbers[[f"{m}_high" for m in metrics]].mean().to_numpy() - wide.to_numpy()
        errors = np.stack([low.T, high.T], axis=1)  # (metrics, 2, groups): asymmetric
    wide.columns = [_metric_label(m) for m in metrics]
    many = len(wide) > 10  # then labels slanted and no numbers on the bars: they would collide
    if not many:
        wide.index = [textwrap.fill(str(v), 10, break_long_words=False) for v in wide.index]
    fraction = all(m in _FRACTIONS for m in metrics)
    width = min(16.0, max(5.5, 3.5 + 0.45 * wide.size))
    fig, ax = plt.subplots(figsize=(width, 6 if many else 3.5), layout="constrained")
    wide.plot.bar(ax=ax, color=PALETTE[: wide.shape[1]], width=0.8, yerr=errors, capsize=2)
    if not many:
        number = "{:.0%}" if fraction else "{:.3g}"
        _bars(ax, wide, lambda v, _: number.format(v), inside=errors is not None)
    if fraction:
        ax.set_ylim(0, 1.08)
        _percent(ax.yaxis)
    plt.setp(ax.get_xticklabels(), rotation=35 if many else 0, ha="right" if many else "center")
    ax.set_xlabel(x.replace("_", " ").capitalize())
    ax.set_ylabel(_metric_label(metrics[0]) if len(metrics) == 1 else "Score")
    ax.legend(title="Metric", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
