"""Readers, splits, the Dataset and load_image, on small fixture files written in tmp_path."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lesionlib import images
from lesionlib.datasets import (
    LesionDataset,
    classes_of,
    limit_train,
    load_table,
    read_ham10000,
    read_imagefolder,
    read_isic2016,
    read_isic2019,
    restrict_classes,
    split_table,
)
from lesionlib.images import load_image, read_image, save_uploads
from lesionlib.layouts import ISIC2019_CLASSES, DatasetError
from lesionlib.settings import LesionlibError
from lesionlib.synthetic import write_isic2019_sample

HEADER = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"


def _jpg(path: Path, colour: tuple[int, int, int] = (200, 150, 120), size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _onehot(code: str, fmt: str = "{:.1f}", unk: int = 0) -> str:
    values = [int(c == code) for c in ISIC2019_CLASSES] + [unk]
    return ",".join(fmt.format(v) for v in values)


def _isic2019(
    root: Path,
    labels: dict[str, str],
    *,
    fmt: str = "{:.1f}",
    newline: str = "\r\n",
    with_images: bool = True,
    metadata: str | None = None,
) -> Path:
    """Write ISIC 2019 ground truth for ``{image_id: class}`` (+ images, + metadata text)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [f"{i},{_onehot(c, fmt)}" for i, c in labels.items()]
    (root / "ISIC_2019_Training_GroundTruth.csv").write_bytes(
        (newline.join(lines) + newline).encode()
    )
    if with_images:
        for image_id in labels:
            _jpg(root / "ISIC_2019_Training_Input" / f"{image_id}.jpg")
    if metadata is not None:
        (root / "ISIC_2019_Training_Metadata.csv").write_text(metadata)
    return root


# --------------------------------------------------------------------------- ISIC 2019


def test_isic2019_float_onehot_crlf_with_extra_metadata_columns(tmp_path: Path) -> None:
    labels = {"ISIC_0000000": "NV", "ISIC_0000001": "MEL", "ISIC_0000002": "SCC"}
    metadata = (
        "image,age_approx,anatom_site_general,lesion_id,sex,diagnosis,benign_malignant,target\r\n"
        "ISIC_0000000,55.0,anterior torso,IL_0000007,female,nevus,benign,0\r\n"
        "ISIC_0000001,60,,IL_0000007,male,melanoma,malignant,1\r\n"
        "ISIC_0000002,,head/neck,,,,,0\r\n"
    )
    table = read_isic2019(_isic2019(tmp_path, labels, metadata=metadata))
    assert classes_of(table) == list(ISIC2019_CLASSES)
    assert table["label"].tolist() == ["NV", "MEL", "SCC"]
    assert table["target"].tolist() == [1, 0, 7]
    assert table["target"].dtype == np.int64
    assert table["lesion_id"].tolist() == ["IL_0000007", "IL_0000007", "ISIC_0000002"]
    assert table["age"].tolist()[:2] == [55.0, 60.0] and np.isnan(table["age"].iloc[2])
    assert table["site"].iloc[0] == "anterior torso" and pd.isna(table["site"].iloc[1])
    assert table["sex"].iloc[1] == "male" and pd.isna(table["sex"].iloc[2])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table["path"])


def test_isic2019_integer_onehot_lf_without_metadata(tmp_path: Path) -> None:
    labels = {"ISIC_0000010": "BCC", "ISIC_0000011": "VASC"}
    table = read_isic2019(_isic2019(tmp_path, labels, fmt="{:d}", newline="\n"))
    assert table["label"].tolist() == ["BCC", "VASC"]
    assert table["lesion_id"].tolist() == table["image_id"].tolist()
    assert table["age"].isna().all()


