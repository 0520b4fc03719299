"""The feature cache as the probes read it: ``results/features/{model}/{dataset}/{split}.npy``
(float32 or float16 [N, D], row i belonging to ``results/labels/{dataset}/{split}.npy``[i]),
loaded and checked. Numpy only: a probe's code identity holds neither the extraction
(:mod:`workflow_scripts.features`) nor any data set adapter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np


def check_finite(
    features: np.ndarray,
    model: str,
    dataset: str,
    split: str,
    offset: int = 0,
    chunk_rows: int = 4096,
) -> None:
    """NaN or infinite features are an error naming model, data set, split and rows (row
    numbers counted from ``offset``); checked in row chunks, so the check needs no N x D
    temporary arrays."""
    bad_rows: list[int] = []
    bad_values = 0
    for start in range(0, len(features), chunk_rows):
        block = features[start : start + chunk_rows]
        if np.isfinite(block).all():
            continue
        bad = ~np.isfinite(block)
        bad_values += int(bad.sum())
        bad_rows += (np.unique(np.nonzero(bad)[0]) + start + offset).tolist()
    if bad_rows:
        raise ValueError(
            f"features of model '{model}' on data set '{dataset}' split '{split}' contain "
            f"{bad_values} NaN/infinite values in {len(bad_rows)} rows "
            f"(first rows: {bad_rows[:5]})"
        )


def load_features(path: str | Path, model: str, dataset: str, split: str) -> np.ndarray:
    """Load cached features as float32 and check them (the probes' entry point)."""
    from workflow_scripts.io import load_npy

    where = f"model '{model}', data set '{dataset}', split '{split}'"
    features = load_npy(path, f"the features of {where}").astype(np.float32, copy=False)
    if features.ndim != 2:
        raise ValueError(
            f"features '{path}' ({where}) have shape {features.shape}, expected [N, D]"
        )
    check_finite(features, model, dataset, split)
    return features


def load_labelled(
    features_path: str | Path, labels_path: str | Path, model: str, dataset: str, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of one split, checked to describe the same N images."""
    from workflow_scripts.io import load_npy

    features = load_features(features_path, model, dataset, split)
    labels = load_npy(labels_path, f"the labels of data set '{dataset}', split '{split}'")
    if labels.ndim != 1 or len(labels) != len(features):
        raise ValueError(
            f"model '{model}', data set '{dataset}', split '{split}': the features "
            f"'{features_path}' have {len(features)} rows but the labels '{labels_path}' have "
            f"shape {labels.shape}"
        )
    return features, labels


def labelled_splits(
    model: str,
    datasets: list[str],
    train: list[str],
    train_labels: list[str],
    test: list[str],
    test_labels: list[str],
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(data set, train features, train labels, test features, test labels) for each data set
    of a probe job, in order, loaded (and checked) one data set at a time."""
    for dataset, *paths in zip(datasets, train, train_labels, test, test_labels, strict=True):
        train_x, train_y = load_labelled(paths[0], paths[1], model, dataset, "train")
        test_x, test_y = load_labelled(paths[2], paths[3], model, dataset, "test")
        yield dataset, train_x, train_y, test_x, test_y
