"""The readers on the real samples (LESIONLIB_REAL_DATA; skipped when unset)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lesionlib.datasets import (
    LesionDataset,
    classes_of,
    read_ham10000,
    read_imagefolder,
    read_isic2016,
    read_isic2019,
    split_table,
)
from lesionlib.layouts import ISIC2019_CLASSES, DatasetError

pytestmark = pytest.mark.realdata


def _counts(table) -> dict[str, int]:
    return table["label"].value_counts().to_dict()


def test_ham10000_dev(real_data: Path) -> None:
    table = read_ham10000(real_data / "ham10000-dev")
    assert len(table) == 2994
    assert classes_of(table) == ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]
    assert _counts(table) == {
        "NV": 2162,
        "BKL": 292,
        "MEL": 246,
        "BCC": 132,
        "AK": 92,
        "VASC": 40,
        "DF": 30,
    }
    assert table["lesion_id"].str.startswith("HAM_").all()
    image, target = LesionDataset(table)[0]
    assert image.shape == (3, 224, 224) and image.dtype == torch.uint8
    assert target == table["target"][0]


def test_melanoma_binary_dev(real_data: Path) -> None:
    table = read_imagefolder(real_data / "melanoma-binary-dev")
    assert len(table) == 1000 and table["image_id"].is_unique
    assert classes_of(table) == ["benign", "malignant"]
    assert _counts(table) == {"benign": 546, "malignant": 454}
    assert set(table["split"]) == {"train"}


def test_isic2016_sample_missing_images(real_data: Path) -> None:
    root = real_data / "isic2016-sample"
    with pytest.raises(DatasetError, match="780 of 900 images") as info:
        read_isic2016(root)
    assert "missing='drop'" in str(info.value)
    with pytest.warns(UserWarning, match="dropped 780 of 900"):
        table = read_isic2016(root, missing="drop")
    assert len(table) == 120
    assert _counts(table) == {"benign": 92, "malignant": 28}
    assert all(Path(p).is_file() for p in table["path"])


def test_isic2019_csvs(real_data: Path) -> None:
    table = read_isic2019(real_data / "isic-csv", missing="keep")
    assert len(table) == 25331
    assert classes_of(table) == list(ISIC2019_CLASSES)
    assert _counts(table) == {
        "NV": 12875,
        "MEL": 4522,
        "BCC": 3323,
        "BKL": 2624,
        "AK": 867,
        "SCC": 628,
        "VASC": 253,
        "DF": 239,
    }
    real_lesions = table.loc[table["lesion_id"] != table["image_id"], "lesion_id"]
    assert len(real_lesions) == 23247 and real_lesions.nunique() == 11847
    assert table["age"].notna().mean() > 0.9

    lesions = table["lesion_id"].drop_duplicates().sample(frac=0.3, random_state=0)
    part = table[table["lesion_id"].isin(lesions)]  # a third of the lesions: a quicker split
    assert part["lesion_id"].duplicated().sum() > 1000
    split = split_table(part, seed=0)
    assert (split.groupby("lesion_id")["split"].nunique() == 1).all()
    assert set(split["split"]) == {"train", "val", "test"}
    assert 0.12 < (split["split"] == "test").mean() < 0.18


def test_isic2016_csvs(real_data: Path) -> None:
    test = read_isic2016(real_data / "isic-csv", split="test", missing="keep")
    train = read_isic2016(real_data / "isic-csv", split="train", missing="keep")
    assert len(test) == 379 and len(train) == 900
    assert set(test["label"]) == set(train["label"]) == {"benign", "malignant"}
    assert not set(test["image_id"]) & set(train["image_id"])
