"""workflow_scripts.proxies against hand-computed cases and independent naive implementations."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize

from workflow_scripts import proxies as P

ROOT = Path(__file__).resolve().parents[2]


def _orthonormal(rng, n: int, k: int, centred: bool = False) -> np.ndarray:
    """n x k matrix with orthonormal columns (QR of a seeded Gaussian), optionally mean-free."""
    g = rng.standard_normal((n, k))
    if centred:
        g -= g.mean(axis=0)
    return np.linalg.qr(g)[0]


def _clusters(rng, n=300, d=12, c=4, spread=4.0):
    y = rng.integers(0, c, n)
    centres = spread * rng.standard_normal((c, d))
    return centres[y] + rng.standard_normal((n, d)), y


# ----------------------------------------------------------------------------------------------
# RankMe


def _rankme_expected(r: int, k: int) -> float:
    """Exact RankMe of r equal non-zero singular values among k = min(N, D) (the rest zero)."""
    e = P.RANKME_EPS
    p = 1.0 / r + e
    return math.exp(-(r * p * math.log(p) + (k - r) * e * math.log(e)))


@pytest.mark.parametrize("r", [1, 3, 17, 40])
def test_rankme_of_isometric_rank_r_matrix_is_r(r):
    rng = np.random.default_rng(r)
    n, d = 120, 40
    x = 2.5 * _orthonormal(rng, n, r) @ _orthonormal(rng, d, r).T  # r singular values 2.5
    value = P.rankme(x)
    assert value == pytest.approx(_rankme_expected(r, min(n, d)), rel=1e-9)
    # The 1e-7 smoothing moves the value by < 1e-3 for k = 40 singular values:
    # r * |d/dp (p log p)| * 1e-7 + (k - r) * 1e-7 * |log 1e-7| < 40 * 17 * 1e-7 ~ 7e-5 (relative).
    assert abs(value - r) < 1e-3 * r


def test_rankme_rank_one_scale_and_wide_matrix():
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(50), rng.standard_normal(30)
    x = np.outer(u, v)
    assert P.rankme(x) == pytest.approx(_rankme_expected(1, 30), rel=1e-9)
    assert abs(P.rankme(x) - 1.0) < 1e-3
    g = rng.standard_normal((20, 60))  # N < D: min(N, D) = 20 singular values
    assert P.rankme(7.3 * g) == pytest.approx(P.rankme(g), rel=1e-12)
    s = np.linalg.svd(g, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert P.rankme(g) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-12)
    assert math.isnan(P.rankme(np.zeros((4, 3))))


# ----------------------------------------------------------------------------------------------
# alpha-ReQ


def _with_covariance_spectrum(rng, n: int, lam: np.ndarray, d: int) -> np.ndarray:
    """x (n x d) whose centred covariance x_c^T x_c / n has exactly the eigenvalues lam (+ 0s)."""
    z = _orthonormal(rng, n, lam.size, centred=True) * math.sqrt(n)  # z^T z / n = I, mean 0
    q = _orthonormal(rng, d, lam.size)
    return z @ np.diag(np.sqrt(lam)) @ q.T + rng.standard_normal(d)  # an offset: alpha centres


@pytest.mark.parametrize("d", [64, 512])
def test_alpha_req_recovers_power_law_exponent(d):
    rng = np.random.default_rng(d)
    lam = np.arange(1, d + 1, dtype=np.float64) ** -1.3
    x = _with_covariance_spectrum(rng, 4 * d, lam, d)
    alpha, r2 = P.alpha_req(x)
    assert abs(alpha - 1.3) < 0.01
    assert abs(alpha - 1.3) < 1e-8  # exact spectrum: the fit is exact up to round-off
    assert r2 > 0.999 and r2 == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("n,d", [(100, 512), (600, 64)])
def test_alpha_req_excludes_numerically_zero_eigenvalues(n, d):
    # rank 40 (N < D: SVD path; N > D: Gram path): D - 40 eigenvalues are zero in exact arithmetic
    rng = np.random.default_rng(n)
    lam = np.arange(1, 41, dtype=np.float64) ** -0.8
    x = _with_covariance_spectrum(rng, n, lam, d)
    alpha, r2 = P.alpha_req(x)
    assert alpha == pytest.approx(0.8, abs=1e-8)
    assert r2 == pytest.approx(1.0, abs=1e-10)


def _authors_alpha(x, window):
    """alpha-ReQ as its authors' code computes it (reptrix ``get_eigenspectrum`` +
    ``get_powerlaw``, re-implemented here): sklearn's PCA spectrum of the centred features,
    weighted least squares with float32 weights 1 / rank, sklearn's r2_score over indices
    6 .. max_range - 1 (500 with >= 512 eigenvalues, else their number - 10)."""
    from sklearn.decomposition import PCA
    from sklearn.metrics import r2_score

    xc = x - x.mean(axis=0)
    eigen = PCA(n_components=min(2048, *x.shape), svd_solver="full").fit(xc)
    eigen = eigen.explained_variance_ratio_
    logss = np.log(np.abs(eigen))
    y = logss[window][:, None]
    trange = window + 1
    design = np.concatenate((-np.log(trange)[:, None], np.ones((trange.size, 1))), axis=1)
    w = 1.0 / trange.astype(np.float32)[:, None]
    b = np.linalg.solve(design.T @ (design * w), (w * design).T @ y).flatten()
    ranks = np.arange(eigen.size) + 1
    ypred = np.exp(np.stack([-np.log(ranks), np.ones(eigen.size)], axis=1) @ b)
    max_range = 500 if eigen.size >= 512 else eigen.size - 10
    r2 = r2_score(logss[trange[0] : max_range], np.log(ypred)[trange[0] : max_range])
    return b[0], r2


@pytest.mark.parametrize("n,d", [(3000, 600), (900, 128), (700, 64)])
def test_alpha_req_is_the_authors_weighted_fit(n, d):
    """A spectrum that is no power law (two regimes and noise), so the window, the weights and
    the R^2 range all matter. D = 64: fewer eigenvalues than the authors' window (indices
    5..99); the documented rule ends it at the last eigenvalue (index 63)."""
    rng = np.random.default_rng(d)
    ranks = np.arange(1, d + 1, dtype=np.float64)
    lam = np.where(ranks < 20, ranks**-0.5, 20**0.5 * ranks**-1.6) * rng.uniform(0.8, 1.25, d)
    x = _with_covariance_spectrum(rng, n, lam, d)
    alpha, r2 = P.alpha_req(x)
    expected_alpha, expected_r2 = _authors_alpha(x, np.arange(5, min(100, d)))
    assert alpha == pytest.approx(expected_alpha, rel=1e-6)  # the float32 weights: ~1e-8
    assert r2 == pytest.approx(expected_r2, rel=1e-6)
    assert 0.5 < r2 < 0.999  # a genuinely imperfect fit
    # the whole-spectrum ordinary fit the project used before is another number
    ols = -np.polyfit(np.log(ranks), np.log(np.sort(lam)[::-1]), 1)[0]
    assert abs(alpha - ols) > 0.05


def test_alpha_req_degenerate_cases():
    assert all(math.isnan(v) for v in P.alpha_req(np.ones((5, 3))))  # no variance
    x = np.outer(np.arange(6.0), [1.0, 2.0])  # rank 1: one eigenvalue, no line to fit
    assert all(math.isnan(v) for v in P.alpha_req(x))
    # 14 numerically non-zero eigenvalues leave indices 5..13: 9 < 10 points -> NaN
    rng = np.random.default_rng(1)
    lam = np.arange(1, 15, dtype=np.float64) ** -1.0
    assert all(math.isnan(v) for v in P.alpha_req(_with_covariance_spectrum(rng, 200, lam, 40)))
    lam = np.arange(1, 16, dtype=np.float64) ** -1.0  # 15: indices 5..14, 10 points
    alpha, _ = P.alpha_req(_with_covariance_spectrum(rng, 200, lam, 40))
    assert alpha == pytest.approx(1.0, abs=1e-8)


# ----------------------------------------------------------------------------------------------
# LogME


def _naive_evidence(x, f, alpha, beta):
    """The paper's formula with explicit D x D matrices: inverse and slogdet of A."""
    n, d = x.shape
    a = alpha * np.eye(d) + beta * x.T @ x
    m = beta * np.linalg.solve(a, x.T @ f)
    res = f - x @ m
    logdet = np.linalg.slogdet(a)[1]
    return (
        n / 2 * math.log(beta)
        + d / 2 * math.log(alpha)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * res @ res
        - alpha / 2 * m @ m
        - logdet / 2
    )


