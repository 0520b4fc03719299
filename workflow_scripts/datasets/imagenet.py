"""ImageNet ILSVRC-2012: one folder per synset (wnid) in ``train/`` and ``val/``.

Label = index of the wnid in the sorted list of the train folders (the usual synset index,
torchvision ``ImageFolder`` order). Files sorted by name within a folder.
"""

from __future__ import annotations

from pathlib import Path

from workflow_scripts.datasets.common import Listing, folder_listing, load_rgb, require, subfolders

LAYOUT = """<root>/train/n01440764/n01440764_10026.JPEG   (1000 wnid folders, 1,281,167 images)
<root>/val/n01440764/ILSVRC2012_val_00000293.JPEG  (the 50,000 val images sorted into the same
                                                    wnid folders, e.g. with valprep.sh)"""
FOLDERS = {"train": "train", "test": "val"}
FILES = True


def list_split(root: Path, split: str, row: dict) -> Listing:
    classes = subfolders(require(root / "train", "folder", LAYOUT))
    return folder_listing(root, FOLDERS[split], classes, lambda name: name, LAYOUT)


def load(root: Path, item: str):
    return load_rgb(root / item)
