"""``python -m lesionlib {train,cv,evaluate,download,prepare,validate}``: the command line."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from lesionlib.layouts import LAYOUTS
from lesionlib.settings import LesionlibError

PRECISIONS: dict[str, bool | str] = dict(
    auto=True, float32=False, float16="float16", bfloat16="bfloat16"
)
"""``train --precision`` -> ``fit(amp=...)``."""


def _add_data_args(
    p: argparse.ArgumentParser, required: bool, skip_bad: bool = True, cache: bool = True
) -> None:
    """--data/--layout/--skip-missing, and --skip-bad-images and --cache-size unless turned off."""
    data = "dataset folder (official layout); omitted: the embedded synthetic sample"
    p.add_argument("--data", type=Path, required=required, help=data)
    p.add_argument("--layout", choices=LAYOUTS, help="layout of --data")
    present = "keep only the listed images that are present (default: error)"
    p.add_argument("--skip-missing", action="store_true", help=present)
    if skip_bad:
        bad = "decode every image first; leave out and list those that cannot be read"
        p.add_argument("--skip-bad-images", action="store_true", help=bad)
    if cache:
        size = "read images from a resized cache (shorter side S px), made once"
        p.add_argument("--cache-size", type=int, metavar="S", help=size)


def _add_split_args(p: argparse.ArgumentParser) -> None:
    """--val-fraction/--test-fraction: the shares of the data held out (0: no such split)."""
    p.add_argument("--val-fraction", type=float, default=0.15, help="share held out to validate")
    p.add_argument("--test-fraction", type=float, default=0.15, help="share held out to test")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    """The data, recipe and run options of ``train`` and ``cv``."""
    from lesionlib.models import MODEL_NAMES
    from lesionlib.transforms import AUGMENT_PRESETS

    _add_data_args(p, required=False)
    p.add_argument("--model", choices=MODEL_NAMES, default="simplecnn")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("--lr", type=float, help="peak learning rate (default: see default_lr)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="Adam/SGD L2 weight decay")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--scheduler", choices=("onecycle", "none"), default="onecycle")
    p.add_argument("--grad-clip", type=float, help="clip gradient values at this")
    p.add_argument("--no-pretrained", action="store_true", help="random init (no ImageNet)")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the new head")
    p.add_argument("--augment", choices=AUGMENT_PRESETS, default="basic")
    p.add_argument("--class-weights", action="store_true", help="class-weighted cross-entropy")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="of the cross-entropy")
    p.add_argument("--tta", action="store_true", help="evaluate with test-time flips")
    p.add_argument("--ensemble", type=int, default=1, help="models (seeds) whose mean is scored")
    p.add_argument("--balanced-sampler", action="store_true", help="oversample rare classes")
    p.add_argument(
        "--logit-adjust",
        type=float,
        default=0.0,
        metavar="TAU",
        help="logit-adjusted loss (tau * log class prior added to the logits)",
    )
    _add_split_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    amp = "auto: on a GPU bfloat16 where it has it, else float16; float16/bfloat16: forced; float32"
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="auto", help=amp)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--out", type=Path, default=Path("runs/latest"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    from lesionlib.download import DATASETS

    parser = argparse.ArgumentParser(prog="python -m lesionlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model; writes OUT/model.pt and OUT/metrics.json")
    _add_train_args(t)
    c = sub.add_parser("cv", help="k-fold cross-validation outside the test split; OUT/cv.json")
    _add_train_args(c)
    folds = "number of folds (--val-fraction is not used: each fold validates once)"
    c.add_argument("--folds", type=int, default=5, help=folds)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on every image of a dataset")
    several = "model file(s); several (an ensemble): their mean probabilities are scored"
    e.add_argument("--checkpoint", type=Path, nargs="+", required=True, help=several)
    _add_data_args(e, required=False)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--tta", action="store_true", help="test-time augmentation (flips)")
    e.add_argument("--out", type=Path, help="write the metrics JSON here")

    d = sub.add_parser("download", help="download an official dataset, verified")
    d.add_argument("dataset", choices=sorted(DATASETS))
    d.add_argument("--to", type=Path, default=Path("data"))
    d.add_argument("--drive-dir", type=Path, help="keep archives here (Colab)")

    pr = sub.add_parser("prepare", help="build the pre-resized image cache for a dataset")
    _add_data_args(pr, required=True, cache=False)
    pr.add_argument("--size", type=int, default=256, help="shorter side of the copies, px")
    pr.add_argument("--workers", type=int, help="resizing processes (default: all cores)")

    v = sub.add_parser("validate", help="scan a dataset and report problems before training")
    _add_data_args(v, required=True, skip_bad=False, cache=False)
    _add_split_args(v)
    v.add_argument("--out", type=Path, help="write the report as JSON")
    return parser


def _table(args: argparse.Namespace):
    """The table of --data/--layout (or the synthetic sample), as the other data options ask."""
    from lesionlib.cache import prepare_cache
    from lesionlib.datasets import load_table
    from lesionlib.images import drop_unreadable, validate_table
    from lesionlib.synthetic import default_sample

    if args.data is None:
        if args.layout is not None:
            raise SystemExit("error: --layout needs --data (the folder holding that dataset)")
        # Recorded in the run's settings as a real folder and layout, so it can be re-read.
        args.data, args.layout = default_sample(), "isic2019"
        print(f"No --data given: using the embedded synthetic sample in {args.data}")
    elif args.layout is None:
        layouts = ",".join(LAYOUTS)
        raise SystemExit(f"error: say which layout {args.data} has: --layout {{{layouts}}}")
    table = load_table(args.data, args.layout, missing="drop" if args.skip_missing else "error")
    if getattr(args, "skip_bad_images", False):
        report = validate_table(table, progress=not getattr(args, "quiet", False))
        table = drop_unreadable(table, report)
        unreadable = [entry["error"] for entry in report["unreadable"]]
        title = f"left out {len(unreadable)} of {report['images']} images that cannot be read:"
        if not unreadable:
            title = f"all {report['images']} images can be read"
        _print_listed(f"--skip-bad-images: {title}", unreadable)
    if getattr(args, "cache_size", None):
        table = prepare_cache(table, size=args.cache_size, workers=getattr(args, "workers", None))
    return table


def _print_listed(title: str, lines: list[str], limit: int = 20) -> None:
    """Print ``title`` and the first ``limit`` lines, indented; the rest are counted."""
    print(title)
    for line in lines[:limit]:
        print(f"  {line}")
    if len(lines) > limit:
        everything = "(all of them: python -m lesionlib validate ... --out report.json)"
        print(f"  ... and {len(lines) - limit} more {everything}")


def _print_report(report: dict[str, Any]) -> bool:
    """Print ``validate_table``'s report for people; return True when it found a problem."""
    counts = ", ".join(f"{cls} {n}" for cls, n in report["classes"].items())
    print(f"{report['images']} images in {len(report['classes'])} classes: {counts}")
    size = report["size_range"]
    if size["min_width"] is not None:
        wide = f"{size['min_width']}-{size['max_width']} px wide"
        print(f"image sizes: {wide}, {size['min_height']}-{size['max_height']} px high")
    print("colour modes: " + ", ".join(f"{mode} {n}" for mode, n in report["modes"].items()))
    problems = {
        "unreadable image(s): delete or replace them (re-download), or train/evaluate with "
        "--skip-bad-images": [entry["error"] for entry in report["unreadable"]],
        "group(s) of byte-identical files: keep one copy of each (copies can end up in both "
        "the training and the test split)": [" = ".join(d["paths"]) for d in report["duplicates"]],
        "image id(s) listed more than once: remove the extra rows": report["duplicate_ids"],
        "warning(s) on splitting the data into train/val/test": report["split_warnings"],
    }
    for title, lines in problems.items():
        if lines:
            _print_listed(f"{len(lines)} {title}", lines)
    found = any(problems.values())
    print("Problems found: see above." if found else "No problems found.")
    return found


