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

A proxy that is undefined on its input -- a collapsed model's constant or all-zero features, a
single-class subsample, N = 1 or N = 0, rank-deficient features, N <= D where the features
interpolate a one-hot target -- is NaN; :func:`compute` never raises for such input and warns
(:class:`ProxyWarning`, which a rule's log records) naming the model, the data set, the arm,
the proxy and the cause (:func:`_undefined_causes`).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence

import numpy as np

from workflow_scripts import registry
from workflow_scripts.probing import job_datasets, standardize, write_rows

PROXIES = tuple(registry.PROXIES)
ARMS = tuple(registry.ARMS)
# +1: higher is better, -1: lower is better (registry.PROXIES, with the reasons there).
DIRECTIONS = {name: entry["direction"] for name, entry in registry.PROXIES.items()}

RANKME_EPS = 1e-7
ALPHA_REQ_RTOL = 1e-10  # covariance eigenvalues <= max * ALPHA_REQ_RTOL are numerically zero
# alpha-ReQ's fit window as its authors' code has it (reptrix get_alpha: fit_range
# np.arange(5, 100)): eigenvalue indices 5..99, i.e. ranks 6..100, weights 1 / rank
ALPHA_REQ_FIRST, ALPHA_REQ_LAST = 5, 99
ALPHA_REQ_MIN_POINTS = 10  # fewer numerically non-zero eigenvalues in the window: NaN
LOGME_TOL = 1e-10  # relative change of beta at which its fixed point has converged
# log10(alpha / (beta0 * sigma_max)) searched for the evidence maximum: from, to, step
LOGME_GRID = (-16.0, 4.0, 0.25)
NC1_RTOL_FACTOR = 1.0  # x max(C, D) * eps: singular values of the class means counted as zero


class ProxyWarning(UserWarning):
    """A proxy undefined on its input (value NaN), with model, data set, arm, proxy and cause."""


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


def _r_factor(x: np.ndarray) -> np.ndarray:
    """The triangular factor R of ``x = QR`` (D x D for N > D): ``R^T R = x^T x`` without forming
    ``x^T x``, so the singular values of R are those of ``x`` to ``eps * s_max`` (backward
    stable), not to ``sqrt(eps) * s_max`` as through the Gram matrix."""
    return np.linalg.qr(x, mode="r")


def _decompose(x: np.ndarray, vectors: bool = True, r: np.ndarray | None = None):
    """``(s, v, u)``: the ``k = min(N, D)`` singular values of ``x`` (descending, to full double
    precision), its right singular vectors ``v`` (D x k) and left ones ``u`` (N x k, only for
    N <= D; else None).

    N <= D: LAPACK's SVD of ``x``. N > D (the usual 25,600 x 2048 case): the SVD of the D x D
    triangular factor ``r`` of ``x = QR`` (:func:`_r_factor`, or given), which has the singular
    values and right singular vectors of ``x`` -- LAPACK's own route for tall matrices, without
    ever forming the N x D left vectors.
    """
    n, d = x.shape
    if n <= d:
        if not vectors:
            return np.linalg.svd(x, compute_uv=False), None, None
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        return s, vt.T, u
    r = _r_factor(x) if r is None else r
    if not vectors:
        return np.linalg.svd(r, compute_uv=False), None, None
    _, s, vt = np.linalg.svd(r)
    return s, vt.T, None


def _centred_spectrum(x: np.ndarray):
    """``(eig, r)``: covariance eigenvalues of the centred ``x`` (descending: its squared singular
    values / N) and, for N > D, the R factor of the *uncentred* ``x`` (else None), which
    :func:`compute` reuses: the centred matrix is factorised once, ``x = x_c + 1 mu^T``, so
    ``x^T x = R_c^T R_c + N mu mu^T``, the R^T R of the stacked ``[R_c; sqrt(N) mu^T]`` (a QR of
    D + 1 rows, no cancellation)."""
    n, d = x.shape
    mu = x.mean(axis=0)
    xc = x - mu
    if n <= d:
        return np.linalg.svd(xc, compute_uv=False) ** 2 / n, None
    rc = _r_factor(xc)
    del xc
    eig = np.linalg.svd(rc, compute_uv=False) ** 2 / n
    return eig, _r_factor(np.vstack([rc, math.sqrt(n) * mu[None, :]]))


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

    ``s`` are the ``min(N, D)`` singular values of the *uncentred* float64 matrix ``x``, to full
    double precision (:func:`_decompose`: no singular value is set to zero; collapsed features
    keep their tiny ones). The value lies in ``[~1, min(N, D)]``: ``r``
    equal non-zero singular values give ~``r`` (the ``1e-7`` smoothing adds
    ``O(min(N, D) * 1e-7 * |log 1e-7|)``). NaN for an all-zero matrix.
    """
    return _rankme_from_singular_values(_decompose(_as_matrix(x), vectors=False)[0])


# ----------------------------------------------------------------------------------------------
# alpha-ReQ


def _power_law_fit(eig: np.ndarray, n: int) -> tuple[float, float]:
    """``(alpha, r2)`` of the descending covariance eigenvalues ``eig`` of ``n`` rows, fitted as
    alpha-ReQ's authors do (see :func:`alpha_req`)."""
    eig = np.sort(eig)[::-1]
    if eig.size == 0 or not eig[0] > 0:
        return math.nan, math.nan
    # numerically non-zero eigenvalues; the centred matrix has rank <= n - 1
    k = min(int(np.count_nonzero(eig > eig[0] * ALPHA_REQ_RTOL)), n - 1, eig.size)
    window = np.arange(ALPHA_REQ_FIRST, min(ALPHA_REQ_LAST, k - 1) + 1)
    if window.size < ALPHA_REQ_MIN_POINTS:
        return math.nan, math.nan
    logs = np.log(eig[:k])
    rank = window + 1.0
    design = np.stack([-np.log(rank), np.ones(window.size)], axis=1)
    weights = 1.0 / rank
    slope, intercept = np.linalg.solve(
        design.T @ (design * weights[:, None]), (design * weights[:, None]).T @ logs[window]
    )
    # R^2 (unweighted) of the fitted line over eigenvalue indices 6 .. last - 1, last = 500 for
    # >= 512 eigenvalues, else their number - 10: the authors' fit_R2
    last = 500 if k >= 512 else k - 10
    span = np.arange(ALPHA_REQ_FIRST + 1, last)
    if span.size < 2:
        return float(slope), math.nan
    pred = intercept - slope * np.log(span + 1.0)
    resid, centred = logs[span] - pred, logs[span] - logs[span].mean()
    ss_tot = float(centred @ centred)
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else math.nan
    return float(slope), r2


def alpha_req(x) -> tuple[float, float]:
    """alpha-ReQ (Agrawal et al., NeurIPS 2022): ``(alpha, r2)`` of ``lambda_i ~ i^-alpha``, as the
    authors compute it (their ``reptrix`` package: ``get_alpha`` / ``get_powerlaw``).

    ``lambda_1 >= lambda_2 >= ...`` are the eigenvalues of the covariance of the centred float64
    features, ``(x - mean)^T (x - mean) / N`` (their PCA's spectrum; its normalisation to a sum of
    1 changes no slope). ``alpha`` is the slope of the *weighted* least-squares line of
    ``log lambda_i`` on ``-log i`` over the eigenvalue indices 5..99 (ranks 6..100; the first
    five, the head of the spectrum, left out) with weights ``1 / i``; ``r2`` is the authors'
    goodness of fit, the (unweighted) R^2 of that line against ``log lambda`` over the indices
    6..499 (6 .. K - 11 with fewer than 512 eigenvalues).

    Rule where the window does not fit (the demo's 64-d ViTs, collapsed features): only the
    numerically non-zero eigenvalues count -- above ``max_eig * 1e-10``, at most
    ``min(N - 1, D)`` of them (the centred matrix has rank <= N - 1) -- and the window ends at the
    last of them (64 eigenvalues: indices 5..63); with fewer than 10 indices left, or no
    variance, ``(NaN, NaN)``; r2 is NaN when its range has fewer than 2 points. (The newest
    reptrix defaults to indices 10..99; the window of the version the paper's method used,
    5..99, is kept.)
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


def _profile_betas(t, n, alphas: np.ndarray) -> np.ndarray:
    """For each alpha of ``alphas``, the beta that maximises the evidence at that alpha:
    MacKay's update ``beta <- (N - gamma) / |f - x m|^2`` repeated until its relative change is
    at most 1e-10 (at most 500 times), from the noise model's ``N / |f|^2``; all alphas at
    once. NaN where beta runs to infinity."""
    sigma, w2, z2 = t["sigma"], t["w2"], t.get("z2")
    a = np.asarray(alphas, dtype=np.float64)[:, None]
    beta = np.full(a.shape, n / t["f2"])
    eps = np.finfo(np.float64).eps
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(500):
            den = a + beta * sigma
            gamma = np.sum(beta * sigma / den, axis=1, keepdims=True)
            if z2 is None:
                fitted = beta * np.sum(w2 * (2 * a + beta * sigma) / den**2, axis=1, keepdims=True)
                res2 = np.maximum(t["f2"] - fitted, eps * t["f2"])
            else:
                res2 = t["perp2"] + np.sum((a / den) ** 2 * z2, axis=1, keepdims=True)
            new = (n - gamma) / res2
            new[~(np.isfinite(new) & (new > 0))] = np.nan
            done = np.all(np.isnan(new) | (np.abs(new - beta) <= LOGME_TOL * beta))
            beta = new
            if done:
                break
    return beta[:, 0]


def _profile(t, n, d, alpha: float) -> tuple[float, float]:
    """(L / N, beta) at ``alpha`` with beta at its optimum (:func:`_profile_betas`)."""
    beta = float(_profile_betas(t, n, np.array([alpha]))[0])
    if not np.isfinite(beta):
        return math.nan, beta
    return _logme_evidence(alpha, beta, t, n, d) / n, beta


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


def _logme_limit(t, n) -> float:
    """The evidence's supremum along ``alpha -> infinity`` (weights fixed at zero, ``f ~ N(0,
    1/beta)``), maximised over beta (``beta = N / |f|^2``), per sample:
    ``-(log(2 pi |f|^2 / N) + 1) / 2``."""
    return -0.5 * (math.log(2 * math.pi * t["f2"] / n) + 1.0)


# why _logme_fixed_point found no finite maximum (its ``why`` list)
LOGME_ZERO_TARGET = "zero target"
LOGME_BETA_INFINITE = "beta infinite"
LOGME_BELOW_GRID = "below grid"


def _logme_fixed_point(t, n, d, why: list | None = None) -> tuple[float, float, float]:
    """``(L / N, alpha, beta)`` at the evidence maximum of one target (:func:`logme_fit`);
    where it is NaN, ``why`` (a list) receives the reason (``LOGME_*``)."""
    from scipy.optimize import minimize_scalar

    def undefined(reason):
        if why is not None:
            why.append(reason)
        return math.nan, math.nan, math.nan

    if not t["f2"] > 0:  # an all-zero target: fitted exactly by w = 0, beta -> infinity
        return undefined(LOGME_ZERO_TARGET)
    limit, beta0 = _logme_limit(t, n), n / t["f2"]
    top = float(t["sigma"].max()) if t["sigma"].size else 0.0
    if top == 0.0 or not np.any(t["w2"] > 0):  # f is orthogonal to every feature direction
        return limit, math.inf, beta0
    # log10(alpha / (beta0 * sigma_max)) on a grid: the evidence over beta at each alpha
    grid = np.arange(LOGME_GRID[0], LOGME_GRID[1] + 1e-9, LOGME_GRID[2])
    alphas = beta0 * top * 10.0**grid
    betas = _profile_betas(t, n, alphas)
    if not np.all(np.isfinite(betas)):
        return undefined(LOGME_BETA_INFINITE)  # beta -> infinity: x interpolates f
    values = np.array([_logme_evidence(a, b, t, n, d) / n for a, b in zip(alphas, betas)])
    best = int(np.argmax(values))
    if best == grid.size - 1 or values[best] <= limit:
        return limit, math.inf, beta0  # the evidence rises towards its alpha -> inf limit
    # Brent's method on log10 alpha around every local maximum of the grid within 1e-2 of the
    # best (two maxima can be that close, and the grid's best need not be the higher one)
    peaks = [
        i
        for i in range(1, grid.size - 1)
        if values[i] >= values[i - 1]
        and values[i] >= values[i + 1]
        and values[i] >= values[best] - 1e-2
    ]
    if not peaks and best == 0:
        # the evidence still rises at the smallest alpha searched (1e-16 of beta0 sigma_max):
        # f is fitted through directions of x at rounding level (float32 features of rank
        # < N <= D); towards alpha -> 0 they interpolate it, the evidence has no maximum
        return undefined(LOGME_BELOW_GRID)
    peaks = peaks or [best]
    found = []
    for i in peaks:
        result = minimize_scalar(
            lambda g: -_profile(t, n, d, beta0 * top * 10.0**g)[0],
            bounds=(grid[i - 1], grid[i + 1]),
            method="bounded",
            options={"xatol": 1e-12, "maxiter": 500},
        )
        alpha = beta0 * top * 10.0 ** float(result.x)
        found.append((*_profile(t, n, d, alpha), alpha))
    value, beta, alpha = max(found, key=lambda v: v[0] if np.isfinite(v[0]) else -math.inf)
    if not value >= values[best]:  # never below the grid
        alpha, beta, value = float(alphas[best]), float(betas[best]), float(values[best])
    return value, alpha, beta


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
    """``(L / N, alpha, beta)`` at the maximum of LogME's evidence for one target ``f``.

    LogME (You et al., ICML 2021) is the *maximum* evidence over (alpha, beta). The authors reach
    it by MacKay's fixed point from ``alpha = beta = 1`` (``gamma = sum_i beta sigma_i / (alpha
    + beta sigma_i)``, ``alpha <- gamma / m^T m``, ``beta <- (N - gamma) / |f - x m|^2``) stopped
    after 11 steps. That stopping rule leaves up to ~1e-2 below the maximum on real features, and
    the fixed point finds *a* stationary point: on the demo's features the evidence has two
    maxima in alpha for some classes. Here:

    1. on a grid of ``alpha = beta0 sigma_max 10^g``, ``g = -16, -15.75, ..., 4`` (``beta0 = N /
       |f|^2``, the noise-only precision; ``sigma_max`` the largest eigenvalue of ``x^T x``),
       beta is maximised by MacKay's beta update run to a relative change of 1e-10;
    2. around every local maximum of the grid within 1e-2 of its best (two maxima can lie that
       close, 3e-6 apart on a demo model, the lower one on the grid), Brent's method on
       ``log10 alpha`` (scipy ``minimize_scalar``, bounded, ``xatol`` 1e-12), beta again at its
       optimum; the highest is taken, so MacKay's two fixed-point equations hold at the result
       (tested to 1e-6).

    ``L`` is :func:`logme_evidence` there. Unlike the authors' code, no 1e-5 is added to
    denominators and the ``D - min(N, D)`` eigenvalues ``alpha`` of ``A`` enter ``log|A|`` when
    N < D.

    Targets without a finite maximum, as the method implies:

    * the evidence rises towards ``alpha -> infinity`` (``f`` is explained better by noise than
      by any linear function of ``x``: the best grid point is the last one, or no interior value
      exceeds the limit): LogME is the supremum, that limit -- the model ``f ~ N(0, 1/beta)`` with
      ``beta = N / |f|^2``, ``L / N = -(log(2 pi |f|^2 / N) + 1) / 2`` -- with ``alpha = inf``;
      also when ``f`` is orthogonal to every column of ``x``;
    * ``beta`` runs to infinity (``x`` interpolates ``f``, possible for N <= D; an all-zero
      ``f``), or the evidence still rises at the grid's smallest alpha with no other local
      maximum within 1e-2 (``f`` is fitted through directions of ``x`` at rounding level,
      which interpolate it as alpha -> 0): the evidence is unbounded and LogME undefined:
      ``(NaN, NaN, NaN)``.
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