@pytest.mark.parametrize("n,d", [(80, 10), (20, 50), (30, 30)])
def test_logme_evidence_equals_naive_formula(n, d):
    rng = np.random.default_rng(n * d)
    x = rng.standard_normal((n, d)) + 0.5
    f = (rng.integers(0, 3, n) == 1).astype(np.float64)
    for alpha, beta in [(1.0, 1.0), (0.03, 7.0), (12.0, 0.2)]:
        fast = P.logme_evidence(x, f, alpha, beta)
        assert fast == pytest.approx(_naive_evidence(x, f, alpha, beta), rel=1e-10, abs=1e-8)


def test_logme_evidence_rank_deficient_tall_matrix():
    # N > D (Gram path) with rank 4 < D = 10: the zero eigenvalues of x^T x must stay exact zeros
    rng = np.random.default_rng(12)
    x = rng.standard_normal((80, 4)) @ rng.standard_normal((4, 10))
    f = (rng.integers(0, 2, 80) == 1).astype(np.float64)
    for alpha, beta in [(1.0, 1.0), (0.03, 7.0)]:
        fast = P.logme_evidence(x, f, alpha, beta)
        assert fast == pytest.approx(_naive_evidence(x, f, alpha, beta), rel=1e-10)
    value, alpha, beta = P.logme_fit(x, f)
    assert value == pytest.approx(_naive_evidence(x, f, alpha, beta) / 80, rel=1e-10)


@pytest.mark.parametrize("floor", [1e-4, 1e-9, 1e-13])
def test_singular_values_have_full_accuracy_on_collapsed_features(floor):
    """N > D goes through a QR of the rows; its singular values are those of LAPACK's SVD of x
    to double precision, down to collapsed directions (the Gram matrix lost everything below
    ~1e-6 of the largest)."""
    rng = np.random.default_rng(13)
    s = np.concatenate([[1.0, 0.5], np.full(28, floor)])  # two directions carry everything
    x = _orthonormal(rng, 500, 30) @ np.diag(s) @ _orthonormal(rng, 30, 30).T
    sv = np.linalg.svd(x, compute_uv=False)
    np.testing.assert_allclose(P._decompose(x)[0], sv, rtol=1e-9, atol=1e-15)
    p = sv / sv.sum() + 1e-7
    assert P.rankme(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-12)
    assert P.rankme(1e-3 * x) == pytest.approx(P.rankme(x), rel=1e-12)
    # and the shifted (uncentred) matrix, whose R comes from the centred QR updated by the
    # mean: equal to the absolute accuracy of any backward-stable SVD, a few eps * s_max
    shifted = x + 3.0
    _, r = P._centred_spectrum(shifted)
    expected = np.linalg.svd(shifted, compute_uv=False)
    atol = 10 * np.finfo(np.float64).eps * expected[0]
    np.testing.assert_allclose(P._decompose(shifted, r=r)[0], expected, rtol=1e-9, atol=atol)


@pytest.mark.parametrize("n,d", [(120, 8), (25, 40)])
def test_logme_fit_reaches_the_evidence_maximum(n, d):
    rng = np.random.default_rng(n + d)
    x, y = _clusters(rng, n=n, d=d, c=3, spread=1.0)
    f = (y == 1).astype(np.float64)
    value, alpha, beta = P.logme_fit(x, f)
    assert value == pytest.approx(_naive_evidence(x, f, alpha, beta) / n, rel=1e-10)
    # an independent maximisation of the naive evidence over (log alpha, log beta)
    best = minimize(
        lambda t: -_naive_evidence(x, f, math.exp(t[0]), math.exp(t[1])) / n,
        x0=[math.log(alpha), math.log(beta)],
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000},
    )
    assert value <= -best.fun + 1e-12
    assert value == pytest.approx(-best.fun, abs=1e-6)
    # MacKay's fixed-point equations hold at the returned point (its optimality conditions)
    a = alpha * np.eye(d) + beta * x.T @ x
    m = beta * np.linalg.solve(a, x.T @ f)
    gamma = d - alpha * np.trace(np.linalg.inv(a))
    assert gamma / (m @ m) == pytest.approx(alpha, rel=1e-6)
    assert (n - gamma) / np.sum((f - x @ m) ** 2) == pytest.approx(beta, rel=1e-8)


