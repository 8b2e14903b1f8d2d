"""Readers for the official dataset layouts -> one table; grouped splits; the torch Dataset.

Every reader returns a :class:`pandas.DataFrame` with one row per image and the columns
``image_id, path, label (categorical), target, lesion_id, age, sex, site`` (+ ``split`` when the
source has official splits). See docs/architecture.md ("The table", "Readers").
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from sklearn.model_selection import StratifiedGroupKFold
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor
from tqdm.auto import tqdm

from lesionlib.labels import BINARY_CLASSES, HAM10000_TO_ISIC2019, ISIC2019_CLASSES

Missing = Literal["error", "drop", "keep"]
"""What a reader does with listed images that are absent: raise, drop them with a warning, or keep
the rows (for CSV-only inspection, e.g. class counts on the real CSVs without the images)."""

ISIC2019_GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"
ISIC2019_IMAGES = "ISIC_2019_Training_Input"
ISIC2019_METADATA_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")
ISIC2016_FILES = {
    "train": ("ISBI2016_ISIC_Part3_Training_GroundTruth.csv", "ISBI2016_ISIC_Part3_Training_Data"),
    "test": ("ISBI2016_ISIC_Part3_Test_GroundTruth.csv", "ISBI2016_ISIC_Part3_Test_Data"),
}
HAM10000_METADATA = "HAM10000_metadata.csv"
HAM10000_IMAGE_DIRS = ("HAM10000_images", "HAM10000_images_part_1", "HAM10000_images_part_2")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The split names of the ``split`` column, in the order loaders and plots list them."""
SPLIT_FOLDERS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
LAYOUTS = ("isic2019", "isic2016", "ham10000", "imagefolder", "synthetic")

_ISIC2016_LABELS = {
    "benign": "benign",
    "malignant": "malignant",
    "0": "benign",
    "1": "malignant",
    "0.0": "benign",
    "1.0": "malignant",
}
_JPEG_MAGIC = b"\xff\xd8\xff"

_HELP = "see data/README.md for where to get the data and how to lay out its files"
_VALIDATE = (
    "run `python -m lesionlib validate` to list every unreadable image, "
    "or train with --skip-bad-images to leave them out"
)


class DatasetError(ValueError):
    """Data on disk does not match what a reader expects; the message names the file and the fix."""


# --------------------------------------------------------------------------- helpers


def _check_missing_mode(missing: str) -> None:
    if missing not in ("error", "drop", "keep"):
        raise ValueError(f"missing must be 'error', 'drop' or 'keep', not {missing!r}")


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DatasetError(f"{what} not found: expected {path}; {_HELP}.")


