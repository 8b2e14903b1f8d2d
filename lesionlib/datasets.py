"""Readers of the official layouts -> one table; grouped, stratified splits; the torch Dataset.
A table has one row per image: ``image_id, path, label (categorical), target, lesion_id, age,
sex, site`` (+ ``split`` where the source has official splits)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold
from torch.utils.data import Dataset

from lesionlib import layouts
from lesionlib.images import read_image
from lesionlib.layouts import ISIC2019_CLASSES, SPLITS, DatasetError

Missing = Literal["error", "drop", "keep"]  # absent images: raise, drop with a warning, keep

_ISIC2016_LABELS = {"benign": "benign", "malignant": "malignant", "0": "benign", "1": "malignant",
                    "0.0": "benign", "1.0": "malignant"}  # fmt: skip
_HELP = "see data/README.md for where to get the data and how to lay out its files"
_OFFICIAL = f"replace it with the official file ({_HELP})"


def read_isic2019(root: str | Path, missing: Missing = "error") -> pd.DataFrame:
    """ISIC 2019 training set: one-hot ground truth, optional metadata, images folder."""
    root = Path(root).expanduser()
    csv = root / layouts.ISIC2019_GROUND_TRUTH
    truth = _read_csv(csv, "ISIC 2019 ground truth")
    if truth.columns[0].lower() != "image":
        found = list(truth.columns[:1])
        raise DatasetError(f"{csv}: the first column must be 'image', found {found}; {_OFFICIAL}.")
    truth.columns = ["image", *(c.upper() for c in truth.columns[1:])]
    expected = [*ISIC2019_CLASSES, "UNK"]
    unknown = [c for c in truth.columns[1:] if c not in expected]
    absent = [c for c in ISIC2019_CLASSES if c not in truth.columns]
    if unknown or absent:
        problem = f"unknown class column(s) {unknown}" if unknown else f"missing column(s) {absent}"
        raise DatasetError(
            f"{csv}: {problem}; expected the columns image, {', '.join(expected)} "
            "(UNK optional). Rename or remove the column."
        )
    ids = _check_ids(truth, "image", csv, first_row=2)
    onehot = truth[[c for c in expected if c in truth.columns]]
    values = onehot.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    n_labels = values[:, :8].sum(axis=1)
    one_label = "each row needs exactly one 1 among the class columns."
    for wrong, what, fix in [  # the first problem found is reported
        (~np.isin(values, (0, 1)).all(axis=1), "with values other than 0/1",
         "each class column must hold 0 or 1 (0.0/1.0)."),
        (values[:, 8:].sum(axis=1) > 0, "labelled UNK",
         "the UNK class is for test data only: remove those rows or give them a class."),
        (n_labels == 0, "with no label", one_label),
        (n_labels > 1, "with more than one label", one_label),
    ]:  # fmt: skip
        _refuse_rows(csv, wrong, what, fix, ids, first_row=2)
    frame = _isic2019_metadata(root / layouts.ISIC2019_METADATA, ids)
    frame["label"] = np.asarray(ISIC2019_CLASSES)[values[:, :8].argmax(axis=1)]
    return _finish(frame, ISIC2019_CLASSES, csv, missing, [root / layouts.ISIC2019_IMAGES])


def _isic2019_metadata(path: Path, ids: list[str]) -> pd.DataFrame:
    """``image_id`` and, from the optional metadata file, ``lesion_id, age, sex, site``."""
    if not path.is_file():
        return pd.DataFrame({"image_id": ids})
    meta = _read_csv(path, "ISIC 2019 metadata")
    official = ", ".join(layouts.ISIC2019_METADATA_COLUMNS)
    expected = f"the official columns {official}. Replace or delete it (the metadata is optional)"
    _check_columns(meta, path, ["image"], expected)
    _check_ids(meta, "image", path, first_row=2, empty_ok=True)
    names = dict(lesion_id="lesion_id", age_approx="age", sex="sex", anatom_site_general="site")
    meta = meta.set_index("image").reindex(index=ids, columns=list(names)).rename(columns=names)
    return meta.reset_index(drop=True).assign(image_id=ids)


def read_isic2016(
    root: str | Path, split: Literal["train", "test", "all"] = "all", missing: Missing = "error"
) -> pd.DataFrame:
    """ISIC 2016 Part 3: a headerless ``image,label`` CSV (benign/malignant or 0/1) + images;
    ``"all"`` adds the official test set if its CSV and images (or ``missing="keep"``) are there."""
    root = Path(root).expanduser()
    if split == "all":
        parts = [read_isic2016(root, "train", missing)]
        csv_name, images_name = layouts.ISIC2016_FILES["test"]
        if (root / csv_name).is_file() and ((root / images_name).is_dir() or missing == "keep"):
            parts.append(read_isic2016(root, "test", missing))
        table = pd.concat(parts, ignore_index=True)
        table.attrs["source"] = str(root)
        return table
    if split not in layouts.ISIC2016_FILES:
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    csv, images = (root / name for name in layouts.ISIC2016_FILES[split])
    frame = _read_csv(csv, f"ISIC 2016 Part 3 {split} ground truth", header=False)
    if frame.shape[1] != 2:
        raise DatasetError(
            f"{csv}: expected 2 columns without a header (image id, label), found "
            f"{frame.shape[1]}; {_OFFICIAL}."
        )
    frame.columns = ["image_id", "label"]
    ids = _check_ids(frame, "image_id", csv, first_row=1)
    frame["label"] = _map_labels(frame["label"].str.lower(), _ISIC2016_LABELS, csv, 1, ids)
    return _finish(frame, layouts.BINARY_CLASSES, csv, missing, [images]).assign(split=split)


def read_ham10000(root: str | Path, missing: Missing = "error") -> pd.DataFrame:
    """HAM10000: ``HAM10000_metadata.csv`` + images in ``HAM10000_images/``, its ``_part_1/``
    and ``_part_2/``, or next to the CSV; ``dx`` mapped to the ISIC 2019 classes that occur."""
    root = Path(root).expanduser()
    csv = root / layouts.HAM10000_METADATA
    frame = _read_csv(csv, "HAM10000 metadata")
    expected = f"lesion_id, image_id, dx, dx_type, age, sex, localization ({_HELP})"
    _check_columns(frame, csv, ["image_id", "dx"], expected)
    ids = _check_ids(frame, "image_id", csv, first_row=2)
    frame["label"] = _map_labels(frame["dx"].str.lower(), layouts.HAM10000_TO_ISIC2019, csv, 2, ids)
    frame["site"] = frame.get("localization", "")
    folders = [*(root / name for name in layouts.HAM10000_IMAGE_DIRS), root]
    return restrict_classes(_finish(frame, ISIC2019_CLASSES, csv, missing, folders))


def read_imagefolder(root: str | Path) -> pd.DataFrame:
    """``root/<class>/*.{jpg,jpeg,png}`` or ``root/<split>/<class>/...``: classes are the sorted
    folder names (hidden ones ignored); ``image_id`` the path under ``root`` without suffix."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder not found: expected {root}/<class>/*.jpg; {_HELP}.")
    subdirs = _entries(root, Path.is_dir)
    split_dirs = [d for d in subdirs if d.name.lower() in layouts.SPLIT_FOLDERS]
    if split_dirs and len(split_dirs) != len(subdirs):
        others = sorted(d.name for d in subdirs if d not in split_dirs)
        raise DatasetError(
            f"{root} mixes split folders ({sorted(d.name for d in split_dirs)}) and other folders "
            f"({others}); use either {root}/<class>/ or {root}/<split>/<class>/ with split in "
            f"{sorted(layouts.SPLIT_FOLDERS)}."
        )
    rows = []
    for folder in split_dirs or [root]:
        split = layouts.SPLIT_FOLDERS.get(folder.name.lower())  # None without split folders
        if not (class_dirs := _entries(folder, Path.is_dir)):
            raise DatasetError(
                f"{folder} has no class sub-folders; expected {folder}/<class>/*.jpg "
                "(one folder per class, the folder name is the label)."
            )
        for class_dir in class_dirs:
            if not (files := _entries(class_dir, _is_image)):
                raise DatasetError(
                    f"class folder {class_dir} has no images (.jpg, .jpeg, .png); "
                    "add images or delete the folder."
                )
            for file in files:
                image_id = file.relative_to(root).with_suffix("").as_posix()
                rows.append((image_id, str(file.resolve()), class_dir.name, split))
    frame = pd.DataFrame(rows, columns=["image_id", "path", "label", "split"])
    table = _make_table(frame, sorted(set(frame["label"])), root)
    return table.assign(split=frame["split"]) if split_dirs else table


def _entries(folder: Path, keep: Callable[[Path], bool]) -> list[Path]:
    """The entries of ``folder`` that ``keep`` accepts, sorted, hidden ones left out."""
    return sorted(p for p in folder.iterdir() if keep(p) and not p.name.startswith("."))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in layouts.IMAGE_SUFFIXES


def load_table(
    root: str | Path, layout: str, missing: Missing = "error", **kw: Any
) -> pd.DataFrame:
    """Read ``root`` with the reader for ``layout`` (one of :data:`~lesionlib.layouts.LAYOUTS`);
    ``kw`` goes to the reader. ``missing`` does not apply to an image folder (it lists files)."""
    if layout == "imagefolder":
        return read_imagefolder(root, **kw)
    readers = {"isic2019": read_isic2019, "isic2016": read_isic2016, "ham10000": read_ham10000}
    if layout not in readers:
        raise ValueError(f"unknown layout {layout!r}; expected one of {layouts.LAYOUTS}")
    return readers[layout](root, missing=missing, **kw)


def classes_of(table: pd.DataFrame) -> list[str]:
    """The class list in model order (the categories of ``table['label']``)."""
    if not isinstance(table.get("label", pd.Series()).dtype, pd.CategoricalDtype):
        raise DatasetError(
            "the table has no categorical 'label' column; build it with a lesionlib.datasets reader"
        )
    return [str(c) for c in table["label"].cat.categories]


def restrict_classes(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` with only the classes that occur (order kept), ``target`` recomputed."""
    label = table["label"].cat.remove_unused_categories()
    return table.assign(label=label, target=label.cat.codes.astype(np.int64))


def _read_csv(path: Path, what: str, header: bool = True) -> pd.DataFrame:
    """``path`` as stripped strings (CRLF or LF, optional BOM; empty cells are '')."""
    if not path.is_file():
        raise DatasetError(f"{what} not found: expected {path}; {_HELP}.")
    kw: dict[str, Any] = {"dtype": str, "keep_default_na": False, "encoding": "utf-8-sig"}
    try:
        frame = pd.read_csv(path, header=0 if header else None, **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not a readable CSV file ({err}); {_OFFICIAL}.") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.apply(lambda col: col.str.strip())


def _check_columns(frame: pd.DataFrame, csv: Path, required: list[str], expected: str) -> None:
    """Refuse a metadata file without a ``required`` column; warn when it has no lesion ids."""
    for column in required:
        if column not in frame.columns:
            found = list(frame.columns)
            raise DatasetError(f"{csv}: no {column!r} column (found {found}); expected {expected}.")
    if "lesion_id" not in frame.columns:
        message = (
            f"{csv} has no 'lesion_id' column: each image counts as its own lesion (not grouped), "
            "so a split may put one lesion in train and test; use the official metadata file."
        )
        warnings.warn(message, UserWarning, stacklevel=3)


def _check_ids(frame: pd.DataFrame, column: str, csv: Path, first_row: int, empty_ok=False) -> list:
    """The image ids; refuses a CSV without rows (unless ``empty_ok``) or listing an image twice."""
    if frame.empty and not empty_ok:
        raise DatasetError(
            f"{csv} lists no images (a header and no rows): the download was incomplete or the "
            f"file was overwritten; {_OFFICIAL}."
        )
    ids = frame[column]
    twice = ids[ids.duplicated(keep=False)]
    if not twice.empty:
        parts = [
            f"{image_id!r} (rows {', '.join(str(i + first_row) for i in group.index)})"
            for image_id, group in list(twice.groupby(twice, sort=False))[:5]
        ]
        raise DatasetError(
            f"{csv}: {twice.nunique()} image id(s) listed more than once: {'; '.join(parts)}. "
            "Each image must appear once: remove the duplicate rows."
        )
    return ids.tolist()


def _refuse_rows(csv: Path, wrong: np.ndarray, what: str, fix: str, ids: list, first_row: int):
    """Raise naming the first five ``wrong`` rows as ``row 17 (ISIC_0000016)`` (file lines)."""
    rows = np.flatnonzero(wrong)
    if rows.size:
        names = ", ".join(f"row {i + first_row} ({ids[i]})" for i in rows[:5])
        raise DatasetError(f"{csv}: {rows.size} row(s) {what} at {names}; {fix}")


def _map_labels(raw: pd.Series, mapping: dict, csv: Path, first_row: int, ids: list) -> pd.Series:
    """``raw`` mapped to class names; refuses a label that ``mapping`` does not know."""
    unknown = ~raw.isin(list(mapping)).to_numpy()
    what = f"with an unknown label ({', '.join(repr(v) for v in raw[unknown][:5])})"
    allowed = f"allowed values: {', '.join(mapping)}. Fix or remove those rows."
    _refuse_rows(csv, unknown, what, allowed, ids, first_row)
    return raw.map(mapping)


def _finish(
    frame: pd.DataFrame, classes: Sequence[str], csv: Path, missing: Missing, folders: list[Path]
) -> pd.DataFrame:
    """The table of a CSV reader, each ``<image_id>.jpg`` looked up in ``folders`` (earlier ones
    first); rows whose image is absent raise, are dropped (with a warning) or kept: ``missing``."""
    if missing not in ("error", "drop", "keep"):
        raise ValueError(f"missing must be 'error', 'drop' or 'keep', not {missing!r}")
    found: dict[str, Path] = {}
    for folder in filter(Path.is_dir, reversed(folders)):  # earlier folders win
        with os.scandir(folder) as entries:
            found.update((entry.name, folder) for entry in entries if entry.is_file())
    image_dirs = [f for f in folders if f != csv.parent]
    default = next((f for f in image_dirs if f.is_dir()), folders[0])  # for absent images
    names = [f"{i}.jpg" for i in frame["image_id"]]
    frame["path"] = [os.path.join(found.get(name, default).resolve(), name) for name in names]
    table = _make_table(frame, classes, csv)
    present = np.array([name in found for name in names], dtype=bool)
    n_absent = len(table) - int(present.sum())
    if n_absent == 0 or missing == "keep":
        return table
    where = ", ".join(map(str, image_dirs))
    where += " or next to the CSV" if csv.parent in folders else ""
    if missing == "error" or n_absent == len(table):
        first = ", ".join(table.loc[~present, "image_id"].head(5))
        raise DatasetError(
            f"{n_absent} of {len(table)} images listed in {csv} are missing from {where}, "
            f"e.g. {first}. Put the images there ({_HELP}), or pass missing='drop' "
            "(CLI: --skip-missing) to keep only the images present."
        )
    message = f"dropped {n_absent} of {len(table)} images listed in {csv}: not found in {where}"
    warnings.warn(message, UserWarning, stacklevel=3)
    return table.loc[present].reset_index(drop=True)


def _make_table(frame: pd.DataFrame, classes: Sequence[str], source: Path) -> pd.DataFrame:
    """The standard table from ``frame`` ('' is unknown; an unknown lesion is the image's own);
    ``table.attrs["source"]`` names the CSV or folder read, for messages."""
    ids = frame["image_id"].astype(str)
    label = pd.Categorical(frame["label"], categories=list(classes))
    table = pd.DataFrame({"image_id": ids, "path": frame["path"].astype(str), "label": label})
    table["target"] = label.codes.astype(np.int64)
    for name in ("lesion_id", "age", "sex", "site"):
        values = frame[name] if name in frame.columns else [""] * len(frame)
        table[name] = np.array([np.nan if v == "" else v for v in values], dtype=object)
    table["lesion_id"] = table["lesion_id"].fillna(ids).astype(str)
    table["age"] = pd.to_numeric(table["age"], errors="coerce")
    table.attrs["source"] = str(source)
    return table


def _source(table: pd.DataFrame) -> str:
    """The file or folder a reader built ``table`` from, for messages; else "the table"."""
    return table.attrs.get("source", "the table")


def split_table(
    table: pd.DataFrame, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> pd.DataFrame:
    """A copy of ``table`` with a ``split`` column (train/val/test), stratified by ``target`` and
    grouped by ``lesion_id`` (no lesion in two splits); deterministic for a seed. Fractions are of
    the whole table (0: no such split); an official ``test`` split is kept."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), not {value}")
    if val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction + test_fraction must be below 1 (train needs rows)")
    check_trainable(table)
    for message in split_warnings(table, val_fraction, test_fraction):
        warnings.warn(message, UserWarning, stacklevel=2)
    targets, groups = table["target"].to_numpy(), table["lesion_id"].astype(str).to_numpy()
    official, carved = _split_plan(table, val_fraction, test_fraction)
    split = np.where(official, "test", "train").astype(object)
    if "test" in carved:
        split[_carve(targets, groups, test_fraction, seed)] = "test"
    if "val" in carved:
        rest = np.flatnonzero(split == "train")
        share = val_fraction * len(table) / len(rest)
        split[rest[_carve(targets[rest], groups[rest], share, seed)]] = "val"
    _cover_classes(split, targets, groups, carved, seed)
    return table.assign(split=split.astype(str))


def _split_plan(table: pd.DataFrame, val: float, test: float) -> tuple[np.ndarray, list[str]]:
    """Which rows are in an official test split (kept as the test split), and the splits
    :func:`split_table` divides the other rows into: train, then test, then val."""
    official = (
        table["split"].eq("test").to_numpy() if "split" in table else np.zeros(len(table), bool)
    )
    test_split = ["test"] * (test > 0 and not official.any())
    return official, ["train", *test_split, *["val"] * (val > 0)]


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
    return np.isin(np.arange(len(targets)), chosen)


def _cover_classes(
    split: np.ndarray, targets: np.ndarray, groups: np.ndarray, carved: list[str], seed: int
) -> None:
    """Move whole lesions (from the split holding most of that class) so that train has every
    class, and each carved split every class with a lesion to spare: StratifiedGroupKFold may
    leave a class with few lesions out of a small fold."""
    rng = np.random.default_rng(seed)
    movable = np.isin(split, carved)
    for target in np.unique(targets[movable]):
        rows = movable & (targets == target)
        enough = len(np.unique(groups[rows])) >= len(carved)
        for receiver in carved:  # "train" first
            per_split = {s: np.unique(groups[rows & (split == s)]) for s in carved}
            if per_split[receiver].size or not (enough or receiver == "train"):
                continue
            donor = max(carved, key=lambda s: per_split[s].size)
            if per_split[donor].size >= (2 if enough else 1):
                split[movable & (groups == rng.choice(per_split[donor]))] = receiver


def check_trainable(table: pd.DataFrame) -> None:
    """Raise :class:`DatasetError` unless ``table`` has images of at least two classes (one class
    trains a "classifier" that can only answer that class)."""
    if table.empty:
        raise DatasetError(
            f"{_source(table)} has no images (the table has no rows): check the data folder and "
            "the filters applied to the table (data/README.md shows the layouts)."
        )
    counts = table["label"].astype(str).value_counts()
    if len(counts) < 2:
        raise DatasetError(
            f"{_source(table)}: all {len(table)} images are of one class ({counts.index[0]!r}). "
            "Add the images of the other classes, or check the labels (e.g. the dx column)."
        )


def split_warnings(
    table: pd.DataFrame, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> list[str]:
    """Why :func:`split_table` cannot split ``table`` as asked (a class with fewer lesions than
    splits; held-out splits of less than one image per class), with the fix; empty if none."""
    official, carved = _split_plan(table, val_fraction, test_fraction)
    messages = []
    labels = table.loc[~official, "label"].astype(str)  # the rows split_table divides
    lesions = table.loc[~official, "lesion_id"].groupby(labels).nunique()
    images = labels.value_counts()
    if short := [c for c in table["label"].astype(str).unique() if lesions.get(c, 0) < len(carved)]:
        listed = "; ".join(
            f"{c!r}: {images[c]} image(s) of {lesions[c]} lesion(s)"
            if c in images
            else f"{c!r}: only in the official test split (never learnt)"
            for c in short
        )
        messages.append(
            f"{_source(table)}: {len(short)} class(es) have fewer lesions than the {len(carved)} "
            f"splits ({', '.join(sorted(carved, key=SPLITS.index))}): {listed}. The split puts "
            "them in train first, so a held-out split will lack them. Add images of those "
            "classes, or set a fraction to 0 (command line: --val-fraction / --test-fraction)."
        )
    held_out = {s: f for s, f in (("val", val_fraction), ("test", test_fraction)) if s in carved}
    n_classes = table["label"].astype(str).nunique()
    if small := {s: f * len(table) for s, f in held_out.items() if f * len(table) < n_classes}:
        asked = " and ".join(f"{s}_fraction={f}" for s, f in held_out.items())
        sizes = ", ".join(f"{s} about {size:.1f}" for s, size in small.items())
        messages.append(
            f"{_source(table)}: {len(table)} images are too few for {asked}: they ask for {sizes} "
            f"images, less than one per class ({n_classes} classes), so their scores will mean "
            "little. Use more data, or other fractions (0 drops that split)."
        )
    return messages


def limit_train(table: pd.DataFrame, max_images: int | None, seed: int = 0) -> pd.DataFrame:
    """``table`` with its training rows cut to about ``max_images`` (stratified, at least one per
    class; ``None``: all), the other splits whole so their scores stay comparable to a full run."""
    if "split" not in table.columns:
        raise ValueError("limit_train needs a 'split' column: call split_table(table) first")
    train = table[table["split"] == "train"]
    if max_images is None or max_images >= len(train):
        return table
    share = max_images / len(train)
    kept = pd.concat(
        rows.sample(max(1, round(share * len(rows))), random_state=seed)
        for _, rows in train.groupby("target")
    )
    return pd.concat([kept, table[table["split"] != "train"]]).sort_index()


class LesionDataset(Dataset):
    """``dataset[i] -> (transform(read_image(path)), target)`` over a table's rows; ``classes``
    is the class list in model order, ``targets`` a numpy array of the targets."""

    def __init__(self, table: pd.DataFrame, transform: Callable | None = None) -> None:
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