def _best_evidence(x, f):
    """An independent maximiser of the naive evidence per sample: Nelder-Mead over
    (log alpha, log beta) from several starts, and the alpha -> infinity limit computed with
    the naive formula at alpha = 1e14 (beta at its optimum N / |f|^2 there)."""
    n = len(f)
    values = []
    for start in ([0.0, 0.0], [5.0, 1.0], [-5.0, -1.0]):
        best = minimize(
            lambda t: -_naive_evidence(x, f, math.exp(t[0]), math.exp(t[1])) / n,
            x0=start,
            method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 8000},
        )
        values.append(-best.fun)
    values.append(_naive_evidence(x, f, 1e14, n / (f @ f)) / n)
    return max(values)


def test_logme_target_without_a_finite_maximum_takes_the_limit():
    """A target nearly orthogonal to every feature column: the evidence rises towards its
    alpha -> infinity limit. LogME returns that supremum (alpha = inf), which no finite
    (alpha, beta) exceeds."""
    rng = np.random.default_rng(21)
    n, d = 300, 6
    x = rng.standard_normal((n, d))
    q = np.linalg.qr(x)[0]
    g = (rng.integers(0, 4, n) == 0).astype(np.float64)
    f = g - q @ (q.T @ g) + 1e-3 * q[:, 0]  # almost no component in the column space
    value, alpha, beta = P.logme_fit(x, f)
    assert alpha == math.inf and beta == pytest.approx(n / (f @ f), rel=1e-12)
    assert value == pytest.approx(-0.5 * (math.log(2 * math.pi * (f @ f) / n) + 1), rel=1e-12)
    assert value == pytest.approx(_best_evidence(x, f), abs=1e-9)
    assert value >= _best_evidence(x, f) - 1e-12


@pytest.mark.parametrize("arm", ["raw", "bn"])
def test_logme_reaches_the_maximum_in_both_arms(arm):
    """Per class, against the independent maximiser, on clusters and their z-scored copy."""
    rng = np.random.default_rng(22)
    x, y = _clusters(rng, n=160, d=12, c=4, spread=0.6)
    x = x + 2.0
    a = P.standardize(x) if arm == "bn" else x
    per_class = [P.logme_fit(a, (y == k).astype(float))[0] for k in range(4)]
    for k, value in enumerate(per_class):
        assert value == pytest.approx(_best_evidence(a, (y == k).astype(float)), abs=1e-8)
    assert P.logme(a, y) == pytest.approx(np.mean(per_class), rel=1e-12)


def test_logme_is_mean_of_per_class_fits_and_skips_absent_classes():
    rng = np.random.default_rng(3)
    x, y = _clusters(rng, n=200, d=10, c=3)
    y = np.array([0, 2, 5])[y]  # classes 1, 3, 4 absent
    per_class = [P.logme_fit(x, (y == k).astype(float))[0] for k in (0, 2, 5)]
    assert P.logme(x, y, num_classes=6) == pytest.approx(np.mean(per_class), rel=1e-12)
    with pytest.raises(ValueError):
        P.logme(x, y, num_classes=5)


def test_logme_invariant_to_relabelling_and_sample_order():
    rng = np.random.default_rng(4)
    x, y = _clusters(rng, n=250, d=16, c=5)
    base = P.logme(x, y)
    relabel = np.array([3, 0, 4, 1, 2])
    assert P.logme(x, relabel[y]) == pytest.approx(base, rel=1e-12)
    perm = rng.permutation(len(y))
    assert P.logme(x[perm], y[perm]) == pytest.approx(base, rel=1e-10)


def test_logme_lower_for_shuffled_labels():
    rng = np.random.default_rng(5)
    x, y = _clusters(rng, n=400, d=16, c=5)
    assert P.logme(x, rng.permutation(y)) < P.logme(x, y) - 0.1
    # labels that are a linear function of the features (x = one-hot @ centres, no noise)
    centres = rng.standard_normal((5, 16))
    exact = np.eye(5)[y] @ centres
    assert P.logme(exact, y) > P.logme(exact, rng.permutation(y))


# ----------------------------------------------------------------------------------------------
# NC1


def _naive_nc1(x, y, rcond=1e-10):
    classes = np.unique(y)
    means = np.stack([x[y == k].mean(axis=0) for k in classes])
    mu = means.mean(axis=0)
    w = x - means[np.searchsorted(classes, y)]
    sigma_w = w.T @ w / len(x)
    sigma_b = (means - mu).T @ (means - mu) / len(classes)
    return np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=rcond)) / len(classes)


def test_nc1_hand_computed_two_classes():
    # class 0: (0,0), (2,0) -> mu_0 = (1,0); class 1: (0,4), (0,6) -> mu_1 = (0,5)
    # Sigma_W = ([[2,0],[0,0]] + [[0,0],[0,2]]) / 4 = 0.5 I
    # mu = (0.5, 2.5); mu_c - mu = +-v, v = (0.5, -2.5), |v|^2 = 6.5; Sigma_B = v v^T
    # pinv(v v^T) = v v^T / |v|^4 -> trace(0.5 I pinv) = 0.5 * 6.5 / 42.25 = 1/13; / C=2 -> 1/26
    x = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]])
    y = np.array([0, 0, 1, 1])
    assert P.nc1(x, y) == pytest.approx(1 / 26, rel=1e-12)


def test_nc1_uses_mean_of_class_means():
    # add (1,0) to class 0: mu_0 unchanged, N = 5, Sigma_W = 0.4 I, mu = mean of class means
    # = (0.5, 2.5) as before -> NC1 = 0.4 * 6.5 / 42.25 / 2 = 2/65. (The sample mean (0.6, 2)
    # would give Sigma_B = 0.26 w w^T, w = (1,-5), and NC1 = 0.4 / (0.26 * 26) / 2 instead.)
    x = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 4.0], [0.0, 6.0]])
    y = np.array([0, 0, 0, 1, 1])
    assert P.nc1(x, y) == pytest.approx(2 / 65, rel=1e-12)
    assert P.nc1(x, y + 7) == pytest.approx(2 / 65, rel=1e-12)  # absent classes 0..6 ignored


