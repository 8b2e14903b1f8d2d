"""Figures for the course: class balance, image grids, training curves, confusion matrices, ROC.

Every function returns the matplotlib ``Figure`` and never calls ``plt.show()`` (Jupyter shows it);
single-panel plots accept ``ax=`` to draw into an existing axes. Call :func:`set_style` once in a
notebook's setup cell for the course look; the functions use the same fixed palette either way.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from lesionlib.datasets import SPLITS, classes_of, load_image
from lesionlib.labels import BINARY_CLASSES, ISIC2019_CLASSES, full_name
from lesionlib.transforms import denormalize

__all__ = [
    "PALETTE",
    "WRONG_COLOR",
    "plot_class_distribution",
    "plot_confusion_matrix",
    "plot_history",
    "plot_image_grid",
    "plot_metric_comparison",
    "plot_per_class_recall",
    "plot_reliability",
    "plot_roc_pr",
    "set_style",
    "show_batch",
]

PALETTE: list[tuple[float, float, float]] = list(sns.color_palette("colorblind"))
"""The course palette (seaborn's colour-blind-safe set): splits, runs, metrics in order."""

WRONG_COLOR = "tab:red"
"""Title colour of wrongly predicted images in :func:`show_batch`."""

_REFERENCE_COLOR = "0.45"
"""Grey of reference lines: chance level, perfect calibration, best epoch."""

_METRICS: dict[str, tuple[str, bool]] = {
    # name: (axis label, is a fraction shown in %)
    "loss": ("Cross-entropy loss", False),
    "accuracy": ("Accuracy", True),
    "balanced_accuracy": ("Balanced accuracy", True),
    "macro_auc": ("Macro ROC AUC", True),
    "auc": ("ROC AUC", True),
    "average_precision": ("Average precision", True),
    "sensitivity": ("Sensitivity", True),
    "specificity": ("Specificity", True),
    "precision": ("Precision", True),
    "recall": ("Recall", True),
    "f1": ("F1 score", True),
    "lr": ("Learning rate", False),
    "seconds": ("Time per epoch (s)", False),
}


def set_style() -> None:
    """Apply the course look: seaborn ``whitegrid``, ``notebook`` context, the fixed palette."""
    sns.set_theme(
        context="notebook",
        style="whitegrid",
        palette=PALETTE,
        rc={"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"},
    )


def _figure_and_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """A new figure of ``figsize`` with one axes, or the figure of the ``ax`` given."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def _colors(n: int) -> list[tuple[float, float, float]]:
    """``n`` colours from the course palette (cycling when ``n`` exceeds it)."""
    return list(sns.color_palette(PALETTE, n))


def _class_label(code: str, full_names: bool, sep: str = " — ") -> str:
    """``'MEL'`` or ``'MEL — Melanoma'``; codes whose full name adds nothing stay as they are."""
    name = full_name(code)
    return f"{code}{sep}{name}" if full_names and name.lower() != code.lower() else code


def _metric_label(name: str) -> str:
    return _METRICS.get(name, (name.replace("_", " ").capitalize(), False))[0]


def _is_fraction(name: str) -> bool:
    return _METRICS.get(name, ("", False))[1]


def _percent_axis(axis: Any) -> None:
    """Show a 0–1 axis (x/y axis or colorbar axis) as percentages."""
    axis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))


def _to_numpy(values: Any) -> np.ndarray:
    """A NumPy array from a tensor (any device), list or array."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


# --------------------------------------------------------------------------- data


def _class_counts(table_or_counts: pd.DataFrame | pd.Series | Mapping[str, int]) -> pd.DataFrame:
    """Images per class (rows, class order) and split (columns; a single ``images`` if none)."""
    if isinstance(table_or_counts, pd.DataFrame):
        table = table_or_counts
        classes = classes_of(table)  # raises, naming the fix, when there is no 'label' column
        if "split" not in table.columns:
            counts = table["label"].value_counts().reindex(classes, fill_value=0)
            return counts.to_frame("images")
        counts = pd.crosstab(table["label"].astype(str), table["split"].astype(str))
        splits = [s for s in SPLITS if s in counts.columns]
        splits += sorted(set(counts.columns) - set(splits))
        return counts.reindex(index=classes, columns=splits, fill_value=0)

    counts = pd.Series(table_or_counts)
    if isinstance(counts.index, pd.CategoricalIndex):
        order = [str(c) for c in counts.index.categories]
        counts.index = counts.index.astype(str)
    else:
        order = [str(c) for c in counts.index]
        counts.index = order
        for known in (ISIC2019_CLASSES, BINARY_CLASSES):
            if set(order) <= set(known):
                order = [c for c in known if c in set(order)]
                break
    return counts.reindex(order, fill_value=0).astype(int).to_frame("images")


def plot_class_distribution(
    table_or_counts: pd.DataFrame | pd.Series | Mapping[str, int],
    title: str | None = None,
    ax: Axes | None = None,
    log: bool = False,
    full_names: bool = True,
) -> Figure:
    """Horizontal bars of images per class, annotated with count and share, in class order.

    ``table_or_counts`` is a lesionlib table (a ``split`` column gives one bar per split, shares
    within each split) or a Series/dict ``{class: count}``. ``log=True`` uses a log count axis.
    """
    counts = _class_counts(table_or_counts)
    counts.index = [_class_label(c, full_names) for c in counts.index]
    by_split = "split" in getattr(table_or_counts, "columns", ())
    fig, ax = _figure_and_axes(ax, (6.5, 1.0 + (0.22 if by_split else 0.32) * counts.size))
    counts.plot.barh(ax=ax, color=_colors(counts.shape[1]), width=0.8, legend=by_split)
    ax.invert_yaxis()  # first class on top
    for container, column in zip(ax.containers, counts.columns, strict=True):
        total = counts[column].sum()
        labels = [f"{n:,} ({n / total:.1%})" if total else "0" for n in counts[column]]
        ax.bar_label(container, labels=labels, padding=3, fontsize="small")
    if log:
        ax.set_xscale("log")
    ax.margins(x=0.3 if log else 0.2)
    ax.set_xlabel("Images (count, log scale)" if log else "Images (count)")
    ax.set_ylabel("Class")
    if by_split:
        ax.legend(title="Split", loc="lower right")
    default = "Images per class and split" if by_split else "Images per class"
    ax.set_title(title or f"{default} (n = {int(counts.to_numpy().sum()):,})")
    return fig


def plot_image_grid(
    table: pd.DataFrame,
    per_class: int = 4,
    image_size: int = 128,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> Figure:
    """One row per class with ``per_class`` random images (the same for a ``seed``), thumbnailed.

    Rows are labelled with the class code, its full name and the number of images of the class.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    available = classes_of(table)
    classes = available if classes is None else list(classes)
    unknown = [c for c in classes if c not in available]
    if unknown:
        raise ValueError(f"classes {unknown} are not in the table; its classes are {available}")
    fig, axes = plt.subplots(
        len(classes),
        per_class,
        figsize=(1.5 * per_class + 1.8, 1.5 * len(classes)),
        squeeze=False,
        layout="constrained",
    )
    for row, code in zip(axes, classes, strict=True):
        members = table[table["label"] == code]
        chosen = members.sample(n=min(per_class, len(members)), random_state=seed)
        for ax, path in zip(row, chosen["path"], strict=False):
            image = load_image(path)
            image.thumbnail((image_size, image_size))
            ax.imshow(image)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
        name = _class_label(code, full_names=True, sep="\n")
        row[0].set_ylabel(
            f"{name}\n(n = {len(members):,})", rotation=0, ha="right", va="center", fontsize="small"
        )
    return fig


def show_batch(
    images: torch.Tensor,
    targets: Any,
    classes: Sequence[str],
    preds: Any = None,
    probs: Any = None,
    n: int = 16,
) -> Figure:
    """The first ``n`` images of a normalised batch with true (and predicted) class.

    ``preds`` default to ``probs.argmax(1)`` when only ``probs`` is given; the predicted class's
    probability is shown when ``probs`` is given; wrong predictions are titled in red.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(
            f"show_batch expects a non-empty N×C×H×W tensor, got {shape}; "
            "take one from a DataLoader: images, targets = next(iter(loader))"
        )
    n = min(n, len(images))
    targets = _to_numpy(targets)[:n]
    probs = None if probs is None else _to_numpy(probs)[:n]
    if preds is None and probs is not None:
        preds = probs.argmax(axis=1)
    preds = None if preds is None else _to_numpy(preds)[:n]
    pictures = denormalize(images[:n].detach().float().cpu()).permute(0, 2, 3, 1).numpy()
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.9 * cols, 2.1 * rows), squeeze=False, layout="constrained"
    )
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(pictures[i])
        title = f"true: {classes[targets[i]]}"
        style: dict[str, str] = {}
        if preds is not None:
            title += f"\npred: {classes[preds[i]]}"
            if probs is not None:
                title += f" ({probs[i, preds[i]]:.0%})"
            if preds[i] != targets[i]:
                style["color"] = WRONG_COLOR
        ax.set_title(title, fontsize="small", **style)
    return fig


