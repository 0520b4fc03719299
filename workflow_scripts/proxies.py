"""Label-free and transferability proxies of a frozen feature matrix (numpy / scipy only).

Every proxy is computed in float64 on an ``N x D`` feature matrix ``x`` (rows = samples):

* ``rankme`` (Garrido et al., ICML 2023, "RankMe"): the smoothed entropy-effective rank of the
  *uncentred* matrix, ``exp(-sum_k p_k log p_k)``, ``p_k = s_k / sum(s) + 1e-7`` over the
  ``min(N, D)`` singular values ``s``; ``rankme_d = rankme / D`` makes backbones of different
  width comparable.
* ``alpha_req`` (Agrawal et al., NeurIPS 2022, "alpha-ReQ"): the power-law decay exponent of the
  eigenvalues of the *centred* feature covariance, with the fit's R^2 (see :func:`alpha_req`).
* ``logme`` (You et al., ICML 2021, "LogME"): the maximised log evidence per sample of a Bayesian
  linear regression of each one-hot label column on the features, averaged over classes.
* ``nc1`` (Papyan, Han & Donoho, PNAS 2020, "neural collapse"):
  ``trace(Sigma_W pinv(Sigma_B)) / C``.

:func:`compute` evaluates all of them on a seeded subsample, raw and z-scored ("bn" arm).
Nothing happens at import time and torch is never imported.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from workflow_scripts import registry
from workflow_scripts.probing import job_datasets, standardize, write_rows

PROXIES = tuple(registry.PROXIES)
ARMS = tuple(registry.ARMS)
# +1: higher is better, -1: lower is better (registry.PROXIES, with the reasons there).
DIRECTIONS = {name: entry["direction"] for name, entry in registry.PROXIES.items()}

RANKME_EPS = 1e-7
ALPHA_REQ_RTOL = 1e-10  # eigenvalues <= max * ALPHA_REQ_RTOL are numerically zero
LOGME_MAX_ITER = 11
LOGME_TOL = 1e-3


# ----------------------------------------------------------------------------------------------
# inputs


def _as_matrix(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"features must be a non-empty N x D matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    return x


def _as_labels(y, n: int, num_classes: int | None = None) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if n and y.min() < 0:
        raise ValueError("labels must be >= 0")
    if num_classes is not None and n and y.max() >= num_classes:
        raise ValueError(f"label {int(y.max())} >= num_classes = {num_classes}")
    return y.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------------------------
# subsample and z-scoring


def subsample(n: int, max_samples: int, seed: int) -> np.ndarray:
    """Sorted row indices of at most ``max_samples`` of ``n`` rows, drawn without replacement.

    All rows in order (``arange(n)``) when ``n <= max_samples``; otherwise
    ``np.random.default_rng(seed).choice(n, max_samples, replace=False)``, sorted.
    """
    n, max_samples = int(n), int(max_samples)
    if n < 0 or max_samples < 1:
        raise ValueError(f"need n >= 0 and max_samples >= 1, got n={n}, max_samples={max_samples}")
    if n <= max_samples:
        return np.arange(n, dtype=np.int64)
    idx = np.random.default_rng(seed).choice(n, max_samples, replace=False)
    return np.sort(idx).astype(np.int64, copy=False)


def indices_sha256(indices: np.ndarray) -> str:
    """SHA-256 of the indices as little-endian int64 bytes (records which rows a proxy used)."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# singular values / vectors


