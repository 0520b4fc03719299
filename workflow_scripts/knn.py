"""Weighted k-nearest-neighbour probe on cached features (Marks, Knott et al., IJCV 2025).

Protocol: k = 20, Euclidean distance, exact (brute-force) search, votes weighted by ``1 / d``
with scikit-learn's rule for zero distances, no L2 normalisation, no temperature. The "bn" arm
z-scores train and test features with the train mean / population std per dimension.

The predictions are those of ``sklearn.neighbors.KNeighborsClassifier(n_neighbors=k,
weights="distance", algorithm="brute")`` on the same float32 features; scikit-learn itself is
never called here (it is the oracle of ``tests/unit/test_knn.py``).

How the result is made exact although the search runs in float32:

1. faiss' exact flat L2 search returns, per query, the ``k + margin`` candidates with the
   smallest *approximate* squared distance (float32, ``|q|^2 + |x|^2 - 2 q.x``). It is called as
   ``faiss.knn(queries, train, n)``, which runs ``knn_L2sqr`` -- the kernel behind
   ``IndexFlatL2.search``, with bit-identical results -- on the caller's array instead of a
   copy of the training set inside an index (2x less memory for ImageNet-sized feature banks).
   On a torch device (``search="torch"``, the default on CUDA) a matmul + ``torch.topk`` does
   the same job instead (see "Torch candidate search" below).
2. A rigorous bound ``E`` on faiss' float32 error (any summation order, Higham Thm 3.1:
   ``gamma_{D+4} (|q| + max|x|)^2``) tells which candidates can still be among the true k
   nearest: those with ``approx <= approx_k + 2E``. Their exact squared distances are recomputed
   in float64 from the float32 vectors (``sum((q - x)^2)``, so exact duplicates give exactly 0).
   If the last candidate returned is itself within ``approx_k + 2E``, the candidate list may be
   incomplete and the query is searched again with twice as many candidates (up to n_train).
3. The k neighbours are the k smallest exact squared distances, ties broken by the lower
   training index (faiss keeps the lower index on exact ties too).
4. Weights ``1 / d`` with ``d = float32(sqrt(float32(d2)))`` -- scikit-learn's float32 path
   rounds the distances it returns to float32 (``EuclideanDistance32._rdist_to_dist``), and the
   weights are computed from those; if any neighbour is at distance exactly 0, only the
   zero-distance neighbours vote, with weight 1 (``sklearn.neighbors._base._get_weights``).
5. Per-class votes are summed exactly as ``sklearn.utils.extmath.weighted_mode`` does: a
   C-contiguous float64 row of length k holding the class' weights and zeros elsewhere, reduced
   with ``np.sum(axis=1)`` (numpy's pairwise summation), so the sums are bit-identical to the
   ones scikit-learn's ``predict`` compares for the same neighbour order. The argmax takes the
   lowest class index on ties, like ``weighted_mode`` (strict ``>`` while scanning the classes
   in increasing order).

Torch candidate search (``search="torch"``; ``device`` "cpu" or a CUDA device): the training
features and their float32 squared norms stay resident on the device (ImageNet: 1.28M x 2048
float32 = 10.5 GB). Queries go in chunks whose float32 [chunk, n_train] distance block fits in
``_TORCH_BLOCK_BYTES``: ``d = (-2 (q @ x.T) + |x|^2) + |q|^2`` with float32 matmuls in IEEE
mode (no TF32: ``torch.backends.cuda.matmul.fp32_precision = "ieee"`` for the call, restored
afterwards), then ``torch.topk(largest=False)`` keeps the ``k + margin`` smallest per query. The
bound of step 2 covers this: the matmul is a length-D inner product in *some* summation order
(cuBLAS tiling, split-K, FMA are all such orders: error <= gamma_D |q||x|), the norms are
numpy's float32 sums (<= gamma_D |q|^2, |x|^2), the factor -2 is exact and the two additions
are separate roundings, so the error is <= gamma_{D+2} (|q| + |x|)^2 <= E. |x|^2 is
deliberately not folded into the GEMM (``addmm`` with beta = 1): a BLAS may accumulate
``C += alpha A B`` panel by panel, putting up to D more roundings on that term. GPU kernels may
flush subnormal results to zero, which Higham's model excludes; ``(4D + 8) 2^-126`` is added to
E for that. ``topk`` returns an arbitrary subset of values tied at the n-th place, which the
rule of step 2 allows (every point not returned is >= the last one returned). Steps 2-5 then
run unchanged, in numpy on the CPU (a float64 re-rank on the device would sum in another order
and could change the last bit of a distance): both searches end with the k smallest (exact
distance, index) over a superset of the exact k nearest and their ties, so the scores equal the
faiss path's bit for bit. A re-search (step 2) recomputes the distance block of the queries
concerned.

Where scikit-learn can still differ (none of these occur in the tests' or the benchmark's data
except where the tests exclude them explicitly):

* Training points tied exactly at the k-th distance: scikit-learn's ArgKmin max-heap rejects a
  new point equal to the current maximum but evicts whichever tied point sits at the heap root,
  so the survivor is not the lowest index and depends on its thread count and chunk size.
* Neighbours tied in distance inside the k: scikit-learn orders them by heap position (its
  ``simultaneous_sort`` is not stable), which can move the pairwise-summation sums by one ulp.
* scikit-learn's distances come from the float64 expansion ``|q|^2 - 2 q.x + |x|^2``, which
  can be off by far more than an ulp for near-duplicates with large norms (and is not always 0
  for exact duplicates of non-integer vectors); the distances here are exact.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from workflow_scripts import registry
from workflow_scripts.probing import (
    as_features,
    as_labels,
    check_dims,
    job_datasets,
    topk_accuracy,
    write_rows,
    zscore,
)

if TYPE_CHECKING:
    import torch

ARMS = tuple(registry.ARMS)

# faiss returns k + max(_MIN_MARGIN, k) candidates per query on the first pass.
_MIN_MARGIN = 8
# Rows per chunk when z-scoring, elements per chunk when recomputing exact distances.
_CACHE_CHUNK_ELEMS = 1 << 16  # float64 working set of ~512 KiB (L2-sized)
_SCORE_CHUNK_ELEMS = 1 << 22
_U32 = 2.0**-24  # unit roundoff of float32
# Bytes of the float32 [chunk, n_train] distance block of the torch search (one at a time).
_TORCH_BLOCK_BYTES = 1 << 31
SEARCHES = ("auto", "faiss", "torch")


# ----------------------------------------------------------------------------------------------
# validation helpers


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an integer, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def _check_k(k, n_train: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n_train:
        raise ValueError(f"k={k} exceeds the number of training samples ({n_train})")
    return int(k)


def _check_threads(threads) -> int:
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    return int(threads)


def _check_search(search: str, device: str | torch.device) -> str:
    """The candidate search to run: "faiss" (CPU only) or "torch" (CPU or CUDA)."""
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    kind = device.split(":", 1)[0] if isinstance(device, str) else getattr(device, "type", None)
    if kind not in ("cpu", "cuda"):
        raise ValueError(
            f"device must be 'cpu' or a CUDA device, got {device!r} ('auto' is "
            "resolved by the caller: workflow_scripts.devices.resolve_device)"
        )
    if search == "auto":
        return "faiss" if kind == "cpu" else "torch"
    if search == "faiss" and kind != "cpu":
        raise ValueError(f"search='faiss' runs on the CPU only, got device={device!r}")
    return search


# ----------------------------------------------------------------------------------------------
# neighbour search


def _chunks(n: int, step: int) -> list[slice]:
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def _exact_sqdist_dense(train: np.ndarray, query: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """float64 ``sum((query[i] - train[nb[i, j]])**2)`` for all i, j: [nq, nb.shape[1]].

    The differences of float32 values are exact in float64, so duplicates give exactly 0.
    Queries are processed in cache-sized chunks, one neighbour rank at a time.
    """
    nq, ncol = nb.shape
    out = np.empty((nq, ncol), dtype=np.float64)
    for sl in _chunks(nq, max(1, _CACHE_CHUNK_ELEMS // train.shape[1])):
        q64 = query[sl].astype(np.float64)
        for j in range(ncol):
            diff = train[nb[sl, j]].astype(np.float64)
            diff -= q64
            out[sl, j] = np.einsum("ij,ij->i", diff, diff)
    return out


def _exact_sqdist_pairs(
    train: np.ndarray, query: np.ndarray, q_rows: np.ndarray, nb: np.ndarray
) -> np.ndarray:
    """float64 ``sum((query[q_rows[p]] - train[nb[p]])**2)`` for each pair p."""
    out = np.empty(q_rows.shape[0], dtype=np.float64)
    for sl in _chunks(q_rows.shape[0], max(1, _CACHE_CHUNK_ELEMS // train.shape[1])):
        diff = train[nb[sl]].astype(np.float64)
        diff -= query[q_rows[sl]]
        out[sl] = np.einsum("ij,ij->i", diff, diff)
    return out


def _brute_exact(train: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fallback without faiss: exact squared distances of each query to every training point."""
    n_train, dim = train.shape
    out_d2 = np.empty((query.shape[0], k), dtype=np.float64)
    out_idx = np.empty((query.shape[0], k), dtype=np.int64)
    d2 = np.empty(n_train, dtype=np.float64)
    steps = _chunks(n_train, max(1, _CACHE_CHUNK_ELEMS // dim))
    for i, q64 in enumerate(query.astype(np.float64)):
        for sl in steps:
            diff = train[sl].astype(np.float64)
            diff -= q64
            d2[sl] = np.einsum("ij,ij->i", diff, diff)
        kth = np.partition(d2, k - 1)[k - 1]
        idx = np.flatnonzero(d2 <= kth)  # includes every point tied with the k-th
        order = np.lexsort((idx, d2[idx]))[:k]
        out_idx[i] = idx[order]
        out_d2[i] = d2[out_idx[i]]
    return out_d2, out_idx


Search = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _exact_neighbours(
    search: Search, train: np.ndarray, query: np.ndarray, k: int, err: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of the ``query`` rows: (squared distances, indices), [nq, k].

    Ordered by (exact float64 squared distance, training index). ``search(q, rows, n)`` returns
    the float32 approximate squared distances [len(q), n], sorted ascending per row, and the
    int64 training indices of the n approximately nearest training points of ``q =
    query[rows]``; ``err[i]`` bounds its absolute error on the squared distances of query i.
    """
    n_train = train.shape[0]
    nq = query.shape[0]
    out_d2 = np.empty((nq, k), dtype=np.float64)
    out_idx = np.empty((nq, k), dtype=np.int64)
    todo = np.arange(nq)
    n_cand = k + max(_MIN_MARGIN, k)
    while todo.size:
        q = query if todo.size == nq else np.ascontiguousarray(query[todo])
        if n_cand >= n_train:  # every training point is a candidate
            out_d2[todo], out_idx[todo] = _brute_exact(train, q, k)
            break
        approx, cand = search(q, todo, n_cand)
        # Only candidates with approx <= approx_k + 2E can be among (or tie with) the exact k
        # nearest; they form a prefix since the search sorts by approximate distance. If the
        # last candidate is still within that range, points not returned could be too: search
        # again with more candidates. (Non-finite distances, e.g. float32 overflow, never pass.)
        approx = approx.astype(np.float64)
        thresh = approx[:, k - 1] + 2.0 * err[todo]
        done = (approx[:, -1] > thresh) & np.isfinite(approx).all(axis=1) & (cand >= 0).all(axis=1)
        rows = np.flatnonzero(done)
        if rows.size:
            qd = q if rows.size == q.shape[0] else np.ascontiguousarray(q[rows])
            need = approx[rows, k:] <= thresh[rows, None]
            n_extra = int(need.sum(axis=1).max())
            sub_cand = cand[rows, : k + n_extra]
            d2 = np.full(sub_cand.shape, np.inf, dtype=np.float64)
            d2[:, :k] = _exact_sqdist_dense(train, qd, sub_cand[:, :k])
            if n_extra:
                r_idx, c_idx = np.nonzero(need[:, :n_extra])
                c_idx += k
                d2[r_idx, c_idx] = _exact_sqdist_pairs(train, qd, r_idx, sub_cand[r_idx, c_idx])
            order = np.lexsort((sub_cand, d2), axis=-1)[:, :k]
            out_d2[todo[rows]] = np.take_along_axis(d2, order, axis=1)
            out_idx[todo[rows]] = np.take_along_axis(sub_cand, order, axis=1)
        todo = todo[~done]
        n_cand *= 2
    return out_d2, out_idx


class _TorchSearch:
    """Candidate search on a torch device: float32 ``(-2 q.x + |x|^2) + |q|^2`` + ``topk``.

    The training features and squared norms are copied to the device once (no copy on the
    CPU); query rows go in chunks of ``rows`` so that one [rows, n_train] float32 block fits in
    ``block_bytes``. A lock keeps one block on the device at a time when worker threads share
    the search. Call it inside :func:`_ieee_matmul`.
    """

    def __init__(
        self, train: np.ndarray, train_sq: np.ndarray, device: str | torch.device, block_bytes: int
    ):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        with warnings.catch_warnings():  # read-only arrays (memory maps) are never written
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.train = torch.from_numpy(train).to(self.device)
            self.train_sq = torch.from_numpy(train_sq).to(self.device)
        self.rows = max(1, block_bytes // (4 * train.shape[0]))
        self.lock = threading.Lock()

    def __call__(
        self, query: np.ndarray, query_sq: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """float32 approximate squared distances and int64 indices of the ``n`` smallest per
        query row, ascending, as numpy arrays [len(query), n]."""
        torch = self.torch
        approx = np.empty((query.shape[0], n), dtype=np.float32)
        cand = np.empty((query.shape[0], n), dtype=np.int64)
        with self.lock:
            for sl in _chunks(query.shape[0], self.rows):
                q = torch.from_numpy(query[sl].copy()).to(self.device)
                q_sq = torch.from_numpy(query_sq[sl].copy()).to(self.device)
                d = q @ self.train.T  # [rows, n_train], plain float32 (no TF32)
                d.mul_(-2.0).add_(self.train_sq).add_(q_sq[:, None])  # 2 roundings, see above
                vals, idx = torch.topk(d, n, dim=1, largest=False, sorted=True)
                del d  # free the block before the next one is allocated
                approx[sl] = vals.cpu().numpy()
                cand[sl] = idx.cpu().numpy()
        return approx, cand


@contextlib.contextmanager
def _ieee_matmul(torch):
    """float32 matmuls in IEEE float32 (no TF32 on CUDA, no bf16/TF32 in oneDNN on the CPU)
    for the duration; the previous settings are restored afterwards."""
    backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
    previous = [b.fp32_precision for b in backends]
    try:
        for b in backends:
            b.fp32_precision = "ieee"
        yield
    finally:
        for b, prev in zip(backends, previous, strict=True):
            b.fp32_precision = prev


def _upper_sqnorms(x: np.ndarray, sq32: np.ndarray, gamma: float) -> np.ndarray:
    """float64 upper bounds of the squared row norms of ``x`` from their float32 values."""
    if np.isfinite(sq32).all():
        return sq32.astype(np.float64) / (1.0 - gamma) * (1.0 + 4 * _U32)
    return np.einsum("ij,ij->i", x, x, dtype=np.float64) * (1.0 + 1e-12)  # float32 overflow


def _sklearn_weights(d2: np.ndarray) -> np.ndarray:
    """``sklearn.neighbors._base._get_weights(dist, "distance")`` for float32 features.

    For float32 input scikit-learn ranks by float64 squared distances but returns
    ``dist = float32(sqrt(float32(d2)))`` (``EuclideanDistance32._rdist_to_dist`` takes and returns
    float32), and weights by ``1.0 / dist`` in float64; the same rounding is applied here.
    """
    with np.errstate(over="ignore"):
        dist = np.sqrt(d2.astype(np.float32)).astype(np.float64)
    if np.isinf(dist).any():
        # scikit-learn would give these neighbours weight 0 (and raise if all of them do)
        raise ValueError(
            "squared distances overflow float32 (features of magnitude ~1e19 or "
            "more); rescale the features"
        )
    with np.errstate(divide="ignore"):
        w = 1.0 / dist
    inf_mask = np.isinf(w)
    inf_row = inf_mask.any(axis=1)
    w[inf_row] = inf_mask[inf_row]
    return w


def _class_sums(nb_labels: np.ndarray, weights: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class vote sums, bit-identical to ``weighted_mode``'s ``np.sum(template, axis=1)``.

    Only (query, class) pairs that occur among the neighbours get a template row, so the cost is
    O(n k^2) instead of O(n k num_classes).
    """
    nq, k = nb_labels.shape
    scores = np.zeros((nq, num_classes), dtype=np.float64)
    keys = np.unique((np.arange(nq, dtype=np.int64)[:, None] * num_classes + nb_labels).ravel())
    rows, cls = np.divmod(keys, num_classes)
    step = max(1, _SCORE_CHUNK_ELEMS // k)
    for s in range(0, keys.size, step):
        r, c = rows[s : s + step], cls[s : s + step]
        template = np.where(nb_labels[r] == c[:, None], weights[r], 0.0)
        scores[r, c] = np.sum(template, axis=1)
    return scores


def knn_scores(
    train_x,
    train_y,
    test_x,
    *,
    k: int = 20,
    num_classes: int,
    threads: int = 1,
    block_size: int = 4096,
    device: str | torch.device = "cpu",
    search: str = "auto",
) -> np.ndarray:
    """float64 [N_test, num_classes] summed vote weights per class (sklearn rule).

    Weights are ``1 / d`` (Euclidean), or, for a query with any neighbour at distance exactly 0,
    1 for the zero-distance neighbours and 0 for the others. Classes without a neighbour score
    0. Features are cast to float32 (float16/32/64 accepted). The test set is cut into blocks of
    at most ``block_size`` rows (bounding memory), processed by ``threads`` worker threads that
    each run faiss with one OpenMP thread (``faiss.omp_set_num_threads``).

    ``device`` ("cpu", "cuda", "cuda:1" or a ``torch.device``; "auto" is resolved by the
    caller) and ``search`` choose the candidate search: "faiss" (CPU only), "torch" (matmul +
    topk on ``device``, blocks also bounded by ``_TORCH_BLOCK_BYTES``; the worker threads share
    the device and do the exact re-rank on the CPU) or "auto" (faiss on the CPU, torch on
    CUDA). The scores do not depend on the search.
    """
    search = _check_search(search, device)
    num_classes = _check_num_classes(num_classes)
    threads = _check_threads(threads)
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, (int, np.integer))
        or block_size < 1
    ):
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
    train, train_sq = as_features(train_x, "train features", sqnorms=True)
    test, test_sq = as_features(test_x, "test features", sqnorms=True)
    check_dims(train, test)
    labels = as_labels(train_y, train.shape[0], num_classes, "train labels")
    k = _check_k(k, train.shape[0])

    dim = train.shape[1]
    # |faiss float32 squared distance - exact| <= gamma_{dim+4} (|q| + |x|)^2 with
    # gamma_n = n u / (1 - n u): the norms and the sgemm dot product are length-dim sums (error
    # <= gamma_dim |q|^2, |x|^2, |q||x| for any summation order, FMA or not), plus the two
    # roundings of |q|^2 + |x|^2 - 2 q.x (faiss' direct path, for small query blocks, has error
    # <= gamma_dim |q - x|^2, smaller). In practice the error is ~1000x below this bound.
    # The float32 squared norms underestimate by at most a factor (1 - gamma_dim).
    gamma_d = dim * _U32 / (1.0 - dim * _U32)
    m = dim + 4
    gamma_m = m * _U32 / (1.0 - m * _U32)
    norm_train = np.sqrt(_upper_sqnorms(train, train_sq, gamma_d).max())
    norm_test = np.sqrt(_upper_sqnorms(test, test_sq, gamma_d))
    err = gamma_m * (norm_test + norm_train) ** 2
    if search == "torch":
        # + the subnormals a GPU kernel may flush to zero (see the module docstring)
        return _torch_scores(
            train,
            train_sq,
            labels,
            test,
            test_sq,
            err + (4 * dim + 8) * 2.0**-126,
            k,
            num_classes,
            threads,
            block_size,
            device,
        )

    import faiss  # imported lazily: no work at import time

    # Parallel over query blocks (like scikit-learn's parallel_on_X): each worker runs faiss with
    # one OpenMP thread on its own block, then the exact re-ranking and the votes. This avoids
    # OpenMP barriers inside every sgemm call, which cost a lot when the cores are shared.
    # The result does not depend on the blocking or the thread count.
    scores = np.empty((test.shape[0], num_classes), dtype=np.float64)
    n_test = test.shape[0]
    # Blocks are not cut below faiss' BLAS threshold (n_rows * dim >= 128000 by default): its
    # direct path for smaller blocks is several times slower than sgemm.
    min_rows = -(-int(faiss.cvar.distance_compute_blas_threshold) // dim)
    step = max(1, min(block_size, max(min_rows, -(-n_test // threads))))
    jobs = _chunks(n_test, step)

    def faiss_search(q: np.ndarray, _rows: np.ndarray, n: int):
        return faiss.knn(q, train, n)  # = IndexFlatL2.search, without a copy

    def work(sl: slice, omp_threads: int = 1) -> None:
        faiss.omp_set_num_threads(omp_threads)
        d2, nb = _exact_neighbours(faiss_search, train, test[sl], k, err[sl])
        scores[sl] = _class_sums(labels[nb], _sklearn_weights(d2), num_classes)

    if threads == 1 or len(jobs) == 1:  # in the calling thread; restore its OpenMP setting
        prev_threads = faiss.omp_get_max_threads()
        try:
            for sl in jobs:
                work(sl, threads)
        finally:
            faiss.omp_set_num_threads(prev_threads)
    else:
        with ThreadPoolExecutor(max_workers=min(threads, len(jobs))) as pool:
            for fut in [pool.submit(work, sl) for sl in jobs]:
                fut.result()
    return scores


def _torch_scores(
    train: np.ndarray,
    train_sq: np.ndarray,
    labels: np.ndarray,
    test: np.ndarray,
    test_sq: np.ndarray,
    err: np.ndarray,
    k: int,
    num_classes: int,
    threads: int,
    block_size: int,
    device: str | torch.device,
) -> np.ndarray:
    """:func:`knn_scores` with the candidates from :class:`_TorchSearch` on ``device``."""
    import torch

    scores = np.empty((test.shape[0], num_classes), dtype=np.float64)
    with _ieee_matmul(torch):
        searcher = _TorchSearch(train, train_sq, device, _TORCH_BLOCK_BYTES)
        # CPU-side blocks of block_size rows (each searched in device blocks of searcher.rows)
        jobs = _chunks(test.shape[0], max(1, min(block_size, -(-test.shape[0] // threads))))

        def work(sl: slice) -> None:
            q_sq = test_sq[sl]
            d2, nb = _exact_neighbours(
                lambda q, rows, n: searcher(q, q_sq[rows], n), train, test[sl], k, err[sl]
            )
            scores[sl] = _class_sums(labels[nb], _sklearn_weights(d2), num_classes)

        if threads == 1 or len(jobs) == 1:
            for sl in jobs:
                work(sl)
        else:  # the device search is serialised by the searcher's lock, the re-rank is not
            with ThreadPoolExecutor(max_workers=min(threads, len(jobs))) as pool:
                for fut in [pool.submit(work, sl) for sl in jobs]:
                    fut.result()
    return scores


def knn_predict(
    train_x,
    train_y,
    test_x,
    *,
    k: int = 20,
    num_classes: int,
    threads: int = 1,
    device: str | torch.device = "cpu",
    search: str = "auto",
) -> np.ndarray:
    """int64 [N_test] predicted class: argmax of :func:`knn_scores`, lowest index on ties."""
    scores = knn_scores(
        train_x,
        train_y,
        test_x,
        k=k,
        num_classes=num_classes,
        threads=threads,
        device=device,
        search=search,
    )
    return np.argmax(scores, axis=1).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# metrics and the two-arm evaluation


def evaluate_knn(
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    k: int = 20,
    num_classes: int,
    arms: Sequence[str] = ARMS,
    threads: int = 1,
    device: str | torch.device = "cpu",
    search: str = "auto",
) -> list[dict]:
    """kNN top-1/top-5 accuracy for each arm: "raw" features and "bn" (train z-scored).

    ``device`` and ``search`` as in :func:`knn_scores` (the z-scoring runs on the CPU).

    Returns one dict per arm, in the order given:
    ``{"arm", "top1", "top5", "k", "n_train", "n_test"}`` (accuracies in percent; top5 is nan
    when num_classes <= 5).
    """
    num_classes = _check_num_classes(num_classes)
    _check_search(search, device)
    arms = tuple(arms)
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {arms!r}")
    train = as_features(train_x, "train features")
    test = as_features(test_x, "test features")
    check_dims(train, test)
    as_labels(train_y, train.shape[0], num_classes, "train labels")
    test_labels = as_labels(test_y, test.shape[0], num_classes, "test labels")
    k = _check_k(k, train.shape[0])

    results = []
    for arm in arms:
        if arm == "bn":
            tr, te = zscore(train, test)
        else:
            tr, te = train, test
        scores = knn_scores(
            tr,
            train_y,
            te,
            k=k,
            num_classes=num_classes,
            threads=threads,
            device=device,
            search=search,
        )
        acc = topk_accuracy(scores, test_labels, ks=(1, 5))
        results.append(
            {
                "arm": arm,
                "top1": acc[1],
                "top5": acc[5],
                "k": k,
                "n_train": int(train.shape[0]),
                "n_test": int(test.shape[0]),
            }
        )
    return results


def run_job(
    data: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    outputs: Sequence[str],
    *,
    model: str,
    num_classes: Sequence[int],
    arms: Sequence[str],
    settings: dict,
    threads: int,
    code: str,
    log,
) -> None:
    """One knn_probe job: for each (data set, train x, train y, test x, test y) of ``data``
    (``feature_cache.labelled_splits``) the arms' accuracies, written to the matching ``outputs``
    file with the job's provenance columns. ``settings``: config section ``knn`` (``k``;
    ``device``, a run-time key: "cpu" runs faiss without importing torch, "auto" is CUDA
    when visible)."""
    k, device = settings["k"], settings["device"]
    if device != "cpu":
        from workflow_scripts.devices import resolve_device

        device = str(resolve_device(device, "knn.device"))
    device_type = device.split(":")[0]
    if device_type == "cuda":
        log.info(
            "kNN candidate search on %s (torch matmul + topk, IEEE float32); exact re-rank "
            "on the CPU",
            device,
        )
    for (dataset, xtr, ytr, xte, yte), classes, out in job_datasets(data, num_classes, outputs):
        rows = evaluate_knn(
            xtr,
            ytr,
            xte,
            yte,
            k=k,
            num_classes=classes,
            arms=tuple(arms),
            threads=threads,
            device=device,
        )
        frame = write_rows(
            out,
            rows,
            model=model,
            dataset=dataset,
            protocol="knn",
            code_version=code,
            device=device_type,
        )
        log.info("%s / %s: %s", model, dataset, frame[["arm", "top1", "top5"]].to_dict("records"))