def test_nc1_zero_when_collapsed_and_nan_for_one_class():
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((4, 7))
    y = rng.integers(0, 4, 50)
    assert P.nc1(centres[y], y) == pytest.approx(0.0, abs=1e-20)
    assert math.isnan(P.nc1(rng.standard_normal((10, 3)), np.zeros(10, dtype=int)))


def _class_means_nc1(x, y, rank):
    """NC1 from the explicit D x D covariances, Sigma_B inverted on its top ``rank``
    eigenvectors (numpy's eigh): an independent construction of the restricted pinv."""
    classes = np.unique(y)
    means = np.stack([x[y == k].mean(axis=0) for k in classes])
    mu = means.mean(axis=0)
    w = x - means[np.searchsorted(classes, y)]
    sigma_w = w.T @ w / len(x)
    sigma_b = (means - mu).T @ (means - mu) / len(classes)
    lam, v = np.linalg.eigh(sigma_b)
    lam, v = lam[::-1][:rank], v[:, ::-1][:, :rank]
    return np.trace(sigma_w @ (v / lam) @ v.T) / len(classes)


@pytest.mark.parametrize("c", [10, 4])
def test_nc1_ignores_the_rounding_residue_of_the_centred_means(c):
    """Wide features (D > C): the centred class means have rank C - 1 exactly; the C-th
    singular value is rounding residue (~1e-14 relative), which a plain pinv inverts (NC1
    ~1e20 and more). NC1 must equal the construction restricted to C - 1 directions."""
    rng = np.random.default_rng(c)
    x, y = _clusters(rng, n=1000, d=64, c=c, spread=0.7)
    x = (x * 37.0 + 11.0).astype(np.float32).astype(np.float64)  # scale, offset, float32 data
    value = P.nc1(x, y)
    assert value == pytest.approx(_class_means_nc1(x, y, c - 1), rel=1e-8)
    assert value < 1e3


def test_nc1_on_rank_deficient_class_means():
    """Two classes share their mean: Sigma_B has rank C - 2, the shared direction is not
    inverted; collapsed within-class spread gives 0."""
    rng = np.random.default_rng(31)
    centres = rng.standard_normal((5, 20))
    centres[4] = centres[1]
    y = rng.integers(0, 5, 800)
    x = centres[y] + 0.3 * rng.standard_normal((800, 20))
    # the class means of the sample differ by noise only in that pair: make them equal exactly
    x[y == 4] += x[y == 1].mean(axis=0) - x[y == 4].mean(axis=0)
    assert P.nc1(x, y) == pytest.approx(_class_means_nc1(x, y, 3), rel=1e-8)
    assert P.nc1(centres[y], y) == pytest.approx(0.0, abs=1e-20)
    assert math.isnan(P.nc1(np.ones((6, 3)), np.array([0, 0, 1, 1, 2, 2])))  # equal means


@pytest.mark.parametrize("d,c", [(20, 5), (5, 30)])
def test_nc1_matches_naive_covariance_formula(d, c):
    rng = np.random.default_rng(d * c)
    x, y = _clusters(rng, n=400, d=d, c=c, spread=1.5)
    assert P.nc1(x, y) == pytest.approx(_naive_nc1(x, y), rel=1e-9)


# ----------------------------------------------------------------------------------------------
# every proxy: invariant to sample order


def test_every_proxy_invariant_to_sample_order():
    rng = np.random.default_rng(7)
    x, y = _clusters(rng, n=300, d=24, c=6)
    perm = rng.permutation(len(y))
    xp, yp = x[perm], y[perm]
    assert P.rankme(xp) == pytest.approx(P.rankme(x), rel=1e-10)
    assert P.alpha_req(xp) == pytest.approx(P.alpha_req(x), rel=1e-10)
    assert P.logme(xp, yp) == pytest.approx(P.logme(x, y), rel=1e-10)
    assert P.nc1(xp, yp) == pytest.approx(P.nc1(x, y), rel=1e-10)


# ----------------------------------------------------------------------------------------------
# subsample, standardize, compute


def test_subsample():
    assert np.array_equal(P.subsample(7, 10, seed=3), np.arange(7))
    assert np.array_equal(P.subsample(10, 10, seed=3), np.arange(10))
    a = P.subsample(1000, 100, seed=3)
    assert np.array_equal(a, P.subsample(1000, 100, seed=3))
    assert np.array_equal(a, np.sort(np.random.default_rng(3).choice(1000, 100, replace=False)))
    assert a.size == 100 and np.unique(a).size == 100 and np.all(np.diff(a) > 0)
    assert a.min() >= 0 and a.max() < 1000
    assert not np.array_equal(a, P.subsample(1000, 100, seed=4))


def test_standardize_hand_case_and_knn_zscore():
    x = np.array([[1.0, 2.0, 0.0], [3.0, 2.0, 0.0], [5.0, 2.0, 3.0]])
    # col 0: mean 3, population std sqrt(8/3); col 1 constant -> 0; col 2: mean 1, std sqrt(2)
    expected = np.array(
        [
            [-2 / math.sqrt(8 / 3), 0.0, -1 / math.sqrt(2)],
            [0.0, 0.0, -1 / math.sqrt(2)],
            [2 / math.sqrt(8 / 3), 0.0, 2 / math.sqrt(2)],
        ]
    )
    z = P.standardize(x)
    assert z.dtype == np.float64
    np.testing.assert_allclose(z, expected, rtol=1e-14, atol=1e-15)
    from workflow_scripts.probing import zscore  # the kNN BN arm: same semantics, float32 output

    rng = np.random.default_rng(8)
    g = (rng.standard_normal((40, 6)) * [1, 2, 3, 4, 5, 6] + 9).astype(np.float32)
    g[:, 2] = 0.1  # a constant column
    np.testing.assert_allclose(P.standardize(g), zscore(g, g)[0], rtol=1e-5, atol=1e-6)