def _logme_per_class(x, y, dec, groups, why: list | None = None) -> list[float]:
    """``L / N`` of each class present in ``y`` (order of ``groups``' classes); ``why`` (a
    list) receives ``(class index, reason)`` for each NaN."""
    s, v, u = dec
    _, _, counts, xsums = groups
    utf = None if u is None else _class_sums(u, y)[3].T
    targets = _logme_targets(s, v, u, xsums.T, counts.astype(np.float64), utf)
    out = []
    for j, t in enumerate(targets):
        reason: list = []
        out.append(_logme_fixed_point(t, *x.shape, why=reason)[0])
        if why is not None and reason:
            why.append((j, reason[0]))
    return out


def _logme_from_decomposition(x, y, dec, groups, per_class: list | None = None) -> float:
    """Mean of :func:`_logme_per_class`; ``per_class`` (a list) receives the per-class values
    and the reasons of the NaNs: ``[values, [(class index, reason), ...]]``."""
    if y.size == 0:
        return math.nan
    why: list = []
    values = _logme_per_class(x, y, dec, groups, why)
    if per_class is not None:
        per_class[:] = [values, why]
    return float(np.mean(values))


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
    the number of classes present in ``y`` (absent classes are ignored). NaN when C < 2 or
    all class means coincide.

    Computed without D x D matrices: with ``M`` the C x D matrix of centred class means,
    ``Sigma_B = M^T M / C`` and ``pinv(Sigma_B) = C pinv(M) pinv(M)^T``, so
    ``NC1 = |W pinv(M)|_F^2 / N`` with ``W`` the N x D within-class deviations.

    The pseudo-inverse is restricted to Sigma_B's numerical rank: centring on ``mu`` removes one
    direction, so at most ``C - 1`` singular values of ``M`` count, and of those only the ones
    above ``max(C, D) * eps`` times the largest (numpy's ``matrix_rank`` tolerance; eigenvalues
    of Sigma_B above its square). The singular value centring removed is rounding residue
    (~1e-14 relative, above that tolerance on 64-d features): inverting it -- as a plain
    ``pinv(M)`` does -- multiplies the within-class spread along a meaningless direction by
    ~1e28 (NC1 2e24 instead of 48 on a demo model).
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
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    tol = NC1_RTOL_FACTOR * max(c, x.shape[1]) * np.finfo(np.float64).eps * s[0]
    rank = min(c - 1, int(np.count_nonzero(s > tol)))
    if rank == 0:  # all class means equal: no between-class spread to compare with
        return math.nan
    # pinv(M) restricted to the rank: V_r S_r^-1 U_r^T; |W pinv(M)|_F = |W V_r S_r^-1|_F
    proj = (within @ vt[:rank].T) / s[:rank]
    return float(np.sum(proj * proj) / x.shape[0])