@pytest.mark.parametrize(
    ("row", "what"),
    [
        ("ISIC_0000009,0,0,0,0,0,0,0,0,0", "no label"),
        ("ISIC_0000009,1,1,0,0,0,0,0,0,0", "more than one"),
    ],
)
def test_isic2019_rejects_rows_without_exactly_one_label(
    tmp_path: Path, row: str, what: str
) -> None:
    root = _isic2019(tmp_path, {"ISIC_0000000": "NV", "ISIC_0000001": "MEL"})
    csv = root / "ISIC_2019_Training_GroundTruth.csv"
    csv.write_text(csv.read_text() + row + "\n")
    with pytest.raises(DatasetError, match=what) as info:
        read_isic2019(root)
    assert "row 4 (ISIC_0000009)" in str(info.value)
    assert str(csv) in str(info.value)


def test_isic2019_rejects_unk_rows(tmp_path: Path) -> None:
    root = _isic2019(tmp_path, {"ISIC_0000000": "NV"})
    csv = root / "ISIC_2019_Training_GroundTruth.csv"
    csv.write_text(csv.read_text() + "ISIC_0000005,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0\n")
    with pytest.raises(DatasetError, match=r"UNK at row 3 \(ISIC_0000005\)"):
        read_isic2019(root)


def test_isic2019_rejects_duplicate_ids(tmp_path: Path) -> None:
    root = _isic2019(tmp_path, {"ISIC_0000000": "NV", "ISIC_0000001": "MEL"})
    csv = root / "ISIC_2019_Training_GroundTruth.csv"
    csv.write_text(csv.read_text() + f"ISIC_0000000,{_onehot('BKL')}\n")
    with pytest.raises(DatasetError, match=r"'ISIC_0000000' \(rows 2, 4\)"):
        read_isic2019(root)


def test_isic2019_rejects_unknown_class_column(tmp_path: Path) -> None:
    (tmp_path / "ISIC_2019_Training_GroundTruth.csv").write_text(
        HEADER.replace("VASC", "VASCULAR") + "\nISIC_0000000,0,1,0,0,0,0,0,0,0\n"
    )
    with pytest.raises(DatasetError, match="VASCULAR") as info:
        read_isic2019(tmp_path)
    assert "MEL, NV, BCC, AK, BKL, DF, VASC, SCC" in str(info.value)


def test_metadata_without_lesion_id_warns_and_falls_back(tmp_path: Path) -> None:
    metadata = "image,age_approx,sex\nISIC_0000000,40,male\nISIC_0000001,50,female\n"
    root = _isic2019(tmp_path, {"ISIC_0000000": "NV", "ISIC_0000001": "NV"}, metadata=metadata)
    with pytest.warns(UserWarning, match="not grouped"):
        table = read_isic2019(root)
    assert table["lesion_id"].tolist() == ["ISIC_0000000", "ISIC_0000001"]
    assert table["age"].tolist() == [40.0, 50.0]


def test_missing_images_error_drop_and_keep(tmp_path: Path) -> None:
    labels = {f"ISIC_{i:07d}": "NV" for i in range(8)}
    root = _isic2019(tmp_path, labels)
    for i in range(1, 8):
        (root / "ISIC_2019_Training_Input" / f"ISIC_{i:07d}.jpg").unlink()
    with pytest.raises(DatasetError, match="7 of 8 images") as info:
        read_isic2019(root)
    message = str(info.value)
    assert "ISIC_0000001, ISIC_0000002, ISIC_0000003, ISIC_0000004, ISIC_0000005." in message
    assert "ISIC_0000006" not in message and "missing='drop'" in message
    with pytest.warns(UserWarning, match="dropped 7 of 8"):
        dropped = read_isic2019(root, missing="drop")
    assert dropped["image_id"].tolist() == ["ISIC_0000000"]
    assert len(read_isic2019(root, missing="keep")) == 8


def test_missing_csv_names_path_and_readme(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data/README.md") as info:
        read_isic2019(tmp_path)
    assert str(tmp_path / "ISIC_2019_Training_GroundTruth.csv") in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, LesionlibError)
    with pytest.raises(DatasetError, match="HAM10000_metadata.csv"):
        read_ham10000(tmp_path)