# D < 15: alpha-ReQ is undefined (NaN) and compute() says so
@pytest.mark.filterwarnings("ignore::workflow_scripts.proxies.ProxyWarning")
def test_compute_rows_equal_the_single_proxies_on_the_subsample():
    rng = np.random.default_rng(9)
    x, y = _clusters(rng, n=500, d=12, c=4)
    x = x.astype(np.float32)
    rows, idx = P.compute(x, y, max_samples=200, seed=11)
    assert np.array_equal(idx, P.subsample(500, 200, 11))
    xs, ys = x[idx].astype(np.float64), y[idx]
    assert [(r["proxy"], r["arm"]) for r in rows] == [(p, a) for a in P.ARMS for p in P.PROXIES]
    for arm, a in (("raw", xs), ("bn", P.standardize(xs))):
        got = {r["proxy"]: r for r in rows if r["arm"] == arm}
        alpha, r2 = P.alpha_req(a)
        assert got["rankme"]["value"] == pytest.approx(P.rankme(a), rel=1e-12)
        assert got["rankme_d"]["value"] == pytest.approx(P.rankme(a) / 12, rel=1e-12)
        assert got["alpha_req"]["value"] == pytest.approx(alpha, rel=1e-12, nan_ok=True)
        assert got["alpha_req"]["r2"] == pytest.approx(r2, rel=1e-12, nan_ok=True)
        assert got["logme"]["value"] == pytest.approx(P.logme(a, ys), rel=1e-12)
        assert got["nc1"]["value"] == pytest.approx(P.nc1(a, ys), rel=1e-12)
        assert all(math.isnan(got[p]["r2"]) for p in P.PROXIES if p != "alpha_req")
    assert {(r["n_samples"], r["seed"], r["indices_sha256"]) for r in rows} == {
        (200, 11, P.indices_sha256(idx))
    }
    assert len(P.indices_sha256(idx)) == 64
    assert P.indices_sha256(idx) != P.indices_sha256(P.subsample(500, 200, 12))
    only_raw, _ = P.compute(x, y, max_samples=200, seed=11, arms=("raw",))
    assert only_raw == rows[: len(P.PROXIES)]
    with pytest.raises(ValueError):
        P.compute(x, y, max_samples=200, seed=11, arms=("whitened",))


def test_directions_registry_and_no_torch_import():
    assert set(P.DIRECTIONS) == set(P.PROXIES)
    assert all(v in (-1, 1) for v in P.DIRECTIONS.values())
    assert P.DIRECTIONS["nc1"] == -1 and P.DIRECTIONS["logme"] == P.DIRECTIONS["rankme"] == 1
    code = "import sys, workflow_scripts.proxies; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# D < 15: alpha-ReQ is undefined (NaN) and compute() says so
@pytest.mark.filterwarnings("ignore::workflow_scripts.proxies.ProxyWarning")
def test_run_job_writes_the_tidy_rows_of_each_data_set(tmp_path):
    """The feature-probe interface: train features of each data set -> one row per (proxy,
    arm) with the table's columns, values equal to compute() on the same subsample."""
    import logging

    import pandas as pd

    rng = np.random.default_rng(5)
    data, expected = [], {}
    for name, n in (("a", 120), ("b", 40)):
        x, y = _clusters(rng, n=n, d=6, c=3)
        data.append((name, x.astype(np.float32), y, None, None))
        expected[name] = P.compute(x.astype(np.float32), y, max_samples=50, seed=3)[0]
    outs = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    P.run_job(
        iter(data),
        outs,
        model="m",
        num_classes=[3, 3],
        arms=["raw", "bn"],
        settings={"max_samples": 50, "seed": 3},
        threads=1,
        code="c0de",
        log=logging.getLogger("test"),
    )
    for name, out in zip(("a", "b"), outs, strict=True):
        frame = pd.read_csv(out)
        assert list(frame.columns) == [
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
        assert (frame["dataset"] == name).all() and (frame["split"] == "train").all()
        assert frame["n_samples"].tolist() == [min(50, 120 if name == "a" else 40)] * 10
        want = pd.DataFrame(expected[name])
        np.testing.assert_allclose(frame["value"], want["value"], rtol=1e-12)
        assert frame[["proxy", "arm"]].values.tolist() == want[["proxy", "arm"]].values.tolist()
    with pytest.raises(ValueError, match="label 3 >= num_classes = 3"):
        x, y = _clusters(rng, n=30, d=4, c=4)
        P.run_job(
            iter([("c", x, y, None, None)]),
            [str(tmp_path / "c.csv")],
            model="m",
            num_classes=[3],
            arms=["raw"],
            settings={"max_samples": 50, "seed": 0},
            threads=1,
            code="c",
            log=logging.getLogger("test"),
        )


# ----------------------------------------------------------------------------------------------
# undefined proxies (issue 28, item 2): NaN and a warning, never an exception


def _previous_compute(x, y, *, max_samples, seed, arms=P.ARMS):
    """compute() as it was before undefined proxies were diagnosed (verbatim, with its
    _logme_from_decomposition inlined): the reference the new one must equal bit for bit."""
    n = np.shape(x)[0]
    idx = P.subsample(n, max_samples, seed)
    xs = P._as_matrix(np.asarray(x)[idx])
    ys = P._as_labels(np.asarray(y)[idx], idx.size)
    d = xs.shape[1]
    digest = P.indices_sha256(idx)
    rows = []
    for arm in arms:
        a = P.standardize(xs) if arm == "bn" else xs
        eig, r = P._centred_spectrum(a)
        alpha, r2 = P._power_law_fit(eig, a.shape[0])
        dec = P._decompose(a, r=r)
        rm = P._rankme_from_singular_values(dec[0])
        groups = P._class_sums(a, ys)
        s, v, u = dec
        utf = None if u is None else P._class_sums(u, ys)[3].T
        targets = P._logme_targets(s, v, u, groups[3].T, groups[2].astype(np.float64), utf)
        logme = float(np.mean([P._logme_fixed_point(t, *a.shape)[0] for t in targets]))
        values = {
            "rankme": (rm, math.nan),
            "rankme_d": (rm / d, math.nan),
            "alpha_req": (alpha, r2),
            "logme": (logme, math.nan),
            "nc1": (P._nc1_from_groups(a, groups), math.nan),
        }
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
            for p in P.PROXIES
        ]
    return rows, idx


