"""Tests of workflow_scripts.knn against scikit-learn as the oracle.

The oracle is ``KNeighborsClassifier(n_neighbors=k, weights="distance", algorithm="brute")``
on the same float32 features. scikit-learn breaks exact distance ties *at the k-th neighbour*
with its heap (which training point among those tied at the k-th distance survives depends on
its thread count and chunk size), so the tie tests below either avoid such boundary ties or
compare against the documented rule of this module (lower training index wins, as in faiss).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neighbors._base import _get_weights
from sklearn.preprocessing import StandardScaler
from sklearn.utils.extmath import weighted_mode

import workflow_scripts.knn as knn_module
from workflow_scripts.knn import evaluate_knn, knn_predict, knn_scores
from workflow_scripts.probing import topk_accuracy, zscore


def sk_fit(x, y, k):
    return KNeighborsClassifier(n_neighbors=k, weights="distance", algorithm="brute").fit(x, y)


def sk_proba_full(clf, q, num_classes):
    """predict_proba with a column for every class in [0, num_classes)."""
    out = np.zeros((q.shape[0], num_classes))
    out[:, clf.classes_] = clf.predict_proba(q)
    return out


def sq_dists(q, x):
    """Exact squared distances in float64 (differences of float32 values are exact)."""
    x64 = x.astype(np.float64)
    return np.stack([((x64 - row) ** 2).sum(-1) for row in q.astype(np.float64)])


def no_boundary_tie(q, x, k):
    """Queries whose k-th and (k+1)-th nearest exact distances differ."""
    if k >= x.shape[0]:
        return np.ones(q.shape[0], dtype=bool)
    d = np.sort(sq_dists(q, x), axis=1)
    return d[:, k - 1] != d[:, k]


def reference_scores(x, y, q, k, num_classes):
    """The documented rule, in plain numpy: the k smallest exact distances in (distance, index)
    order, sklearn's float32 distance rounding and zero-distance rule, weighted_mode's sums."""
    d2 = sq_dists(q, x)
    nb = np.argsort(d2, axis=1, kind="stable")[:, :k]
    d = np.sqrt(np.take_along_axis(d2, nb, 1).astype(np.float32)).astype(np.float64)
    w = _get_weights(d, "distance")
    out = np.zeros((q.shape[0], num_classes))
    for c in range(num_classes):
        out[:, c] = np.sum(np.where(y[nb] == c, w, 0.0), axis=1)
    return out


def int_data(rng, n, nq, dim, num_classes, high=3):
    """Small-integer features: distances are exact in float32, ties are real ties."""
    x = rng.integers(0, high, size=(n, dim)).astype(np.float32)
    y = rng.integers(0, num_classes, size=n)
    q = rng.integers(0, high, size=(nq, dim)).astype(np.float32)
    return x, y, q


# ---------------------------------------------------------------------------------------------
# random continuous data


def random_data(seed):
    """Gaussian clusters: 3, 5, 7, 9 classes for seeds 0-3, 150 queries."""
    rng = np.random.default_rng(seed)
    num_classes = 3 + seed * 2  # 3, 5, 7, 9
    n, nq, dim = 400 + 37 * seed, 150, 8 + 5 * seed
    centers = rng.normal(0, 1.0, size=(num_classes, dim))
    y = rng.integers(0, num_classes, n)
    x = (centers[y] + rng.normal(size=(n, dim))).astype(np.float32)
    q = (centers[rng.integers(0, num_classes, nq)] + rng.normal(size=(nq, dim))).astype(np.float32)
    return x, y, q, num_classes


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_random_data_matches_sklearn(seed, k):
    x, y, q, num_classes = random_data(seed)
    nq = q.shape[0]

    clf = sk_fit(x, y, k)
    scores = knn_scores(x, y, q, k=k, num_classes=num_classes)
    pred = knn_predict(x, y, q, k=k, num_classes=num_classes)

    assert scores.dtype == np.float64 and scores.shape == (nq, num_classes)
    assert pred.dtype == np.int64 and pred.shape == (nq,)
    np.testing.assert_array_equal(pred, clf.predict(q))
    np.testing.assert_allclose(
        scores / scores.sum(1, keepdims=True),
        sk_proba_full(clf, q, num_classes),
        rtol=1e-12,
        atol=1e-15,
    )
    # Unnormalised scores: sums of 1/d over the neighbours of each class.
    dist, _ = clf.kneighbors(q)
    np.testing.assert_allclose(scores.sum(1), (1.0 / dist).sum(1), rtol=1e-12)


def huge_data():
    """Squared norms overflow float32 but the distances fit."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    q = rng.normal(size=(40, 8)).astype(np.float32)
    off = np.float32(3e19)
    x[:, 0] += off
    q[:, 0] += off
    return x, y, q, 3


