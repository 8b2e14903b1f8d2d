"""lesionlib.cache: the resized JPEG cache, on tiny synthetic JPEGs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesionlib.cache import prepare_cache
from lesionlib.layouts import DatasetError

SIZE = 64
RED, BLUE = (220, 30, 30), (30, 30, 220)


def _write_jpeg(path: Path, size: tuple[int, int], left=RED, right=BLUE, orientation=None) -> Path:
    """A JPEG whose left half is ``left`` and right half ``right`` (stored pixels, before EXIF)."""
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[:, : size[0] // 2] = left
    pixels[:, size[0] // 2 :] = right
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    return path


@pytest.fixture
def table(tmp_path: Path) -> pd.DataFrame:
    """Three sources in the lesionlib table format: landscape, portrait, landscape."""
    folder = tmp_path / "images"
    folder.mkdir()
    sizes = [(300, 200), (200, 300), (300, 200)]
    paths = [str(_write_jpeg(folder / f"img_{i}.jpg", size)) for i, size in enumerate(sizes)]
    return pd.DataFrame(
        {
            "image_id": [f"img_{i}" for i in range(3)],
            "path": paths,
            "label": pd.Categorical(["NV", "MEL", "NV"], categories=["MEL", "NV"]),
            "target": np.array([1, 0, 1], dtype=np.int64),
            "lesion_id": ["l0", "l1", "l1"],
            "age": [45.0, np.nan, 60.0],
        }
    )


def _cache(table: pd.DataFrame, root: Path, workers: int = 1) -> pd.DataFrame:
    return prepare_cache(table, size=SIZE, cache_root=root, workers=workers, progress=False)


def _snapshot(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def test_shorter_side_is_size_and_aspect_is_kept(table: pd.DataFrame, tmp_path: Path) -> None:
    cached = _cache(table, tmp_path / "cache")
    sizes = [Image.open(path).size for path in cached["path"]]
    assert sizes == [(96, 64), (64, 96), (96, 64)]
    assert all(Path(path).parent == (tmp_path / "cache" / str(SIZE)) for path in cached["path"])
    assert all(Path(path).suffix == ".jpg" for path in cached["path"])


def test_exif_rotated_source_gives_rotated_image(tmp_path: Path, table: pd.DataFrame) -> None:
    # Orientation 6: stored 300x200 with red on the left, displayed 200x300 with red on top.
    _write_jpeg(Path(table.loc[0, "path"]), (300, 200), orientation=6)
    cached = _cache(table.iloc[:1], tmp_path / "cache")
    image = Image.open(cached.loc[0, "path"])
    assert image.size == (64, 96)
    pixels = np.asarray(image).astype(int)
    assert np.abs(pixels[10, 32] - RED).max() < 40
    assert np.abs(pixels[85, 32] - BLUE).max() < 40


def test_second_call_writes_nothing(table: pd.DataFrame, tmp_path: Path) -> None:
    first = _cache(table, tmp_path / "cache")
    before = _snapshot(tmp_path / "cache")
    second = _cache(table, tmp_path / "cache", workers=2)
    assert list(second["path"]) == list(first["path"])
    assert _snapshot(tmp_path / "cache") == before
    assert len(before) == 3


def _later_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_rewritten_source_gets_a_new_file(table: pd.DataFrame, tmp_path: Path) -> None:
    first = _cache(table, tmp_path / "cache")
    source = Path(table.loc[0, "path"])
    _write_jpeg(source, (300, 200), left=BLUE, right=BLUE)
    _later_mtime(source)  # a later edit for sure, even on a file system with coarse timestamps
    second = _cache(table, tmp_path / "cache")
    assert second.loc[0, "path"] != first.loc[0, "path"]
    assert list(second["path"][1:]) == list(first["path"][1:])
    assert len(_snapshot(tmp_path / "cache")) == 4
    new_pixels = np.asarray(Image.open(second.loc[0, "path"])).astype(int)
    assert np.abs(new_pixels[32, 10] - BLUE).max() < 40


def test_touched_source_gets_a_new_file(table: pd.DataFrame, tmp_path: Path) -> None:
    first = _cache(table, tmp_path / "cache")
    _later_mtime(Path(table.loc[2, "path"]))  # same bytes, newer modification time
    second = _cache(table, tmp_path / "cache")
    assert second.loc[2, "path"] != first.loc[2, "path"]
    assert list(second["path"][:2]) == list(first["path"][:2])
    assert Path(second.loc[2, "path"]).is_file()


def test_table_keeps_columns_and_records_source(table: pd.DataFrame, tmp_path: Path) -> None:
    original = table.copy()
    cached = _cache(table, tmp_path / "cache")
    pd.testing.assert_frame_equal(table, original)  # the input is not modified
    assert list(cached.columns) == [*table.columns, "source_path"]
    assert list(cached["source_path"]) == list(table["path"])
    assert all(Path(path).is_file() for path in cached["path"])
    others = [column for column in table.columns if column != "path"]
    pd.testing.assert_frame_equal(cached[others], table[others])
    assert list(cached["label"].cat.categories) == ["MEL", "NV"]


def test_recaching_a_cached_table_reads_the_originals(table: pd.DataFrame, tmp_path: Path) -> None:
    cached = _cache(table, tmp_path / "cache")
    smaller = prepare_cache(cached, size=32, cache_root=tmp_path / "cache", progress=False)
    assert list(smaller["source_path"]) == list(table["path"])
    assert [min(Image.open(path).size) for path in smaller["path"]] == [32, 32, 32]


@pytest.mark.parametrize("workers", [1, 2])
def test_broken_source_raises_naming_it(table: pd.DataFrame, tmp_path: Path, workers: int) -> None:
    broken = Path(table.loc[1, "path"])
    broken.write_bytes(b"this is not a JPEG")
    with pytest.raises(DatasetError, match=broken.name):
        _cache(table, tmp_path / "cache", workers=workers)


def test_missing_source_raises_naming_it(table: pd.DataFrame, tmp_path: Path) -> None:
    Path(table.loc[2, "path"]).unlink()
    with pytest.raises(DatasetError, match="img_2.jpg"):
        _cache(table, tmp_path / "cache")


def test_one_or_two_workers_give_identical_files(table: pd.DataFrame, tmp_path: Path) -> None:
    one = _cache(table, tmp_path / "one", workers=1)
    two = _cache(table, tmp_path / "two", workers=2)
    assert [Path(p).name for p in one["path"]] == [Path(p).name for p in two["path"]]
    for a, b in zip(one["path"], two["path"], strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()


def test_small_source_is_not_enlarged(tmp_path: Path, table: pd.DataFrame) -> None:
    _write_jpeg(Path(table.loc[0, "path"]), (40, 30))
    cached = _cache(table.iloc[:1], tmp_path / "cache")
    assert Image.open(cached.loc[0, "path"]).size == (40, 30)


def test_a_cache_smaller_than_the_network_input_is_refused(tmp_path):
    table = pd.DataFrame({"path": [str(tmp_path / "unused.jpg")]})
    with pytest.raises(ValueError, match="cache size 128 is smaller than image_size=224"):
        prepare_cache(table, size=128, cache_root=tmp_path, image_size=224)
