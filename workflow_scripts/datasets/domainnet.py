"""DomainNet: ``<domain>_train.txt`` / ``<domain>_test.txt`` list files, ``<domain>/`` images.

Each list line is ``<domain>/<class>/<file>.jpg <label>`` (345 classes); order = the list
file's order. The table's ``variant`` column names the domain (clipart, infograph, painting,
quickdraw, real, sketch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow_scripts.datasets.common import DataError, Listing, load_rgb, read_lines

LAYOUT = """<root>/clipart_train.txt   "clipart/aircraft_carrier/clipart_001_000018.jpg 0"
<root>/clipart_test.txt
<root>/clipart/aircraft_carrier/clipart_001_000018.jpg
(the same for infograph, painting, quickdraw, real, sketch; root = the folder holding them)"""
DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
FILES = True


def list_split(root: Path, split: str, row: dict) -> Listing:
    domain = row.get("variant")
    if domain not in DOMAINS:
        raise DataError(
            f"data set '{row['key']}': column 'variant' must name the DomainNet "
            f"domain ({', '.join(DOMAINS)}), got {domain!r}"
        )
    path = root / f"{domain}_{split}.txt"
    items, labels, names = [], [], {}
    for number, line in enumerate(read_lines(path, LAYOUT), start=1):
        rel, _, label = line.rpartition(" ")
        if not rel or not label.lstrip("-").isdigit():
            raise DataError(
                f"'{path}', line {number}: expected '<image path> <label>', got {line!r}"
            )
        items.append(rel.strip())
        labels.append(int(label))
        names.setdefault(int(label), rel.split("/")[1] if rel.count("/") >= 2 else label)
    classes = [str(names.get(i, i)) for i in range(max(labels, default=-1) + 1)]
    return Listing(items, np.asarray(labels, dtype=np.int64), classes)


def load(root: Path, item: str):
    return load_rgb(root / item)