# ----------------------------------------------------------------------------------------------
# all proxies


def _arm_values(a: np.ndarray, ys: np.ndarray, d: int) -> tuple[dict, dict]:
    """Every proxy of one arm's matrix ``a``: ``({proxy: (value, r2)}, facts)``, ``facts`` the
    intermediate results :func:`_undefined_causes` reads (covariance spectrum, class sums,
    per-class LogME)."""
    eig, r = _centred_spectrum(a)
    alpha, r2 = _power_law_fit(eig, a.shape[0])
    dec = _decompose(a, r=r)  # N > D: the R factor of the centred QR, updated, serves
    del r
    rm = _rankme_from_singular_values(dec[0])
    groups = _class_sums(a, ys)
    per_class: list = []  # [per-class values, reasons of their NaNs]
    values = {
        "rankme": (rm, math.nan),
        "rankme_d": (rm / d, math.nan),
        "alpha_req": (alpha, r2),
        "logme": (_logme_from_decomposition(a, ys, dec, groups, per_class), math.nan),
        "nc1": (_nc1_from_groups(a, groups), math.nan),
    }
    del dec
    return values, {"eig": eig, "groups": groups, "logme": per_class}


def _scale(x: np.ndarray) -> str:
    return f"largest |feature| {float(np.max(np.abs(x))) if x.size else 0.0:.3g}"