def test_huge_but_finite_features_use_float64_norm_bound():
    # squared norms overflow float32 (the finiteness check must not misfire) but distances fit
    x, y, q, _ = huge_data()
    scores = knn_scores(x, y, q, k=20, num_classes=3)
    np.testing.assert_array_equal(scores, reference_scores(x, y, q, 20, 3))


def test_ten_classes_multi_block_and_threads():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(600, 32)).astype(np.float32)
    y = rng.integers(0, 10, 600)
    q = rng.normal(size=(257, 32)).astype(np.float32)
    clf = sk_fit(x, y, 20)
    ref = clf.predict(q)
    one = knn_scores(x, y, q, k=20, num_classes=10, block_size=4096, threads=1)
    for threads, block_size in [(1, 50), (2, 64), (3, 50), (2, 4096)]:  # worker pool / inline
        other = knn_scores(x, y, q, k=20, num_classes=10, block_size=block_size, threads=threads)
        np.testing.assert_array_equal(one, other)  # bit-identical whatever blocks / threads
    np.testing.assert_array_equal(one.argmax(1), ref)


def test_float16_and_float64_inputs_are_computed_on_float32():
    rng = np.random.default_rng(5)
    x64 = rng.normal(size=(300, 16))
    q64 = rng.normal(size=(80, 16))
    y = rng.integers(0, 4, 300)
    clf32 = sk_fit(x64.astype(np.float32), y, 20)
    p64 = knn_predict(x64, y, q64, k=20, num_classes=4)
    np.testing.assert_array_equal(p64, clf32.predict(q64.astype(np.float32)))
    x16, q16 = x64.astype(np.float16), q64.astype(np.float16)
    p16 = knn_predict(x16, y, q16, k=20, num_classes=4)
    clf16 = sk_fit(x16.astype(np.float32), y, 20)
    np.testing.assert_array_equal(p16, clf16.predict(q16.astype(np.float32)))


def near_dup_data():
    """Clusters of near-duplicates with large norms and tiny gaps, 5 classes."""
    rng = np.random.default_rng(11)
    dim = 256  # 500 queries x 256 dims: faiss takes its BLAS path (nq * dim >= 128000)
    base = rng.normal(size=(5, dim)).astype(np.float32) + 100.0  # large norms, tiny gaps
    x = np.concatenate(
        [base + 1e-3 * rng.normal(size=base.shape).astype(np.float32) for _ in range(80)]
    )
    y = rng.integers(0, 5, x.shape[0])
    q = np.repeat(base, 100, axis=0) + 1e-3 * rng.normal(size=(500, dim)).astype(np.float32)
    return x, y, q, 5


def test_near_duplicates_and_large_offsets_stay_exact():
    """faiss' float32 |q|^2 + |x|^2 - 2q.x mis-ranks tiny distances on top of large norms; the
    result must still be the exact one (candidate re-search + float64 re-ranking)."""
    import faiss

    x, y, q, _ = near_dup_data()
    dim = x.shape[1]
    k = 20
    index = faiss.IndexFlatL2(dim)
    index.add(x)
    _, raw = index.search(q, k)
    exact_nb = np.argsort(sq_dists(q, x), axis=1, kind="stable")[:, :k]
    assert (np.sort(raw, 1) != np.sort(exact_nb, 1)).any()  # faiss alone gets it wrong

    scores = knn_scores(x, y, q, k=k, num_classes=5)
    np.testing.assert_array_equal(scores, reference_scores(x, y, q, k, 5))
    # sklearn's float64 expansion is itself inexact here (relative error ~1e-6 on these
    # distances), but its predictions agree
    np.testing.assert_array_equal(scores.argmax(1), sk_fit(x, y, k).predict(q))


