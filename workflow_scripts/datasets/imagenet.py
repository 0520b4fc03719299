"""ImageNet ILSVRC-2012, in one of two layouts under the data set's root:

* sorted: one folder per synset (wnid) in ``train/`` and ``val/`` (val sorted into the wnid
  folders, e.g. by valprep.sh);
* Kaggle (the "ImageNet Object Localization Challenge" download, read as it unpacks):
  ``ILSVRC/Data/CLS-LOC/train/<wnid>/`` and the flat ``ILSVRC/Data/CLS-LOC/val/``, whose wnids
  come from ``LOC_val_solution.csv`` (``ImageId,PredictionString``: the first word of the
  prediction string; every box of an image names the same synset).

Label = index of the wnid in the sorted list of the train folders (the usual synset index,
torchvision ``ImageFolder`` order). Items in wnid order, sorted by file name within a wnid, in
both layouts: the same images give the same labels in the same order.
"""

from __future__ import annotations

import csv
from pathlib import Path

from workflow_scripts.datasets.common import (
    DataError,
    Listing,
    folder_listing,
    image_files,
    load_rgb,
    require,
    subfolders,
)

LAYOUT = """<root>/train/n01440764/n01440764_10026.JPEG   (1000 wnid folders, 1,281,167 images)
<root>/val/n01440764/ILSVRC2012_val_00000293.JPEG  (the 50,000 val images sorted into the same
                                                    wnid folders, e.g. with valprep.sh)
or Kaggle's layout, as it unpacks:
<root>/ILSVRC/Data/CLS-LOC/train/n01440764/n01440764_10026.JPEG
<root>/ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG   (flat, 50,000 images)
<root>/LOC_val_solution.csv   (ImageId,PredictionString: the val images' wnids)
or the three official archives in <root> (ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar,
ILSVRC2012_devkit_t12.tar.gz), unpacked into the first layout by
  python -m workflow_scripts.datasets.imagenet_archives <root>"""
FOLDERS = {"train": "train", "test": "val"}
KAGGLE = "ILSVRC/Data/CLS-LOC"
KAGGLE_VAL_LABELS = "LOC_val_solution.csv"
FILES = True


def kaggle_val_wnids(path: Path) -> dict[str, str]:
    """Image id -> wnid of Kaggle's ``LOC_val_solution.csv`` (the first word of each
    PredictionString; a row whose boxes name two synsets is an error naming its line)."""
    require(path, "file", LAYOUT)
    wnids: dict[str, str] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != ["ImageId", "PredictionString"]:
            raise DataError(f"'{path}': header {reader.fieldnames} is not ImageId,PredictionString")
        for line, row in enumerate(reader, start=2):
            words = (row["PredictionString"] or "").split()
            synsets = set(words[::5])
            if not words or len(words) % 5 or len(synsets) != 1:
                raise DataError(
                    f"'{path}', line {line}: PredictionString '{row['PredictionString']}' is not "
                    "groups of <wnid> <x_min> <y_min> <x_max> <y_max> naming one synset"
                )
            if row["ImageId"] in wnids:
                raise DataError(f"'{path}', line {line}: image '{row['ImageId']}' again")
            wnids[row["ImageId"]] = words[0]
    return wnids


def _kaggle_val(root: Path, classes: list[str]) -> Listing:
    folder = f"{KAGGLE}/val"
    base = require(root / folder, "folder", LAYOUT)
    wnids = kaggle_val_wnids(root / KAGGLE_VAL_LABELS)
    files = image_files(base)
    unlabelled = [name for name in files if Path(name).stem not in wnids]
    if unlabelled:
        raise DataError(
            f"{len(unlabelled)} image(s) in '{base}' have no row in "
            f"'{root / KAGGLE_VAL_LABELS}' (e.g. '{unlabelled[0]}')"
        )
    index = {wnid: i for i, wnid in enumerate(classes)}
    unknown = sorted({wnids[Path(name).stem] for name in files} - set(index))
    if unknown:
        raise DataError(
            f"'{root / KAGGLE_VAL_LABELS}' names wnid(s) with no train folder: {', '.join(unknown[:5])}"
        )
    ordered = sorted(files, key=lambda name: (index[wnids[Path(name).stem]], name))
    labels = [index[wnids[Path(name).stem]] for name in ordered]
    return Listing([f"{folder}/{name}" for name in ordered], labels, classes)


def list_split(root: Path, split: str, row: dict) -> Listing:
    if not (root / "train").exists() and (root / KAGGLE).is_dir():
        classes = subfolders(require(root / KAGGLE / "train", "folder", LAYOUT))
        if split == "test":
            return _kaggle_val(root, classes)
        return folder_listing(root, f"{KAGGLE}/train", classes, lambda name: name, LAYOUT)
    classes = subfolders(require(root / "train", "folder", LAYOUT))
    return folder_listing(root, FOLDERS[split], classes, lambda name: name, LAYOUT)


def load(root: Path, item: str):
    return load_rgb(root / item)
