"""Tests of the procedural data generator ``workflow_scripts.synthetic`` (numpy + sklearn only)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from workflow_scripts import synthetic
from workflow_scripts.synthetic import GENERATORS, VARIANTS, generate

ALL_CASES = [(g, v) for g, variants in VARIANTS.items() for v in variants]


@pytest.fixture(scope="module")
def shapes_train():
    return generate("shapes", "standard", 2000, 0, "train")


# ----------------------------------------------------------------------------- constants / API


def test_registry_constants():
    assert GENERATORS == {"shapes": 10, "count": 4, "texture": 8}
    assert VARIANTS == {
        "shapes": ("standard", "resampled", "sketch", "rendition", "corrupted"),
        "count": ("standard",),
        "texture": ("standard",),
    }
    for g, c in GENERATORS.items():
        assert len(synthetic.CLASS_NAMES[g]) == c


def test_agrees_with_registry():
    from workflow_scripts import registry

    assert tuple(synthetic.SPLITS) == tuple(registry.SPLITS)


def test_import_does_not_pull_torch():
    code = (
        "import sys; import workflow_scripts.synthetic; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=_repo_root())


def _repo_root():
    return Path(synthetic.__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("generator,variant", ALL_CASES)
def test_every_variant_shapes_dtypes_ranges(generator, variant):
    x, y = generate(generator, variant, 50, 3, "train")
    assert x.shape == (50, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (50,) and y.dtype == np.int64
    c = GENERATORS[generator]
    assert y.min() == 0 and y.max() == c - 1
    # not constant / not saturated: real images with content
    assert 20 < x.std() < 110
    per_image_std = x.reshape(50, -1).std(axis=1)
    assert per_image_std.min() > 3.0
    assert x.min() < 60 and x.max() > 180


@pytest.mark.parametrize("generator,variant", ALL_CASES)
def test_deterministic_and_split_seed_dependent(generator, variant):
    a = generate(generator, variant, 50, 7, "train")
    b = generate(generator, variant, 50, 7, "train")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    test = generate(generator, variant, 50, 7, "test")
    other_seed = generate(generator, variant, 50, 8, "train")
    for other in (test, other_seed):
        # images differ almost everywhere, not just in a few pixels
        assert np.mean(a[0] != other[0]) > 0.5


def test_deterministic_across_processes():
    code = (
        "import hashlib, numpy as np; from workflow_scripts.synthetic import generate; "
        "x, y = generate('shapes', 'rendition', 300, 11, 'test'); "
        "print(hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            cwd=_repo_root(),
            env={**os.environ, "PYTHONHASHSEED": str(s)},
        ).stdout.strip()
        for s in (1, 2)
    }
    x, y = generate("shapes", "rendition", 300, 11, "test")
    assert digests == {hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()}


def test_variants_differ_from_each_other():
    base = generate("shapes", "standard", 50, 1, "train")[0]
    for variant in VARIANTS["shapes"][1:]:
        assert np.mean(generate("shapes", variant, 50, 1, "train")[0] != base) > 0.5


def test_multi_chunk_batches_are_not_repeated():
    chunk = synthetic.chunk_size(32)
    n = chunk + 10
    x, y = generate("texture", "standard", n, 0, "train")
    assert x.shape[0] == n == y.shape[0]
    head, tail = x[:10], x[chunk:]
    assert np.mean(head != tail) > 0.5


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize("n", [1, 9, 10, 23, 50])
def test_labels_balanced_remainder_to_lowest(n):
    _, y = generate("shapes", "standard", n, 0, "train")
    counts = np.bincount(y, minlength=10)
    expected = np.full(10, n // 10)
    expected[: n % 10] += 1
    np.testing.assert_array_equal(counts, expected)


def test_labels_shuffled():
    _, y = generate("count", "standard", 400, 0, "train")
    np.testing.assert_array_equal(np.bincount(y), [100, 100, 100, 100])
    assert not np.array_equal(y, np.sort(y))
    # well mixed: each quarter of the sequence holds every class
    for quarter in np.split(y, 4):
        assert set(quarter.tolist()) == {0, 1, 2, 3}
    assert not np.array_equal(y, generate("count", "standard", 400, 0, "test")[1])


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs,bad,allowed",
    [
        ({"generator": "circles"}, "circles", "shapes"),
        ({"variant": "cartoon"}, "cartoon", "rendition"),
        ({"generator": "count", "variant": "sketch"}, "sketch", "standard"),
        ({"split": "val"}, "val", "train"),
        ({"n": 0}, "0", ">= 1"),
        ({"n": -5}, "-5", ">= 1"),
        ({"n": 2.5}, "2.5", "integer"),
        ({"size": 15}, "15", ">= 16"),
        ({"seed": -1}, "-1", ">= 0"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, bad, allowed):
    args = {"generator": "shapes", "variant": "standard", "n": 4, "seed": 0, "split": "train"}
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        generate(**args)
    assert bad in str(info.value)
    assert allowed in str(info.value)


def test_size_parameter_and_numpy_ints():
    x, y = generate("shapes", "sketch", np.int64(12), np.int32(2), "train", size=16)
    assert x.shape == (12, 16, 16, 3) and y.shape == (12,)
    x64, _ = generate("texture", "standard", 5, 0, "train", size=64)
    assert x64.shape == (5, 64, 64, 3)


# ----------------------------------------------------------------------------- content


def _gray(x):
    return x.astype(np.float32).mean(axis=3) / 255.0


def _fft_magnitude(x):
    """Phase-invariant texture features: log magnitude spectrum of the grey image."""
    g = _gray(x)
    g -= g.mean(axis=(1, 2), keepdims=True)
    return np.log1p(np.abs(np.fft.rfft2(g))).reshape(len(x), -1)


def _object_fraction(x):
    """Fraction of pixels far from the image's median colour, at a few thresholds."""
    g = x.astype(np.float32) / 255.0
    med = np.median(g.reshape(len(g), -1, 3), axis=1)[:, None, None, :]
    d = np.abs(g - med).max(axis=3)
    return np.stack([(d > t).mean(axis=(1, 2)) for t in (0.1, 0.15, 0.2, 0.3)], axis=1)


