"""Few-shot training subsets, exactly the authors' procedure (README "Protocols").

n = floor(fraction x N_train / C) images per class; the legacy NumPy stream seeded once with
``np.random.seed(42)``; then for each class label l in sorted order
``np.random.choice(np.where(labels == l)[0], n, replace=False)``; concatenated. Labels are in the
data set's un-shuffled order. A private ``RandomState(seed)`` gives exactly the stream of the
global ``np.random.seed(seed)`` without touching global state.
"""

from __future__ import annotations

import math

import numpy as np


def per_class(n_train: int, num_classes: int, percent: float) -> int:
    """Images per class of a ``percent``% subset: floor(fraction x N / C)."""
    return math.floor(percent / 100 * n_train / num_classes)


def fewshot_indices(
    labels: np.ndarray, num_classes: int, percent: float, *, dataset: str, seed: int = 42
) -> np.ndarray:
    """int64 indices into the train split, class by class in sorted label order.

    A subset with 0 images per class, or a class with fewer than n images, is an error naming
    the data set, the fraction and the class -- never an empty or silently shrunken subset.
    """
    labels = np.asarray(labels)
    n = per_class(len(labels), num_classes, percent)
    if n == 0:
        raise ValueError(
            f"data set '{dataset}': a {percent:g}% few-shot subset has 0 images per class "
            f"(floor({percent / 100:g} x {len(labels)} train images / {num_classes} classes)); "
            "few-shot fine-tuning needs a larger train split or a larger fraction"
        )
    rng = np.random.RandomState(seed)
    chosen = []
    for label in range(num_classes):
        pool = np.where(labels == label)[0]
        if len(pool) < n:
            raise ValueError(
                f"data set '{dataset}': class {label} has {len(pool)} train images, fewer than "
                f"the {n} per class a {percent:g}% few-shot subset takes"
            )
        chosen.append(rng.choice(pool, n, replace=False))
    return np.concatenate(chosen).astype(np.int64)