def _undefined_causes(values: dict, facts: dict, a: np.ndarray, xs: np.ndarray) -> dict:
    """``{proxy: cause}`` for each proxy of one arm whose value is not finite: why it is
    undefined on the arm's matrix ``a`` (``xs``: the raw subsample it comes from)."""
    bad = [p for p in PROXIES if not np.isfinite(values[p][0])]
    if not bad:
        return {}
    n, d = a.shape
    if "error" in facts:
        cause = f"the decomposition failed ({facts['error']}; {_scale(xs)})"
        return dict.fromkeys(bad, cause)
    fallback = f"the value is not finite in float64 ({_scale(xs)})"
    # a collapsed model: every sample has the same feature vector (the bn arm z-scores it to 0)
    if n == 1:
        same = "N = 1 (a single sample)"
    elif np.all(xs == xs[0]):
        kind = "all zero" if not np.any(xs[0]) else "constant"
        same = f"features are {kind} (all N = {n} samples identical)"
    else:
        same = None
    zero = not np.any(a)
    if zero and same is None:  # z-scoring gave zeros although the raw rows differ
        same = f"features are all zero in this arm ({_scale(xs)})"
    classes, _, counts, sums = facts["groups"]
    causes = {}
    for proxy in bad:
        if proxy in ("rankme", "rankme_d"):
            cause = same if zero else fallback
        elif proxy == "alpha_req":
            eig = facts["eig"]
            if same is not None:
                cause = same
            elif not np.all(np.isfinite(eig)):
                cause = fallback
            else:
                k = min(int(np.count_nonzero(eig > eig[0] * ALPHA_REQ_RTOL)), n - 1, eig.size)
                need = ALPHA_REQ_FIRST + ALPHA_REQ_MIN_POINTS
                cause = (
                    f"only {k} numerically non-zero covariance eigenvalues (N = {n}, D = {d}: "
                    f"rank-deficient features or too few samples / dimensions); the power-law "
                    f"fit needs at least {need}"
                )
        elif proxy == "logme":
            cause = _logme_cause(facts["logme"], classes, n, d, xs) or fallback
        else:  # nc1
            if classes.size < 2:
                one = f"one class (label {int(classes[0])})" if classes.size else "no labels"
                cause = f"N = 1: {one}" if n == 1 else f"{one} in the N = {n} samples"
            elif not np.any(sums / counts[:, None] - (sums / counts[:, None]).mean(axis=0)):
                cause = "all class means coincide (no between-class spread)"
                cause = f"{same}: {cause}" if same is not None else cause
            else:
                cause = fallback
        causes[proxy] = cause
    return causes