def test_texture_learnable_nearest_centroid():
    xtr, ytr = generate("texture", "standard", 1600, 0, "train")
    xte, yte = generate("texture", "standard", 800, 0, "test")
    clf = NearestCentroid().fit(_fft_magnitude(xtr), ytr)
    acc = clf.score(_fft_magnitude(xte), yte)
    assert acc > 0.6, acc  # chance 0.125


def test_count_learnable_from_object_area():
    xtr, ytr = generate("count", "standard", 1600, 0, "train")
    xte, yte = generate("count", "standard", 800, 0, "test")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    acc = clf.fit(_object_fraction(xtr), ytr).score(_object_fraction(xte), yte)
    assert acc > 0.5, acc  # chance 0.25
    # the object area grows with the count
    area = _object_fraction(xte)[:, 2]
    means = [area[yte == c].mean() for c in range(4)]
    assert np.all(np.diff(means) > 0.01), means


def test_shapes_objects_centred(shapes_train):
    x, _ = shapes_train
    g = x.astype(np.float32) / 255.0
    border = np.concatenate([g[:, :3].reshape(len(g), -1, 3), g[:, -3:].reshape(len(g), -1, 3)], 1)
    bg = np.median(border, axis=1)[:, None, None, :]
    object_map = (np.abs(g - bg).max(axis=3) > 0.2).mean(axis=0)  # [32, 32]
    assert object_map[12:20, 12:20].mean() > 0.6
    assert object_map[:2].mean() < 0.1 and object_map[:, -2:].mean() < 0.1


def test_shapes_class_means_distinct(shapes_train):
    """Class-mean images are distinct templates: nearest centroid (class means of a training
    set) classifies a fresh test set well above chance (0.1), on raw RGB pixels and on
    grey-level silhouettes with the per-image background and polarity removed (so the colour
    prior cannot help), with most classes recognised individually."""
    x, y = shapes_train
    xte, yte = generate("shapes", "standard", 1000, 0, "test")

    def flat(a):
        return a.reshape(len(a), -1).astype(np.float32) / 255.0

    acc_rgb = NearestCentroid().fit(flat(x), y).score(flat(xte), yte)
    assert acc_rgb > 0.18, acc_rgb  # measured ~0.25

    def silhouette(a):
        g = _gray(a)
        border = np.concatenate([g[:, :2].reshape(len(g), -1), g[:, -2:].reshape(len(g), -1)], 1)
        return np.abs(g - np.median(border, axis=1)[:, None, None]).reshape(len(a), -1)

    pred = NearestCentroid().fit(silhouette(x), y).predict(silhouette(xte))
    assert np.mean(pred == yte) > 0.3, np.mean(pred == yte)  # measured ~0.42
    recall = np.array([np.mean(pred[yte == c] == c) for c in range(10)])
    assert np.sum(recall > 0.15) >= 7, recall
    assert len(set(pred.tolist())) == 10  # every class mean wins somewhere


def test_shapes_colour_prior(shapes_train):
    """Half of the objects carry their class hue, so mean colours differ between classes."""
    x, y = shapes_train
    centre = x[:, 13:19, 13:19].reshape(len(x), -1, 3).astype(np.float32).mean(axis=1)
    class_mean = np.stack([centre[y == c].mean(axis=0) for c in range(10)])
    assert class_mean.std(axis=0).max() > 8  # grey levels


def test_sketch_is_light_grey_and_rendition_dark():
    sk, _ = generate("shapes", "sketch", 200, 0, "test")
    rd, _ = generate("shapes", "rendition", 200, 0, "test")
    sk_f = sk.astype(np.float32)
    assert np.median(sk_f) > 190  # light paper
    assert np.abs(sk_f - sk_f.mean(axis=3, keepdims=True)).mean() < 6  # nearly grey
    corners = rd[:, :4, :4].astype(np.float32).mean()
    assert corners < 60  # dark background
    # bright poster colours on the object: the brightest pixels are much brighter than the
    # background, in every image
    assert np.all(rd.reshape(200, -1).max(axis=1) > 150)


def test_corrupted_is_blurred_noisy_and_low_contrast():
    st, _ = generate("shapes", "standard", 200, 0, "test")
    co, _ = generate("shapes", "corrupted", 200, 0, "test")

    def pixel_diff(a):  # high-frequency energy: noise raises it
        return np.abs(np.diff(a.astype(np.float32), axis=2)).mean()

    assert pixel_diff(co) > 1.25 * pixel_diff(st)  # measured ~1.4

    def centre_contrast(a):  # object vs border, after local averaging (noise averaged out)
        g = _gray(a)
        return np.abs(g[:, 14:18, 14:18].mean((1, 2)) - g[:, :3, :3].mean((1, 2))).mean()

    assert centre_contrast(co) < 0.85 * centre_contrast(st)


def test_many_images_render():
    x, y = generate("shapes", "standard", 15_000, 0, "train")
    assert x.shape == (15_000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 1500))
    # no repeated image (e.g. a chunk's random stream reused)
    digests = {hash(img.tobytes()) for img in x[::7]}
    assert len(digests) == len(x[::7])