# ---------------------------------------------------------------------------------------------
# exact duplicates, zero distances and vote ties


def dup_data(seed):
    """Integer features with exact duplicate training points (random, so often of different
    labels) and queries that coincide with training points, several of them duplicated."""
    rng = np.random.default_rng(100 + seed)
    num_classes = 3 + seed
    n, dim, high = 150 + 20 * seed, 3 + seed % 2, 8
    base = rng.integers(0, high, size=(n, dim))
    dup = rng.choice(n, 40, replace=False)
    x = np.concatenate([base, base[dup], base[dup[:15]]]).astype(np.float32)
    y = rng.integers(0, num_classes, x.shape[0])
    q = np.concatenate(
        [rng.integers(0, high, size=(60, dim)), base[dup], base[rng.choice(n, 20)]]
    ).astype(np.float32)
    return x, y, q, num_classes


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3, 7, 8, 20])
def test_integer_data_with_duplicates_matches_sklearn(seed, k):
    x, y, q, num_classes = dup_data(seed)
    keep = no_boundary_tie(q, x, k)
    zero = sq_dists(q, x) == 0
    zero_labels = np.array([len(set(y[row])) for row in zero])
    assert keep.sum() >= 15
    if k > 1:  # several zero-distance neighbours with different labels, compared below
        assert (keep & (zero_labels >= 2)).sum() >= 5

    clf = sk_fit(x, y, k)
    scores = knn_scores(x, y, q, k=k, num_classes=num_classes)
    np.testing.assert_array_equal(scores.argmax(1)[keep], clf.predict(q)[keep])
    np.testing.assert_allclose(
        (scores / scores.sum(1, keepdims=True))[keep],
        sk_proba_full(clf, q, num_classes)[keep],
        rtol=1e-12,
        atol=1e-15,
    )
    # zero-distance queries: integer vote counts of the zero-distance neighbours only
    rows = np.flatnonzero(keep & zero.any(1))
    for i in rows:
        nz = min(k, zero[i].sum())
        assert scores[i].sum() == nz and np.all(scores[i] == np.round(scores[i]))


@pytest.mark.parametrize("k", [5, 8, 20])
def test_class_sums_are_bit_identical_to_weighted_mode(k):
    """The per-class sums equal sklearn's weighted_mode template sums bit for bit when the
    neighbours are in (distance, index) order."""
    rng = np.random.default_rng(7)
    x, y, q = int_data(rng, n=300, nq=200, dim=2, num_classes=4, high=4)
    keep = no_boundary_tie(q, x, k)
    dist, ind = sk_fit(x, y, k).kneighbors(q)
    order = np.lexsort((ind, dist), axis=-1)
    dist = np.take_along_axis(dist, order, 1)
    ind = np.take_along_axis(ind, order, 1)
    w = _get_weights(dist, "distance")
    scores = knn_scores(x, y, q, k=k, num_classes=4)
    for c in range(4):
        template = np.where(y[ind] == c, w, 0.0)  # what weighted_mode builds for class c
        np.testing.assert_array_equal(np.sum(template, axis=1)[keep], scores[keep, c])
    mode, count = weighted_mode(y[ind], w, axis=1)
    np.testing.assert_array_equal(mode.ravel()[keep], scores.argmax(1)[keep])
    np.testing.assert_array_equal(count.ravel()[keep], scores.max(1)[keep])