def _read_csv(path: Path, header: bool = True) -> pd.DataFrame:
    """Read a CSV as stripped strings (CRLF or LF, optional BOM); empty cells become ''."""
    try:
        frame = pd.read_csv(
            path,
            header=0 if header else None,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(
            f"{path} is not a readable CSV file ({err}); replace it with the official file "
            f"({_HELP})."
        ) from err
    if header:
        frame.columns = [str(c).strip() for c in frame.columns]
    return frame.apply(lambda col: col.str.strip())


def _row_names(rows: Iterable[int], ids: Sequence[str], first_row: int) -> str:
    """``row 17 (ISIC_0000016)``-style names; ``first_row`` is the file line of index 0."""
    return ", ".join(f"row {i + first_row} ({ids[i]})" for i in rows)


def _check_duplicates(ids: pd.Series, path: Path, first_row: int) -> None:
    duplicated = ids[ids.duplicated(keep=False)]
    if duplicated.empty:
        return
    parts = []
    for image_id, group in list(duplicated.groupby(duplicated, sort=False))[:5]:
        rows = ", ".join(str(i + first_row) for i in group.index)
        parts.append(f"{image_id!r} (rows {rows})")
    n = duplicated.nunique()
    raise DatasetError(
        f"{path}: {n} image id(s) listed more than once: {'; '.join(parts)}. "
        "Each image must appear once: remove the duplicate rows."
    )


def _check_lesion_column(frame: pd.DataFrame, path: Path) -> None:
    if "lesion_id" not in frame.columns:
        warnings.warn(
            f"{path} has no 'lesion_id' column: each image is treated as its own lesion, so images "
            "of one lesion are not grouped and a split may put them in both train and test. "
            "Use the official metadata file, which has lesion_id.",
            UserWarning,
            stacklevel=3,
        )


def _lesion_ids(frame: pd.DataFrame, image_ids: pd.Series) -> pd.Series:
    """The lesion id of each row; the image id where the source has none (column or cell empty)."""
    if "lesion_id" not in frame.columns:
        return image_ids.copy()
    lesion = frame["lesion_id"].fillna("")
    return lesion.where(lesion != "", image_ids)


def _text_or_nan(values: pd.Series) -> pd.Series:
    return values.replace("", np.nan)


def _make_table(
    image_ids: Sequence[str] | pd.Series,
    paths: Sequence[str] | pd.Series,
    labels: Sequence[str] | pd.Series,
    classes: Sequence[str],
    *,
    lesion_ids: Sequence[str] | pd.Series | None = None,
    age: Any = np.nan,
    sex: Any = np.nan,
    site: Any = np.nan,
    split: Sequence[str] | pd.Series | str | None = None,
    source: Path | None = None,
) -> pd.DataFrame:
    """Assemble the standard table (see docs/architecture.md, "The table").

    ``source`` (the CSV or folder read) goes in ``table.attrs["source"]``, so that later checks
    can name the file at fault.
    """
    image_ids = pd.Series(list(image_ids), dtype=str)
    label = pd.Categorical(list(labels), categories=list(classes))
    table = pd.DataFrame(
        {
            "image_id": image_ids,
            "path": pd.Series(list(paths), dtype=str),
            "label": label,
            "target": label.codes.astype(np.int64),
            "lesion_id": image_ids
            if lesion_ids is None
            else pd.Series(list(lesion_ids), dtype=str),
            "age": pd.to_numeric(pd.Series(_listed(age, len(image_ids))), errors="coerce"),
            "sex": pd.Series(_listed(sex, len(image_ids)), dtype=object),
            "site": pd.Series(_listed(site, len(image_ids)), dtype=object),
        }
    )
    if split is not None:
        table["split"] = pd.Series(_listed(split, len(image_ids)), dtype=str)
    if source is not None:
        table.attrs["source"] = str(source)
    return table


def _source(table: pd.DataFrame) -> str:
    """The file or folder a reader built ``table`` from, for messages; else "the table"."""
    return table.attrs.get("source", "the table")


def _require_rows(frame: pd.DataFrame, csv: Path) -> None:
    """Refuse a CSV with a header and no rows (an interrupted download or an overwritten file)."""
    if frame.empty:
        raise DatasetError(
            f"{csv} lists no images (a header and no rows): the download was incomplete or the "
            f"file was overwritten; replace it with the official file ({_HELP})."
        )


def _listed(value: Any, n: int) -> list[Any]:
    if isinstance(value, (str, float, int)) or value is None:
        return [value] * n
    return list(value)


def _files_in(folder: Path) -> set[str]:
    """Names of the files in ``folder`` (empty when it does not exist), in one directory scan."""
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as entries:
        return {entry.name for entry in entries if entry.is_file()}


def _folder(folder: Path) -> str:
    return f"{folder}" + ("" if folder.is_dir() else " (folder does not exist)")


def _apply_missing(
    table: pd.DataFrame, present: np.ndarray, missing: Missing, csv: Path, where: str
) -> pd.DataFrame:
    """Raise, drop (with a warning) or keep the rows whose image is absent from ``where``."""
    absent = ~present
    n_absent = int(absent.sum())
    if n_absent == 0 or missing == "keep":
        return table
    if missing == "error":
        first = ", ".join(table.loc[absent, "image_id"].head(5))
        raise DatasetError(
            f"{n_absent} of {len(table)} images listed in {csv} are missing from {where}, "
            f"e.g. {first}. Put the images there ({_HELP}), or pass missing='drop' "
            "(CLI: --skip-missing) to keep only the images present."
        )
    if n_absent == len(table):
        raise DatasetError(
            f"none of the {len(table)} images listed in {csv} is in {where}; "
            f"put the images there ({_HELP})."
        )
    warnings.warn(
        f"dropped {n_absent} of {len(table)} images listed in {csv}: not found in {where}",
        UserWarning,
        stacklevel=3,
    )
    return table.loc[present].reset_index(drop=True)


def _reject_unknown_labels(
    raw: pd.Series, known: Iterable[str], path: Path, first_row: int, ids: Sequence[str]
) -> None:
    allowed = list(known)
    bad = np.flatnonzero(~raw.isin(allowed).to_numpy())
    if bad.size:
        values = ", ".join(repr(raw.iloc[i]) for i in bad[:5])
        raise DatasetError(
            f"{path}: {bad.size} row(s) with an unknown label ({values}) at "
            f"{_row_names(bad[:5], ids, first_row)}; allowed values: {', '.join(allowed)}. "
            "Fix or remove those rows."
        )


# --------------------------------------------------------------------------- readers


def read_isic2019(root: str | Path, missing: Missing = "error") -> pd.DataFrame:
    """ISIC 2019 training set: one-hot ground truth, optional metadata, images folder.

    Classes: the 8 ISIC 2019 classes. ``lesion_id`` from the metadata (the image id when empty or
    when there is no metadata file). ``missing="keep"`` keeps rows whose image is absent.
    """
    _check_missing_mode(missing)
    root = Path(root).expanduser()
    csv = root / ISIC2019_GROUND_TRUTH
    _require_file(csv, "ISIC 2019 ground truth")
    truth = _read_csv(csv)
    columns = list(truth.columns)
    if not columns or columns[0].lower() != "image":
        raise DatasetError(
            f"{csv}: the first column must be 'image', found {columns[:1]}; "
            f"replace it with the official ground-truth file ({_HELP})."
        )
    truth = truth.rename(columns={columns[0]: "image", **{c: c.upper() for c in columns[1:]}})
    expected = [*ISIC2019_CLASSES, "UNK"]
    unknown = [c for c in truth.columns[1:] if c not in expected]
    absent = [c for c in ISIC2019_CLASSES if c not in truth.columns]
    if unknown or absent:
        problem = f"unknown class column(s) {unknown}" if unknown else f"missing column(s) {absent}"
        raise DatasetError(
            f"{csv}: {problem}; expected the columns image, {', '.join(expected)} "
            "(UNK optional). Rename or remove the column."
        )
    _require_rows(truth, csv)
    ids = truth["image"].tolist()
    _check_duplicates(truth["image"], csv, first_row=2)
    onehot = truth[expected if "UNK" in truth.columns else list(ISIC2019_CLASSES)]
    values = onehot.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isin(values, (0.0, 1.0)).all(axis=1))
    if bad.size:
        raise DatasetError(
            f"{csv}: {bad.size} row(s) with values other than 0/1 at "
            f"{_row_names(bad[:5], ids, 2)}; each class column must hold 0 or 1 (0.0/1.0)."
        )
    if "UNK" in truth.columns:
        unk = np.flatnonzero(values[:, -1] == 1)
        if unk.size:
            raise DatasetError(
                f"{csv}: {unk.size} row(s) labelled UNK at {_row_names(unk[:5], ids, 2)}; the UNK "
                "class is for test data only: remove those rows or give them a class."
            )
        values = values[:, :-1]
    per_row = values.sum(axis=1)
    for count, wrong in ((0, per_row == 0), (2, per_row > 1)):
        rows = np.flatnonzero(wrong)
        if rows.size:
            how = "no label" if count == 0 else "more than one label"
            raise DatasetError(
                f"{csv}: {rows.size} row(s) with {how} at {_row_names(rows[:5], ids, 2)}; "
                "each row needs exactly one 1 among the class columns."
            )
    labels = np.asarray(ISIC2019_CLASSES)[values.argmax(axis=1)]

    meta = _isic2019_metadata(root / ISIC2019_METADATA, truth["image"])
    images = root / ISIC2019_IMAGES
    names = _files_in(images)
    table = _make_table(
        truth["image"],
        [os.path.join(images.resolve(), f"{i}.jpg") for i in ids],
        labels,
        ISIC2019_CLASSES,
        lesion_ids=meta["lesion_id"],
        age=meta["age"],
        sex=meta["sex"],
        site=meta["site"],
        source=csv,
    )
    present = np.array([f"{i}.jpg" in names for i in ids], dtype=bool)
    return _apply_missing(table, present, missing, csv, _folder(images))


