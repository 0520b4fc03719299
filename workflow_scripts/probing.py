"""What every probe on cached features shares, so that no probe imports another: input checks,
z-scoring (the BN arm of the kNN probe and of the proxies), top-k accuracy, and the loop over a
job's data sets that writes each one's rows with the job's provenance columns.

A probe is a module with ``run_job(data, outputs, *, model, num_classes, arms, settings,
threads, code, log)`` and an entry in ``registry.PROTOCOLS``; ``data`` comes from
:func:`workflow_scripts.feature_cache.labelled_splits`. Numpy and pandas only (torch tensors
are passed in, never imported here): a kNN job on the CPU never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import torch

_ZSCORE_CHUNK_ELEMS = 1 << 23


# ----------------------------------------------------------------------------------------------
# input checks


def as_features(x, name: str, *, sqnorms: bool = False):
    """Return ``x`` as a C-contiguous float32 2-D array (no copy if it already is one).

    With ``sqnorms=True`` also return the float32 squared row norms (used for the finiteness
    check: they are finite only if every entry is, so the full check runs only if they are not).
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n, dim], got shape {arr.shape}")
    if arr.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"{name} must be float16, float32 or float64, got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", arr, arr)
    if not np.isfinite(sq).all() and not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or inf (after conversion to float32)")
    return (arr, sq) if sqnorms else arr


def as_labels(y, n: int, num_classes: int, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but the features have {n} rows")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    if n and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, num_classes={num_classes}), "
            f"got values in [{arr.min()}, {arr.max()}]"
        )
    return arr.astype(np.int64, copy=False)


def check_dims(train: np.ndarray, test: np.ndarray) -> None:
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"train features have dimension {train.shape[1]} but test features have "
            f"dimension {test.shape[1]}"
        )


# ----------------------------------------------------------------------------------------------
# z-scoring


def zscore(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise train and test with the train mean and population std (ddof=0) per dimension.

    Statistics are computed in float64 (in row chunks, two passes); a dimension whose std is 0
    (constant over the training set) gets std 1, and its mean is the constant itself, so it
    maps to exactly 0 in train. Returns float32 arrays, like ``StandardScaler`` fitted on train.
    """
    train = as_features(train, "train features")
    test = as_features(test, "test features")
    check_dims(train, test)
    n, dim = train.shape
    rows = max(1, _ZSCORE_CHUNK_ELEMS // dim)

    total = np.zeros(dim, dtype=np.float64)
    for s in range(0, n, rows):
        total += train[s : s + rows].sum(axis=0, dtype=np.float64)
    mean = total / n
    sq = np.zeros(dim, dtype=np.float64)
    for s in range(0, n, rows):
        dev = train[s : s + rows].astype(np.float64) - mean
        sq += np.einsum("ij,ij->j", dev, dev)
    std = np.sqrt(sq / n)

    # Exactly constant columns: the float64 mean of n copies of c need not be c, so std can come
    # out as a tiny positive number instead of 0; detect them directly.
    lo = train.min(axis=0)
    hi = train.max(axis=0)
    constant = lo == hi
    mean[constant] = lo[constant]
    std[constant | (std == 0)] = 1.0

    def apply(x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape, dtype=np.float32)
        step = max(1, _ZSCORE_CHUNK_ELEMS // dim)
        for s in range(0, x.shape[0], step):
            out[s : s + step] = (x[s : s + step].astype(np.float64) - mean) / std
        return out

    return apply(train), apply(test)


def standardize(train) -> np.ndarray:
    """The "bn" arm: z-score every column with the mean and population std (ddof=0) of ``train``.

    Same semantics as :func:`zscore` (the kNN BN arm), without its float32 output:
    statistics in float64, no epsilon; a column whose std is 0 is divided by 1, and an exactly
    constant column (min == max) is centred on that constant, so it maps to exactly 0.
    Returns float64.
    """
    x = np.asarray(train, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"features must be a non-empty N x D matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    mean = x.mean(axis=0)
    std = np.sqrt(((x - mean) ** 2).mean(axis=0))
    lo, hi = x.min(axis=0), x.max(axis=0)
    constant = lo == hi
    mean[constant] = lo[constant]
    std[constant | (std == 0)] = 1.0
    return (x - mean) / std


# ----------------------------------------------------------------------------------------------
# top-k accuracy


def topk_accuracy(
    scores: np.ndarray, labels: np.ndarray, ks: Iterable[int] = (1, 5)
) -> dict[int, float]:
    """Top-k accuracy in percent (0-100) for each k in ``ks``.

    A query counts as a hit if its true label is among the k classes with the highest score,
    ties broken toward the lower class index (stable argsort of ``-scores``). For
    ``k >= num_classes`` the metric is meaningless and ``float('nan')`` is returned.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be a non-empty 2-D array, got shape {scores.shape}")
    n, num_classes = scores.shape
    labels = as_labels(labels, n, num_classes, "labels")
    ks = [int(kk) for kk in ks]
    for kk in ks:
        if kk < 1:
            raise ValueError(f"top-k needs k >= 1, got {kk}")
    valid = [kk for kk in ks if kk < num_classes]
    out: dict[int, float] = {kk: float("nan") for kk in ks}
    if valid:
        order = np.argsort(-scores, axis=1, kind="stable")[:, : max(valid)]
        hit = order == labels[:, None]
        for kk in valid:
            out[kk] = 100.0 * float(hit[:, :kk].any(axis=1).mean())
    return out


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per-head count of samples whose label is among the top-k logits. logits [H, N, C]."""
    top = logits.topk(k, dim=-1).indices
    return (top == labels.view(1, -1, 1)).any(-1).sum(-1)


# ----------------------------------------------------------------------------------------------
# a job's data sets and rows


def job_datasets(
    data: Iterable[tuple], num_classes: Sequence[int], outputs: Sequence[str | Path]
) -> Iterator[tuple[tuple, int, str | Path]]:
    """(data set tuple, its class count, its output file) for each data set of a probe job, in
    order; the three lists must have one entry per data set."""
    return zip(data, num_classes, outputs, strict=True)


def write_rows(
    out: str | Path, rows: list[dict], columns: Sequence[str] | None = None, **constant
) -> pd.DataFrame:
    """One data set's result rows with the job's constant columns (model, dataset, protocol,
    code_version, ...) written atomically to ``out``; ``columns``: their order (default: the
    rows' keys, then the constants). Returns the written frame."""
    import pandas as pd

    from workflow_scripts.io import save_csv

    frame = pd.DataFrame(rows).assign(**constant)
    if columns is not None:
        frame = frame[list(columns)]
    save_csv(out, frame)
    return frame
