"""Few-shot subsets equal an independent re-implementation of the authors' procedure."""

import numpy as np
import pytest

from workflow_scripts.fewshot import fewshot_indices, per_class


def authors_procedure(labels, fraction, num_classes):
    """The authors' procedure, with the global legacy stream."""
    n = int(np.floor(fraction * len(labels) / num_classes))
    np.random.seed(42)
    out = []
    for label in sorted(set(labels.tolist())):
        out.append(np.random.choice(np.where(labels == label)[0], n, replace=False))
    return np.concatenate(out)


@pytest.mark.parametrize(
    ("n", "classes", "percent"), [(5000, 10, 10), (5000, 10, 1), (1237, 7, 10), (20000, 100, 1)]
)
def test_indices_equal_the_authors_procedure(n, classes, percent):
    rng = np.random.default_rng(n)
    labels = rng.permutation(np.arange(n) % classes)  # un-shuffled order = as stored
    state = np.random.get_state()
    try:
        expected = authors_procedure(labels, percent / 100, classes)
    finally:
        np.random.set_state(state)
    got = fewshot_indices(labels, classes, percent, dataset="d")
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64 and len(np.unique(got)) == len(got)
    per = per_class(n, classes, percent)
    assert np.all(np.bincount(labels[got], minlength=classes) == per)


def test_imagenet_counts():
    assert per_class(1_281_167, 1000, 10) == 128 and per_class(1_281_167, 1000, 1) == 12
    assert per_class(5994, 200, 1) == 0  # CUB at 1%: few-shot is an in-domain protocol


def test_global_random_state_untouched():
    np.random.seed(7)
    before = np.random.random()
    np.random.seed(7)
    fewshot_indices(np.arange(100) % 4, 4, 10, dataset="d")
    assert np.random.random() == before


def test_zero_size_and_short_class_are_errors():
    labels = np.arange(500) % 10
    with pytest.raises(
        ValueError, match=r"data set 'cub': a 1% few-shot subset has 0 images per class"
    ):
        fewshot_indices(labels, 10, 1, dataset="cub")
    short = np.concatenate([np.arange(1, 10).repeat(60), np.zeros(2, int)])  # N = 542, n = 5
    with pytest.raises(
        ValueError,
        match=r"data set 'x': class 0 has 2 train images, fewer than the 5 per class a 10%",
    ):
        fewshot_indices(short, 10, 10, dataset="x")