def _print_metrics(metrics: dict[str, Any], header: str) -> None:
    """The headline metrics with their 95 % intervals, then recall and precision per class."""
    from lesionlib.metrics import BINARY_HEADLINE, HEADLINE, with_ci

    print(header + "  (value [95 % bootstrap interval])")
    for name in HEADLINE + (BINARY_HEADLINE if "binary" in metrics else ()):
        print(f"  {name.replace('_', ' '):<18} {with_ci(metrics, name)}")
    for cls, row in metrics["per_class"].items():
        recall, precision, n = row["recall"], row["precision"], row["support"]
        print(f"  {cls:>10}  recall {recall:.3f}  precision {precision:.3f}  n={n}")


def _fit_one(args: argparse.Namespace, table: Any, seed: int, checkpoint: Path | None) -> tuple:
    """Train the recipe of ``args`` with ``seed``: ``(model, fit result, peak lr, loaders)``."""
    import torch
    from torch import nn

    from lesionlib.datasets import classes_of
    from lesionlib.models import build_model, count_parameters
    from lesionlib.train import (
        LogitAdjustedLoss,
        class_prior,
        class_weights_from,
        fit,
        get_device,
        make_loaders,
        seed_everything,
    )

    seed_everything(seed)
    classes = classes_of(table)
    device = get_device()
    pretrained = args.model != "simplecnn" and not args.no_pretrained
    model = build_model(
        args.model, len(classes), pretrained, args.freeze_backbone, args.image_size
    ).to(device)
    n = count_parameters(model)
    print(f"model {args.model}: {n:,} parameters, weights {model.pretrained_source}, seed {seed}")
    if args.compile:
        model.compile()  # in place: the weights keep their names
    loaders = make_loaders(
        table,
        args.image_size,
        args.batch_size,
        args.augment,
        args.balanced_sampler,
        args.num_workers,
        seed,
    )
    # The recipe as PyTorch objects, as the notebooks build them.
    lr = args.lr if args.lr is not None else default_lr(args.optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr, momentum=0.9, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr, weight_decay=args.weight_decay)
    scheduler = None
    if args.scheduler == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, epochs=args.epochs, steps_per_epoch=len(loaders["train"])
        )
    train_rows = table[table["split"] == "train"]
    weight = class_weights_from(train_rows, len(classes)).to(device) if args.class_weights else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=args.label_smoothing)
    if args.logit_adjust:
        prior = class_prior(train_rows, len(classes)).to(device)
        loss_fn = LogitAdjustedLoss(prior, args.logit_adjust)
    result = fit(
        model,
        loaders,
        optimizer,
        args.epochs,
        scheduler=scheduler,
        loss_fn=loss_fn,
        grad_clip=args.grad_clip,
        amp=PRECISIONS[args.precision],
        checkpoint_path=checkpoint,
        resume=args.resume,
        seed=seed,
        progress=not args.quiet,
    )
    return model, result, lr, loaders


