"""The official dataset layouts: their file and folder names, classes and label mappings.

Imports only the error base of lesionlib.settings, so that every other module can import it."""

from __future__ import annotations

from lesionlib.settings import LesionlibError

LAYOUTS = ("isic2019", "isic2016", "ham10000", "imagefolder")
"""The layouts :func:`lesionlib.datasets.load_table` reads (data/README.md shows each one)."""

ISIC2019_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
"""The ISIC 2019 training classes in the seeds' order: MEL=0 ... SCC=7."""
BINARY_CLASSES: tuple[str, ...] = ("benign", "malignant")

FULL_NAMES: dict[str, str] = {
    "MEL": "Melanoma", "NV": "Melanocytic nevus", "BCC": "Basal cell carcinoma",
    "AK": "Actinic keratosis", "BKL": "Benign keratosis", "DF": "Dermatofibroma",
    "VASC": "Vascular lesion", "SCC": "Squamous cell carcinoma",
    "benign": "Benign", "malignant": "Malignant",
}  # fmt: skip


def full_name(code: str) -> str:
    """Readable name of a class code, e.g. ``'MEL' -> 'Melanoma'`` (unknown: as is)."""
    return FULL_NAMES.get(code, code)


HAM10000_TO_ISIC2019: dict[str, str] = {
    "akiec": "AK", "bcc": "BCC", "bkl": "BKL", "df": "DF", "mel": "MEL", "nv": "NV", "vasc": "VASC"
}  # fmt: skip
"""HAM10000 ``dx`` codes to ISIC 2019 columns (HAM10000 has no SCC; akiec covers AK and Bowen's)."""

ISIC2019_GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"
ISIC2019_IMAGES = "ISIC_2019_Training_Input"
ISIC2019_METADATA_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")
ISIC2016_FILES = {
    "train": ("ISBI2016_ISIC_Part3_Training_GroundTruth.csv", "ISBI2016_ISIC_Part3_Training_Data"),
    "test": ("ISBI2016_ISIC_Part3_Test_GroundTruth.csv", "ISBI2016_ISIC_Part3_Test_Data"),
}
"""ISIC 2016 Part 3: split -> (headerless ground-truth CSV, images folder)."""
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
"""ImageFolder split-folder names (lower case) -> split name."""


class DatasetError(LesionlibError, ValueError):
    """Data on disk does not match what a layout expects; the message names the file and the fix."""