def _logme_cause(per_class, classes, n: int, d: int, xs: np.ndarray) -> str | None:
    """Why LogME is NaN: the classes whose evidence has no finite maximum, by reason."""
    if not per_class:
        return None
    _, why = per_class
    parts = []
    for reason, text in (
        (
            LOGME_BETA_INFINITE,
            f"the features interpolate the one-hot target (N = {n} <= D = {d}): the evidence "
            "grows without bound, beta -> infinity"
            if n <= d
            else f"beta -> infinity, or the evidence overflows float64 ({_scale(xs)})",
        ),
        (
            LOGME_BELOW_GRID,
            "the evidence still rises at the smallest alpha searched: the target is fitted "
            "through rounding-level (numerically zero) feature directions, which interpolate it "
            "as alpha -> 0 (rank-deficient features, N <= D)",
        ),
        (LOGME_ZERO_TARGET, "the one-hot target is all zero"),
    ):
        hit = [int(classes[j]) for j, r in why if r == reason]
        if hit:
            shown = f"{hit[:10]}{' ...' if len(hit) > 10 else ''}"
            parts.append(f"classes {shown} ({len(hit)} of {classes.size}): {text}")
    if not parts:
        return None
    return ("N = 1: " if n == 1 else "") + "; ".join(parts)


