"""CUB-200-2011: ``images.txt``, ``train_test_split.txt``, ``image_class_labels.txt``.

Order = image id order of ``images.txt``; label = class id - 1 (200 classes); the split is
``is_training_image`` (1 = train, 0 = test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow_scripts.datasets.common import DataError, Listing, load_rgb, read_lines

LAYOUT = """<root>/images.txt              "<image id> <class folder>/<file>.jpg"
<root>/train_test_split.txt      "<image id> <1 = train | 0 = test>"
<root>/image_class_labels.txt    "<image id> <class id 1..200>"
<root>/classes.txt               (optional, class names)
<root>/images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg
(root = the extracted CUB_200_2011 folder)"""
FILES = True


def _table(path: Path) -> dict[str, str]:
    table = {}
    for number, line in enumerate(read_lines(path, LAYOUT), start=1):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"'{path}', line {number}: expected '<image id> <value>', got {line!r}")
        table[parts[0]] = parts[1]
    return table


def list_split(root: Path, split: str, row: dict) -> Listing:
    images = _table(root / "images.txt")
    is_train = _table(root / "train_test_split.txt")
    classes = _table(root / "image_class_labels.txt")
    wanted = "1" if split == "train" else "0"
    items, labels = [], []
    for image_id, rel in sorted(images.items(), key=lambda kv: int(kv[0])):
        for name, table in (
            ("train_test_split.txt", is_train),
            ("image_class_labels.txt", classes),
        ):
            if image_id not in table:
                raise DataError(
                    f"image id {image_id} of '{root / 'images.txt'}' is missing "
                    f"from '{root / name}'"
                )
        if is_train[image_id] == wanted:
            items.append(f"images/{rel}")
            labels.append(int(classes[image_id]) - 1)
    names = sorted({rel.split("/")[0] for rel in images.values()})
    return Listing(items, np.asarray(labels, dtype=np.int64), names)


def load(root: Path, item: str):
    return load_rgb(root / item)