def _isic2019_metadata(path: Path, image_ids: pd.Series) -> pd.DataFrame:
    """lesion_id/age/sex/site aligned with ``image_ids`` (fallbacks when the file is absent)."""
    if not path.is_file():
        return pd.DataFrame({"lesion_id": image_ids, "age": np.nan, "sex": np.nan, "site": np.nan})
    meta = _read_csv(path)
    if "image" not in meta.columns:
        raise DatasetError(
            f"{path}: no 'image' column (found {list(meta.columns)}); expected the official "
            f"columns {', '.join(ISIC2019_METADATA_COLUMNS)}. Replace the file or delete it "
            "(the metadata is optional)."
        )
    _check_duplicates(meta["image"], path, first_row=2)
    _check_lesion_column(meta, path)
    meta = meta.set_index("image").reindex(image_ids.tolist()).fillna("")
    meta.index = image_ids.index
    empty = pd.Series("", index=meta.index)
    return pd.DataFrame(
        {
            "lesion_id": _lesion_ids(meta, image_ids),
            "age": meta.get("age_approx", empty),
            "sex": _text_or_nan(meta.get("sex", empty)),
            "site": _text_or_nan(meta.get("anatom_site_general", empty)),
        }
    )


def read_isic2016(
    root: str | Path, split: Literal["train", "test", "all"] = "all", missing: Missing = "error"
) -> pd.DataFrame:
    """ISIC 2016 Part 3 (ISBI 2016): headerless CSV of ``image,label`` + the images folder.

    Labels ``benign``/``malignant`` (training file) or ``0``/``1`` (test file, ``0.0``/``1.0``
    accepted), whitespace and case ignored. Classes ``("benign", "malignant")``; ``split`` set.
    ``split="all"``: the training set, plus the official test set when its ground-truth CSV and
    its images folder are in ``root`` (the CSV alone with ``missing="keep"``); then
    :func:`split_table` keeps it as the test split.
    """
    _check_missing_mode(missing)
    root = Path(root).expanduser()
    if split == "all":
        parts = [read_isic2016(root, "train", missing)]
        csv_name, images_name = ISIC2016_FILES["test"]
        if (root / csv_name).is_file() and ((root / images_name).is_dir() or missing == "keep"):
            parts.append(read_isic2016(root, "test", missing))
        table = pd.concat(parts, ignore_index=True)
        table.attrs["source"] = str(root)
        return table
    if split not in ISIC2016_FILES:
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    csv_name, images_name = ISIC2016_FILES[split]
    csv = root / csv_name
    _require_file(csv, f"ISIC 2016 Part 3 {split} ground truth")
    frame = _read_csv(csv, header=False)
    if frame.shape[1] != 2:
        raise DatasetError(
            f"{csv}: expected 2 columns without a header (image id, label), found "
            f"{frame.shape[1]}; replace it with the official file ({_HELP})."
        )
    frame.columns = ["image", "label"]
    _require_rows(frame, csv)
    ids = frame["image"].tolist()
    _check_duplicates(frame["image"], csv, first_row=1)
    raw = frame["label"].str.lower()
    _reject_unknown_labels(raw, _ISIC2016_LABELS, csv, 1, ids)
    images = root / images_name
    names = _files_in(images)
    table = _make_table(
        ids,
        [os.path.join(images.resolve(), f"{i}.jpg") for i in ids],
        raw.map(_ISIC2016_LABELS),
        BINARY_CLASSES,
        split=split,
        source=csv,
    )
    present = np.array([f"{i}.jpg" in names for i in ids], dtype=bool)
    return _apply_missing(table, present, missing, csv, _folder(images))


