"""Class names and label mappings: ISIC 2019 (8 classes), HAM10000 and benign/malignant."""

from __future__ import annotations

ISIC2019_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
"""The ISIC 2019 training classes in the seeds' order: MEL=0 ... SCC=7."""

FULL_NAMES: dict[str, str] = {
    "MEL": "Melanoma",
    "NV": "Melanocytic nevus",
    "BCC": "Basal cell carcinoma",
    "AK": "Actinic keratosis",
    "BKL": "Benign keratosis",
    "DF": "Dermatofibroma",
    "VASC": "Vascular lesion",
    "SCC": "Squamous cell carcinoma",
    "benign": "Benign",
    "malignant": "Malignant",
}

HAM10000_TO_ISIC2019: dict[str, str] = {
    "akiec": "AK",
    "bcc": "BCC",
    "bkl": "BKL",
    "df": "DF",
    "mel": "MEL",
    "nv": "NV",
    "vasc": "VASC",
}
"""HAM10000 ``dx`` codes to ISIC 2019 columns (HAM10000 has no SCC; akiec covers AK and Bowen's)."""

BINARY_CLASSES: tuple[str, ...] = ("benign", "malignant")

MALIGNANT: frozenset[str] = frozenset({"MEL", "BCC", "SCC", "AK"})
"""ISIC 2019 classes counted as malignant (AK as a pre-malignant lesion, as HAM10000's akiec)."""


def full_name(code: str) -> str:
    """Readable name of a class code, e.g. ``'MEL' -> 'Melanoma'`` (unknown: as is)."""
    return FULL_NAMES.get(code, code)


def to_binary(code: str) -> str:
    """Map an ISIC 2019 class code to ``'benign'`` or ``'malignant'``."""
    if code not in ISIC2019_CLASSES:
        raise ValueError(f"unknown ISIC 2019 class {code!r}; expected one of {ISIC2019_CLASSES}")
    return "malignant" if code in MALIGNANT else "benign"