def _decompose(x: np.ndarray, vectors: bool = True):
    """``(s, v, u)``: the ``k = min(N, D)`` singular values of ``x`` (descending), its right
    singular vectors ``v`` (D x k) and left ones ``u`` (N x k, only for N <= D; else None).

    N <= D: LAPACK's thin SVD. N > D (the usual 25,600 x 2048 case): the eigendecomposition of
    the float64 Gram matrix ``x^T x`` (``s = sqrt(eigenvalues)``), ~10x faster than the thin SVD
    there (6 s against 65 s on 2 cores). Its eigenvalues carry an absolute error of order
    ``N * eps * max_eig`` (Gram rounding, then ``eigh``'s backward error), so eigenvalues below
    ``max(N, D) * eps * max_eig`` are set to 0 (singular values below ~``sqrt(max(N, D) * eps)``
    ~ 2.4e-6 of the largest at N = 25,600; exact zeros stay exact): everything that uses them is
    insensitive to that level (RankMe's p_k are smoothed by 1e-7; alpha-ReQ fits eigenvalues
    above 1e-10 of the largest; LogME's updates use ``sigma_i`` and ``v_i^T x^T f`` without
    dividing by ``sigma_i``).
    """
    n, d = x.shape
    if n <= d:
        if not vectors:
            return np.linalg.svd(x, compute_uv=False), None, None
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        return s, vt.T, u
    return (*_gram_eig(x.T @ x, n, vectors), None)


def _gram_eig(gram: np.ndarray, n: int, vectors: bool):
    """``(s, v)`` from a D x D Gram matrix of N rows: eigenvalues below the noise floor -> 0."""
    if vectors:
        lam, v = np.linalg.eigh(gram)
        lam, v = lam[::-1].copy(), v[:, ::-1]
    else:
        lam, v = np.linalg.eigvalsh(gram)[::-1].copy(), None
    lam[lam <= max(n, gram.shape[0]) * np.finfo(np.float64).eps * max(lam[0], 0.0)] = 0.0
    return np.sqrt(lam), v


def _centred_spectrum(x: np.ndarray):
    """``(eig, mu, gc)``: covariance eigenvalues of the centred ``x`` (descending), its column
    mean and, for N > D, the centred Gram matrix (else None), which :func:`compute` reuses:
    ``x^T x = gc + N mu mu^T`` (a sum of positive semi-definite terms, no cancellation)."""
    n, d = x.shape
    mu = x.mean(axis=0)
    xc = x - mu
    if n <= d:
        return np.linalg.svd(xc, compute_uv=False) ** 2 / n, mu, None
    gc = xc.T @ xc
    return _gram_eig(gc, n, vectors=False)[0] ** 2 / n, mu, gc


# ----------------------------------------------------------------------------------------------
# RankMe


def _rankme_from_singular_values(s: np.ndarray) -> float:
    total = float(s.sum())
    if total <= 0.0:
        return math.nan
    p = s / total + RANKME_EPS
    return float(np.exp(-np.sum(p * np.log(p))))


def rankme(x) -> float:
    """RankMe (Garrido et al., ICML 2023): ``exp(-sum_k p_k log p_k)``, ``p_k = s_k/sum(s) + 1e-7``.

    ``s`` are the ``min(N, D)`` singular values of the *uncentred* float64 matrix ``x`` (see
    :func:`_decompose` for how they are obtained). The value lies in ``[~1, min(N, D)]``: ``r``
    equal non-zero singular values give ~``r`` (the ``1e-7`` smoothing adds
    ``O(min(N, D) * 1e-7 * |log 1e-7|)``). NaN for an all-zero matrix.
    """
    return _rankme_from_singular_values(_decompose(_as_matrix(x), vectors=False)[0])


# ----------------------------------------------------------------------------------------------
# alpha-ReQ


def _power_law_fit(eig: np.ndarray, n: int) -> tuple[float, float]:
    eig = np.sort(eig)[::-1]
    if eig.size == 0 or not eig[0] > 0:
        return math.nan, math.nan
    k = int(np.count_nonzero(eig > eig[0] * ALPHA_REQ_RTOL))
    k = min(k, n - 1, eig.size)
    if k < 2:
        return math.nan, math.nan
    lx = np.log(np.arange(1, k + 1, dtype=np.float64))
    ly = np.log(eig[:k])
    lxc, lyc = lx - lx.mean(), ly - ly.mean()
    slope = float(lxc @ lyc / (lxc @ lxc))
    resid = lyc - slope * lxc
    ss_tot = float(lyc @ lyc)
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else math.nan
    return -slope, r2