# ---------------------------------------------------------------------- training


def plot_history(
    history: Sequence[Mapping[str, Any]] | pd.DataFrame,
    metrics: Sequence[str] = ("loss", "accuracy", "balanced_accuracy"),
) -> Figure:
    """One panel per metric: train and validation curves over epochs, best epoch dashed.

    ``history`` is ``FitResult.history`` (or its DataFrame): ``epoch``, ``train_<metric>``,
    ``val_<metric>`` (validation may be missing or None). A metric logged without prefix
    (``lr``, ``seconds``) is drawn as a single curve. Best epoch = highest validation balanced
    accuracy, the one ``fit`` keeps.
    """
    frame = pd.DataFrame(history)
    if frame.empty or "epoch" not in frame.columns:
        raise ValueError(
            "plot_history needs one row per epoch with an 'epoch' column, e.g. FitResult.history"
        )
    frame = frame.apply(pd.to_numeric, errors="coerce")
    best = None
    if "val_balanced_accuracy" in frame and frame["val_balanced_accuracy"].notna().any():
        best = int(frame.loc[frame["val_balanced_accuracy"].idxmax(), "epoch"])
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    panels = []  # (metric, [(column, legend label, colour)]), checked before a figure is made
    for metric in metrics:
        curves = [
            (column, label, color)
            for column, label, color in (
                (f"train_{metric}", "train", PALETTE[0]),
                (f"val_{metric}", "validation", PALETTE[1]),
                (metric, _metric_label(metric), PALETTE[2]),
            )
            if column in frame and frame[column].notna().any()
        ]
        if not curves:
            raise ValueError(
                f"history has no values for {metric!r} (looked for train_{metric}, val_{metric}, "
                f"{metric}); its columns are {list(frame.columns)}"
            )
        panels.append((metric, curves))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.0 * len(metrics), 3.2), squeeze=False, layout="constrained"
    )
    for ax, (metric, curves) in zip(axes[0], panels, strict=True):
        for column, label, color in curves:
            ax.plot(
                frame["epoch"], frame[column], marker="o", markersize=3, color=color, label=label
            )
        if best is not None:
            ax.axvline(
                best, linestyle="--", linewidth=1, color=_REFERENCE_COLOR, label="best epoch"
            )
        ax.set_xlabel("Epoch")
        ax.set_ylabel(_metric_label(metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if _is_fraction(metric):
            _percent_axis(ax.yaxis)
    axes[0][0].legend(fontsize="small")
    if best is not None:
        fig.suptitle(f"Training evolution (best epoch: {best})")
    return fig


# ----------------------------------------------------------------------- results


def _heatmap(
    ax: Axes,
    counts: np.ndarray,
    classes: Sequence[str],
    full_names: bool,
    normalize: bool,
    title: str,
) -> None:
    """A confusion heatmap: counts, or rows divided by their totals (recall on diagonal)."""
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            values = counts / counts.sum(axis=1, keepdims=True)  # a class with no images: blank row
        fmt, vmax, bar_label = ".0%", 1.0, "Share of the true class"
    else:
        values, vmax, bar_label = counts, None, "Images (count)"
        fmt = "d" if np.issubdtype(counts.dtype, np.integer) else "g"
    sns.heatmap(
        values,
        ax=ax,
        annot=True,
        fmt=fmt,
        cmap="Blues",
        vmin=0,
        vmax=vmax,
        square=True,
        linewidths=0.5,
        linecolor="white",
        xticklabels=list(classes),  # codes: short enough to stay horizontal
        yticklabels=[_class_label(c, full_names) for c in classes],
        cbar_kws={"label": bar_label, "shrink": 0.8},
    )
    if normalize:
        _percent_axis(ax.collections[0].colorbar.ax.yaxis)
    ax.tick_params(axis="x", labelrotation=90 if len(classes) > 10 else 0)
    ax.tick_params(axis="y", labelrotation=0)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)


def plot_confusion_matrix(
    cm: Any,
    classes: Sequence[str],
    normalize: bool = True,
    ax: Axes | None = None,
    title: str | None = None,
    both: bool = False,
    full_names: bool = False,
) -> Figure:
    """Confusion matrix heatmap: row-normalised (recall on the diagonal, %) or counts.

    ``cm`` is ``evaluate_predictions(...)["confusion_matrix"]`` (rows = true class).
    ``both=True`` draws two panels side by side, counts then row-normalised (``ax`` must be None).
    """
    counts = np.asarray(cm)
    if counts.ndim != 2 or counts.shape != (len(classes), len(classes)):
        raise ValueError(
            f"confusion matrix of shape {counts.shape} does not match {len(classes)} classes "
            f"{list(classes)}; pass evaluate_predictions(...)['confusion_matrix'] and its 'classes'"
        )
    side = max(3.0, 0.45 * len(classes) + 1.2)
    label_width = 2.0 if full_names else 0.0
    if both:
        if ax is not None:
            raise ValueError("both=True draws its own two panels: leave ax=None")
        figsize = (2 * (side + 1.3 + label_width), side)
        fig, (left, right) = plt.subplots(1, 2, figsize=figsize, layout="constrained")
        _heatmap(left, counts, classes, full_names, normalize=False, title="Counts")
        _heatmap(
            right, counts, classes, full_names, normalize=True, title="Row-normalised (recall)"
        )
        if title:
            fig.suptitle(title)
        return fig
    fig, ax = _figure_and_axes(ax, (side + 1.3 + label_width, side))
    default = "Confusion matrix (row-normalised)" if normalize else "Confusion matrix (counts)"
    _heatmap(ax, counts, classes, full_names, normalize, title or default)
    return fig


def plot_per_class_recall(
    results: Mapping[str, Any], ax: Axes | None = None, full_names: bool = False
) -> Figure:
    """Recall (sensitivity) per class with a dashed chance line at ``1 / n_classes``.

    ``results`` is one ``evaluate_predictions`` dict, or ``{run_name: results}`` for grouped
    bars comparing runs (all with the same classes).
    """
    runs = {"_single": results} if "per_class" in results else dict(results)
    if not runs:
        raise ValueError("plot_per_class_recall got no results: pass evaluate_predictions(...)")
    classes: list[str] | None = None
    recalls: dict[str, list[float]] = {}
    for name, run in runs.items():
        if not isinstance(run, Mapping) or "per_class" not in run or "classes" not in run:
            raise ValueError(
                f"run {name!r} is not an evaluate_predictions dict "
                "(it needs 'per_class' and 'classes')"
            )
        if classes is None:
            classes = list(run["classes"])
        elif list(run["classes"]) != classes:
            raise ValueError(
                f"run {name!r} has classes {list(run['classes'])}, the first run {classes}: "
                "compare runs evaluated on the same classes"
            )
        recalls[name] = [
            math.nan if run["per_class"][c]["recall"] is None else run["per_class"][c]["recall"]
            for c in classes
        ]
    frame = pd.DataFrame(recalls, index=[_class_label(c, full_names, sep="\n") for c in classes])
    width = min(10.0, max(4.5, 1.5 + 0.25 * len(classes) * (1 + len(runs))))
    width += 1.5 + 1.5 * full_names  # the legend on the right; wider labels
    fig, ax = _figure_and_axes(ax, (width, 3.5))
    frame.plot.bar(ax=ax, color=_colors(len(runs)), width=0.8, legend=False)
    if len(runs) == 1:
        ax.bar_label(ax.containers[0], fmt="{:.0%}", padding=2, fontsize="small")
    chance = 1 / len(classes)
    ax.axhline(
        chance, linestyle="--", linewidth=1, color=_REFERENCE_COLOR, label=f"chance ({chance:.0%})"
    )
    ax.set_ylim(0, 1.1)
    _percent_axis(ax.yaxis)
    ax.tick_params(axis="x", labelrotation=0)
    ax.set_xlabel("True class")
    ax.set_ylabel("Recall (sensitivity)")
    ax.set_title("Recall per class")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_roc_pr(
    targets: Any,
    probs_pos: Any,
    label: str | None = None,
    axes: Sequence[Axes] | None = None,
    thresholds: Sequence[float] = (),
) -> Figure:
    """ROC and precision–recall curves side by side, AUC and AP in the legends.

    ``probs_pos`` is the probability of the positive class (``probs[:, 1]``). Pass the ``axes`` of
    a previous call (``fig.axes``) to overlay another model. ``thresholds`` mark operating points
    (e.g. ``(0.5,)`` or the one from ``threshold_for_sensitivity``) on both curves.
    """
    probs_pos = _to_numpy(probs_pos).astype(float)
    y = _to_numpy(targets).astype(int)
    if probs_pos.ndim != 1 or probs_pos.shape != y.shape:
        raise ValueError(
            f"plot_roc_pr needs 1-D targets and positive-class probabilities of the same length, "
            f"got {y.shape} and {probs_pos.shape}; pass probs[:, 1], not the whole probs array"
        )
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError(
            f"plot_roc_pr needs binary targets with both classes present (0/1), got {np.unique(y)}"
        )
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(8.5, 4.0), layout="constrained")
    roc_ax, pr_ax = axes
    fig = roc_ax.figure
    name = label or "model"

    if not any(line.get_gid() == "chance" for line in roc_ax.lines):
        roc_ax.plot(
            [0, 1], [0, 1], "--", lw=1, color=_REFERENCE_COLOR, label="chance", gid="chance"
        )
    if not any(line.get_gid() == "chance" for line in pr_ax.lines):
        prevalence = y.mean()
        pr_ax.axhline(
            prevalence,
            ls="--",
            lw=1,
            color=_REFERENCE_COLOR,
            gid="chance",
            label=f"chance (prevalence {prevalence:.0%})",
        )
    fpr, tpr, _ = roc_curve(y, probs_pos)
    precision, recall, _ = precision_recall_curve(y, probs_pos)
    (line,) = roc_ax.plot(fpr, tpr, label=f"{name} (AUC = {roc_auc_score(y, probs_pos):.3f})")
    color = line.get_color()
    ap = average_precision_score(y, probs_pos)
    pr_ax.plot(
        recall, precision, drawstyle="steps-post", color=color, label=f"{name} (AP = {ap:.3f})"
    )

    for threshold in thresholds:
        tn, fp, fn, tp = confusion_matrix(y, probs_pos >= threshold, labels=[0, 1]).ravel()
        sensitivity, fall_out = tp / (tp + fn), fp / (fp + tn)
        ppv = tp / (tp + fp) if tp + fp else 1.0
        for ax, point in ((roc_ax, (fall_out, sensitivity)), (pr_ax, (sensitivity, ppv))):
            ax.plot(*point, "o", color=color, markeredgecolor="white", label="_nolegend_")
            ax.annotate(
                f"t = {threshold:.2f}",
                point,
                xytext=(6, -12 - 11 * len(ax.texts)),  # each label one line below the last
                textcoords="offset points",
                fontsize="small",
                color=color,
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none"},
            )

    roc_ax.set_xlabel("False positive rate (1 − specificity)")
    roc_ax.set_ylabel("True positive rate (sensitivity)")
    roc_ax.set_title("ROC curve")
    roc_ax.set_aspect("equal")
    pr_ax.set_xlabel("Recall (sensitivity)")
    pr_ax.set_ylabel("Precision (PPV)")
    pr_ax.set_title("Precision–recall curve")
    for ax, where in ((roc_ax, "lower right"), (pr_ax, "lower left")):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        _percent_axis(ax.xaxis)
        _percent_axis(ax.yaxis)
        ax.legend(loc=where, fontsize="small")
    return fig