# --------------------------------------------------------------------------- ISIC 2016


def test_isic2016_headerless_crlf_with_messy_labels(tmp_path: Path) -> None:
    (tmp_path / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv").write_bytes(
        b"ISIC_0000000, Benign \r\nISIC_0000001,MALIGNANT\r\nISIC_0000002,benign\r\n"
    )
    (tmp_path / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv").write_bytes(
        b"ISIC_0000003,0\r\nISIC_0000004,1.0\r\nISIC_0000005,0.0\r\n"
    )
    for i in range(3):
        _jpg(tmp_path / "ISBI2016_ISIC_Part3_Training_Data" / f"ISIC_000000{i}.jpg")
        _jpg(tmp_path / "ISBI2016_ISIC_Part3_Test_Data" / f"ISIC_000000{i + 3}.jpg")
    train = read_isic2016(tmp_path, split="train")
    test = read_isic2016(tmp_path, split="test")
    assert train["label"].tolist() == ["benign", "malignant", "benign"]
    assert test["label"].tolist() == ["benign", "malignant", "benign"]
    assert classes_of(train) == classes_of(test) == ["benign", "malignant"]
    assert set(train["split"]) == {"train"} and set(test["split"]) == {"test"}

    both = read_isic2016(tmp_path)  # split="all": the official test set is the test split
    assert both["split"].tolist() == ["train"] * 3 + ["test"] * 3
    assert classes_of(both) == ["benign", "malignant"]
    with pytest.warns(UserWarning) as caught:  # 3 + 3 images: too few to hold out a val split
        assert split_table(both, test_fraction=0.3)["split"].iloc[3:].eq("test").all()
    assert any("too few for val_fraction=0.15: " in str(w.message) for w in caught)
    for item in (tmp_path / "ISBI2016_ISIC_Part3_Test_Data").iterdir():
        item.unlink()
    (tmp_path / "ISBI2016_ISIC_Part3_Test_Data").rmdir()  # test images not downloaded
    assert read_isic2016(tmp_path)["split"].tolist() == ["train"] * 3
    assert len(read_isic2016(tmp_path, missing="keep")) == 6  # CSV-only inspection


def test_isic2016_rejects_unknown_label_naming_row(tmp_path: Path) -> None:
    csv = tmp_path / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
    csv.write_bytes(b"ISIC_0000000,benign\r\nISIC_0000001,maybe\r\n")
    with pytest.raises(DatasetError, match=r"'maybe'.*row 2 \(ISIC_0000001\)") as info:
        read_isic2016(tmp_path, missing="keep")
    assert "benign, malignant" in str(info.value) and str(csv) in str(info.value)


# --------------------------------------------------------------------------- HAM10000


def _ham_csv(
    root: Path, rows: list[str], header: str = "lesion_id,image_id,dx,dx_type,age,sex,localization"
) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "HAM10000_metadata.csv").write_bytes(("\r\n".join([header, *rows]) + "\r\n").encode())


def test_ham10000_image_parts_and_label_mapping(tmp_path: Path) -> None:
    _ham_csv(
        tmp_path,
        [
            "HAM_0000001,ISIC_0024306,NV ,follow_up,45.0,male,trunk",
            "HAM_0000001,ISIC_0024307,nv,follow_up,45.0,male,trunk",
            "HAM_0000002,ISIC_0024308,MEL,histo,,unknown,back",
            "HAM_0000003,ISIC_0024309,vasc,consensus,70.0,female,",
        ],
    )
    _jpg(tmp_path / "HAM10000_images_part_1" / "ISIC_0024306.jpg")
    _jpg(tmp_path / "HAM10000_images_part_2" / "ISIC_0024307.jpg")
    _jpg(tmp_path / "HAM10000_images_part_2" / "ISIC_0024308.jpg")
    _jpg(tmp_path / "ISIC_0024309.jpg")  # next to the CSV
    table = read_ham10000(tmp_path)
    assert classes_of(table) == ["MEL", "NV", "VASC"]
    assert table["label"].tolist() == ["NV", "NV", "MEL", "VASC"]
    assert table["target"].tolist() == [1, 1, 0, 2]
    assert table["lesion_id"].tolist() == [
        "HAM_0000001",
        "HAM_0000001",
        "HAM_0000002",
        "HAM_0000003",
    ]
    assert Path(table["path"].iloc[1]).parent.name == "HAM10000_images_part_2"
    assert Path(table["path"].iloc[3]).parent == tmp_path.resolve()
    assert table["age"].iloc[0] == 45.0 and np.isnan(table["age"].iloc[2])
    assert table["site"].iloc[2] == "back" and pd.isna(table["site"].iloc[3])