def _fit_and_test(args: argparse.Namespace, table: Any, out: Path | None) -> tuple[dict, list]:
    """Train ``--ensemble`` models (seeds seed, seed + 1, ...) and score their mean probabilities
    on the test split: the metrics (with intervals, history and run record) and the models."""
    import numpy as np

    from lesionlib.datasets import classes_of
    from lesionlib.metrics import HEADLINE, evaluate_predictions
    from lesionlib.train import RunRecord, predict

    members = [
        _fit_one(args, table, args.seed + k, out and out / _member_file("checkpoint", k))
        for k in range(args.ensemble)
    ]
    models = [model for model, *_ in members]
    _, result, lr, loaders = members[0]
    split = next(s for s in ("test", "val", "train") if s in loaders)  # fractions 0: train
    groups = table.loc[table["split"] == split, "lesion_id"].to_numpy()
    classes = classes_of(table)

    outputs = [predict(model, loaders[split], tta=args.tta) for model in models]
    probs, targets = [p for p, _ in outputs], outputs[0][1]
    mean = np.mean(probs, axis=0)
    metrics = evaluate_predictions(targets, mean, classes, groups=groups, seed=args.seed)
    # What each lever adds, measured on the same models: without the flips, with one model.
    plain_probs = [predict(model, loaders[split])[0] for model in models] if args.tta else None
    levers = {"without_tta": plain_probs, "one_model": probs[:1] if len(models) > 1 else None}
    for key, chosen in levers.items():
        if chosen is not None:
            plain = evaluate_predictions(targets, np.mean(chosen, axis=0), classes, resamples=0)
            metrics[key] = {m: plain[m] for m in HEADLINE}
    recipe = {key: getattr(args, key) for key in _RECIPE}
    recipe.update(lr=lr, best_epoch=[r.best_epoch for _, r, *_ in members], device=result.device)
    counts = {str(k): int(v) for k, v in table.groupby("split", observed=True).size().items()}
    record = RunRecord(
        **{key: getattr(args, key) for key in _RECORDED},
        classes=classes,
        weights=models[0].pretrained_source,
        data=str(args.data),
        split_sizes=counts,
        recipe=recipe,
    )
    metrics.update(history=result.history, run=record.as_dict(), evaluated_on=split)
    return metrics, models