def alpha_req(x) -> tuple[float, float]:
    """alpha-ReQ (Agrawal et al., NeurIPS 2022): ``(alpha, r2)`` of ``lambda_i ~ i^-alpha``.

    ``lambda_1 >= lambda_2 >= ...`` are the eigenvalues of the covariance of the centred float64
    features, ``(x - mean)^T (x - mean) / N`` (squared singular values / N, :func:`_decompose`).
    ``alpha`` is minus the slope of the ordinary least-squares line of ``log lambda_i`` on
    ``log i``, and ``r2`` its coefficient of determination.

    Rank range: ``i = 1 .. K``, ``K`` = the number of eigenvalues above ``max_eig * 1e-10``, capped
    at ``min(N - 1, D)`` (the centred matrix has rank <= N - 1). Why: the fit must use the whole
    spectrum that carries signal for a 64-d as for a 2048-d backbone, so no fixed rank window (the
    authors' code fits a hand-chosen window with 1/i weights); what must go are the eigenvalues that
    are zero in exact arithmetic (N <= D, rank-deficient or constant features), whose computed
    values (round-off, 1e-30 .. 1e-12 relative) would dominate a log-log fit. 1e-10 relative on
    eigenvalues is 1e-5 on singular values: above float64 round-off (also the Gram path's floor
    at N <= 4e5) and the float32 storage noise of cached features (~6e-8 relative), and a genuine
    i^-alpha spectrum only reaches it when alpha * log10(D) > 10 (alpha > 3 at D = 2048).
    (NaN, NaN) when K < 2; r2 is NaN for a perfectly flat spectrum (nothing to explain).
    """
    x = _as_matrix(x)
    return _power_law_fit(_centred_spectrum(x)[0], x.shape[0])


# ----------------------------------------------------------------------------------------------
# LogME


def _logme_terms(alpha, beta, t):
    """Posterior quantities of the Bayesian linear model in the eigenbasis of ``x^T x``.

    ``t`` holds ``sigma`` (the k = min(N, D) squared singular values, zeros included), ``w2``
    (``(v_i^T x^T f)^2``), ``f2`` (``|f|^2``) and, on the SVD path, ``z2`` (``(u_i^T f)^2``) and
    ``perp2`` (``|f - u u^T f|^2``). With ``A = alpha I + beta x^T x``, ``m = beta A^-1 x^T f``:
    returns ``gamma = sum_i beta sigma_i / (alpha + beta sigma_i)``, ``|m|^2``, ``|f - x m|^2`` and
    ``sum_i log(alpha + beta sigma_i)`` (the other D - k eigenvalues of A are alpha).
    ``|f - x m|^2 = perp2 + sum_i (alpha / d_i)^2 z2_i`` (``d_i = alpha + beta sigma_i``); without
    ``u`` it is ``|f|^2 - sum_i beta w2_i (2 alpha + beta sigma_i) / d_i^2`` (the same expression
    with ``w2 = sigma z2``), floored at ``eps |f|^2``, its rounding level.
    """
    sigma, w2 = t["sigma"], t["w2"]
    den = alpha + beta * sigma
    gamma = float(np.sum(beta * sigma / den))
    m2 = beta**2 * float(np.sum(w2 / den**2))
    if "z2" in t:
        res2 = t["perp2"] + float(np.sum((alpha / den) ** 2 * t["z2"]))
    else:
        fitted = beta * float(np.sum(w2 * (2 * alpha + beta * sigma) / den**2))
        res2 = max(t["f2"] - fitted, np.finfo(np.float64).eps * t["f2"])
    return gamma, m2, res2, float(np.sum(np.log(den)))