def read_ham10000(root: str | Path, missing: Missing = "error") -> pd.DataFrame:
    """HAM10000: ``HAM10000_metadata.csv`` + images in ``HAM10000_images/``, the official
    ``HAM10000_images_part_1/`` and ``_part_2/``, or next to the CSV.

    ``dx`` is mapped to ISIC 2019 codes; classes = the ISIC 2019 classes that occur, in ISIC 2019
    order. ``age``, ``sex`` and ``localization`` become ``age``, ``sex`` and ``site``.
    """
    _check_missing_mode(missing)
    root = Path(root).expanduser()
    csv = root / HAM10000_METADATA
    _require_file(csv, "HAM10000 metadata")
    frame = _read_csv(csv)
    for column in ("image_id", "dx"):
        if column not in frame.columns:
            raise DatasetError(
                f"{csv}: no {column!r} column (found {list(frame.columns)}); expected "
                f"lesion_id, image_id, dx, dx_type, age, sex, localization ({_HELP})."
            )
    _require_rows(frame, csv)
    ids = frame["image_id"].tolist()
    _check_duplicates(frame["image_id"], csv, first_row=2)
    _check_lesion_column(frame, csv)
    dx = frame["dx"].str.lower()
    _reject_unknown_labels(dx, HAM10000_TO_ISIC2019, csv, 2, ids)
    labels = dx.map(HAM10000_TO_ISIC2019)

    folders = [root / name for name in HAM10000_IMAGE_DIRS] + [root]
    found: dict[str, Path] = {}
    for folder in reversed(folders):  # earlier folders win
        found.update(dict.fromkeys(_files_in(folder), folder))
    default = next((f for f in folders if f.is_dir() and f != root), folders[0])
    paths = [os.path.join(found.get(f"{i}.jpg", default).resolve(), f"{i}.jpg") for i in ids]
    empty = pd.Series("", index=frame.index)
    table = _make_table(
        ids,
        paths,
        labels,
        ISIC2019_CLASSES,
        lesion_ids=_lesion_ids(frame, frame["image_id"]),
        age=frame.get("age", empty),
        sex=_text_or_nan(frame.get("sex", empty)),
        site=_text_or_nan(frame.get("localization", empty)),
        source=csv,
    )
    present = np.array([f"{i}.jpg" in found for i in ids], dtype=bool)
    where = f"{', '.join(_folder(f) for f in folders[:-1])} or next to the CSV"
    table = _apply_missing(table, present, missing, csv, where)
    return _restrict_classes(table)


def _restrict_classes(table: pd.DataFrame) -> pd.DataFrame:
    """Keep only the categories that occur (order kept) and recompute ``target``."""
    table["label"] = table["label"].cat.remove_unused_categories()
    table["target"] = table["label"].cat.codes.astype(np.int64)
    return table


