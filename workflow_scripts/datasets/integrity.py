"""Integrity of one (data set, split) before any extraction: counts and labels vs the table.

Checked: the image count against ``n_train``/``n_test``, the number of classes the adapter
defines and the number present against ``num_classes``, every label in ``[0, num_classes)``,
every listed file present. A mismatch is an :class:`IntegrityError` naming data set, split,
expected and found. A data set listed in the config key ``allow_subsets`` may hold fewer images
and classes than the table says (a deliberate subset); the label range is always checked.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from workflow_scripts.datasets import adapter
from workflow_scripts.datasets.common import DataError, Listing, missing_files


class IntegrityError(DataError):
    """A split does not match the data set table."""


def file_list_text(items: list[str]) -> str:
    """The file list as written to ``{split}_files.txt``: one item per line."""
    return "".join(f"{item}\n" for item in items)


def save_file_list(path: str | Path, items: list[str]) -> None:
    """Write the file list (:func:`file_list_text`) to ``path`` atomically."""
    from workflow_scripts.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(file_list_text(items))


def check_split(
    row: dict, split: str, listing: Listing, root: Path | None = None, allow_subset: bool = False
) -> dict:
    """Check a listing against the table row; return the manifest (a JSON-able dict)."""
    key, num_classes = row["key"], int(row["num_classes"])
    expected_n = row.get(f"n_{split}")
    n = len(listing.items)
    where = f"data set '{key}', split '{split}'"
    labels = listing.labels
    if n == 0:
        raise IntegrityError(f"{where}: no images found (root '{root}')")
    if expected_n is not None and n != expected_n and not (allow_subset and n < expected_n):
        raise IntegrityError(
            f"{where}: expected {expected_n} images (table column 'n_{split}'), found {n}"
            + (
                ""
                if allow_subset
                else "; a deliberate subset: add the data set to config key 'allow_subsets'"
            )
        )
    defined = len(listing.classes)
    if defined != num_classes and not (allow_subset and defined < num_classes):
        raise IntegrityError(
            f"{where}: expected {num_classes} classes (table column 'num_classes'), the data "
            f"on disk defines {defined}"
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise IntegrityError(
            f"{where}: expected labels in 0..{num_classes - 1}, found {low}..{high}"
        )
    counts = np.bincount(labels, minlength=num_classes)
    present = int((counts > 0).sum())
    if present != num_classes and not allow_subset:
        raise IntegrityError(
            f"{where}: expected images of all {num_classes} classes, found {present} "
            f"(classes without images: {np.nonzero(counts == 0)[0][:10].tolist()})"
        )
    if root is not None and adapter(row["kind"]).FILES:  # not for array refs (CIFAR-100)
        count, first = missing_files(root, listing.items)
        if count:
            raise IntegrityError(
                f"{where}: {count} listed image file(s) missing under root "
                f"'{root}', e.g. {', '.join(first)}"
            )
    return {
        "dataset": key,
        "split": split,
        "kind": row["kind"],
        "root": str(root),
        "n": n,
        "num_classes": num_classes,
        "classes_present": present,
        "count_per_class": counts.tolist(),
        "class_names": list(listing.classes),
        "files_sha256": hashlib.sha256(file_list_text(listing.items).encode()).hexdigest(),
        "allow_subset": bool(allow_subset),
    }