def _demo_like(seed=40, n=600, d=64, c=10):
    """float32 features of c separated classes (a demo model's 64-d features)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    x = 4.0 * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d))
    return x.astype(np.float32), y


def _compute_recording(x, y, **kw):
    """compute() with its ProxyWarnings recorded (every one, not once per location)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, idx = P.compute(x, y, **kw)
    return rows, [str(w.message) for w in caught if issubclass(w.category, P.ProxyWarning)]


def _same_number(a, b) -> bool:
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def _well_posed_cases():
    rng = np.random.default_rng(41)
    # N = 40 < D = 100 (the SVD path), features of rank 20 < N: no one-hot target interpolated
    x_wide, y_wide = _clusters(rng, n=40, d=20, c=5)
    x_wide = x_wide @ rng.standard_normal((20, 100))
    x_abs, y_abs = _clusters(rng, n=300, d=24, c=3)
    return {
        "demo_like_64d_subsampled": (*_demo_like(), 500),
        "float64_all_rows": (*_clusters(np.random.default_rng(42), n=400, d=32, c=6), 1000),
        "wide_n_below_d": (x_wide, y_wide, 1000),
        "absent_classes": (x_abs, np.array([1, 4, 6])[y_abs], 250),
    }


@pytest.mark.parametrize("case", list(_well_posed_cases()))
def test_well_posed_inputs_give_exactly_the_previous_values_and_no_warning(case):
    x, y, max_samples = _well_posed_cases()[case]
    rows, messages = _compute_recording(
        x, y, max_samples=max_samples, seed=1, model="m", dataset="d"
    )
    before, _ = _previous_compute(x, y, max_samples=max_samples, seed=1)
    assert [list(r) for r in rows] == [list(r) for r in before]
    for new, old in zip(rows, before, strict=True):
        assert all(_same_number(new[k], old[k]) for k in old), (new, old)  # bit for bit
        assert math.isfinite(new["value"]), new
    assert messages == []


def test_demo_like_values_are_those_of_the_implementation_before_the_change():
    """Pinned from compute() before this change (same input, max_samples 500, seed 1)."""
    x, y = _demo_like()
    rows, messages = _compute_recording(x, y, max_samples=500, seed=1)
    pinned = {
        ("rankme", "raw"): (33.56354264962445, math.nan),
        ("rankme_d", "raw"): (0.5244303539003821, math.nan),
        ("alpha_req", "raw"): (1.9952847120846982, 0.4510922680753985),
        ("logme", "raw"): (1.7934862136472856, math.nan),
        ("nc1", "raw"): (0.010052377080490433, math.nan),
        ("rankme", "bn"): (35.17646436685377, math.nan),
        ("rankme_d", "bn"): (0.5496322557320902, math.nan),
        ("alpha_req", "bn"): (2.113913916530691, 0.650105487564588),
        ("logme", "bn"): (0.7134860101468813, math.nan),
        ("nc1", "bn"): (0.012520269201951588, math.nan),
    }
    assert messages == []
    for r in rows:
        value, r2 = pinned[(r["proxy"], r["arm"])]
        # bit for bit on the machine that pinned them; another BLAS may round differently
        assert r["value"] == pytest.approx(value, rel=1e-9)
        assert r["r2"] == pytest.approx(r2, rel=1e-9, nan_ok=True)


def _rounding_rank_features():
    """float32 rounding of a rank-2 matrix, N = 40 < D = 60, one sample per class: before the
    fix LogME's search crashed on it (scipy: "The lower bound exceeds the upper bound.")."""
    rng = np.random.default_rng(13)
    x = (rng.standard_normal((40, 2)) @ rng.standard_normal((2, 60))).astype(np.float32)
    return x, np.arange(40)


def _collapsed_cases():
    rng = np.random.default_rng(50)
    y3 = rng.integers(0, 3, 50)
    both = ("raw", "bn")
    zero_cause = "features are all zero (all N = 50 samples identical)"
    const_cause = "features are constant (all N = 50 samples identical)"
    one_row = np.zeros((50, 20), np.float32)
    one_row[7] = rng.standard_normal(20)
    dup = np.repeat(rng.standard_normal((1, 20)).astype(np.float32), 50, axis=0)
    low_rank = (rng.standard_normal((200, 3)) @ rng.standard_normal((3, 40))).astype(np.float32)
    only3 = "only 3 numerically non-zero covariance eigenvalues (N = 200, D = 40"
    means = "all class means coincide"
    return {
        # name: (x, y, {(proxy, arm): cause substring}) -- every other value finite
        "all_zero": (
            np.zeros((50, 20), np.float32),
            y3,
            {
                **{(p, a): zero_cause for p in ("rankme", "rankme_d", "alpha_req") for a in both},
                **{("nc1", a): f"{zero_cause}: {means}" for a in both},
            },
        ),
        "constant": (
            np.full((50, 20), 0.3, np.float32),
            y3,
            {
                ("alpha_req", "raw"): const_cause,
                ("nc1", "raw"): f"{const_cause}: {means}",
                **{(p, "bn"): const_cause for p in ("rankme", "rankme_d", "alpha_req")},
                ("nc1", "bn"): f"{const_cause}: {means}",
            },
        ),
        "duplicate_rows": (
            dup,
            y3,
            {
                ("alpha_req", "raw"): const_cause,
                ("nc1", "raw"): f"{const_cause}: {means}",
                **{(p, "bn"): const_cause for p in ("rankme", "rankme_d", "alpha_req")},
                ("nc1", "bn"): f"{const_cause}: {means}",
            },
        ),
        "one_class": (
            rng.standard_normal((60, 20)).astype(np.float32),
            np.full(60, 4),
            {("nc1", a): "one class (label 4) in the N = 60 samples" for a in both},
        ),
        "n_1": (
            rng.standard_normal((1, 8)).astype(np.float32),
            np.array([3]),
            {
                ("alpha_req", "raw"): "N = 1 (a single sample)",
                ("logme", "raw"): "N = 1: classes [3] (1 of 1): the features interpolate the "
                "one-hot target (N = 1 <= D = 8)",
                ("nc1", "raw"): "N = 1: one class (label 3)",
                **{(p, "bn"): "N = 1 (a single sample)" for p in ("rankme", "rankme_d")},
                ("alpha_req", "bn"): "N = 1 (a single sample)",
                ("nc1", "bn"): "N = 1: one class (label 3)",
            },
        ),
        "n_0": (
            np.zeros((0, 8), np.float32),
            np.zeros(0, np.int64),
            {(p, a): "no samples (N = 0)" for p in P.PROXIES for a in both},
        ),
        "one_sample_per_class_n_below_d": (
            rng.standard_normal((10, 30)).astype(np.float32),
            np.arange(10),
            {
                ("alpha_req", "raw"): "only 9 numerically non-zero covariance eigenvalues",
                ("logme", "raw"): "the features interpolate the one-hot target (N = 10 <= D = 30)",
                ("alpha_req", "bn"): "only 9 numerically non-zero covariance eigenvalues",
            },
        ),
        "zero_but_one_sample": (
            one_row,
            y3,
            {("alpha_req", a): "only 1 numerically non-zero covariance eigenvalues" for a in both},
        ),
        "rank_deficient": (
            low_rank,
            rng.integers(0, 3, 200),
            {("alpha_req", a): only3 for a in both},
        ),
        "rounding_level_rank": (
            *_rounding_rank_features(),
            {
                ("alpha_req", "raw"): "only 2 numerically non-zero covariance eigenvalues",
                ("logme", "raw"): "the evidence still rises at the smallest alpha searched",
                ("alpha_req", "bn"): "only 2 numerically non-zero covariance eigenvalues",
            },
        ),
    }