def _logme_evidence(alpha, beta, t, n, d) -> float:
    _, m2, res2, logdet_k = _logme_terms(alpha, beta, t)
    logdet = logdet_k + (d - t["sigma"].size) * math.log(alpha)
    return (
        n / 2 * math.log(beta)
        + d / 2 * math.log(alpha)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * res2
        - alpha / 2 * m2
        - logdet / 2
    )


def _logme_targets(s, v, u, xtf, f2, utf=None):
    """Per-target inputs of :func:`_logme_terms` (columns of ``xtf = x^T F``, ``utf = u^T F``)."""
    sigma = s * s
    w = v.T @ xtf
    w[sigma == 0] = 0.0  # directions dropped as numerically zero (Gram path)
    out = []
    for j in range(xtf.shape[1]):
        t = {"sigma": sigma, "w2": w[:, j] ** 2, "f2": float(f2[j])}
        if utf is not None:
            t["z2"] = utf[:, j] ** 2
            t["perp2"] = max(float(f2[j]) - float(t["z2"].sum()), 0.0)
        out.append(t)
    return out


def _logme_fixed_point(t, n, d) -> tuple[float, float, float]:
    alpha, beta = 1.0, 1.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(LOGME_MAX_ITER):
            gamma, m2, res2, _ = _logme_terms(alpha, beta, t)
            new_alpha, new_beta = gamma / m2, (n - gamma) / res2
            if not (
                np.isfinite(new_alpha) and np.isfinite(new_beta) and new_alpha > 0 and new_beta > 0
            ):
                return math.nan, math.nan, math.nan
            done = (
                abs(new_alpha - alpha) / alpha < LOGME_TOL
                and abs(new_beta - beta) / beta < LOGME_TOL
            )
            alpha, beta = new_alpha, new_beta
            if done:
                break
        return _logme_evidence(alpha, beta, t, n, d) / n, alpha, beta


def _single_target(x, f):
    x = _as_matrix(x)
    f = np.asarray(f, dtype=np.float64).reshape(-1)
    if f.shape[0] != x.shape[0]:
        raise ValueError(f"target has {f.shape[0]} rows, features {x.shape[0]}")
    s, v, u = _decompose(x)
    utf = None if u is None else (u.T @ f)[:, None]
    return _logme_targets(s, v, u, (x.T @ f)[:, None], [float(f @ f)], utf)[0], x.shape


def logme_evidence(x, f, alpha: float, beta: float) -> float:
    """Log evidence ``L(alpha, beta)`` of ``f ~ N(x w, 1/beta)``, ``w ~ N(0, 1/alpha)`` (not / N).

    ``L = N/2 log beta + D/2 log alpha - N/2 log 2pi - beta/2 |f - x m|^2 - alpha/2 m^T m
    - 1/2 log|A|`` with ``A = alpha I + beta x^T x`` and ``m = beta A^-1 x^T f`` (You et al.,
    ICML 2021), evaluated in the eigenbasis of ``x^T x`` (:func:`_decompose`; N < D and N >= D).
    """
    t, (n, d) = _single_target(x, f)
    return _logme_evidence(float(alpha), float(beta), t, n, d)


def logme_fit(x, f) -> tuple[float, float, float]:
    """``(L / N, alpha, beta)`` at LogME's evidence-maximisation fixed point for one target ``f``.

    MacKay's fixed point (You et al., ICML 2021, Algorithm 1): from ``alpha = beta = 1`` repeat
    ``gamma = sum_i beta sigma_i / (alpha + beta sigma_i)``, ``alpha <- gamma / m^T m``,
    ``beta <- (N - gamma) / |f - x m|^2`` (``m`` from the current alpha, beta) at most 11 times,
    stopping once both relative changes are below 1e-3; ``L`` is then :func:`logme_evidence` at
    the final (alpha, beta). Unlike the authors' code, no 1e-5 is added to denominators and the
    ``D - min(N, D)`` eigenvalues ``alpha`` of ``A`` enter ``log|A|`` when N < D.
    NaN if the iteration leaves (0, inf) (``f`` orthogonal to every column of ``x``).
    """
    t, (n, d) = _single_target(x, f)
    return _logme_fixed_point(t, n, d)


