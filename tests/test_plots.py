"""Tests of lesionlib.plots: each figure's artists reflect the data it was given."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex, to_rgba  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

from lesionlib import plots  # noqa: E402
from lesionlib.datasets import read_ham10000  # noqa: E402
from lesionlib.layouts import HAM10000_TO_ISIC2019  # noqa: E402
from lesionlib.metrics import evaluate_predictions, reliability_bins  # noqa: E402
from lesionlib.train import best_epoch_of  # noqa: E402
from lesionlib.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

CLASSES = ["MEL", "NV", "BCC"]


@pytest.fixture(autouse=True)
def _close_figures_and_forbid_show(monkeypatch: pytest.MonkeyPatch):
    """No function may call plt.show(); every figure is closed after each test."""

    def _fail(*args, **kwargs):
        raise AssertionError("lesionlib.plots must not call plt.show()")

    monkeypatch.setattr(plt, "show", _fail)
    yield
    plt.close("all")


def _table(labels: list[str], splits: list[str] | None = None, paths=None) -> pd.DataFrame:
    """A minimal lesionlib table (see docs/architecture.md) with classes CLASSES."""
    label = pd.Categorical(labels, categories=CLASSES)
    table = pd.DataFrame(
        {
            "image_id": [f"ISIC_{i:07d}" for i in range(len(labels))],
            "path": paths
            if paths is not None
            else [f"/nowhere/{i}.jpg" for i in range(len(labels))],
            "label": label,
            "target": label.codes.astype("int64"),
            "lesion_id": [f"L{i}" for i in range(len(labels))],
        }
    )
    if splits is not None:
        table["split"] = splits
    return table


def _widths(container) -> list[float]:
    return [patch.get_width() for patch in container]


def _heights(container) -> list[float]:
    return [patch.get_height() for patch in container]


def _ticks(labels) -> list[str]:
    return [label.get_text() for label in labels]


def test_set_style_uses_the_course_palette():
    with matplotlib.rc_context():
        plots.set_style()
        cycle = [to_hex(c) for c in matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]]
        assert cycle == [to_hex(c) for c in plots.PALETTE]
        assert matplotlib.rcParams["axes.grid"]


def test_class_distribution_of_a_table_counts_in_class_order():
    table = _table(["NV"] * 5 + ["MEL"] * 3)  # BCC present as a category, with no image
    figures_before = len(plt.get_fignums())
    fig = plots.plot_class_distribution(table)
    assert len(plt.get_fignums()) == figures_before + 1
    (ax,) = fig.axes
    assert _widths(ax.containers[0]) == [3, 5, 0]
    assert _ticks(ax.get_yticklabels()) == [
        "MEL — Melanoma",
        "NV — Melanocytic nevus",
        "BCC — Basal cell carcinoma",
    ]
    assert [t.get_text() for t in ax.texts] == ["3 (37.5%)", "5 (62.5%)", "0 (0.0%)"]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # first class on top
    assert "Images" in ax.get_xlabel()


def test_class_distribution_by_split_has_one_bar_group_per_split():
    labels = ["MEL", "NV", "NV", "NV", "BCC", "MEL", "NV", "BCC", "NV"]
    splits = ["train", "train", "train", "train", "train", "val", "val", "test", "test"]
    fig = plots.plot_class_distribution(_table(labels, splits))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "val", "test"]
    for container, split in zip(ax.containers, ["train", "val", "test"], strict=True):
        expected = [
            sum(lab == c and s == split for lab, s in zip(labels, splits, strict=True))
            for c in CLASSES
        ]
        assert _widths(container) == expected
    assert _ticks(ax.get_yticklabels())[0] == "MEL — Melanoma"
    log = plots.plot_class_distribution(_table(labels), log=True).axes[0]
    assert log.get_xscale() == "log"


def test_class_distribution_rejects_a_frame_without_label():
    with pytest.raises(ValueError, match="'label' column"):
        plots.plot_class_distribution(pd.DataFrame({"dx": ["mel"]}))


def test_image_grid_shows_per_class_thumbnails_deterministically(tmp_path: Path):
    labels = ["MEL"] * 3 + ["NV"] * 4 + ["BCC"]
    paths = []
    for i, _ in enumerate(labels):
        path = tmp_path / f"img{i}.jpg"
        Image.new("RGB", (40, 30), (20 * i, 100, 255 - 20 * i)).save(path)
        paths.append(str(path))
    table = _table(labels, paths=paths)

    fig = plots.plot_image_grid(table, per_class=2, seed=1)
    assert len(fig.axes) == 3 * 2
    assert sum(len(ax.images) for ax in fig.axes) == 2 + 2 + 1  # BCC has a single image
    assert fig.axes[0].images[0].get_array().shape[:2] == (30, 40)  # smaller than a thumbnail
    assert "Melanoma" in fig.axes[0].get_ylabel() and "n = 3" in fig.axes[0].get_ylabel()
    assert "Basal cell carcinoma" in fig.axes[4].get_ylabel()

    again = plots.plot_image_grid(table, per_class=2, seed=1)
    for first, second in zip(fig.axes, again.axes, strict=True):
        for a, b in zip(first.images, second.images, strict=True):
            np.testing.assert_array_equal(a.get_array(), b.get_array())


def test_show_batch_denormalises_and_marks_wrong_predictions_in_red():
    raw = torch.rand(6, 3, 8, 8)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    probs = torch.softmax(torch.randn(6, 3), dim=1)
    preds = probs.argmax(1)

    fig = plots.show_batch((raw - mean) / std, targets, CLASSES, probs=probs, n=5)
    assert len(fig.axes) == 6  # 2 rows × 3 columns, the last left empty
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5
    np.testing.assert_allclose(
        shown[0].images[0].get_array(), raw[0].permute(1, 2, 0).numpy(), atol=1e-5
    )
    red = to_rgba(plots.WRONG_COLOR)
    for ax, target, pred in zip(shown, targets.tolist(), preds.tolist(), strict=False):
        title = ax.title
        assert f"true: {CLASSES[target]}" in title.get_text()
        assert f"pred: {CLASSES[pred]}" in title.get_text()
        assert (to_rgba(title.get_color()) == red) == (pred != target)


def test_show_batch_shows_a_uint8_batch_as_make_loaders_gives_it():
    pixels = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    fig = plots.show_batch(pixels, [0, 1, 2, 0], CLASSES)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 4
    np.testing.assert_allclose(
        shown[3].images[0].get_array(), pixels[3].permute(1, 2, 0).numpy() / 255, atol=1e-6
    )


def test_show_batch_rejects_a_single_image():
    with pytest.raises(ValueError, match="N×C×H×W"):
        plots.show_batch(torch.zeros(3, 8, 8), [0], CLASSES)


HISTORY = [
    {
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "train_accuracy": 0.5 + 0.1 * epoch,
        "train_balanced_accuracy": 0.4 + 0.1 * epoch,
        "val_loss": 1.2 / epoch,
        "val_accuracy": 0.5 + 0.05 * epoch,
        "val_balanced_accuracy": bal,
    }
    for epoch, bal in zip([1, 2, 3, 4], [0.40, 0.55, 0.61, 0.58], strict=True)
]


def test_history_has_train_and_val_curves_and_best_epoch_line():
    fig = plots.plot_history(HISTORY)
    assert len(fig.axes) == 3
    for ax, metric in zip(fig.axes, ["loss", "accuracy", "balanced_accuracy"], strict=True):
        curves = [line for line in ax.lines if line.get_linestyle() == "-"]
        (best,) = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert len(curves) == 2
        assert list(best.get_xdata()) == [3, 3]
        assert list(curves[0].get_ydata()) == [row[f"train_{metric}"] for row in HISTORY]
        assert list(curves[1].get_ydata()) == [row[f"val_{metric}"] for row in HISTORY]
        assert ax.get_xlabel() == "Epoch"
        assert all(float(t).is_integer() for t in ax.get_xticks())
    assert "best epoch: 3" in fig.get_suptitle()


def test_history_without_validation_and_as_dataframe():
    rows = [{k: v for k, v in row.items() if not k.startswith("val_")} for row in HISTORY]
    fig = plots.plot_history(pd.DataFrame(rows))
    assert [len(ax.lines) for ax in fig.axes] == [1, 1, 1]  # train only, no best-epoch line
    with pytest.raises(ValueError, match="'epoch' column"):
        plots.plot_history([{"loss": 1.0}])


def test_history_best_epoch_is_the_one_fit_keeps_ties_to_lower_val_loss():
    rows = [
        {"epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "val_balanced_accuracy": 0.6},
        {"epoch": 2, "train_loss": 0.7, "val_loss": 0.5, "val_balanced_accuracy": 0.6},
        {"epoch": 3, "train_loss": 0.6, "val_loss": None, "val_balanced_accuracy": None},
    ]
    assert best_epoch_of(rows) == 2  # equal balanced accuracy: the lower val_loss wins
    for history in (rows, pd.DataFrame(rows)):
        fig = plots.plot_history(history)
        for ax in fig.axes:
            (best,) = [line for line in ax.lines if line.get_linestyle() == "--"]
            assert list(best.get_xdata()) == [2, 2]
        assert "best epoch: 2" in fig.get_suptitle()


CM = [[8, 2, 0], [1, 3, 0], [0, 0, 0]]


def test_confusion_matrix_is_row_normalised_with_percent_annotations():
    fig = plots.plot_confusion_matrix(CM, CLASSES)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # heatmap + colour bar
    counts = np.array(CM, dtype=float)
    expected = [
        f"{v:.0%}" for row in counts[:2] for v in row / row.sum()
    ]  # the empty BCC row is left blank
    assert [t.get_text() for t in ax.texts] == expected
    assert _ticks(ax.get_xticklabels()) == CLASSES
    assert _ticks(ax.get_yticklabels()) == CLASSES
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Predicted class", "True class")


def test_confusion_matrix_counts_and_both_panels():
    both = plots.plot_confusion_matrix(CM, CLASSES, both=True, title="run")
    assert len(both.axes) == 4  # two heatmaps, two colour bars
    titles = [ax.get_title() for ax in both.axes if ax.texts]
    assert titles == ["Counts", "Row-normalised (recall)"] and both.get_suptitle() == "run"
    assert [t.get_text() for t in both.axes[0].texts] == [str(v) for row in CM for v in row]
    both.canvas.draw()  # renders without error under the constrained layout
    with pytest.raises(ValueError, match="3 classes"):
        plots.plot_confusion_matrix([[1, 2], [3, 4]], CLASSES)


def _results(recalls: list[float]) -> dict:
    """An evaluate_predictions-shaped dict with the given recall per class."""
    per_class = {
        c: {"precision": 0.5, "recall": r, "f1": 0.5, "support": 10}
        for c, r in zip(CLASSES, recalls, strict=True)
    }
    return {"accuracy": 0.7, "balanced_accuracy": 0.6, "per_class": per_class, "classes": CLASSES}


def test_per_class_recall_bars_and_chance_line():
    fig, ax = plt.subplots()
    assert plots.plot_per_class_recall(_results([0.9, 0.5, 0.1]), ax=ax) is fig
    assert _heights(ax.containers[0]) == [0.9, 0.5, 0.1]
    (chance,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert chance.get_ydata()[0] == pytest.approx(1 / 3)
    assert _ticks(ax.get_xticklabels()) == CLASSES


def test_results_of_evaluate_predictions_plot_directly():
    rng = np.random.default_rng(2)
    targets = rng.integers(0, 3, 50)
    probs = rng.dirichlet([1, 1, 1], size=50)
    results = evaluate_predictions(targets, probs, CLASSES)
    ax = plots.plot_per_class_recall(results).axes[0]
    assert _heights(ax.containers[0]) == [results["per_class"][c]["recall"] for c in CLASSES]
    cm_ax = plots.plot_confusion_matrix(results["confusion_matrix"], results["classes"]).axes[0]
    assert len(cm_ax.texts) == 9


def test_per_class_recall_compares_runs_with_grouped_bars():
    runs = {"plain": _results([0.9, 0.5, 0.1]), "balanced": _results([0.7, 0.6, 0.5])}
    ax = plots.plot_per_class_recall(runs).axes[0]
    assert [_heights(c) for c in ax.containers] == [[0.9, 0.5, 0.1], [0.7, 0.6, 0.5]]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "plain" in legend and "balanced" in legend
    other = {**_results([0.1, 0.2, 0.3]), "classes": ["MEL", "NV", "SCC"]}
    with pytest.raises(ValueError, match="same classes"):
        plots.plot_per_class_recall({"a": runs["plain"], "b": other})


def test_roc_pr_legends_hold_sklearn_scores_and_overlay():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 200)
    probs = np.clip(0.3 * targets + rng.uniform(0, 0.7, 200), 0, 1)
    fig = plots.plot_roc_pr(targets, probs, label="cnn", thresholds=(0.5,))
    roc_ax, pr_ax = fig.axes
    roc_legend = [t.get_text() for t in roc_ax.get_legend().get_texts()]
    pr_legend = [t.get_text() for t in pr_ax.get_legend().get_texts()]
    assert f"cnn (AUC = {roc_auc_score(targets, probs):.3f})" in roc_legend
    assert f"cnn (AP = {average_precision_score(targets, probs):.3f})" in pr_legend

    predicted = probs >= 0.5
    sensitivity = (predicted & (targets == 1)).sum() / (targets == 1).sum()
    fall_out = (predicted & (targets == 0)).sum() / (targets == 0).sum()
    (marker,) = [line for line in roc_ax.lines if line.get_marker() == "o"]
    assert marker.get_xydata()[0] == pytest.approx([fall_out, sensitivity])

    assert (
        plots.plot_roc_pr(torch.tensor(targets), torch.tensor(1 - probs), "flip", fig.axes) is fig
    )
    assert sum("AUC" in t.get_text() for t in roc_ax.get_legend().get_texts()) == 2
    labels = [text for text in roc_ax.texts if text.get_text().startswith("t = ")]
    assert len({label.xyann for label in labels}) == len(labels) == 1  # "flip" passed none
    plots.plot_roc_pr(targets, probs, "again", fig.axes, thresholds=(0.5, 0.55))
    labels = [text for text in roc_ax.texts if text.get_text().startswith("t = ")]
    assert len({label.xyann for label in labels}) == len(labels) == 3  # each label one line lower
    assert sum(line.get_gid() == "chance" for line in roc_ax.lines) == 1
    with pytest.raises(ValueError, match=r"probs\[:, 1\]"):
        plots.plot_roc_pr(targets, np.stack([1 - probs, probs], axis=1))


def test_reliability_diagram_skips_empty_bins_and_shows_ece():
    bins = {
        "confidence": [0.15, None, 0.55, 0.85],
        "accuracy": [0.10, None, 0.50, 0.95],
        "count": [5, 0, 20, 40],
    }
    fig = plots.plot_reliability(bins, ece=0.0423)
    (ax,) = fig.axes
    diagonal, model = ax.lines
    assert list(diagonal.get_xydata()[:, 0]) == [0, 1]
    assert list(model.get_xdata()) == [0.15, 0.55, 0.85]
    assert list(model.get_ydata()) == [0.10, 0.50, 0.95]
    assert "ECE = 0.042" in ax.get_title()
    with pytest.raises(ValueError, match="count"):
        plots.plot_reliability({"confidence": [0.5], "accuracy": [0.5]})


def test_reliability_diagram_draws_metrics_reliability_bins():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([1, 1, 1], size=60)
    targets = rng.integers(0, 3, 60)
    bins = reliability_bins(targets, probs, n_bins=5)
    ax = plots.plot_reliability(bins).axes[0]
    expected = [c for c in bins["confidence"] if c is not None]
    assert list(ax.lines[1].get_xdata()) == pytest.approx(expected)
    assert ax.get_title() == "Reliability diagram"


RUNS = pd.DataFrame(
    {
        "setting": ["plain", "weighted loss", "balanced sampler"],
        "accuracy": [0.80, 0.74, 0.71],
        "balanced_accuracy": [0.42, 0.61, 0.63],
    }
)


def test_metric_comparison_groups_metrics_per_run():
    fig = plots.plot_metric_comparison(RUNS, x="setting")
    ax = fig.axes[0]
    assert [_heights(c) for c in ax.containers] == [
        RUNS["accuracy"].tolist(),
        RUNS["balanced_accuracy"].tolist(),
    ]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Accuracy", "Balanced accuracy"]
    ticks = [label.replace("\n", " ") for label in _ticks(ax.get_xticklabels())]
    assert ticks == RUNS["setting"].tolist()  # long names wrap onto two lines


def test_metric_comparison_labels_only_the_values_it_has():
    frame = RUNS.assign(balanced_accuracy=[0.42, None, 0.63])
    ax = plots.plot_metric_comparison(frame, x="setting").axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["80%", "74%", "71%", "42%", "", "63%"]  # no "0%" for the missing value


def test_metric_comparison_averages_repeated_runs_and_names_missing_columns():
    frame = pd.concat([RUNS, RUNS.assign(accuracy=[0.70, 0.64, 0.61])])
    ax = plots.plot_metric_comparison(frame, x="setting").axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert _heights(bars[0]) == pytest.approx([0.75, 0.69, 0.66])
    # error bars: the standard deviation of the repeats (0 for the unchanged balanced accuracy)
    spans = [np.ptp(seg[:, 1]) for seg in bars[0].errorbar.lines[2][0].get_segments()]
    assert spans == pytest.approx([2 * np.std([0.8, 0.7], ddof=1)] * 3)
    assert not any(np.ptp(s[:, 1]) for s in bars[1].errorbar.lines[2][0].get_segments())
    with pytest.raises(ValueError, match="auc"):
        plots.plot_metric_comparison(RUNS, x="setting", metrics=("auc",))


@pytest.mark.realdata
def test_real_ham10000_distribution_and_grid(real_data: Path):
    root = real_data / "ham10000-dev"
    table = read_ham10000(root)
    fig = plots.plot_class_distribution(table)
    ax = fig.axes[0]
    dx = pd.read_csv(root / "HAM10000_metadata.csv")["dx"].map(HAM10000_TO_ISIC2019)
    codes = [tick.split(" — ")[0] for tick in _ticks(ax.get_yticklabels())]
    assert _widths(ax.containers[0]) == [int((dx == c).sum()) for c in codes]

    grid = plots.plot_image_grid(table, per_class=1)
    assert len(grid.axes) == len(codes)
    assert all(len(a.images) == 1 for a in grid.axes)
    assert max(grid.axes[0].images[0].get_array().shape[:2]) == 128


def test_metric_comparison_draws_95_percent_intervals_from_low_high_columns():
    frame = RUNS.assign(accuracy_low=[0.7, 0.7, 0.6], accuracy_high=[0.9, 0.8, 0.75])
    frame = frame.assign(balanced_accuracy_low=0.3, balanced_accuracy_high=0.7)
    ax = plots.plot_metric_comparison(frame, x="setting").axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    ends = [y for seg in bars[0].errorbar.lines[2][0].get_segments() for y in seg[:, 1]]
    assert ends == pytest.approx([0.7, 0.9, 0.7, 0.8, 0.6, 0.75])
