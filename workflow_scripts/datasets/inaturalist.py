"""iNaturalist 2021: ``2021_train_mini/`` and ``2021_valid/``, one folder per species.

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
    require,
    subfolders,
)

LAYOUT = """<root>/2021_train_mini/00000_Animalia_Annelida_Clitellata_Crassiclitellata_Lumbricidae_Lumbricus_terrestris/<uuid>.jpg
<root>/2021_valid/00000_Animalia_Annelida_Clitellata_Crassiclitellata_Lumbricidae_Lumbricus_terrestris/<uuid>.jpg
(10,000 species folders per split, 500,000 train_mini and 100,000 valid images)"""
FOLDERS = {"train": "2021_train_mini", "test": "2021_valid"}
FILES = True


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
    train = require(root / FOLDERS["train"], "folder", LAYOUT)
    classes = sorted({family(name) for name in subfolders(train)})
    return folder_listing(root, FOLDERS[split], classes, family, LAYOUT)


def load(root: Path, item: str):
    return load_rgb(root / item)