@pytest.mark.parametrize("case", list(_collapsed_cases()))
def test_collapsed_features_give_nan_and_a_warning_naming_model_dataset_arm_and_cause(case):
    x, y, expected = _collapsed_cases()[case]
    rows, messages = _compute_recording(
        x, y, max_samples=1000, seed=0, model="vit_dead", dataset=f"set_{case}"
    )
    undefined = {(r["proxy"], r["arm"]) for r in rows if math.isnan(r["value"])}
    assert undefined == set(expected)
    assert all(math.isfinite(r["value"]) for r in rows if (r["proxy"], r["arm"]) not in expected)
    assert all(math.isnan(r["r2"]) for r in rows if (r["proxy"], r["arm"]) in expected)
    assert len(messages) == len(expected)  # one warning per undefined proxy and arm
    for (proxy, arm), cause in expected.items():
        head = (
            f"proxy {proxy} is undefined (NaN) for model 'vit_dead', data set 'set_{case}', "
            f"arm '{arm}': "
        )
        hits = [m for m in messages if m.startswith(head)]
        assert len(hits) == 1, (head, messages)
        assert cause in hits[0], (cause, hits[0])


def test_collapsed_features_logme_is_the_noise_only_limit_and_defined():
    """All-zero features: every one-hot target is orthogonal to the (absent) feature
    directions; LogME is the documented alpha -> infinity supremum, -(log(2 pi n_c / N) + 1) / 2
    averaged over the classes, a number (no warning), not a crash."""
    y = np.repeat([0, 1, 2], [10, 15, 25])
    rows, messages = _compute_recording(np.zeros((50, 20), np.float32), y, max_samples=100, seed=0)
    expected = np.mean([-0.5 * (math.log(2 * math.pi * c / 50) + 1) for c in (10, 15, 25)])
    for r in rows:
        if r["proxy"] == "logme":
            assert r["value"] == pytest.approx(expected, rel=1e-12)
    assert not any("logme" in m for m in messages)


def test_logme_search_that_crashed_on_rounding_level_rank_is_nan():
    """The input on which LogME's bounded search raised scipy's ValueError ("The lower bound
    exceeds the upper bound.": the evidence maximum below the grid, no interior peak)."""
    x, y = _rounding_rank_features()
    assert math.isnan(P.logme(x, y))  # raised ValueError before
    why = []
    a = x.astype(np.float64)
    P._logme_per_class(a, y, P._decompose(a), P._class_sums(a, y), why)
    assert why and {reason for _, reason in why} <= {P.LOGME_BELOW_GRID, P.LOGME_BETA_INFINITE}
    assert P.LOGME_BELOW_GRID in {reason for _, reason in why}


def test_logme_fit_of_an_all_zero_target_is_nan():
    rng = np.random.default_rng(51)
    value, alpha, beta = P.logme_fit(rng.standard_normal((20, 3)), np.zeros(20))  # raised before
    assert math.isnan(value) and math.isnan(alpha) and math.isnan(beta)


def test_features_beyond_lapacks_range_give_nan_not_linalgerror():
    """float64 features near overflow: LAPACK's SVD gives up (LinAlgError before); every
    proxy is NaN with the cause and the feature scale."""
    x = 1e307 * np.random.default_rng(52).standard_normal((200, 30))
    rows, messages = _compute_recording(
        x, np.arange(200) % 3, max_samples=1000, seed=0, model="m", dataset="d"
    )
    assert all(math.isnan(r["value"]) for r in rows if r["arm"] == "raw")
    assert len(messages) >= len(P.PROXIES)
    assert all("model 'm', data set 'd'" in m and "largest |feature|" in m for m in messages)


