"""iNaturalist 2021: train_mini and val, one folder per species, under the official tarballs'
folder names (``train_mini/``, ``val/``: train_mini.tar.gz and val.tar.gz unpack to these) or
torchvision's (``2021_train_mini/``, ``2021_valid/``: ``torchvision.datasets.INaturalist``
renames them). Items keep the folder name found.

A species folder is named ``<id>_<kingdom>_<phylum>_<class>_<order>_<family>_<genus>_<species>``;
the label is the taxonomic *family* (1103 of them): its index in the sorted list of the
families of the train folders. Folders sorted by name, files sorted within a folder.
"""

from __future__ import annotations

from pathlib import Path

from workflow_scripts.datasets.common import (
    DataError,
    Listing,
    folder_listing,
    load_rgb,
    subfolders,
)

LAYOUT = """<root>/train_mini/00000_Animalia_Annelida_Clitellata_Crassiclitellata_Lumbricidae_Lumbricus_terrestris/<uuid>.jpg
<root>/val/00000_Animalia_Annelida_Clitellata_Crassiclitellata_Lumbricidae_Lumbricus_terrestris/<uuid>.jpg
(the official tarballs' folders; torchvision's names 2021_train_mini/ and 2021_valid/ work too;
10,000 species folders per split, 500,000 train_mini and 100,000 val images)"""
#: Each split's folder: the official name, then torchvision's.
FOLDERS = {"train": ("train_mini", "2021_train_mini"), "test": ("val", "2021_valid")}
FILES = True


def split_folder(root: Path, split: str) -> str:
    """The folder of ``split`` under ``root``: whichever of its two names exists (both is an
    error: which one is the data set?)."""
    found = [name for name in FOLDERS[split] if (root / name).is_dir()]
    if not found:
        names = " or ".join(f"'{root / name}'" for name in FOLDERS[split])
        raise DataError(f"folder {names} does not exist; expected layout:\n{LAYOUT}")
    if len(found) > 1:
        raise DataError(
            f"both '{root / found[0]}' and '{root / found[1]}' exist: keep one of the two "
            "names (the official tarball's or torchvision's)"
        )
    return found[0]


def family(folder: str) -> str:
    """The family field of a species folder name (the 6th of its 8 fields)."""
    parts = folder.split("_", 7)
    if len(parts) != 8:
        raise DataError(
            f"iNaturalist folder '{folder}' is not named "
            "<id>_<kingdom>_<phylum>_<class>_<order>_<family>_<genus>_<species>"
        )
    return parts[5]


def list_split(root: Path, split: str, row: dict) -> Listing:
    train = root / split_folder(root, "train")
    classes = sorted({family(name) for name in subfolders(train)})
    return folder_listing(root, split_folder(root, split), classes, family, LAYOUT)


def load(root: Path, item: str):
    return load_rgb(root / item)
