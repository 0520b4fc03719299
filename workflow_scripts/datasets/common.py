"""What every data set adapter shares: the listing type, errors, RGB image loading, roots.

An adapter lists one split of a data set in the data set's own (un-shuffled) order as *items*
(paths relative to the data set's root, or references into an array file such as
``train#17``) with int64 labels, and loads one item as an RGB PIL image. Numpy and PIL only.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

# Extensions accepted in folder layouts (ImageNet, iNaturalist); compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A data set on disk does not match its layout; the message names the file or folder."""


@dataclasses.dataclass
class Listing:
    """One split: ``items[i]`` has label ``labels[i]``; ``classes[c]`` names label c."""

    items: list[str]
    labels: np.ndarray  # int64 [N]
    classes: list[str]

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.items) != len(self.labels):
            raise ValueError(f"{len(self.items)} items but {len(self.labels)} labels")


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file by its content (not its extension) and convert it to RGB.

    Grayscale, CMYK, palette (with or without transparency) and PNG-saved-as-JPEG files all
    come back as 3-channel RGB, as torchvision's default loader does. An unreadable or
    truncated file raises :class:`DataError` naming the file.
    """
    try:
        with Image.open(path) as img:
            img.load()
            with warnings.catch_warnings():
                # palette images with a transparency entry: the alpha is dropped, on purpose
                warnings.simplefilter("ignore", UserWarning)
                return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read image '{path}': {error}") from error


def require(path: Path, what: str, layout: str) -> Path:
    """``path`` must exist; otherwise an error naming it and the expected layout."""
    if not path.exists():
        raise DataError(f"{what} '{path}' does not exist; expected layout:\n{layout}")
    return path


def read_lines(path: Path, layout: str) -> list[str]:
    require(path, "file", layout)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def subfolders(path: Path) -> list[str]:
    """Names of the sub-directories of ``path``, sorted (the class order of folder layouts)."""
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())


def image_files(path: Path) -> list[str]:
    """Image file names directly inside ``path``, sorted by name."""
    return sorted(
        entry.name
        for entry in os.scandir(path)
        if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
    )


def folder_listing(root: Path, folder: str, classes: list[str], class_of, layout: str) -> Listing:
    """Listing of a ``<folder>/<class folder>/<image>`` tree.

    ``class_of(name)`` maps a class folder name to its class (e.g. the iNaturalist family);
    ``classes`` fixes the label order. Folders sorted by name, files sorted within a folder.
    """
    base = require(root / folder, "folder", layout)
    stray = image_files(base)
    if stray:
        raise DataError(
            f"folder '{base}' holds image files directly (e.g. '{stray[0]}'); expected one "
            f"sub-folder per class. Expected layout:\n{layout}"
        )
    index = {name: i for i, name in enumerate(classes)}
    items: list[str] = []
    labels: list[int] = []
    for name in subfolders(base):
        cls = class_of(name)
        if cls not in index:
            raise DataError(
                f"class folder '{base / name}' ({cls}) is not a class of the train split"
            )
        files = image_files(base / name)
        items.extend(f"{folder}/{name}/{f}" for f in files)
        labels.extend([index[cls]] * len(files))
    return Listing(items, np.asarray(labels, dtype=np.int64), classes)


def resolve_root(row: dict, data_root: str | Path) -> Path:
    """The data set's root: the table's ``root`` column, relative to ``data_root``."""
    if not row.get("root"):
        raise DataError(f"data set '{row['key']}': the data set table has no 'root' for it")
    root = Path(row["root"]).expanduser()
    return root if root.is_absolute() else Path(data_root).expanduser() / root


def missing_files(root: Path, items: list[str], limit: int = 5) -> tuple[int, list[str]]:
    """How many listed files do not exist under ``root``, and the first few of them."""
    missing = [item for item in items if not os.path.isfile(root / item)]
    return len(missing), missing[:limit]
