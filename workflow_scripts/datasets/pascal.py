"""Pascal VOC 2012 segmentation: ``ImageSets/Segmentation/{train,val}.txt``.

Label = the majority class of the image's ``SegmentationClass`` mask, ignoring 0 (background)
and 255 (void/boundary); classes 1..20 become labels 0..19, ties go to the smaller class.
Order = the list file's order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from workflow_scripts.datasets.common import DataError, Listing, load_rgb, read_lines, require

LAYOUT = """<root>/ImageSets/Segmentation/train.txt   (1,464 image ids, one per line)
<root>/ImageSets/Segmentation/val.txt     (1,449 image ids)
<root>/JPEGImages/2007_000032.jpg
<root>/SegmentationClass/2007_000032.png  (palette PNG: class index per pixel, 255 = void)
(root = VOCdevkit/VOC2012)"""
LISTS = {"train": "train.txt", "test": "val.txt"}
CLASSES = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
FILES = True


def majority_class(mask_path: Path) -> int:
    """Label (0..19) of the most frequent object class in a mask, ignoring 0 and 255."""
    require(mask_path, "segmentation mask", LAYOUT)
    try:
        with Image.open(mask_path) as mask:
            if mask.mode not in ("P", "L"):
                raise DataError(
                    f"segmentation mask '{mask_path}' has mode {mask.mode}; expected "
                    "a palette (P) or grayscale (L) image of class indices"
                )
            values = np.asarray(mask)
    except OSError as error:
        raise DataError(f"cannot read segmentation mask '{mask_path}': {error}") from error
    counts = np.bincount(values.ravel(), minlength=256)
    counts[0] = counts[255] = 0
    if counts[len(CLASSES) + 1 :].any():
        bad = np.nonzero(counts[len(CLASSES) + 1 :])[0] + len(CLASSES) + 1
        raise DataError(
            f"segmentation mask '{mask_path}' holds class indices {bad.tolist()} "
            f"outside 1..{len(CLASSES)} (and 0, 255)"
        )
    if not counts.any():
        raise DataError(f"segmentation mask '{mask_path}' has no object pixel (only 0 and 255)")
    return int(np.argmax(counts)) - 1


def list_split(root: Path, split: str, row: dict) -> Listing:
    ids = read_lines(root / "ImageSets" / "Segmentation" / LISTS[split], LAYOUT)
    labels = [majority_class(root / "SegmentationClass" / f"{i}.png") for i in ids]
    items = [f"JPEGImages/{i}.jpg" for i in ids]
    return Listing(items, np.asarray(labels, dtype=np.int64), list(CLASSES))


def load(root: Path, item: str):
    return load_rgb(root / item)