def _warn_undefined(causes: dict, arm: str, model, dataset) -> None:
    for proxy, cause in causes.items():
        warnings.warn(
            f"proxy {proxy} is undefined (NaN) for model '{model}', data set '{dataset}', "
            f"arm '{arm}': {cause}",
            ProxyWarning,
            stacklevel=3,
        )


def compute(
    x,
    y,
    *,
    max_samples: int,
    seed: int,
    arms: Sequence[str] = ARMS,
    model: str | None = None,
    dataset: str | None = None,
) -> tuple[list[dict], np.ndarray]:
    """Every proxy of :data:`PROXIES` on each arm, on one seeded subsample of the rows.

    ``x``: N x D features (any float dtype, memmap fine: only the subsample is read), ``y``: N
    integer labels. Rows ``idx = subsample(N, max_samples, seed)`` are used for all proxies and
    arms; the "bn" arm z-scores them with *their own* mean / std (:func:`standardize`).

    Returns ``(rows, idx)``: one dict per (proxy, arm) with keys ``proxy``, ``arm``, ``value``,
    ``r2`` (alpha_req's fit R^2, NaN for the others), ``n_samples`` (= len(idx)), ``seed`` and
    ``indices_sha256`` (:func:`indices_sha256` of ``idx``); ``idx`` the sorted int64 row indices.
    ``rankme_d`` is ``rankme / D``. Per arm, one QR of the centred rows (N > D; SVDs for N <= D)
    serves alpha-ReQ, RankMe and LogME, and one pass of class sums LogME and NC1.

    Undefined proxies (collapsed features, one class, N = 1, N = 0, rank-deficient features,
    a failed decomposition at an extreme feature scale; see the module docstring) are NaN (with
    r2), each with a :class:`ProxyWarning` naming ``model``, ``dataset``, the arm, the proxy
    and the cause; such input never raises. Malformed input (labels of the wrong shape or
    type, NaN / infinite features, unknown arms) still does.
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
    digest = indices_sha256(idx)
    if n == 0 and len(np.shape(x)) == 2 and np.shape(x)[1] >= 1:  # no samples at all
        xs, d = None, int(np.shape(x)[1])
    else:
        xs = _as_matrix(np.asarray(x)[idx])
        ys = _as_labels(y[idx], idx.size)
        d = xs.shape[1]
    rows = []
    for arm in arms:
        if xs is None:
            values = {p: (math.nan, math.nan) for p in PROXIES}
            causes = dict.fromkeys(PROXIES, "no samples (N = 0)")
        else:
            a = standardize(xs) if arm == "bn" else xs
            try:
                values, facts = _arm_values(a, ys, d)
            except np.linalg.LinAlgError as err:  # LAPACK gave up (features near overflow)
                values = {p: (math.nan, math.nan) for p in PROXIES}
                facts = {"error": err}
            causes = _undefined_causes(values, facts, a, xs)
            del a
        for proxy in causes:  # undefined: NaN (inf included), r2 with it
            values[proxy] = (math.nan, math.nan)
        _warn_undefined(causes, arm, model, dataset)
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
    then r2, indices_sha256, code_version -- written to the matching ``outputs`` file. An
    undefined proxy is an empty value (NaN) there, with a :class:`ProxyWarning` naming model,
    data set, arm and cause (a rule's ``runtime.setup`` logs warnings to the job's log)."""
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
            xtr,
            ytr,
            max_samples=settings["max_samples"],
            seed=settings["seed"],
            arms=arms,
            model=model,
            dataset=dataset,
        )
        frame = write_rows(
            out, rows, columns, model=model, dataset=dataset, split="train", code_version=code
        )
        log.info("%s / %s: %s", model, dataset, frame[["proxy", "arm", "value"]].to_dict("records"))