def test_zero_distance_rule():
    x = np.array([[0.0], [0.0], [0.0], [1.0], [1.0], [2.0]], dtype=np.float32)
    y = np.array([2, 1, 1, 0, 0, 0])
    q = np.array([[0.0], [0.5]], dtype=np.float32)
    scores = knn_scores(x, y, q, k=5, num_classes=3)
    # query 0: three zero-distance neighbours vote 1 each; the two at distance 1 do not vote
    np.testing.assert_array_equal(scores[0], [0.0, 2.0, 1.0])
    # query 1: five neighbours at distance 0.5 (weight 2 each), the one at 1.5 is 6th;
    # classes 0 and 1 tie at 4, class 0 wins
    np.testing.assert_array_equal(scores[1], [4.0, 4.0, 2.0])
    assert knn_predict(x, y, q, k=5, num_classes=3).tolist() == [1, 0]
    clf = sk_fit(x, y, 5)
    np.testing.assert_array_equal(scores.argmax(1), clf.predict(q))
    np.testing.assert_allclose(scores / scores.sum(1, keepdims=True), sk_proba_full(clf, q, 3))


@pytest.mark.parametrize("flip", [False, True])
def test_vote_tie_goes_to_lowest_class_like_sklearn(flip):
    # Query at 0. Class a: one neighbour at distance 1 (weight 1). Class b: two neighbours at
    # distance 2 (weights 1/2 + 1/2 = 1, exact). Exact tie; sklearn picks the lower class index.
    a, b = (3, 1) if flip else (1, 3)
    x = np.array([[1.0], [2.0], [-2.0], [10.0], [11.0]], dtype=np.float32)
    y = np.array([a, b, b, 0, 2])
    q = np.zeros((1, 1), dtype=np.float32)
    scores = knn_scores(x, y, q, k=3, num_classes=4)
    assert scores[0, a] == scores[0, b] == 1.0
    assert knn_predict(x, y, q, k=3, num_classes=4)[0] == 1 == sk_fit(x, y, 3).predict(q)[0]


@pytest.mark.parametrize("k", [4, 20])
def test_zero_distance_vote_tie_between_classes(k):
    # The query coincides with 2 training points of class 2 and 2 of class 0 (and the rest is
    # farther): votes 2 vs 2, class 0 wins, as in sklearn.
    x = np.concatenate([np.zeros((4, 2)), np.arange(1, 41, dtype=float).reshape(20, 2)])
    x = x.astype(np.float32)
    y = np.array([2, 0, 2, 0] + [1] * 20)
    q = np.zeros((1, 2), dtype=np.float32)
    scores = knn_scores(x, y, q, k=k, num_classes=3)
    np.testing.assert_array_equal(scores[0], [2.0, 0.0, 2.0])
    assert knn_predict(x, y, q, k=k, num_classes=3)[0] == 0 == sk_fit(x, y, k).predict(q)[0]


def test_boundary_distance_tie_keeps_lower_training_index():
    # Six training points at distance 1 from the query; k=3 keeps the three lowest indices.
    x = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [1, 0], [0, 1], [5, 5]], dtype=np.float32)
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    q = np.zeros((1, 2), dtype=np.float32)
    np.testing.assert_array_equal(knn_scores(x, y, q, k=3, num_classes=2), [[3.0, 0.0]])
    np.testing.assert_array_equal(knn_scores(x, y, q, k=4, num_classes=2), [[3.0, 1.0]])


def test_boundary_ties_follow_stable_order_on_random_integer_data():
    rng = np.random.default_rng(3)
    x, y, q = int_data(rng, n=500, nq=150, dim=2, num_classes=5)
    assert (~no_boundary_tie(q, x, 20)).sum() > 50
    for k in (1, 20):
        np.testing.assert_array_equal(
            knn_scores(x, y, q, k=k, num_classes=5), reference_scores(x, y, q, k, 5)
        )


# ---------------------------------------------------------------------------------------------
# the torch candidate search (matmul + topk), run on the CPU here; CUDA runs the same code


