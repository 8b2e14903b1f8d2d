"""The synthetic sample: official layouts, read back by the readers, deterministic, learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from lesionlib.datasets import classes_of, read_imagefolder, read_isic2019, split_table
from lesionlib.layouts import ISIC2019_CLASSES
from lesionlib.settings import cache_dir
from lesionlib.synthetic import default_sample, write_imagefolder_sample, write_isic2019_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_isic2019_sample(tmp_path_factory.mktemp("isic2019"))


def test_isic2019_sample_layout_and_read_back(sample: Path) -> None:
    truth_text = (sample / "ISIC_2019_Training_GroundTruth.csv").read_text()
    assert truth_text.splitlines()[0] == "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
    assert ",1.0," in truth_text and ",0.0," in truth_text
    metadata = pd.read_csv(sample / "ISIC_2019_Training_Metadata.csv")
    assert list(metadata.columns) == [
        "image",
        "age_approx",
        "anatom_site_general",
        "lesion_id",
        "sex",
    ]
    assert metadata["lesion_id"].dropna().str.fullmatch(r"IL_\d{7}").all()

    table = read_isic2019(sample)
    assert set(table["label"]) == set(ISIC2019_CLASSES)
    images_per_lesion = table.groupby("lesion_id").size()
    assert (images_per_lesion > 1).sum() >= 10
    lesions = table.groupby("label", observed=True)["lesion_id"].nunique()
    assert lesions.idxmax() == "NV" and lesions.min() >= 4 and lesions.sum() == 96
    with Image.open(table["path"].iloc[0]) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (64, 64)


def test_images_of_one_lesion_differ_but_resemble_each_other(sample: Path) -> None:
    table = read_isic2019(sample)
    pixels = {
        row.image_id: np.asarray(Image.open(row.path), dtype=float) for row in table.itertuples()
    }
    pairs = table[table.duplicated("lesion_id", keep=False)].groupby("lesion_id")["image_id"]
    same, other = [], []
    ids = table["image_id"].tolist()
    for _, group in list(pairs)[:10]:
        first, second = group.iloc[0], group.iloc[1]
        assert not np.array_equal(pixels[first], pixels[second])
        same.append(np.abs(pixels[first] - pixels[second]).mean())
        stranger = ids[(ids.index(first) + 7) % len(ids)]
        other.append(np.abs(pixels[first] - pixels[stranger]).mean())
    assert np.mean(same) < np.mean(other)


def test_isic2019_sample_is_deterministic(tmp_path: Path) -> None:
    def write(name: str, seed: int) -> tuple[str, np.ndarray]:
        root = write_isic2019_sample(tmp_path / name, n_lesions=16, image_size=32, seed=seed)
        truth = (root / "ISIC_2019_Training_GroundTruth.csv").read_text()
        image = np.asarray(Image.open(root / "ISIC_2019_Training_Input" / "ISIC_0000003.jpg"))
        return truth, image

    first, again, other = write("a", 0), write("b", 0), write("c", 1)
    assert first[0] == again[0] and np.array_equal(first[1], again[1])
    assert first[0] != other[0] and not np.array_equal(first[1], other[1])


def test_sample_with_chosen_classes_and_no_imbalance(tmp_path: Path) -> None:
    root = write_isic2019_sample(
        tmp_path, n_lesions=12, classes=("DF", "SCC"), imbalance=False, image_size=32
    )
    table = read_isic2019(root)
    assert table.groupby("label", observed=True)["lesion_id"].nunique().to_dict() == {
        "DF": 6,
        "SCC": 6,
    }
    with pytest.raises(ValueError, match="unknown ISIC 2019 classes"):
        write_isic2019_sample(tmp_path / "bad", classes=("MEL", "melanoma"))


def test_imagefolder_sample(tmp_path: Path) -> None:
    table = read_imagefolder(write_imagefolder_sample(tmp_path / "split", n_per_class=5))
    assert classes_of(table) == ["benign", "malignant"]
    assert table.groupby(["split", "label"], observed=True).size().tolist() == [5, 5, 5, 5]
    flat = read_imagefolder(
        write_imagefolder_sample(tmp_path / "flat", classes=("MEL", "NV"), n_per_class=3, splits=())
    )
    assert classes_of(flat) == ["MEL", "NV"] and "split" not in flat.columns and len(flat) == 6


def test_default_sample_is_written_once_and_atomically() -> None:
    path = default_sample()
    assert path.parent == cache_dir() and path.name == "synthetic-isic2019-v2"
    truth = path / "ISIC_2019_Training_GroundTruth.csv"
    stamp = truth.stat().st_mtime_ns
    assert default_sample() == path and truth.stat().st_mtime_ns == stamp
    assert not [p for p in cache_dir().iterdir() if p.name.startswith(".synthetic")]
    folder = default_sample("imagefolder")
    assert classes_of(read_imagefolder(folder)) == ["benign", "malignant"]
    with pytest.raises(ValueError, match="unknown synthetic layout"):
        default_sample("coco")


def test_sample_is_learnable_from_tiny_thumbnails(sample: Path) -> None:
    table = split_table(read_isic2019(sample), val_fraction=0, test_fraction=0.3, seed=0)
    features = np.stack(
        [np.asarray(Image.open(p).resize((8, 8)), dtype=float).ravel() / 255 for p in table["path"]]
    )
    train = (table["split"] == "train").to_numpy()
    model = LogisticRegression(max_iter=2000).fit(features[train], table["target"][train])
    score = balanced_accuracy_score(table["target"][~train], model.predict(features[~train]))
    assert score > 2 / 8  # chance is 1/8