def _member_file(stem: str, k: int) -> str:
    """The file of an ensemble's ``k``-th model: ``model.pt``, ``model-2.pt``, ..."""
    return f"{stem}{'' if k == 0 else f'-{k + 1}'}.pt"


_RECIPE = (
    ("epochs", "batch_size", "optimizer", "weight_decay", "scheduler", "grad_clip")
    + (
        "freeze_backbone",
        "augment",
        "class_weights",
        "label_smoothing",
        "balanced_sampler",
        "logit_adjust",
    )
    + ("tta", "ensemble", "compile", "precision")
)
"""The ``train`` options recorded as the run's recipe."""
_RECORDED = ("model", "image_size", "layout", "seed", "val_fraction", "test_fraction", "cache_size")
"""The ``train`` options recorded as ``RunRecord`` fields of the same name."""


def cmd_train(args: argparse.Namespace) -> int:
    """Train, keep the best epoch on the validation split, report on the held-out test split."""
    from lesionlib.datasets import split_table
    from lesionlib.train import RunRecord, save_model

    table = split_table(_table(args), args.val_fraction, args.test_fraction, seed=args.seed)
    counts = table.groupby("split", observed=True).size().to_dict()
    print(f"{len(table)} images, {table['label'].nunique()} classes, splits {counts}")
    args.out.mkdir(parents=True, exist_ok=True)
    metrics, models = _fit_and_test(args, table, args.out)
    record = RunRecord.from_dict(metrics["run"])
    paths = [args.out / _member_file("model", k) for k in range(len(models))]
    for path, model in zip(paths, models, strict=True):
        save_model(path, model, record)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    best = metrics["run"]["recipe"]["best_epoch"]
    _print_metrics(metrics, f"Best epoch {best}; {metrics['evaluated_on']} split:")
    print(f"wrote {', '.join(map(str, paths))} and {args.out / 'metrics.json'}")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    """k-fold cross-validation outside the test split: folds stratified by class, grouped by
    lesion; each model trained for the full schedule (no epoch chosen) and scored on its fold."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    from lesionlib.datasets import split_table
    from lesionlib.metrics import BINARY_HEADLINE, HEADLINE

    table = split_table(_table(args), 0.0, args.test_fraction, seed=args.seed)
    table = table[table["split"] == "train"].reset_index(drop=True)
    folds = StratifiedGroupKFold(args.folds, shuffle=True, random_state=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (_, held) in enumerate(folds.split(table, table["target"], table["lesion_id"]), 1):
        trained = len(table) - len(held)
        print(f"fold {k}/{args.folds}: {trained} images to train, {len(held)} to score")
        fold_table = table.assign(split=np.where(table.index.isin(held), "test", "train"))
        start = time.perf_counter()
        metrics, _ = _fit_and_test(args, fold_table, None)
        seconds = time.perf_counter() - start  # training and scoring every model of the fold
        scores = {m: metrics[m] for m in HEADLINE}
        scores.update({m: metrics["binary"][m] for m in BINARY_HEADLINE if "binary" in metrics})
        print("  " + ", ".join(f"{m} {v:.3f}" for m, v in scores.items() if v is not None))
        for lever in ("without_tta", "one_model"):
            scores.update({f"{m}_{lever}": v for m, v in metrics.get(lever, {}).items()})
        rows.append({"fold": k, "images": len(held), **scores, "seconds": round(seconds)})
    summary = {m: _mean_sd([r[m] for r in rows]) for m in rows[0] if m not in ("fold", "images")}
    report = {"folds": rows, "mean_sd": summary, "run": metrics["run"], "command": sys.argv[1:]}
    (args.out / "cv.json").write_text(json.dumps(report, indent=2))
    print(f"{args.folds}-fold cross-validation, mean ± sd over folds:")
    for name, (mean, sd) in summary.items():
        print(f"  {name:<30} {mean:.3f} ± {sd:.3f}")
    print(f"wrote {args.out / 'cv.json'}")
    return 0


def _mean_sd(values: list[float | None]) -> list[float] | None:
    """[mean, sample standard deviation] of the values (None if any is None)."""
    if any(v is None for v in values):
        return None
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def default_lr(optimizer: str) -> float:
    """The peak learning rate unless --lr is given: 1e-3 for Adam, 1e-2 for SGD with momentum."""
    return 1e-2 if optimizer == "sgd" else 1e-3


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score saved models on every image of a dataset, read as their training run read it."""
    import pandas as pd
    from torch.utils.data import DataLoader

    from lesionlib.datasets import LesionDataset, classes_of
    from lesionlib.metrics import evaluate_predictions
    from lesionlib.train import load_model, predict
    from lesionlib.transforms import eval_transform

    models = [load_model(path) for path in args.checkpoint]
    record = models[0][1]
    if any(r.classes != record.classes or r.image_size != record.image_size for _, r in models):
        raise SystemExit("error: the checkpoints differ in classes or image size: not one ensemble")
    if args.cache_size is None:
        args.cache_size = record.cache_size
    table = _table(args)
    unknown = sorted(set(classes_of(table)) - set(record.classes))
    if unknown:
        raise SystemExit(
            f"error: {args.data} has classes {unknown} that the model in {args.checkpoint[0]} "
            f"was not trained on (it knows {record.classes})"
        )
    labels = pd.Categorical(table["label"].astype(str), categories=record.classes)
    table = table.assign(label=labels, target=labels.codes.astype("int64"))
    dataset = LesionDataset(table, eval_transform(record.image_size))
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    outputs = [predict(model, loader, tta=args.tta) for model, _ in models]
    probs, targets = sum(p for p, _ in outputs) / len(outputs), outputs[0][1]
    groups = table["lesion_id"].to_numpy()
    metrics = evaluate_predictions(targets, probs, record.classes, groups=groups)
    metrics["run"] = record.as_dict()
    metrics["evaluation"] = {
        "checkpoint": [str(path) for path in args.checkpoint],
        "data": str(args.data),
        "cache_size": args.cache_size,
        "tta": args.tta,
    }
    _print_metrics(metrics, f"{len(table)} images from {args.data}:")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(metrics, indent=2))
        print(f"wrote {args.out}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    """Download and extract one official dataset."""
    from lesionlib.download import download

    root = download(args.dataset, args.to, drive_dir=args.drive_dir)
    print(f"{args.dataset} is ready in {root}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Build the pre-resized cache once, so that training reads small images."""
    args.cache_size = args.size
    table = _table(args)
    print(f"cached {len(table)} images at {args.size} px")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Scan every image of a dataset and print a report; exit 1 when something is wrong."""
    from lesionlib.datasets import check_trainable, split_warnings
    from lesionlib.images import validate_table

    table = _table(args)
    check_trainable(table)  # no rows or one class: nothing to scan for
    report = validate_table(table)
    report["split_warnings"] = split_warnings(table, args.val_fraction, args.test_fraction)
    found = _print_report(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 1 if found else 0


COMMANDS = {
    "train": cmd_train,
    "cv": cmd_cv,
    "evaluate": cmd_evaluate,
    "download": cmd_download,
    "prepare": cmd_prepare,
    "validate": cmd_validate,
}


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the sub-command; library errors become one clear line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "logit_adjust", 0) and args.class_weights:
        parser.error("--logit-adjust and --class-weights both reweight the classes: pass one")
    with warnings.catch_warnings():  # restores the usual warning display on return
        warnings.showwarning = _show_warning
        try:
            return COMMANDS[args.command](args)
        except (LesionlibError, FileNotFoundError) as exc:  # ours: bugs keep their traceback
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return 2


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    """Print a warning as ``warning: <message>`` on stderr, without Python's source line."""
    print(f"warning: {_one_line(message)}", file=sys.stderr)


def _one_line(exc: BaseException | str) -> str:
    """The message itself, without the worker traceback a DataLoader worker wraps it in."""
    message = str(exc).strip()
    if "DataLoader worker" in message:
        message = message.splitlines()[-1].split(": ", 1)[-1]
    return message