def plot_reliability(
    bins: Mapping[str, Sequence[float | None]], ece: float | None = None, ax: Axes | None = None
) -> Figure:
    """Reliability diagram: accuracy against confidence per bin, diagonal = perfectly calibrated.

    ``bins`` has lists ``confidence``, ``accuracy`` and ``count`` (``metrics.reliability_bins``);
    empty bins are skipped; marker area follows the number of images in the bin.
    """
    missing = [key for key in ("confidence", "accuracy", "count") if key not in bins]
    if missing:
        raise ValueError(
            f"reliability bins lack {missing}; pass lesionlib.metrics.reliability_bins(...)"
        )
    frame = pd.DataFrame(
        {k: np.asarray(bins[k], dtype=float) for k in ("confidence", "accuracy", "count")}
    )
    frame = frame[frame["count"] > 0]
    fig, ax = _figure_and_axes(ax, (4.2, 4.2))
    ax.plot([0, 1], [0, 1], "--", lw=1, color=_REFERENCE_COLOR, label="perfect calibration")
    ax.fill_between(
        frame["confidence"],
        frame["accuracy"],
        frame["confidence"],
        color=PALETTE[3],
        alpha=0.2,
        label="gap",
    )
    ax.plot(frame["confidence"], frame["accuracy"], color=PALETTE[0], label="model")
    sizes = 15 + 150 * frame["count"] / max(frame["count"].max(), 1)
    ax.scatter(frame["confidence"], frame["accuracy"], s=sizes, color=PALETTE[0], zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    _percent_axis(ax.xaxis)
    _percent_axis(ax.yaxis)
    ax.set_xlabel("Confidence (mean top probability)")
    ax.set_ylabel("Accuracy (share correct)")
    ax.set_title("Reliability diagram" + ("" if ece is None else f" (ECE = {ece:.3f})"))
    ax.legend(loc="upper left", fontsize="small")
    return fig


def plot_metric_comparison(
    frame: pd.DataFrame,
    x: str,
    metrics: Sequence[str] = ("accuracy", "balanced_accuracy"),
    hue: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Grouped bars comparing runs: one group per value of column ``x``.

    Without ``hue`` the bars of a group are the ``metrics`` (plain vs balanced accuracy); with
    ``hue`` (a column) they are its values for a single metric. Repeated rows are averaged.
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    missing = [c for c in (x, *metrics, *([hue] if hue else [])) if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the frame; it has {list(frame.columns)}")
    data = frame.copy()
    data[metrics] = data[metrics].apply(pd.to_numeric, errors="coerce")
    if hue is None:
        wide = data.groupby(x, sort=False)[metrics].mean()
        wide.columns = [_metric_label(m) for m in metrics]
        legend_title = "Metric"
    else:
        if len(metrics) != 1:
            raise ValueError(
                f"with hue={hue!r} pass one metric, e.g. metrics=('balanced_accuracy',); "
                f"got {metrics}"
            )
        wide = (
            data.groupby([x, hue], sort=False)[metrics[0]]
            .mean()
            .unstack(hue)
            .reindex(index=pd.unique(data[x]), columns=pd.unique(data[hue]))
        )
        legend_title = hue.replace("_", " ").capitalize()
    fraction = all(_is_fraction(m) for m in metrics)
    wide.index = [textwrap.fill(str(v), 10, break_long_words=False) for v in wide.index]
    fig, ax = _figure_and_axes(ax, (min(10.0, max(5.5, 3.5 + 0.45 * wide.size)), 3.5))
    wide.plot.bar(ax=ax, color=_colors(wide.shape[1]), width=0.8)
    fmt = "{:.0%}" if fraction else "{:.3g}"
    # pandas draws a missing value as a 0-high bar: label it "" rather than "0%".
    for container, column in zip(ax.containers[-wide.shape[1] :], wide.columns, strict=True):
        labels = ["" if pd.isna(v) else fmt.format(v) for v in wide[column]]
        ax.bar_label(container, labels=labels, padding=2, fontsize="small")
    if fraction:
        ax.set_ylim(0, 1.08)
        _percent_axis(ax.yaxis)
    ax.tick_params(axis="x", labelrotation=0)
    ax.set_xlabel(x.replace("_", " ").capitalize())
    ax.set_ylabel(_metric_label(metrics[0]) if len(metrics) == 1 else "Score")
    ax.legend(title=legend_title, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