@pytest.fixture
def one_torch_thread():
    """torch's intra-op threads spin badly on a shared 2-core machine; the blocks here are tiny."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def torch_search(monkeypatch, one_torch_thread):
    """Device blocks of ``rows`` query rows; records [rows asked, n, rows per device block, the
    float32 matmul precision in force, device blocks searched] of every torch search call."""
    import torch

    calls = []
    original = knn_module._TorchSearch.__call__
    original_topk = torch.topk

    def counting(self, query, query_sq, n):
        calls.append([query.shape[0], n, self.rows, torch.backends.cuda.matmul.fp32_precision, 0])
        return original(self, query, query_sq, n)

    def topk(block, n, **kwargs):
        assert kwargs == {"dim": 1, "largest": False, "sorted": True}
        calls[-1][4] += 1  # device blocks of this call
        return original_topk(block, n, **kwargs)

    monkeypatch.setattr(knn_module._TorchSearch, "__call__", counting)
    monkeypatch.setattr(torch, "topk", topk)

    def blocks_of(rows, n_train):
        monkeypatch.setattr(knn_module, "_TORCH_BLOCK_BYTES", 4 * n_train * rows)
        return calls

    return blocks_of


TORCH_CASES = {
    "random": lambda: random_data(1),
    "near_duplicates": near_dup_data,  # float32 mis-ranks: re-searches with 2x candidates
    "duplicates": lambda: dup_data(2),  # exact duplicates, zero distances, boundary ties
    "boundary_ties": lambda: (
        int_data(np.random.default_rng(3), n=500, nq=150, dim=2, num_classes=5) + (5,)
    ),
    "huge": huge_data,  # float32 norms overflow: re-searches up to the exact fallback
}


@pytest.mark.parametrize("k", [5, 20])
@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_torch_search_matches_faiss_and_sklearn(case, k, torch_search):
    x, y, q, num_classes = TORCH_CASES[case]()
    calls = torch_search(rows=7, n_train=x.shape[0])
    faiss_scores = knn_scores(x, y, q, k=k, num_classes=num_classes)
    assert not calls  # the default on the CPU is faiss
    scores = knn_scores(x, y, q, k=k, num_classes=num_classes, search="torch", block_size=32)
    np.testing.assert_array_equal(scores, faiss_scores)  # bit for bit
    if case == "huge":  # sklearn's float64 expansion fails here; the documented rule
        np.testing.assert_array_equal(scores, reference_scores(x, y, q, k, num_classes))
    else:
        keep = no_boundary_tie(q, x, k)
        np.testing.assert_array_equal(scores.argmax(1)[keep], sk_fit(x, y, k).predict(q)[keep])
    if case in ("duplicates", "boundary_ties"):  # ties at the k-th: lower training index wins
        np.testing.assert_array_equal(scores, reference_scores(x, y, q, k, num_classes))

    # first pass: blocks of 32 query rows with k + margin candidates, 7 rows per device block
    first = k + max(8, k)
    blocks = -(-q.shape[0] // 32)
    assert [c[0] for c in calls if c[1] == first] == [
        min(32, q.shape[0] - 32 * b) for b in range(blocks)
    ]
    assert all(c[2] == 7 and c[3] == "ieee" and c[4] == -(-c[0] // 7) for c in calls)
    # the "last candidate within the bound -> search again with 2x candidates" branch
    again = [c for c in calls if c[1] > first]
    if case != "duplicates":  # (it depends on k there)
        assert bool(again) == (case != "random")
    assert all(c[1] in (first * 2, first * 4, first * 8) and c[1] < x.shape[0] for c in again)


def test_torch_search_threads_devices_and_precision_flag(torch_search):
    import torch

    x, y, q, num_classes = near_dup_data()
    calls = torch_search(rows=50, n_train=x.shape[0])
    ref = knn_predict(x, y, q, k=20, num_classes=num_classes)
    matmul = torch.backends.cuda.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        for device in ("cpu", torch.device("cpu")):
            pred = knn_predict(
                x, y, q, k=20, num_classes=num_classes, threads=2, device=device, search="torch"
            )
            np.testing.assert_array_equal(pred, ref)
        assert matmul.fp32_precision == "tf32"  # restored after the call
    finally:
        matmul.fp32_precision = previous
    assert calls and all(c[3] == "ieee" for c in calls)  # IEEE float32 during the search


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_cuda_search_matches_faiss(case):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x, y, q, num_classes = TORCH_CASES[case]()
    for k in (5, 20):
        np.testing.assert_array_equal(
            knn_scores(x, y, q, k=k, num_classes=num_classes, device="cuda", threads=2),
            knn_scores(x, y, q, k=k, num_classes=num_classes),
        )


def test_evaluate_knn_torch_search_equals_faiss(one_torch_thread):
    rng = np.random.default_rng(8)
    x = (rng.normal(size=(300, 12)) * rng.uniform(0.1, 20, size=12) + 5).astype(np.float32)
    y = rng.integers(0, 7, 300)
    q = (rng.normal(size=(90, 12)) * rng.uniform(0.1, 20, size=12) + 5).astype(np.float32)
    yq = rng.integers(0, 7, 90)
    assert evaluate_knn(x, y, q, yq, k=20, num_classes=7, search="torch") == evaluate_knn(
        x, y, q, yq, k=20, num_classes=7, device="cpu"
    )


def test_search_and_device_errors():
    x = np.zeros((10, 2), dtype=np.float32)
    y = np.zeros(10, dtype=np.int64)
    with pytest.raises(ValueError, match="search must be one of"):
        knn_scores(x, y, x, k=3, num_classes=2, search="gpu")
    with pytest.raises(ValueError, match="resolved by the caller"):
        knn_scores(x, y, x, k=3, num_classes=2, device="auto")
    with pytest.raises(ValueError, match="CPU only"):
        knn_scores(x, y, x, k=3, num_classes=2, device="cuda", search="faiss")
    with pytest.raises(ValueError, match="device must be"):
        evaluate_knn(x, y, x, y, k=3, num_classes=2, device="mps")


# ---------------------------------------------------------------------------------------------
# z-scoring and the evaluation


def test_zscore_matches_standard_scaler_with_constant_column():
    rng = np.random.default_rng(4)
    train = rng.normal(3.0, 2.0, size=(500, 6)).astype(np.float32)
    train[:, 2] = 0.1  # constant column whose float64 mean is not exactly 0.1
    train[:, 4] = 7.0
    test = rng.normal(3.0, 2.0, size=(100, 6)).astype(np.float32)
    tr, te = zscore(train, test)
    assert tr.dtype == np.float32 and te.dtype == np.float32
    scaler = StandardScaler().fit(train.astype(np.float64))
    np.testing.assert_allclose(tr, scaler.transform(train.astype(np.float64)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(te, scaler.transform(test.astype(np.float64)), rtol=1e-6, atol=1e-6)
    assert np.all(tr[:, 2] == 0) and np.all(tr[:, 4] == 0)
    np.testing.assert_allclose(te[:, 2], test[:, 2].astype(np.float64) - np.float32(0.1), rtol=1e-6)
    # population std (ddof=0) in float64
    np.testing.assert_allclose(tr[:, 0].astype(np.float64).std(), 1.0, rtol=1e-6)


def test_evaluate_knn_matches_sklearn_on_both_arms():
    rng = np.random.default_rng(8)
    num_classes, dim = 7, 12
    centers = rng.normal(0, 1.5, size=(num_classes, dim))
    scale = rng.uniform(0.1, 20, size=dim)  # dimension scales differ: z-scoring matters
    y_tr = rng.integers(0, num_classes, 700)
    y_te = rng.integers(0, num_classes, 300)
    x_tr = ((centers[y_tr] + rng.normal(size=(700, dim))) * scale + 5).astype(np.float32)
    x_te = ((centers[y_te] + rng.normal(size=(300, dim))) * scale + 5).astype(np.float32)

    res = evaluate_knn(x_tr, y_tr, x_te, y_te, k=20, num_classes=num_classes)
    assert [r["arm"] for r in res] == ["raw", "bn"]

    scaler = StandardScaler().fit(x_tr)
    inputs = {"raw": (x_tr, x_te), "bn": (scaler.transform(x_tr), scaler.transform(x_te))}
    for r in res:
        tr, te = inputs[r["arm"]]
        clf = sk_fit(tr.astype(np.float32), y_tr, 20)
        proba = sk_proba_full(clf, te.astype(np.float32), num_classes)
        top1 = 100.0 * np.mean(clf.predict(te.astype(np.float32)) == y_te)
        top5_idx = np.argsort(-proba, axis=1, kind="stable")[:, :5]
        top5 = 100.0 * np.mean((top5_idx == y_te[:, None]).any(1))
        assert r["top1"] == pytest.approx(top1, abs=1e-9)
        assert r["top5"] == pytest.approx(top5, abs=1e-9)
        assert (r["k"], r["n_train"], r["n_test"]) == (20, 700, 300)
    assert res[0]["top1"] != res[1]["top1"]  # the arms really differ on this data


def test_evaluate_knn_single_arm_and_top5_nan_for_few_classes():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = rng.integers(0, 5, 60)
    res = evaluate_knn(x, y, x[:10], y[:10], k=5, num_classes=5, arms=("bn",))
    assert len(res) == 1 and res[0]["arm"] == "bn"
    assert math.isnan(res[0]["top5"]) and res[0]["top1"] == 100.0  # queries are train points


def test_topk_accuracy_hand_computed():
    scores = np.array(
        [
            [0.1, 0.5, 0.2, 0.0, 0.0, 0.0, 0.3],  # label 1: top-1 hit
            [0.4, 0.4, 0.1, 0.0, 0.0, 0.0, 0.0],  # label 1: tie with 0, 0 ranks first -> top-1 miss
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # label 5: zeros tie, order 0,1,2,3 -> top-5 miss
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # label 3: order 6,0,1,2,3 -> top-5 hit
        ]
    )
    labels = np.array([1, 1, 5, 3])
    acc = topk_accuracy(scores, labels, ks=(1, 2, 5))
    assert acc == {1: 25.0, 2: 50.0, 5: 75.0}
    nan = topk_accuracy(scores[:, :5], np.array([1, 1, 4, 3]), ks=(1, 5))
    assert nan[1] == 25.0 and math.isnan(nan[5])


# ---------------------------------------------------------------------------------------------
# errors


def test_errors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    q = rng.normal(size=(5, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn_scores(x, y, q, k=0, num_classes=3)
    with pytest.raises(ValueError, match="exceeds the number of training samples"):
        knn_scores(x, y, q, k=31, num_classes=3)
    with pytest.raises(ValueError, match="dimension"):
        knn_scores(x, y, q[:, :3], k=5, num_classes=3)
    with pytest.raises(ValueError, match="train labels"):
        knn_scores(x, y, q, k=5, num_classes=2)
    with pytest.raises(ValueError, match="train labels"):
        knn_scores(x, y - 1, q, k=5, num_classes=3)
    with pytest.raises(ValueError, match="train labels"):
        knn_scores(x, y[:-1], q, k=5, num_classes=3)
    with pytest.raises(ValueError, match="test labels"):
        evaluate_knn(x, y, q, np.array([0, 1, 2, 3, 0]), k=5, num_classes=3)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="train features"):
        knn_scores(bad, y, q, k=5, num_classes=3)
    badq = q.copy()
    badq[0, 0] = np.inf
    with pytest.raises(ValueError, match="test features"):
        knn_predict(x, y, badq, k=5, num_classes=3)
    with pytest.raises(ValueError, match="test features"):
        zscore(x, badq)
    with pytest.raises(ValueError, match="train features"):
        evaluate_knn(bad, y, q, y[:5], k=5, num_classes=3)
    with pytest.raises(ValueError, match="test features"):  # overflows float32
        knn_scores(x, y, q.astype(np.float64) * 1e300, k=5, num_classes=3)
    with pytest.raises(ValueError, match="overflow float32"):  # finite, but d^2 > 3.4e38
        knn_scores(x * np.float32(1e19), y, q * np.float32(1e19), k=5, num_classes=3)
    with pytest.raises(ValueError, match="arms"):
        evaluate_knn(x, y, q, y[:5], k=5, num_classes=3, arms=("raw", "l2"))
    with pytest.raises(ValueError, match="float16, float32 or float64"):
        knn_scores(x.astype(np.int64), y, q, k=5, num_classes=3)
