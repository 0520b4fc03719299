"""Adapters for the real data sets' on-disk layouts (the paper's 11 data sets).

One module per layout, each with ``LAYOUT`` (the expected files, quoted in errors),
``FILES`` (items are files under the root), ``list_split(root, split, row)`` -> :class:`Listing`
in the data set's own order, and ``load(root, item)`` -> RGB PIL image. The table's ``kind``
column names the module (``workflow_scripts.datasets.<kind>``), imported on demand by
:func:`adapter`, never here: a job's code identity (``workflow_scripts.provenance``) holds the
adapters of its own data sets only, so editing one adapter reruns only that data set's jobs.
``synthetic`` (the demo) is rendered by ``workflow_scripts.synthetic`` instead. Numpy and PIL only; torch lives in :mod:`~workflow_scripts.datasets.loader` and
:mod:`~workflow_scripts.datasets.transforms`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from workflow_scripts.datasets.common import DataError, Listing, load_rgb, resolve_root

#: The data set kinds with an adapter module of the same name in this package.
ADAPTERS = ("imagenet", "inaturalist", "cub", "pascal", "cifar100", "domainnet")
KINDS = ("synthetic", *ADAPTERS)
PREPROCESSING = ("none", "pad_square", "crop_square")

__all__ = [
    "ADAPTERS",
    "KINDS",
    "PREPROCESSING",
    "DataError",
    "Listing",
    "adapter",
    "adapter_module",
    "data_root_of",
    "list_split",
    "load_rgb",
    "resolve_root",
]


def adapter_module(kind: str) -> str:
    """The package module (relative to ``workflow_scripts``) of a kind's adapter."""
    if kind not in ADAPTERS:
        raise DataError(f"unknown data set kind '{kind}' (known: {', '.join(ADAPTERS)})")
    return f"datasets.{kind}"


def adapter(kind: str) -> ModuleType:
    """The adapter module of a real data set kind, imported now."""
    return importlib.import_module(f"workflow_scripts.{adapter_module(kind)}")


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