def read_imagefolder(root: str | Path, missing: Missing = "error") -> pd.DataFrame:
    """``root/<class>/*.{jpg,jpeg,png}``, or ``root/<split>/<class>/...`` with split folders
    ``train``/``val``/``valid``/``validation``/``test`` (their name goes in ``split``, as
    train/val/test). Classes = sorted folder names. Hidden folders (``.ipynb_checkpoints``) are
    ignored. ``image_id`` is the path relative to ``root`` without suffix. ``missing`` is accepted
    for a uniform signature (listed files always exist).
    """
    _check_missing_mode(missing)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder not found: expected {root}/<class>/*.jpg; {_HELP}.")
    subdirs = _subfolders(root)
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_FOLDERS]
    if split_dirs and len(split_dirs) != len(subdirs):
        others = sorted(d.name for d in subdirs if d not in split_dirs)
        raise DatasetError(
            f"{root} mixes split folders ({sorted(d.name for d in split_dirs)}) and other folders "
            f"({others}); use either {root}/<class>/ or {root}/<split>/<class>/ with split in "
            f"{sorted(SPLIT_FOLDERS)}."
        )
    parts = [(SPLIT_FOLDERS[d.name.lower()], d) for d in split_dirs] or [(None, root)]
    rows: list[tuple[str, str, str, str | None]] = []
    for split, folder in parts:
        class_dirs = _subfolders(folder)
        if not class_dirs:
            raise DatasetError(
                f"{folder} has no class sub-folders; expected {folder}/<class>/*.jpg "
                "(one folder per class, the folder name is the label)."
            )
        for class_dir in class_dirs:
            files = sorted(
                p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise DatasetError(
                    f"class folder {class_dir} has no images (.jpg, .jpeg, .png); "
                    "add images or delete the folder."
                )
            for file in files:
                image_id = file.relative_to(root).with_suffix("").as_posix()
                rows.append((image_id, str(file.resolve()), class_dir.name, split))
    ids, paths, labels, splits = zip(*rows, strict=True)
    return _make_table(
        ids,
        paths,
        labels,
        sorted(set(labels)),
        split=None if parts[0][0] is None else splits,
        source=root,
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_table(
    root: str | Path, layout: str, missing: Missing = "error", **kw: Any
) -> pd.DataFrame:
    """Read ``root`` with the reader for ``layout`` (one of :data:`LAYOUTS`).

    ``"synthetic"`` writes :func:`lesionlib.synthetic.write_isic2019_sample` to ``root`` (``kw``
    passed to it) unless the ground truth is already there, then reads it as ISIC 2019 with the
    classes restricted to those present. For the other layouts ``kw`` goes to the reader.
    """
    if layout == "synthetic":
        from lesionlib.synthetic import write_isic2019_sample  # synthetic imports this module

        if not (Path(root) / ISIC2019_GROUND_TRUTH).is_file():
            write_isic2019_sample(root, **kw)
        return _restrict_classes(read_isic2019(root, missing=missing))
    readers: dict[str, Callable[..., pd.DataFrame]] = {
        "isic2019": read_isic2019,
        "isic2016": read_isic2016,
        "ham10000": read_ham10000,
        "imagefolder": read_imagefolder,
    }
    if layout not in readers:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return readers[layout](root, missing=missing, **kw)


def classes_of(table: pd.DataFrame) -> list[str]:
    """The class list in model order (the categories of ``table['label']``)."""
    if "label" not in table.columns or not isinstance(table["label"].dtype, pd.CategoricalDtype):
        raise DatasetError(
            "the table has no categorical 'label' column; build it with a lesionlib.datasets reader"
        )
    return [str(c) for c in table["label"].cat.categories]


# --------------------------------------------------------------------------- splits


def split_table(
    table: pd.DataFrame, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> pd.DataFrame:
    """A copy of ``table`` with a ``split`` column (train/val/test), stratified by ``target`` and
    grouped by ``lesion_id`` (no lesion in two splits); deterministic for a seed.

    Fractions are of the whole table; 0 means no such split. Rows with an official ``test`` split
    keep it and only the rest is divided. A class with at least one lesion per split appears in
    every split that is carved here. A table without two classes raises :class:`DatasetError`
    (:func:`check_trainable`); one too small for the fractions is split with a ``UserWarning``
    per problem (:func:`split_warnings`).
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), not {value}")
    if val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction + test_fraction must be below 1 (train needs rows)")
    check_trainable(table)
    for message in split_warnings(table, val_fraction, test_fraction):
        warnings.warn(message, UserWarning, stacklevel=2)
    out = table.copy()
    targets = out["target"].to_numpy()
    groups = out["lesion_id"].astype(str).to_numpy()
    official = (
        out["split"].eq("test").to_numpy() if "split" in out else np.zeros(len(out), dtype=bool)
    )
    split = np.where(official, "test", "train").astype(object)
    carved = ["train"]
    if test_fraction > 0 and not official.any():
        split[_carve(targets, groups, test_fraction, seed)] = "test"
        carved.append("test")
    if val_fraction > 0:
        rest = np.flatnonzero(split == "train")
        share = val_fraction * len(out) / len(rest)
        split[rest[_carve(targets[rest], groups[rest], share, seed)]] = "val"
        carved.append("val")
    _cover_classes(split, targets, groups, carved, np.random.default_rng(seed))
    out["split"] = split.astype(str)
    return out


def check_trainable(table: pd.DataFrame) -> None:
    """Raise :class:`DatasetError` unless ``table`` has images of at least two classes.

    A table with no rows cannot be split, and one with a single class trains a "classifier" that
    can only answer that class (with perfect scores); both are refused before training starts.
    """
    if table.empty:
        raise DatasetError(
            f"{_source(table)} has no images (the table has no rows); check the data folder and "
            "the filters applied to the table, or see data/README.md for the layouts."
        )
    counts = table["label"].astype(str).value_counts()
    if len(counts) < 2:
        raise DatasetError(
            f"{_source(table)}: all {len(table)} images are of one class ({counts.index[0]!r}); a "
            "classifier needs at least two. Add the images of the other classes (the whole "
            "dataset, not one class of it), or check the labels (e.g. the dx column)."
        )


def split_warnings(
    table: pd.DataFrame, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> list[str]:
    """Why :func:`split_table` with these fractions cannot split ``table`` as asked, one message
    per problem with the counts, what the split will do and the fix; empty when all is well.

    A class needs at least one lesion in each split carved here (train, and val/test unless its
    fraction is 0 or the test split is official), or it is missing from one of them. A held-out
    split whose share of the table is less than one image per class cannot hold every class.
    """
    official = table["split"].eq("test") if "split" in table else pd.Series(False, table.index)
    carved = ["train"] + ["val"] * (val_fraction > 0)
    carved += ["test"] * (test_fraction > 0 and not official.any())
    fractions = {"val": val_fraction, "test": test_fraction}
    messages = [
        _few_lesions(table, table[~official.to_numpy()], carved),
        _few_images(table, {s: fractions[s] for s in carved[1:]}),
    ]
    return [m for m in messages if m]


def _few_lesions(table: pd.DataFrame, rest: pd.DataFrame, carved: list[str]) -> str | None:
    """The warning for classes with fewer lesions in ``rest`` (the rows split_table divides)
    than there are ``carved`` splits, or None."""
    labels = rest["label"].astype(str)
    lesions = rest.groupby(labels)["lesion_id"].nunique()
    images = labels.value_counts()
    short = [c for c in table["label"].astype(str).unique() if lesions.get(c, 0) < len(carved)]
    if not short:
        return None
    listed = "; ".join(
        f"{c!r}: {images[c]} image(s) of {lesions[c]} lesion(s)"
        if c in images
        else f"{c!r}: only in the official test split (never learnt)"
        for c in short
    )
    return (
        f"{_source(table)}: {len(short)} class(es) have fewer lesions than the {len(carved)} "
        f"splits ({', '.join(carved)}): {listed}. The split puts them in train first, so each "
        "will be missing from a held-out split and get no score there. Add images of those "
        "classes, drop them from the table, or set a fraction to 0 (val_fraction= / "
        "test_fraction=; command line: --val-fraction / --test-fraction)."
    )


def _few_images(table: pd.DataFrame, held_out: dict[str, float]) -> str | None:
    """The warning for a table whose ``held_out`` fractions ask for less than one image per
    class, or None."""
    n_classes = table["label"].astype(str).nunique()
    small = {s: f * len(table) for s, f in held_out.items() if f * len(table) < n_classes}
    if not small:
        return None
    asked = " and ".join(f"{s}_fraction={f}" for s, f in held_out.items())
    sizes = ", ".join(f"{s} about {size:.1f}" for s, size in small.items())
    return (
        f"{_source(table)}: {len(table)} images are too few for {asked}: they ask for {sizes} "
        f"images, less than one per class ({n_classes} classes). The split takes whole lesions, "
        f"so {' and '.join(small)} will be larger than asked and hold only a few images; their "
        "scores will mean little. Use more data, or other fractions (0 drops that split)."
    )


def limit_train(table: pd.DataFrame, max_images: int | None, seed: int = 0) -> pd.DataFrame:
    """Keep a stratified random subset of about ``max_images`` training rows; other splits stay.

    For quick runs on a CPU: the split itself does not change, so validation and test numbers
    stay comparable with a full run. ``None`` (or a number >= the training rows) keeps all.
    """
    if "split" not in table.columns:
        raise ValueError("limit_train needs a 'split' column: call split_table(table) first")
    train = table[table["split"] == "train"]
    if max_images is None or max_images >= len(train):
        return table
    kept = train.groupby("target").sample(frac=max_images / len(train), random_state=seed)
    print(f"Training on a stratified subset: {len(kept):,} of {len(train):,} train images")
    return pd.concat([kept, table[table["split"] != "train"]]).sort_index()


def _carve(targets: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of about ``fraction`` of the rows: the first fold of a StratifiedGroupKFold."""
    n_groups = len(np.unique(groups))
    largest_class = np.unique(targets, return_counts=True)[1].max()
    n_splits = min(max(2, round(1 / fraction)), n_groups, largest_class)
    if n_splits < 2:
        raise DatasetError(
            f"cannot split {len(targets)} image(s) from {n_groups} lesion(s): a split needs at "
            "least two lesions of one class; use more data or set that fraction to 0."
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        _, chosen = next(folds.split(np.zeros(len(targets)), targets, groups))
    mask = np.zeros(len(targets), dtype=bool)
    mask[chosen] = True
    return mask


def _cover_classes(
    split: np.ndarray,
    targets: np.ndarray,
    groups: np.ndarray,
    carved: list[str],
    rng: np.random.Generator,
) -> None:
    """Move whole lesions so that every carved split has each class that has enough lesions (one
    per split), and train has every class, however few its lesions.

    StratifiedGroupKFold balances proportions but may leave a class with few lesions out of a
    small fold; a lesion is moved from the split holding the most lesions of that class. A class
    with too few lesions for every split goes to train first: what is never learnt cannot be
    scored either (:func:`split_warnings` names such classes).
    """
    movable = np.isin(split, carved)
    for target in np.unique(targets[movable]):
        rows = movable & (targets == target)
        enough = len(np.unique(groups[rows])) >= len(carved)
        for receiver in carved:  # "train" first
            per_split = {s: np.unique(groups[rows & (split == s)]) for s in carved}
            if per_split[receiver].size or not (enough or receiver == "train"):
                continue
            donor = max(carved, key=lambda s: per_split[s].size)
            if per_split[donor].size < (2 if enough else 1):
                continue
            lesion = rng.choice(per_split[donor])
            split[movable & (groups == lesion)] = receiver


# --------------------------------------------------------------------------- images


def load_image(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Open an image as 8-bit RGB with EXIF orientation applied (fully decoded).

    Transparency is composited on white; 16-bit images are scaled to 8 bits. With ``draft_size``
    a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale whose sides stay >= ``draft_size``
    (much faster for large originals; other formats ignore it). Raises :class:`DatasetError`
    naming the file when it cannot be decoded.
    """
    try:
        with Image.open(path) as img:
            if draft_size is not None:
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError as err:
        raise DatasetError(
            f"cannot read image {path}: it is too large to decode safely ({err}). Replace it with "
            f"a smaller copy or delete it; {_VALIDATE}."
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(
            f"cannot read image {path}: {err}. The file is missing, empty, truncated or not an "
            f"image: delete or replace it (re-download it); {_VALIDATE}."
        ) from err


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I"):  # 16-bit greyscale (I;16 or I): scale 0..65535 to 0..255
        values = np.asarray(img, dtype=np.float64)
        eight_bit = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(eight_bit, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _torchcodec_decoder() -> Callable[[bytes], torch.Tensor]:
    from torchcodec.decoders import decode_jpeg  # image decoding came in TorchCodec 0.16

    return lambda data: decode_jpeg(data, mode="RGB")


def _torchvision_decoder() -> Callable[[bytes], torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(data: bytes) -> torch.Tensor:
        with warnings.catch_warnings():  # deprecated from torchvision 0.29 in favour of TorchCodec
            warnings.simplefilter("ignore")
            encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, apply_exif_orientation=True)

    return decode


JPEG_DECODERS: dict[str, Callable[[], Callable[[bytes], torch.Tensor]]] = {
    "torchcodec": _torchcodec_decoder,
    "torchvision.io": _torchvision_decoder,
}
"""JPEG decoders in the order :func:`jpeg_decoder` tries them; Pillow is the last resort."""


@functools.cache
def jpeg_decoder() -> tuple[str, Callable[[bytes], torch.Tensor] | None]:
    """``(description, decode)`` of the first JPEG decoder that loads and decodes a test image.

    TorchCodec when its image decoder loads (a build made for another torch or CUDA may import
    and still fail to decode), then ``torchvision.io.decode_jpeg`` (shipped with every
    torchvision, built for its torch), else ``("Pillow (why)", None)``: :func:`read_image` then
    decodes with Pillow. Decided once per process; ``print_environment`` prints the description.
    """
    probe = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(probe, "JPEG")
    failures = []
    for name, make in JPEG_DECODERS.items():
        try:
            decode = make()
            if decode(probe.getvalue()).shape != (3, 8, 8):
                raise RuntimeError("decoded the test image to the wrong shape")
        except Exception as err:  # not installed, built for another torch/CUDA, no image decoder
            why = (str(err).strip().splitlines() or [""])[0][:120]  # load errors run to pages
            failures.append(f"{name}: {type(err).__name__}: {why}")
            continue
        module = name.split(".")[0]
        return f"{name} {importlib.metadata.version(module)}", decode
    return f"Pillow {Image.__version__} ({'; '.join(failures)})", None


def read_image(path: str | Path) -> torch.Tensor:
    """The image at ``path`` as a uint8 3×H×W RGB tensor, EXIF orientation applied.

    JPEGs are decoded straight into a tensor by :func:`jpeg_decoder` (TorchCodec or
    torchvision.io): the same pixels as Pillow, about twice as fast on full-size originals. Pillow
    reads the header first, so its decompression-bomb limit holds. Other formats, JPEGs the
    decoder rejects and machines with neither decoder go through :func:`load_image`, which raises
    :class:`DatasetError` naming the file.
    """
    decode = jpeg_decoder()[1]
    if decode is not None:
        try:
            data = Path(path).read_bytes()
        except OSError:
            data = b""  # load_image reports it
        if data.startswith(_JPEG_MAGIC):
            try:
                Image.open(io.BytesIO(data)).close()  # the header only: Pillow's bomb check
                return decode(data)
            except Exception:  # too large, truncated, 12-bit, ...: load_image decodes it or
                pass  # raises the DatasetError that names the file and the fix
    return pil_to_tensor(load_image(path))


def save_uploads(value: Any, folder: str | Path) -> list[Path]:
    """Write the files of an upload into ``folder`` and return their paths, to read like any image.

    ``value`` is what the upload gave: ``FileUpload.value`` of ipywidgets 8 (a tuple of dicts
    with ``name`` and ``content``) or of ipywidgets 7, as on Colab (a dict name -> dict with
    ``content``), or the dict name -> bytes of Colab's ``google.colab.files.upload()``.
    """
    if isinstance(value, dict):
        files = [(name, f["content"] if isinstance(f, dict) else f) for name, f in value.items()]
    else:
        files = [(f["name"], f["content"]) for f in value]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in files:
        path = folder / Path(name).name  # the file name only: never a folder the browser names
        path.write_bytes(bytes(content))
        paths.append(path)
    return paths


class LesionDataset(Dataset):
    """A map-style torch Dataset over a table: ``dataset[i] -> (image, target)``.

    ``image`` is ``transform(read_image(path))``: the transform gets a uint8 3×H×W RGB tensor
    (every torchvision v2 transform takes one); without a transform the tensor itself.
    ``classes`` is the class list in model order; ``targets`` a numpy array of the targets.
    """

    def __init__(
        self, table: pd.DataFrame, transform: Callable[[torch.Tensor], Any] | None = None
    ) -> None:
        self.classes = classes_of(table)
        self.paths: list[str] = table["path"].astype(str).tolist()
        self.targets: np.ndarray = table["target"].to_numpy(dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = read_image(self.paths[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


# --------------------------------------------------------------------------- validation


def _scan_image(path: str) -> tuple[str, tuple[int, int], str] | str:
    """``(sha1, size after EXIF orientation, stored mode)`` of a readable image, else the error."""
    try:
        size = load_image(path).size
    except DatasetError as err:
        return str(err)
    with Image.open(path) as header:
        mode = header.mode
    return hashlib.sha1(Path(path).read_bytes()).hexdigest(), size, mode


def validate_table(
    table: pd.DataFrame,
    progress: bool = True,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> dict[str, Any]:
    """Decode every image of ``table`` and report what would break or bias training.

    Each file is fully decoded with :func:`load_image` (truncated files fail there, not in an
    epoch), its stored PIL mode read from the header and its bytes hashed (SHA-1); a few threads
    share the work. Returns a JSON-safe dict: ``images`` (rows), ``classes`` (``{class: rows}`` in
    model order), ``unreadable`` (``[{"path", "error"}]``: missing, empty, truncated, not an
    image, too large), ``duplicates`` (``[{"sha1", "paths"}]``: byte-identical files under
    different paths), ``duplicate_ids`` (image ids listed more than once), ``size_range``
    (``min_width, max_width, min_height, max_height`` after EXIF orientation; None when no image
    is readable), ``modes`` (``{stored PIL mode: readable files}``, e.g. RGB, L, CMYK, I;16) and
    ``split_warnings`` (:func:`split_warnings` for the fractions: classes or a table too small
    to split).
    """
    classes = classes_of(table)
    paths = list(dict.fromkeys(table["path"].astype(str)))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        scans = list(
            tqdm(
                pool.map(_scan_image, paths),
                total=len(paths),
                desc="validating images",
                disable=not progress,
            )
        )
    scanned = dict(zip(paths, scans, strict=True))
    unreadable = [{"path": p, "error": s} for p, s in scanned.items() if isinstance(s, str)]
    readable = {p: s for p, s in scanned.items() if not isinstance(s, str)}
    by_digest: dict[str, list[str]] = {}
    for path, (digest, _, _) in readable.items():
        by_digest.setdefault(digest, []).append(path)
    ids = table["image_id"].astype(str) if "image_id" in table.columns else pd.Series(dtype=str)
    widths = [size[0] for _, size, _ in readable.values()]
    heights = [size[1] for _, size, _ in readable.values()]
    counts = table["label"].value_counts(sort=False)
    return {
        "images": len(table),
        "classes": {cls: int(counts.get(cls, 0)) for cls in classes},
        "unreadable": unreadable,
        "duplicates": [{"sha1": d, "paths": g} for d, g in by_digest.items() if len(g) > 1],
        "duplicate_ids": ids[ids.duplicated()].unique().tolist(),
        "size_range": {
            "min_width": min(widths, default=None),
            "max_width": max(widths, default=None),
            "min_height": min(heights, default=None),
            "max_height": max(heights, default=None),
        },
        "modes": dict(Counter(mode for _, _, mode in readable.values())),
        "split_warnings": split_warnings(table, val_fraction, test_fraction),
    }


def drop_unreadable(table: pd.DataFrame, report: dict[str, Any]) -> pd.DataFrame:
    """``table`` without the rows whose image ``report`` (from :func:`validate_table`) lists as
    unreadable; index reset, class list kept. Raises :class:`DatasetError` if none is left."""
    bad = {entry["path"] for entry in report["unreadable"]}
    keep = ~table["path"].astype(str).isin(bad)
    if not keep.any():
        raise DatasetError(
            f"none of the {len(table)} images can be read, e.g. {report['unreadable'][0]['error']}"
        )
    return table.loc[keep].reset_index(drop=True)
