"""Adapters for the real data sets' on-disk layouts (the paper's 11 data sets).

One module per layout, each with ``LAYOUT`` (the expected files, quoted in errors),
``FILES`` (items are files under the root), ``list_split(root, split, row)`` -> :class:`Listing`
in the data set's own order, and ``load(root, item)`` -> RGB PIL image. The table's ``kind``
column picks the module; ``synthetic`` (the demo) is rendered by ``workflow_scripts.synthetic``
instead. Numpy and PIL only; torch lives in :mod:`~workflow_scripts.datasets.loader` and
:mod:`~workflow_scripts.datasets.transforms`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from workflow_scripts.datasets import cifar100, cub, domainnet, imagenet, inaturalist, pascal
from workflow_scripts.datasets.common import DataError, Listing, load_rgb, resolve_root

ADAPTERS: dict[str, ModuleType] = {
    "imagenet": imagenet,
    "inaturalist": inaturalist,
    "cub": cub,
    "pascal": pascal,
    "cifar100": cifar100,
    "domainnet": domainnet,
}
KINDS = ("synthetic", *ADAPTERS)
PREPROCESSING = ("none", "pad_square", "crop_square")

__all__ = [
    "ADAPTERS",
    "KINDS",
    "PREPROCESSING",
    "DataError",
    "Listing",
    "adapter",
    "data_root_of",
    "list_split",
    "load_rgb",
    "resolve_root",
]


def adapter(kind: str) -> ModuleType:
    if kind not in ADAPTERS:
        raise DataError(f"unknown data set kind '{kind}' (known: {', '.join(ADAPTERS)})")
    return ADAPTERS[kind]


def data_root_of(row: dict, data_root: str | Path) -> Path:
    """The existing root folder of a data set, or an error naming the data set and the path."""
    root = resolve_root(row, data_root)
    if not root.is_dir():
        how = (
            "absolute path in the table's 'root' column"
            if Path(row["root"]).is_absolute()
            else f"table column 'root' = '{row['root']}' under config key data_root = '{data_root}'"
        )
        raise DataError(
            f"data set '{row['key']}': root folder '{root}' does not exist ({how}). "
            f"Expected layout:\n{adapter(row['kind']).LAYOUT}"
        )
    return root


def list_split(row: dict, split: str, data_root: str | Path) -> tuple[Path, Listing]:
    """(root, listing) of one split of the data set described by a table row."""
    module = adapter(row["kind"])
    root = data_root_of(row, data_root)
    return root, module.list_split(root, split, row)