def _write_features(folder: Path, name: str, x: np.ndarray, y: np.ndarray) -> tuple[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{name}.npy", x)
    np.save(folder / f"{name}_labels.npy", y)
    return str(folder / f"{name}.npy"), str(folder / f"{name}_labels.npy")


def test_rule_script_on_a_collapsed_model_writes_nan_and_logs_the_cause(tmp_path):
    """The proxies rule as Snakemake runs it (workflow_scripts/scripts/feature_probe.py with an
    injected ``snakemake`` object) on cached float32 feature files: a healthy data set and a
    collapsed one (constant features); the job succeeds, the NaN rows are empty values in its
    CSV, and the job's log names model, data set, arm and cause."""
    import pandas as pd

    rng = np.random.default_rng(53)
    x, y = _clusters(rng, n=80, d=20, c=3)
    files = {
        "good": _write_features(tmp_path / "good", "train", x.astype(np.float32), y),
        "dead": _write_features(tmp_path / "dead", "train", np.full((80, 20), 0.5, np.float32), y),
    }
    outs = [str(tmp_path / "good.csv"), str(tmp_path / "dead.csv")]
    log = tmp_path / "job.log"
    code = f"""
import runpy, sys
from types import SimpleNamespace
sys.path.insert(0, {str(ROOT / "workflow_scripts" / "scripts")!r})
class Wildcards(dict):
    __getattr__ = dict.__getitem__
files = {files!r}
sm = SimpleNamespace(
    input=SimpleNamespace(
        train=[files["good"][0], files["dead"][0]],
        train_labels=[files["good"][1], files["dead"][1]],
        test=[files["good"][0], files["dead"][0]],
        test_labels=[files["good"][1], files["dead"][1]],
    ),
    output={outs!r},
    log=[{str(log)!r}],
    rule="proxies",
    wildcards=Wildcards(model="vit_dead"),
    threads=1,
    params=SimpleNamespace(
        protocol="proxies", module="proxies", datasets=["good", "dead"], num_classes=[3, 3],
        arms=["raw", "bn"], code="c0de", numerics=None,
    ),
    config={{"proxies": {{"max_samples": 1000, "seed": 0}}}},
)
runpy.run_path({str(ROOT / "workflow_scripts" / "scripts" / "feature_probe.py")!r},
               init_globals={{"snakemake": sm}}, run_name="__main__")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    good, dead = pd.read_csv(outs[0]), pd.read_csv(outs[1])
    assert good["value"].notna().all()
    assert dead["value"].isna().sum() == 6  # raw: alpha_req, nc1; bn: all but logme
    assert dead.loc[dead["proxy"] == "logme", "value"].notna().all()
    assert ",nc1,raw,," in Path(outs[1]).read_text()  # NaN is an empty CSV field
    text = log.read_text()
    assert (
        "proxy nc1 is undefined (NaN) for model 'vit_dead', data set 'dead', arm 'raw': "
        "features are constant (all N = 80 samples identical): all class means coincide"
    ) in text
    assert "arm 'bn': features are constant" in text and "data set 'good'" not in text
    assert "WARNING" in text and "ProxyWarning" in text


@pytest.mark.parametrize("missing", ["pairwise", "listwise"])
def test_nan_proxy_rows_pass_through_the_correlations_per_analysis_missing(tmp_path, missing):
    """proxies.csv with NaN proxies of a collapsed model (written by run_job, concatenated as
    the proxies_table rule does) -> correlations.run_job: no error; ``pairwise`` drops the
    model from the rows of its NaN proxies only, ``listwise`` from every row of the subset."""
    import contextlib
    import logging

    import pandas as pd
    from scipy import stats

    from workflow_scripts import correlations as C
    from workflow_scripts.io import concat_csv

    rng = np.random.default_rng(54)
    models = [f"m{i}" for i in range(6)]
    per_model = []
    for i, model in enumerate(models):
        x, y = _clusters(rng, n=60, d=20, c=3, spread=1.0 + i)
        if model == "m3":  # the collapsed model
            x = np.full_like(x, 0.25)
        out = str(tmp_path / f"{model}.csv")
        expect = (
            pytest.warns(P.ProxyWarning, match="model 'm3', data set 'in'")
            if model == "m3"
            else contextlib.nullcontext()
        )
        with expect:
            P.run_job(
                iter([("in", x.astype(np.float32), y, None, None)]),
                [out],
                model=model,
                num_classes=[3],
                arms=["raw", "bn"],
                settings={"max_samples": 1000, "seed": 0},
                threads=1,
                code="c",
                log=logging.getLogger("test"),
            )
        per_model.append(out)
    proxies_csv = tmp_path / "proxies.csv"
    concat_csv(per_model, proxies_csv)
    table = pd.read_csv(proxies_csv)
    nan_rows = table[table["value"].isna()]
    assert set(nan_rows["model"]) == {"m3"} and ("nc1", "raw") in set(
        zip(nan_rows["proxy"], nan_rows["arm"])
    )
    acc = pd.DataFrame(
        [
            {
                "model": m,
                "dataset": ds,
                "domain": dom,
                "shift_group": grp,
                "protocol": "linear",
                "arm": arm,
                "top1": float(rng.uniform(40, 90)),
            }
            for m in models
            for ds, dom, grp in (("in", "id", ""), ("shift", "ood", "natural"))
            for arm in ("raw", "bn")
        ]
    )
    acc_csv = tmp_path / "accuracy.csv"
    acc.to_csv(acc_csv, index=False)
    out = tmp_path / "correlations.csv"
    analysis = {
        "bootstrap_resamples": 20,
        "bootstrap_seed": 0,
        "min_subset": 4,
        "subsets": [],
        "missing": missing,
    }
    C.run_job(str(acc_csv), [str(proxies_csv)], str(out), analysis, logging.getLogger("test"))
    corr = pd.read_csv(out)
    assert set(corr["missing"]) == {missing}

    def row(**kw):
        sel = corr[(corr["subset"] == "all") & (corr["method"] == "kendall")]
        for k, v in kw.items():
            sel = sel[sel[k] == v]
        assert len(sel) == 1, kw
        return sel.iloc[0]

    nc1 = row(x_protocol="nc1", x_arm="raw", y_protocol="linear", y_arm="raw", y_kind="pair")
    accuracies = row(
        x_protocol="linear", x_arm="raw", y_protocol="linear", y_arm="bn", y_kind="pair"
    )
    others = [m for m in models if m != "m3"]
    proxy = table[(table["proxy"] == "nc1") & (table["arm"] == "raw")].set_index("model")
    top1 = acc[(acc["dataset"] == "in") & (acc["arm"] == "raw")].set_index("model")["top1"]
    assert nc1["n"] == 5  # the NaN proxy's model is dropped from its rows either way
    assert nc1["value"] == pytest.approx(
        stats.kendalltau(proxy.loc[others, "value"], top1.loc[others]).statistic, abs=1e-12
    )
    # the accuracies of the collapsed model: kept by pairwise, dropped by listwise
    assert accuracies["n"] == (6 if missing == "pairwise" else 5)