def _class_sums(a: np.ndarray, y: np.ndarray):
    """``(classes, inverse, counts, sums)``: per-class row sums of ``a`` (C x a.shape[1])."""
    classes, inv = np.unique(y, return_inverse=True)
    counts = np.bincount(inv, minlength=classes.size)
    order = np.argsort(inv, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return classes, inv, counts, np.add.reduceat(a[order], starts, axis=0)


def _logme_from_decomposition(x, y, dec, groups) -> float:
    if y.size == 0:
        return math.nan
    s, v, u = dec
    _, _, counts, xsums = groups
    utf = None if u is None else _class_sums(u, y)[3].T
    targets = _logme_targets(s, v, u, xsums.T, counts.astype(np.float64), utf)
    return float(np.mean([_logme_fixed_point(t, *x.shape)[0] for t in targets]))


def logme(x, y, num_classes: int | None = None) -> float:
    """LogME (You et al., ICML 2021): mean over classes of :func:`logme_fit`'s ``L / N``.

    Each class's target is its one-hot column; features are used as given (no centring, no bias
    column, as in the paper). Classes absent from ``y`` are skipped (an all-zero target has no
    finite evidence maximum); ``num_classes`` only checks the label range. One decomposition of
    ``x`` serves every class; ``x^T f`` and ``u^T f`` are per-class row sums.
    """
    x = _as_matrix(x)
    y = _as_labels(y, x.shape[0], num_classes)
    return _logme_from_decomposition(x, y, _decompose(x), _class_sums(x, y))


# ----------------------------------------------------------------------------------------------
# NC1


def nc1(x, y) -> float:
    """Neural-collapse NC1 (Papyan, Han & Donoho, PNAS 2020): ``trace(Sigma_W pinv(Sigma_B)) / C``.

    ``Sigma_W = sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T / N`` (the within-class covariance pooled
    over samples), ``Sigma_B = sum_c (mu_c - mu)(mu_c - mu)^T / C`` with ``mu`` the mean of the
    class means (as Papyan et al.; not the sample mean, which weighs large classes more), ``C``
    the number of classes present in ``y`` (absent classes are ignored). NaN when C < 2.

    Computed without D x D matrices: with ``M`` the C x D matrix of centred class means,
    ``Sigma_B = M^T M / C`` and ``pinv(Sigma_B) = C pinv(M) pinv(M)^T``, so
    ``NC1 = |W pinv(M)|_F^2 / N`` with ``W`` the N x D within-class deviations.
    ``pinv(M)`` is ``numpy.linalg.pinv(M, rcond=max(C, D) * eps)``: singular values of M below
    that fraction of the largest (numpy's ``matrix_rank`` tolerance; the direction removed by
    centring on ``mu`` is one of them) are zero, i.e. eigenvalues of Sigma_B below
    ``(max(C, D) * eps)^2`` of the largest.
    """
    x = _as_matrix(x)
    return _nc1_from_groups(x, _class_sums(x, _as_labels(y, x.shape[0])))


def _nc1_from_groups(x, groups) -> float:
    classes, inv, counts, sums = groups
    c = classes.size
    if c < 2:
        return math.nan
    means = sums / counts[:, None]
    within = x - means[inv]
    centred = means - means.mean(axis=0)
    rcond = max(c, x.shape[1]) * np.finfo(np.float64).eps
    proj = within @ np.linalg.pinv(centred, rcond=rcond)
    return float(np.sum(proj * proj) / x.shape[0])


# ----------------------------------------------------------------------------------------------
# all proxies


def compute(
    x, y, *, max_samples: int, seed: int, arms: Sequence[str] = ARMS
) -> tuple[list[dict], np.ndarray]:
    """Every proxy of :data:`PROXIES` on each arm, on one seeded subsample of the rows.

    ``x``: N x D features (any float dtype, memmap fine: only the subsample is read), ``y``: N
    integer labels. Rows ``idx = subsample(N, max_samples, seed)`` are used for all proxies and
    arms; the "bn" arm z-scores them with *their own* mean / std (:func:`standardize`).

    Returns ``(rows, idx)``: one dict per (proxy, arm) with keys ``proxy``, ``arm``, ``value``,
    ``r2`` (alpha_req's fit R^2, NaN for the others), ``n_samples`` (= len(idx)), ``seed`` and
    ``indices_sha256`` (:func:`indices_sha256` of ``idx``); ``idx`` the sorted int64 row indices.
    ``rankme_d`` is ``rankme / D``. Per arm, one centred Gram matrix (N > D) or SVD (N <= D)
    serves alpha-ReQ, RankMe and LogME, and one pass of class sums LogME and NC1.
    """
    arms = tuple(arms)
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {arms}")
    n = np.shape(x)[0]
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {y.shape}")
    idx = subsample(n, max_samples, seed)
    xs = _as_matrix(np.asarray(x)[idx])
    ys = _as_labels(y[idx], idx.size)
    d = xs.shape[1]
    digest = indices_sha256(idx)
    rows = []
    for arm in arms:
        a = standardize(xs) if arm == "bn" else xs
        eig, mu, gc = _centred_spectrum(a)
        alpha, r2 = _power_law_fit(eig, a.shape[0])
        if gc is None:
            dec = _decompose(a)
        else:  # x^T x from the centred Gram matrix: one N x D x D product per arm
            gc += a.shape[0] * np.outer(mu, mu)
            dec = (*_gram_eig(gc, a.shape[0], vectors=True), None)
        del gc
        rm = _rankme_from_singular_values(dec[0])
        groups = _class_sums(a, ys)
        values = {
            "rankme": (rm, math.nan),
            "rankme_d": (rm / d, math.nan),
            "alpha_req": (alpha, r2),
            "logme": (_logme_from_decomposition(a, ys, dec, groups), math.nan),
            "nc1": (_nc1_from_groups(a, groups), math.nan),
        }
        del dec
        rows += [
            {
                "proxy": p,
                "arm": arm,
                "value": float(values[p][0]),
                "r2": float(values[p][1]),
                "n_samples": int(idx.size),
                "seed": int(seed),
                "indices_sha256": digest,
            }
            for p in PROXIES
        ]
    return rows, idx


def run_job(
    data,
    outputs: Sequence[str],
    *,
    model: str,
    num_classes,
    arms,
    settings: dict,
    threads: int,
    code: str,
    log,
) -> None:
    """One proxies job (the feature-probe interface, see registry.PROTOCOLS["proxies"]): for
    each (data set, train x, train y, test x, test y) of ``data`` the proxies of the *train*
    features on the subsample of ``settings`` (config section ``proxies``: max_samples, seed),
    one tidy row per (proxy, arm) -- model, dataset, split, proxy, arm, value, n_samples, seed,
    then r2, indices_sha256, code_version -- written to the matching ``outputs`` file."""
    columns = [
        "model",
        "dataset",
        "split",
        "proxy",
        "arm",
        "value",
        "n_samples",
        "seed",
        "r2",
        "indices_sha256",
        "code_version",
    ]
    for (dataset, xtr, ytr, _, _), classes, out in job_datasets(data, num_classes, outputs):
        _as_labels(ytr, len(ytr), classes)  # labels within the data set's classes
        rows, _ = compute(
            xtr, ytr, max_samples=settings["max_samples"], seed=settings["seed"], arms=arms
        )
        frame = write_rows(
            out, rows, columns, model=model, dataset=dataset, split="train", code_version=code
        )
        log.info("%s / %s: %s", model, dataset, frame[["proxy", "arm", "value"]].to_dict("records"))