def test_ham10000_rejects_unknown_dx(tmp_path: Path) -> None:
    _ham_csv(tmp_path, ["HAM_1,ISIC_1,nv,histo,1,male,back", "HAM_2,ISIC_2,scc,histo,1,male,back"])
    with pytest.raises(DatasetError, match=r"'scc'.*row 3 \(ISIC_2\).*akiec, bcc"):
        read_ham10000(tmp_path, missing="keep")


def test_ham10000_missing_images_names_the_folders(tmp_path: Path) -> None:
    _ham_csv(tmp_path, ["HAM_1,ISIC_1,nv,histo,1,male,back"])
    with pytest.raises(DatasetError, match="HAM10000_images_part_1"):
        read_ham10000(tmp_path)


# --------------------------------------------------------------------------- ImageFolder


def test_imagefolder_flat_and_with_splits(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    _jpg(flat / "nevus" / "a.jpg")
    _jpg(flat / "melanoma" / "b.PNG")
    _jpg(flat / ".ipynb_checkpoints" / "c.jpg")  # hidden: ignored
    (flat / "nevus" / "notes.txt").write_text("not an image")
    table = read_imagefolder(flat)
    assert classes_of(table) == ["melanoma", "nevus"]
    assert table["image_id"].tolist() == ["melanoma/b", "nevus/a"]
    assert "split" not in table.columns

    split = tmp_path / "split"
    _jpg(split / "train" / "benign" / "1.jpg")
    _jpg(split / "train" / "malignant" / "1.jpg")  # same file name in another class
    _jpg(split / "valid" / "benign" / "2.jpg")
    table = read_imagefolder(split)
    assert classes_of(table) == ["benign", "malignant"]
    assert table["split"].tolist() == ["train", "train", "val"]
    assert table["lesion_id"].nunique() == 3


def test_imagefolder_rejects_empty_class_folder(tmp_path: Path) -> None:
    _jpg(tmp_path / "benign" / "a.jpg")
    (tmp_path / "malignant").mkdir()
    with pytest.raises(DatasetError, match="malignant has no images"):
        read_imagefolder(tmp_path)


def test_load_table_dispatch(tmp_path: Path) -> None:
    _jpg(tmp_path / "folder" / "a" / "x.jpg")
    assert classes_of(load_table(tmp_path / "folder", "imagefolder")) == ["a"]
    root = write_isic2019_sample(
        tmp_path / "synthetic", n_lesions=8, classes=("MEL", "NV"), image_size=32
    )
    assert classes_of(load_table(root, "isic2019")) == list(ISIC2019_CLASSES)  # all 8, in order
    table = restrict_classes(load_table(root, "isic2019"))
    assert classes_of(table) == ["MEL", "NV"]
    assert sorted(table["target"].unique()) == [0, 1]
    assert table.attrs["source"] == str(root / "ISIC_2019_Training_GroundTruth.csv")
    for layout in ("coco", "synthetic"):  # the sample is written by lesionlib.synthetic
        with pytest.raises(ValueError, match="unknown layout"):
            load_table(root, layout)


# --------------------------------------------------------------------------- splits


@pytest.fixture(scope="module")
def sample_table(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = write_isic2019_sample(tmp_path_factory.mktemp("sample"), image_size=32)
    return read_isic2019(root)


def test_split_is_grouped_stratified_and_deterministic(sample_table: pd.DataFrame) -> None:
    table = split_table(sample_table, seed=0)
    assert "split" not in sample_table.columns  # input untouched
    assert set(table["split"]) == {"train", "val", "test"}
    assert (table.groupby("lesion_id")["split"].nunique() == 1).all()
    lesions_per_class = sample_table.groupby("label", observed=True)["lesion_id"].nunique()
    common = set(lesions_per_class[lesions_per_class >= 3].index)
    for name, part in table.groupby("split"):
        assert common <= set(part["label"]), name
    test_share = (table["split"] == "test").mean()
    assert 0.07 < test_share < 0.3
    assert table["split"].tolist() == split_table(sample_table, seed=0)["split"].tolist()
    assert table["split"].tolist() != split_table(sample_table, seed=1)["split"].tolist()


def test_split_keeps_official_test_and_allows_zero_fractions(sample_table: pd.DataFrame) -> None:
    official = sample_table.assign(split="train")
    official.loc[official.index[:20], "split"] = "test"
    table = split_table(official, seed=3)
    assert (table["split"].iloc[:20] == "test").all()
    assert (table["split"].iloc[20:] != "test").all()
    assert set(table["split"]) == {"train", "val", "test"}
    no_val = split_table(sample_table, val_fraction=0)
    assert set(no_val["split"]) == {"train", "test"}
    only_train = split_table(sample_table, val_fraction=0, test_fraction=0)
    assert set(only_train["split"]) == {"train"}


# --------------------------------------------------------------------------- Dataset, images


def test_lesion_dataset(sample_table: pd.DataFrame) -> None:
    dataset = LesionDataset(sample_table.head(5))
    assert len(dataset) == 5 and dataset.classes == list(ISIC2019_CLASSES)
    assert isinstance(dataset.targets, np.ndarray)
    image, target = dataset[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert torch.equal(image, read_image(sample_table["path"].iloc[0]))
    assert target == sample_table["target"].iloc[0] and isinstance(target, int)
    corners = LesionDataset(sample_table.head(5), transform=lambda im: im[:, :4, :4].float())
    assert corners[1][0].shape == (3, 4, 4) and corners[1][0].dtype == torch.float32


def _save(path: Path, image: Image.Image, **kw) -> Path:
    image.save(path, **kw)
    return path


def test_load_image_converts_odd_modes(tmp_path: Path) -> None:
    grey = load_image(_save(tmp_path / "grey.png", Image.new("L", (6, 4), 90)))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (90, 90, 90)

    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    out = load_image(_save(tmp_path / "rgba.png", rgba))
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((1, 1)) == (255, 255, 255)

    cmyk = load_image(_save(tmp_path / "cmyk.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0))))
    r, g, b = cmyk.getpixel((4, 4))
    assert cmyk.mode == "RGB" and r > 200 and g < 50 and b < 50

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert load_image(_save(tmp_path / "p.png", palette)).getpixel((0, 0)) == (10, 200, 30)

    deep = np.array([[0, 257 * 100, 65535, 32768]], dtype=np.uint16)
    out = load_image(_save(tmp_path / "deep.png", Image.fromarray(deep)))
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    assert [out.getpixel((x, 0))[0] for x in range(4)] == [0, 100, 255, 128]


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise
    path = _save(tmp_path / "rotated.jpg", Image.new("RGB", (16, 8), (1, 2, 3)), exif=exif)
    assert Image.open(path).size == (16, 8)
    assert load_image(path).size == (8, 16)


def test_read_image_gives_load_image_pixels_as_a_chw_tensor(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (12, 20, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    paths = [
        _save(tmp_path / "rgb.jpg", Image.fromarray(pixels), quality=90),
        _save(tmp_path / "grey.jpg", Image.fromarray(pixels).convert("L")),
        _save(tmp_path / "cmyk.jpg", Image.fromarray(pixels).convert("CMYK")),
        _save(tmp_path / "rotated.jpg", Image.fromarray(pixels), exif=exif),
        _save(tmp_path / "rgba.png", rgba),
        _save(tmp_path / "jpeg-named.png", Image.fromarray(pixels), format="JPEG"),
    ]
    for path in paths:
        expected = torch.from_numpy(np.array(load_image(path))).permute(2, 0, 1)
        tensor = read_image(path)
        assert tensor.dtype == torch.uint8 and tensor.shape == expected.shape, path.name
        assert torch.equal(tensor, expected), path.name
    assert read_image(paths[3]).shape == (3, 20, 12)  # EXIF orientation applied


@pytest.fixture
def fresh_decoder():
    """Let a test choose the JPEG decoder anew, and forget its choice afterwards."""
    chooser = images.jpeg_decoder  # the cached function itself, even if a test replaces it
    chooser.cache_clear()
    yield
    chooser.cache_clear()


def test_read_image_decodes_jpegs_with_torchcodec_else_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_decoder: None
) -> None:
    assert images.jpeg_decoder()[0].startswith("torchcodec 0.")  # requirements.txt installs it
    pixels = np.random.default_rng(1).integers(0, 255, (10, 14, 3), dtype=np.uint8)
    jpeg = _save(tmp_path / "a.jpg", Image.fromarray(pixels))
    png = _save(tmp_path / "a.png", Image.fromarray(pixels))
    name, real_decoder = images.jpeg_decoder()
    calls: list[int] = []

    def counting_decoder(data: bytes) -> torch.Tensor:
        calls.append(len(data))
        return real_decoder(data)

    monkeypatch.setattr(images, "jpeg_decoder", lambda: (name, counting_decoder))
    fast = read_image(jpeg)
    read_image(png)
    assert calls == [jpeg.stat().st_size]  # the JPEG only; the PNG went through Pillow
    monkeypatch.setattr(images, "jpeg_decoder", lambda: ("Pillow", None))
    assert torch.equal(read_image(jpeg), fast)


def _broken_decoder() -> Callable[[bytes], torch.Tensor]:
    def decode(data: bytes) -> torch.Tensor:
        raise RuntimeError("Could not load libtorchcodec_image.so: libcudart.so.13: not found")

    return decode


@pytest.mark.parametrize("decoder", ["torchcodec", "torchvision.io"])
def test_every_jpeg_decoder_gives_pillows_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_decoder: None, decoder: str
) -> None:
    monkeypatch.setattr(images, "JPEG_DECODERS", {decoder: images.JPEG_DECODERS[decoder]})
    assert images.jpeg_decoder()[0].startswith(decoder + " ")
    pixels = np.random.default_rng(2).integers(0, 255, (12, 20, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise
    paths = [
        _save(tmp_path / "rgb.jpg", Image.fromarray(pixels), quality=90),
        _save(tmp_path / "grey.jpg", Image.fromarray(pixels).convert("L")),
        _save(tmp_path / "cmyk.jpg", Image.fromarray(pixels).convert("CMYK")),
        _save(tmp_path / "rotated.jpg", Image.fromarray(pixels), exif=exif),
    ]
    for path in paths:
        expected = torch.from_numpy(np.array(load_image(path))).permute(2, 0, 1)
        assert torch.equal(read_image(path), expected), (decoder, path.name)


def test_a_decoder_that_imports_but_cannot_decode_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_decoder: None
) -> None:
    """As on Colab, where a CUDA 13 torchcodec imports but its image library won't load."""
    chain = {**images.JPEG_DECODERS, "torchcodec": _broken_decoder}  # same order
    monkeypatch.setattr(images, "JPEG_DECODERS", chain)
    assert images.jpeg_decoder()[0].startswith("torchvision.io 0.")
    monkeypatch.setattr(images, "JPEG_DECODERS", {"torchcodec": _broken_decoder})
    images.jpeg_decoder.cache_clear()
    name, decode = images.jpeg_decoder()
    assert decode is None and name.startswith("Pillow ") and "libcudart.so.13" in name
    path = _save(tmp_path / "a.jpg", Image.new("RGB", (6, 4), (200, 10, 10)))
    assert read_image(path).shape == (3, 4, 6)


def test_without_torchcodec_lesionlib_says_so_and_decodes_with_torchvision(tmp_path: Path) -> None:
    path = _save(tmp_path / "a.jpg", Image.new("RGB", (6, 4), (200, 10, 10)))
    script = (
        "import sys; sys.modules['torchcodec'] = None  # as if it were not installed\n"
        "from lesionlib.images import jpeg_decoder, read_image\n"
        "from lesionlib.train import print_environment\n"
        f"print_environment(); print(tuple(read_image({str(path)!r}).shape))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "JPEG decoder: torchvision.io 0." in run.stdout
    assert run.stdout.strip().splitlines()[-1] == "(3, 4, 6)"


def _half_a_jpeg() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


@pytest.mark.parametrize(
    "content",
    [_half_a_jpeg(), b"", b"this is not a JPEG", None],
    ids=["truncated", "zero-byte", "text", "absent"],
)
def test_undecodable_files_raise_naming_the_file(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    for reader in (load_image, read_image):
        with pytest.raises(DatasetError, match="python -m lesionlib validate") as info:
            reader(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["big.png", "big.jpg"])
def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    path = _save(tmp_path / name, Image.new("RGB", (40, 40)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for reader in (load_image, read_image):  # read_image too, although TorchCodec decodes JPEGs
        with pytest.raises(DatasetError, match="too large") as info:
            reader(path)
        assert str(path) in str(info.value)


def test_limit_train_keeps_a_stratified_subset_and_the_other_splits(tmp_path):
    table = split_table(read_isic2019(write_isic2019_sample(tmp_path, n_lesions=48)), seed=0)
    train = table[table["split"] == "train"]
    small = limit_train(table, len(train) // 2, seed=0)
    small_train = small[small["split"] == "train"]
    assert abs(len(small_train) - len(train) // 2) <= len(classes_of(table))
    assert set(small_train["target"]) == set(train["target"])  # every class keeps some images
    rest = small[small["split"] != "train"]
    assert rest.equals(table[table["split"] != "train"])
    assert limit_train(table, len(train) // 2, seed=0).equals(small)  # deterministic
    assert limit_train(table, None) is table


def test_load_image_draft_decodes_a_large_jpeg_at_a_reduced_scale(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1024, 768), (200, 120, 90)).save(path, quality=90)
    small = load_image(path, draft_size=100)
    assert small.mode == "RGB"
    assert small.size == (256, 192)  # 1/4 scale: 1/8 would make the short side 96 < 100
    assert load_image(path).size == (1024, 768)


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), (10, 200, 10)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("source", ["ipywidgets 8", "ipywidgets 7", "google.colab.files"])
def test_save_uploads_reads_every_upload_format(tmp_path: Path, source: str) -> None:
    content = _jpeg_bytes()
    value = {
        "ipywidgets 8": (
            {"name": "mole.jpg", "type": "image/jpeg", "content": memoryview(content)},
        ),
        "ipywidgets 7": {"mole.jpg": {"metadata": {"name": "mole.jpg"}, "content": content}},
        "google.colab.files": {"mole.jpg": content},
    }[source]
    (path,) = save_uploads(value, tmp_path / "uploads")
    assert path == tmp_path / "uploads" / "mole.jpg" and path.read_bytes() == content
    assert load_image(path).size == (6, 4)


def test_save_uploads_keeps_files_inside_its_folder(tmp_path: Path) -> None:
    (path,) = save_uploads({"../../escape.jpg": _jpeg_bytes()}, tmp_path / "uploads")
    assert path.parent == tmp_path / "uploads" and not (tmp_path / "escape.jpg").exists()
