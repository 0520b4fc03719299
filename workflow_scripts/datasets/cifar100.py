"""CIFAR-100, python version: the pickled batches ``train`` and ``test`` (fine labels).

Each batch is a dict with byte-string keys: ``b'data'`` uint8 [N, 3072] (the red, green and
blue 32x32 planes of each image, row-major), ``b'fine_labels'``, ``b'coarse_labels'``,
``b'filenames'``. Items are ``<batch>#<row>`` references in file order.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from workflow_scripts.safe_pickle import load_data_pickle
from workflow_scripts.datasets.common import DataError, Listing, require

LAYOUT = """<root>/train   (pickled dict: b'data' uint8 [50000, 3072], b'fine_labels', ...)
<root>/test    (pickled dict: b'data' uint8 [10000, 3072], b'fine_labels', ...)
<root>/meta    (optional: b'fine_label_names')
(root = the extracted cifar-100-python folder)"""
BATCHES = {"train": "train", "test": "test"}
FILES = False
_CACHE: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def read_batch(root: Path, batch: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 32, 32, 3] and int64 fine labels of one batch file (cached per process).

    The batches are pickles of plain dicts, lists, bytes and a numpy array; CIFAR's own
    documentation reads them with ``pickle.load(fo, encoding='bytes')``. They are read here with
    a restricted unpickler that accepts exactly such plain data and refuses any other global
    (naming it), so a crafted batch file cannot run code.
    """
    key = (str(root), batch)
    if key not in _CACHE:
        path = require(root / batch, "CIFAR-100 batch file", LAYOUT)
        try:
            with open(path, "rb") as fh:
                entry = load_data_pickle(fh, encoding="bytes")
            data = np.asarray(entry[b"data"], dtype=np.uint8)
            labels = np.asarray(entry[b"fine_labels"], dtype=np.int64)
        except pickle.UnpicklingError as error:  # RefusedGlobal names the global
            raise DataError(f"cannot read CIFAR-100 batch '{path}': {error}") from None
        except (OSError, EOFError, KeyError, TypeError) as error:
            raise DataError(f"cannot read CIFAR-100 batch '{path}': {error!r}") from error
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise DataError(
                f"CIFAR-100 batch '{path}' has data {data.shape} and "
                f"{len(labels)} labels; expected [N, 3072] and N labels"
            )
        _CACHE[key] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)
    return _CACHE[key]


def list_split(root: Path, split: str, row: dict) -> Listing:
    batch = BATCHES[split]
    _, labels = read_batch(root, batch)
    classes = [str(i) for i in range(int(row.get("num_classes") or 100))]
    return Listing([f"{batch}#{i}" for i in range(len(labels))], labels, classes)


def load(root: Path, item: str):
    batch, _, index = item.partition("#")
    images, _ = read_batch(root, batch)
    try:
        return Image.fromarray(images[int(index)], mode="RGB")
    except (ValueError, IndexError) as error:
        raise DataError(f"CIFAR-100 item '{item}' not in batch '{root / batch}'") from error
