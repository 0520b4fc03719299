"""Rank correlations between evaluation protocols across self-supervised models.

The question of the paper: does a cheap evaluation protocol of a pre-trained model (kNN or a
linear probe, each on raw or BatchNorm-ed features) predict the other protocols and the accuracy
on out-of-domain (OOD) data sets?  The unit of observation is the *model*: for two measurements
(a protocol/arm on a data set each) we correlate the top-1 accuracies of all models having both.

:func:`correlation_table` turns the tidy accuracy table into one row per
(x measurement, y measurement, model subset, correlation method) with the point estimate and the
two-sided p-value from :mod:`scipy.stats` and a percentile bootstrap confidence interval over
models.  The bootstrap uses :func:`vectorized_stat`, which computes a coefficient for a whole
matrix of resamples at once (Kendall's tau-b with ties, Spearman, Pearson, and scipy's weighted
tau, which weighs agreement at the top ranks: the model-selection view).  Each row also has the
top-1 regret of choosing the model x ranks first (:func:`regret_at_1`).

Nothing runs at import time.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from workflow_scripts import registry
from workflow_scripts.registry import arm_sort_key, protocol_sort_key

METHODS = tuple(registry.CORRELATION_METHODS)
#: Canonical order of the known feature arms; unknown ones follow alphabetically.
ARM_ORDER = tuple(registry.ARMS)

#: Name of the pseudo data set holding the mean over all OOD data sets.
MEAN_OOD = "mean_ood"
#: Prefix of the pseudo data sets holding the mean over the OOD data sets of one shift group.
GROUP_PREFIX = "group:"

#: Columns every correlation table starts with, in this order.
COLUMNS = (
    "x_protocol",
    "x_arm",
    "x_dataset",
    "y_protocol",
    "y_arm",
    "y_dataset",
    "subset",
    "method",
    "n",
    "value",
    "p_value",
    "ci_low",
    "ci_high",
)
#: Extra columns appended after :data:`COLUMNS`.
EXTRA_COLUMNS = (
    "y_kind",
    "y_shift_group",
    "n_datasets",
    "regret_at_1",
    "missing",
    "p_method",
    "baseline",
    "baseline_value",
    "baseline_diff",
    "baseline_ci_low",
    "baseline_ci_high",
    "beats_baseline",
    "margin",
    "margin_ci_low",
    "margin_ci_high",
    "single_best",
)
#: The static ranker whose value is its expectation, 0: a uniformly random order of the models.
RANDOM_RANKER = "random"
#: Row kinds (``y_kind``) whose x's compete for "best predictor" (columns margin, single_best).
MARGIN_KINDS = ("dataset", "mean", "group")
#: Missing-value policies of the correlations (config analysis.missing).
MISSING = ("pairwise", "listwise")

REQUIRED_COLUMNS = ("model", "dataset", "domain", "shift_group", "protocol", "arm", "top1")

#: Fewest models for which a coefficient is reported (fewer -> NaN).
MIN_N = 3
#: Up to this many models the p-values of Kendall, Spearman and Pearson are exact: the
#: permutation distribution over all n! pairings (10! = 3,628,800); above, scipy's.
EXACT_P_MAX_N = 10

_SCIPY = {
    "kendall": stats.kendalltau,
    "spearman": stats.spearmanr,
    "pearson": stats.pearsonr,
    "weightedtau": stats.weightedtau,  # hyperbolic weigher, rank=True; no p-value (NaN)
}

#: Methods whose sign-array preparation is [B, n, n] (chunked, and cached only when small).
_PAIRWISE = ("kendall", "weightedtau")

# Upper bound on elements of one [chunk, n, n] sign array in the vectorised Kendall tau.
_KENDALL_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# ordering helpers


def order_protocol_arms(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Deduplicate and order (protocol, arm) pairs canonically (protocol first, then arm)."""
    return sorted(set(pairs), key=lambda pa: (protocol_sort_key(pa[0]), arm_sort_key(pa[1])))


# --------------------------------------------------------------------------------------------
# point estimates


def correlate(x, y, *, min_n: int = MIN_N) -> dict[str, tuple[float, float]]:
    """Kendall's tau-b, Spearman's rho, Pearson's r and the weighted tau of ``x`` and ``y``.

    Returns ``{"kendall": (value, p), "spearman": (value, p), "pearson": (value, p),
    "weightedtau": (value, nan)}``. The coefficients are exactly scipy's:
    :func:`scipy.stats.kendalltau` (tau-b), :func:`scipy.stats.spearmanr`,
    :func:`scipy.stats.pearsonr` and :func:`scipy.stats.weightedtau` (defaults: hyperbolic
    weigher 1 / (1 + rank), ``rank=True``; it has no p-value, so p is NaN). The two-sided
    p-values (:func:`p_method` says which): with at most :data:`EXACT_P_MAX_N` pairs, exact --
    the share of the ``n!`` pairings of x with a permutation of y whose ``|coefficient|`` is at
    least the observed one (:func:`permutation_p`; n = 3, rho = 1: 2/6 = 1/3, where the
    t-approximation gives ~0); above, scipy's (Kendall: its exact distribution without ties for
    n <= 33, else the normal approximation; Spearman: the t-distribution; Pearson: the exact
    distribution under bivariate normality). Pairs where either value is not finite are dropped
    first. Constant input (after dropping) or fewer than ``min_n`` pairs gives ``(nan, nan)``
    for every method, without calling scipy (so without its warnings).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    nan = (float("nan"), float("nan"))
    if x.size < max(min_n, 2) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {method: nan for method in METHODS}
    out = {}
    for method in METHODS:
        res = _SCIPY[method](x, y)
        value, p = float(res.statistic), float(res.pvalue)
        if p_method(method, x.size) == "permutation":
            p = permutation_p(method, x, y)
        out[method] = (value, p)
    return out


def p_method(method: str, n: int) -> str:
    """How :func:`correlate` obtains the p-value of ``method`` for ``n`` pairs: "permutation"
    (exact, n <= :data:`EXACT_P_MAX_N`), "scipy", or "none" (the weighted tau)."""
    if method == "weightedtau":
        return "none"
    return "permutation" if n <= EXACT_P_MAX_N else "scipy"


@functools.lru_cache(maxsize=None)
def _permutations(n: int) -> np.ndarray:
    """All ``n!`` permutations of ``range(n)`` as an int8 array [n!, n] (36 MB at n = 10)."""
    perms = np.zeros((1, 0), dtype=np.int8)
    for k in range(n):
        perms = np.concatenate([np.insert(perms, pos, k, axis=1) for pos in range(k + 1)])
    return perms


_PERMUTATION_CHUNK = 1 << 18


def _null_statistics(method: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The statistic (``method``'s coefficient, or an increasing function of it at fixed
    margins) of x against every permutation of y."""
    perms = _permutations(x.size)
    out = np.empty(len(perms))
    if method == "kendall":  # tau-b's numerator: its denominator is permutation-invariant
        sx = np.sign(x[:, None] - x[None, :])
        upper = np.triu_indices(x.size, 1)
        for start in range(0, len(perms), _PERMUTATION_CHUNK):
            yp = y[perms[start : start + _PERMUTATION_CHUNK]]
            sy = np.sign(yp[:, :, None] - yp[:, None, :])[:, upper[0], upper[1]]
            out[start : start + len(yp)] = sy @ sx[upper]
        return out
    # spearman on ranks, pearson on values: the numerator of r (the norms are invariant)
    xc, yc = x - x.mean(), y - y.mean()
    for start in range(0, len(perms), _PERMUTATION_CHUNK):
        out[start : start + _PERMUTATION_CHUNK] = yc[perms[start : start + _PERMUTATION_CHUNK]] @ xc
    return out


@functools.lru_cache(maxsize=4096)
def _rank_null(method: str, rx: tuple, ry: tuple) -> np.ndarray:
    """The sorted |statistic| of every pairing of the rank multisets ``rx`` and ``ry`` (their
    tie patterns decide the null distribution of a rank coefficient: one computation serves
    every row with the same n and ties)."""
    return np.sort(np.abs(_null_statistics(method, np.array(rx), np.array(ry))))


def permutation_p(method: str, x, y) -> float:
    """Exact two-sided permutation p-value of Kendall's tau-b, Spearman's rho or Pearson's r:
    ``P(|T| >= |t_observed|)`` over all ``n!`` pairings of ``x`` with a permutation of ``y``
    (observed included), ties compared with a relative tolerance of 1e-9."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if method not in ("kendall", "spearman", "pearson"):
        raise ValueError(f"no permutation p-value for {method!r}")
    if method == "pearson":
        null = np.abs(_null_statistics(method, x, y))
        observed = abs(float((y - y.mean()) @ (x - x.mean())))
        return float(np.mean(null >= observed * (1 - 1e-9) - 1e-300))
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    null = _rank_null(method, tuple(np.sort(rx)), tuple(np.sort(ry)))
    if method == "kendall":
        observed = abs(
            float(
                np.sign(rx[:, None] - rx[None, :])[np.triu_indices(x.size, 1)]
                @ np.sign(ry[:, None] - ry[None, :])[np.triu_indices(x.size, 1)]
            )
        )
    else:
        observed = abs(float((ry - ry.mean()) @ (rx - rx.mean())))
    first = np.searchsorted(null, observed * (1 - 1e-9) - 1e-300, side="left")
    return float((null.size - first) / null.size)


def regret_at_1(x, y, *, x_direction: int = 1, y_direction: int = 1) -> float:
    """The y lost by choosing the model that x ranks first: ``best y - y of x's choice``.

    ``x`` and ``y`` hold one value per model; pairs where either is not finite are dropped
    (NaN if none is left).  x's choice is the model with the highest ``x_direction * x``
    (``x_direction = -1`` for a lower-is-better x such as a loss-like proxy); when several
    models tie for it, their mean y counts (the expected y of picking one of them at random).
    The best y is the highest ``y_direction * y`` (top-1 accuracy: ``+1``).  The regret is in
    y's units (top-1 percentage points for accuracies), ``>= 0``, and 0 when x's first choice
    is (one of) the best in y.
    """
    for name, d in (("x_direction", x_direction), ("y_direction", y_direction)):
        if d not in (1, -1):
            raise ValueError(f"{name} must be +1 or -1, got {d!r}")
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    if not keep.any():
        return float("nan")
    sx, sy = x_direction * x[keep], y_direction * y[keep]
    chosen = sy[sx == sx.max()].mean()
    return float(max(sy.max() - chosen, 0.0))


# --------------------------------------------------------------------------------------------
# bootstrap


def bootstrap_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """Resample indices ``[n_resamples, n]``: ``np.random.default_rng(seed).integers(0, n, ...)``.

    Deterministic in (n, n_resamples, seed): every row of a correlation table with the same model
    set (and so the same ``n``) is resampled with the same models.
    """
    if n < 1:
        raise ValueError(f"need at least one observation to resample, got n={n}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    return np.random.default_rng(seed).integers(0, n, (n_resamples, n))


def vectorized_stat(method: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Correlation coefficient of each row pair of ``x`` and ``y`` (shape ``[B, n]`` -> ``[B]``).

    * ``kendall``: tau-b, ``(concordant - discordant) / sqrt((n0 - ties_x) * (n0 - ties_y))``,
      from pairwise sign matrices (ties, the normal case in bootstrap resamples, handled as in
      :func:`scipy.stats.kendalltau`).
    * ``spearman``: Pearson's r of the average ranks (:func:`scipy.stats.rankdata`).
    * ``pearson``: Pearson's r.
    * ``weightedtau``: :func:`scipy.stats.weightedtau` with its defaults, see
      :func:`_weightedtau_combine`.

    A degenerate row (constant ``x`` or ``y``, or fewer than two columns) gives NaN.
    Values agree with scipy up to floating point rounding.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if y.ndim == 1:
        y = y[None, :]
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must have the same shape [B, n], got {x.shape} and {y.shape}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    n_rows, n = x.shape
    if n < 2:
        return np.full(n_rows, np.nan)
    # Kendall's (and the weighted tau's) sign arrays are [chunk, n, n]; bound their size.
    chunk = max(1, _KENDALL_CHUNK_ELEMENTS // (n * n)) if method in _PAIRWISE else n_rows
    out = np.empty(n_rows)
    for start in range(0, n_rows, chunk):
        sl = slice(start, start + chunk)
        out[sl] = _combine(method, _prepare(method, x[sl]), _prepare(method, y[sl]))
    return out


# Each method splits into a per-variable preparation (cacheable: in a correlation table one
# variable meets many others under the same resamples) and a cheap row-wise combination.


def _prepare(method: str, v: np.ndarray) -> tuple:
    """Per-variable part of :func:`vectorized_stat` for ``v`` of shape [B, n]."""
    if method == "weightedtau":
        return _weightedtau_prepare(v, _prepare("kendall", v)[0])
    if method == "kendall":
        # sign(v_i - v_j) over the full n x n matrix: every unordered pair counts twice, which
        # cancels in tau-b.
        a = v[:, :, None]
        b = v[:, None, :]
        signs = ((a > b).astype(np.int8) - (a < b).astype(np.int8)).reshape(v.shape[0], -1)
        untied = np.count_nonzero(signs, axis=1)  # 2 * (n0 - ties)
        return signs, untied
    if method == "spearman":
        v = stats.rankdata(v, axis=-1)
    # Constant rows are detected exactly (max == min): after centring, rounding in the mean can
    # leave tiny non-zero deviations that would otherwise produce a spurious coefficient.
    degenerate = np.ptp(v, axis=1) == 0
    centred = v - v.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    return unit, degenerate


def _combine(method: str, px: tuple, py: tuple) -> np.ndarray:
    """Row-wise coefficient from two :func:`_prepare` results."""
    if method == "weightedtau":
        return _weightedtau_combine(px, py)
    if method == "kendall":
        (sx, ux), (sy, uy) = px, py
        s = (sx * sy).sum(axis=1, dtype=np.int64)  # 2 * (concordant - discordant)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = s / np.sqrt(ux.astype(float) * uy.astype(float))
        degenerate = (ux == 0) | (uy == 0)
    else:
        (ux, dx), (uy, dy) = px, py
        with np.errstate(invalid="ignore"):
            r = np.einsum("bk,bk->b", ux, uy)
        degenerate = dx | dy
    r = np.clip(r, -1.0, 1.0)
    r[degenerate] = np.nan
    return r


def _weightedtau_prepare(v: np.ndarray, signs: np.ndarray) -> tuple:
    """Per-variable part of the weighted tau for ``v`` [B, n]: the sign array of
    :func:`_prepare` ("kendall"), and per element the number of values different from it and of
    values below it (an integer code that orders like ``v``, ties included)."""
    n_rows, n = v.shape
    signs = signs.reshape(n_rows, n, n)
    untied = np.count_nonzero(signs, axis=2)
    below = (signs.sum(axis=2, dtype=np.int32) + untied) // 2  # (below - above + untied) / 2
    return signs, untied, below.astype(np.int32)


def _weightedtau_combine(px: tuple, py: tuple) -> np.ndarray:
    """Row-wise :func:`scipy.stats.weightedtau` (defaults) from two :func:`_weightedtau_prepare`.

    scipy's definition (``_weightedrankedtau`` in ``scipy/stats/_stats.pyx``, additive
    hyperbolic weigher): element i gets the weight ``w_i = 1 / (1 + r_i)``, where ``r_i`` is its
    0-based position in the decreasing lexicographic order by (x, y); a pair weighs
    ``w_i + w_j``, and ::

        tau_xy = sum_{i<j} (w_i + w_j) sign(x_i - x_j) sign(y_i - y_j)
                 / sqrt(sum_{x_i != x_j} (w_i + w_j) * sum_{y_i != y_j} (w_i + w_j))

    (clipped to [-1, 1]); ``weightedtau`` is ``(tau_xy + tau_yx) / 2``, ``tau_yx`` ranking by
    (y, x).  With S a symmetric matrix of sign products, ``sum_{i<j} (w_i + w_j) S_ij =
    sum_i w_i sum_j S_ij``: each of the three sums is the dot product of the weights with a
    per-element count (from the [B, n, n] sign arrays).  The lexicographic order is an argsort
    of the integer key ``below_x * n + below_y``.

    Ties: elements tied in both x and y (a model drawn twice in a bootstrap resample) take
    consecutive positions, which scipy assigns by index; they have the same count in each sum
    (the same signs against every other element, 0 among themselves), so only the total weight
    of their positions counts and any order among them gives the same value.  Ties in x only
    are ordered by y (and vice versa), as in scipy.  Constant x or y: NaN, as scipy.
    """
    sx, untied_x, below_x = px
    sy, untied_y, below_y = py
    n_rows, n = below_x.shape
    # per element: sum_j sign(x_i - x_j) sign(y_i - y_j); int8 accumulation is exact while
    # n - 1 <= 127 (and the fastest); wider beyond
    if n <= 128:
        concord = np.einsum("bij,bij->bi", sx, sy)
    else:
        concord = (sx * sy).sum(axis=2, dtype=np.int32)
    counts = np.stack([concord, untied_x, untied_y], axis=1).astype(float)  # [B, 3, n]
    # weight 1 / (1 + p) of the element at position p from the top, i.e. of the increasing
    # order's last element first
    hyperbolic = 1.0 / np.arange(n, 0.0, -1.0)
    weights = np.empty((n_rows, n))
    taus = []
    for key in (below_x * n + below_y, below_y * n + below_x):
        np.put_along_axis(weights, np.argsort(key, axis=1), hyperbolic[None, :], axis=1)
        num, den_x, den_y = np.einsum("bkn,bn->kb", counts, weights)
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = num / np.sqrt(den_x) / np.sqrt(den_y)
        taus.append(np.clip(tau, -1.0, 1.0))
    r = (taus[0] + taus[1]) / 2.0
    r[(untied_x == 0).all(axis=1) | (untied_y == 0).all(axis=1)] = np.nan
    return r


def percentile_interval(samples: np.ndarray, ci: float) -> tuple[float, float]:
    """Percentile interval of the finite entries of ``samples`` (NaN, NaN if there are none)."""
    samples = np.asarray(samples, dtype=float).ravel()
    samples = samples[np.isfinite(samples)]  # same as np.nanpercentile, without its overhead
    if samples.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - ci) / 2.0
    low, high = np.percentile(samples, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return (float(low), float(high))


# --------------------------------------------------------------------------------------------
# the table


def identify_datasets(acc: pd.DataFrame) -> tuple[str, list[str], dict[str, str]]:
    """The in-domain data set, the OOD data sets (order of first appearance) and their groups.

    Raises ValueError unless exactly one data set has domain ``"id"``, if a data set has more
    than one domain or shift group, or if a domain is neither ``"id"`` nor ``"ood"``.
    """
    per_ds = acc.drop_duplicates(["dataset", "domain", "shift_group"])
    bad = per_ds["dataset"][per_ds["dataset"].duplicated()].unique().tolist()
    if bad:
        raise ValueError(f"data sets with more than one domain or shift_group: {bad}")
    unknown = sorted(set(per_ds["domain"]) - {"id", "ood"})
    if unknown:
        raise ValueError(f"unknown domain values {unknown}; expected 'id' or 'ood'")
    id_sets = per_ds.loc[per_ds["domain"] == "id", "dataset"].tolist()
    if len(id_sets) != 1:
        raise ValueError(
            f"expected exactly one in-domain (domain == 'id') data set, found {len(id_sets)}: "
            f"{id_sets} (all data sets: {per_ds['dataset'].tolist()})"
        )
    ood = per_ds[per_ds["domain"] == "ood"]
    return id_sets[0], ood["dataset"].tolist(), dict(zip(ood["dataset"], ood["shift_group"]))


def correlation_table(
    acc: pd.DataFrame,
    *,
    n_resamples: int,
    seed: int,
    min_subset: int = 4,
    subsets: Sequence[str] = ("backbone", "paradigm"),
    ci: float = 0.95,
    directions: Mapping[str, int] | None = None,
    proxies: Collection[str] = (),
    missing: str = "pairwise",
    static_rankers: Sequence[str] = (),
    ranker_values: Mapping[str, Mapping[str, float]] | None = None,
) -> pd.DataFrame:
    """Correlations of top-1 accuracy across models between measurements (protocol, arm, data set).

    Rows (``y_kind`` column), each for every method in :data:`METHODS` and every subset:

    ``pair``
        every unordered pair of in-domain (protocol, arm), x before y in canonical order (a
        proxy paired with an accuracy is x); ``x_dataset == y_dataset ==`` the in-domain set.
    ``dataset``
        every in-domain (protocol, arm) x every OOD data set d x every (protocol, arm) measured
        on d.
    ``mean``
        ``y_dataset == "mean_ood"``: for each in-domain x and each (protocol, arm) y measured on
        some OOD data set, the mean of the ``dataset`` coefficients of (x, y) over the OOD data
        sets having y (those with a finite coefficient; their number is ``n_datasets``).
        ``p_value`` is NaN: a mean of correlation coefficients over data sets sharing the same
        models has no simple null distribution, so no test is reported.  The confidence interval
        is bootstrapped: per resample the per-data-set coefficients (same resample indices for
        every data set when the model sets agree) are averaged.  ``n`` is the smallest ``n`` of
        the averaged data sets.
    ``group``
        the same mean over the OOD data sets of one shift group: ``y_dataset == "group:<group>"``.
    ``transfer``
        a proxy measured on an OOD data set d (x) with every accuracy (protocol, arm) on d (y):
        ``x_dataset == y_dataset == d`` (the transferability-estimation use).

    ``missing`` (column ``missing`` of every row): ``pairwise``, each row uses every model of
    the subset having both values; ``listwise``, a model enters a subset's rows only if it has
    every measurement (data set, protocol, arm) that some model of the subset has.

    **Null baselines** (columns ``baseline`` .. ``beats_baseline``): ``static_rankers`` names
    rankings of the models that need no evaluation (:data:`RANDOM_RANKER`, or a key of
    ``ranker_values``: ranker -> model -> value, higher ranks first), compared on the rows whose
    y is an accuracy (not a proxy). For a row and method, a
    ranker is eligible when it has a finite value for each of the row's ``n`` models and is not
    constant on them; the random ranker always is, with value 0 (the expectation of every
    coefficient over uniformly random orders: the numerator has mean 0 and, for an order without
    ties, the denominator is fixed; for the weighted tau this holds when y has no ties). Each
    eligible ranker is correlated with y on the row's models and resamples; ``baseline`` is the
    one with the highest coefficient (the first named on a tie), ``baseline_value`` its
    coefficient, ``baseline_diff`` = ``direction(x) * value - baseline_value`` (x oriented as
    its direction says, so a proxy with direction -1 that predicts well is positive), and
    ``baseline_ci_low/high`` the percentile interval of that difference over the paired
    resamples (the same resample indices for x and the ranker). ``beats_baseline`` is True when
    the interval's lower end is above 0, False otherwise, empty when the row has no value.
    ``mean`` and ``group`` rows average the per-data-set ranker coefficients and resamples of
    the averaged data sets (a ranker eligible on all of them; the best by the mean). Without
    ``static_rankers`` these columns are empty.

    **Best predictor** (columns ``margin`` .. ``single_best``), on ``dataset``, ``mean`` and
    ``group`` rows whose x is an accuracy (not a proxy): among the in-domain (protocol, arm)
    predicting the same y (data set or mean, protocol, arm), for the method and subset, the row
    with the highest value gets ``margin`` = its coefficient minus the runner-up's, on the
    models both have, with the percentile interval of that difference over paired resamples
    (per data set, averaged for means); ``single_best`` is True when the interval's lower end
    is above 0 (a single best predictor) and False otherwise (no single best). Other rows leave
    them empty.

    ``proxies``: protocols that are measures of the features, not accuracies (see
    :func:`with_proxies`). They are x like any in-domain protocol (pairs, OOD data sets, means)
    but never y on an OOD data set, where they are x of the ``transfer`` rows instead.

    Subsets: ``"all"`` (every model) and, for each column in ``subsets`` and each of its values
    with at least ``min_subset`` models, ``"<column>=<value>"``.

    ``n`` is the number of models having both values (others are dropped); with ``n < 3`` value,
    p-value and interval are NaN.  Point estimates and two-sided p-values are those of
    :func:`correlate` (scipy).  The interval is the percentile ``ci`` interval of
    :func:`vectorized_stat` over the resamples ``bootstrap_indices(n, n_resamples, seed)`` of the
    row's models (sorted by model key), ignoring degenerate (NaN) resamples.  ``weightedtau``
    has no p-value (NaN in every row).

    ``regret_at_1`` (the same on every method's row of an (x, y, subset)): on a ``pair`` or
    ``dataset`` row, :func:`regret_at_1` of the row's ``n`` models, x's and y's directions from
    ``directions`` (protocol -> +1 higher is better, -1 lower is better; +1 for a protocol not
    in it, as for every accuracy), NaN when ``n < 3`` as the coefficients; on a ``mean`` or
    ``group`` row, the mean of the per-data-set regrets of the ``n_datasets`` data sets whose
    coefficients are averaged (the expected loss on one of those OOD data sets; NaN when there
    are none).
    """
    lacking = [c for c in REQUIRED_COLUMNS if c not in acc.columns]
    lacking += [c for c in subsets if c not in acc.columns and c not in lacking]
    if lacking:
        raise ValueError(f"accuracy table lacks columns {lacking}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if missing not in MISSING:
        raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")
    directions = dict(directions or {})
    bad = {p: d for p, d in directions.items() if d not in (1, -1)}
    if bad:
        raise ValueError(f"directions must be +1 or -1, got {bad}")
    ranker_values = dict(ranker_values or {})
    unknown = [r for r in static_rankers if r != RANDOM_RANKER and r not in ranker_values]
    if unknown:
        raise ValueError(f"static rankers without values: {unknown}")
    id_ds, ood_sets, groups = identify_datasets(acc)

    dup = acc.duplicated(["model", "dataset", "protocol", "arm"], keep=False)
    if dup.any():
        keys = acc.loc[dup, ["model", "dataset", "protocol", "arm"]].drop_duplicates()
        raise ValueError(
            "several rows for the same (model, dataset, protocol, arm): "
            f"{keys.head(5).to_dict('records')}"
        )

    wide = acc.pivot(index="model", columns=["dataset", "protocol", "arm"], values="top1")
    wide = wide.astype(float).sort_index()
    measured = wide.notna().any(axis=0)
    present = {
        ds: order_protocol_arms((p, a) for (d, p, a), ok in measured.items() if ok and d == ds)
        for ds in [id_ds, *ood_sets]
    }
    x_pas = present[id_ds]
    proxy_pas = {d: [pa for pa in present[d] if pa[0] in proxies] for d in ood_sets}
    present.update({d: [pa for pa in present[d] if pa[0] not in proxies] for d in ood_sets})
    y_ood = order_protocol_arms(pa for d in ood_sets for pa in present[d])
    # shift groups of the OOD data sets (a data set of a results table may have none)
    groups = {d: g if isinstance(g, str) and g else "" for d, g in groups.items()}
    group_names = list(dict.fromkeys(groups[d] for d in ood_sets if groups[d]))

    records: list[dict] = []
    for subset, models in _subset_specs(acc, subsets, min_subset, wide.index):
        if missing == "listwise":
            part = wide.loc[models]
            part = part.loc[:, part.notna().any()]
            models = list(part.index[part.notna().all(axis=1)])
        engine = _Engine(
            wide.loc[models],
            n_resamples,
            seed,
            ci,
            directions,
            static_rankers,
            ranker_values,
            proxies,
        )
        first = len(records)
        members_of: dict[str, list[str]] = {d: [d] for d in ood_sets}
        # 1. in-domain pairs
        for (xp, xa), (yp, ya) in itertools.combinations(x_pas, 2):
            if yp in proxies and xp not in proxies:  # the proxy predicts: x (regret by it)
                (xp, xa), (yp, ya) = (yp, ya), (xp, xa)
            res = engine.row((id_ds, xp, xa), (id_ds, yp, ya))
            records += _records(xp, xa, id_ds, yp, ya, id_ds, subset, res, "pair", "", 1)
        # 2. per OOD data set, remembering the bootstrap samples for the means
        per_ds: dict[tuple, dict] = {}
        for xp, xa in x_pas:
            for d in ood_sets:
                for yp, ya in present[d]:
                    res = engine.row((id_ds, xp, xa), (d, yp, ya))
                    per_ds[(xp, xa, d, yp, ya)] = res
                    records += _records(
                        xp, xa, id_ds, yp, ya, d, subset, res, "dataset", groups[d], 1
                    )
        # 5. a proxy on an OOD data set with that data set's accuracies
        for d in ood_sets:
            for xp, xa in proxy_pas[d]:
                for yp, ya in present[d]:
                    res = engine.row((d, xp, xa), (d, yp, ya))
                    records += _records(xp, xa, d, yp, ya, d, subset, res, "transfer", groups[d], 1)
        # 3. and 4. means over all OOD data sets and per shift group
        for kind, label, group, members in [
            ("mean", MEAN_OOD, "", ood_sets),
            *[
                ("group", GROUP_PREFIX + g, g, [d for d in ood_sets if groups[d] == g])
                for g in group_names
            ],
        ]:
            members_of[label] = members
            for xp, xa in x_pas:
                for yp, ya in y_ood:
                    parts = [per_ds[(xp, xa, d, yp, ya)] for d in members if (yp, ya) in present[d]]
                    if not parts:
                        continue
                    res = _mean_result(parts, ci, directions.get(xp, 1))
                    records += _records(
                        xp,
                        xa,
                        id_ds,
                        yp,
                        ya,
                        label,
                        subset,
                        res,
                        kind,
                        group,
                        res["n_datasets"],
                    )
        _best_margins(records[first:], engine, id_ds, members_of, present, proxies)

    out = pd.DataFrame.from_records(records, columns=[*COLUMNS, *EXTRA_COLUMNS])
    out["missing"] = missing
    out["n"] = out["n"].astype(int)
    out["n_datasets"] = out["n_datasets"].astype(int)
    for col in (
        "value",
        "p_value",
        "ci_low",
        "ci_high",
        "regret_at_1",
        "baseline_value",
        "baseline_diff",
        "baseline_ci_low",
        "baseline_ci_high",
        "margin",
        "margin_ci_low",
        "margin_ci_high",
    ):
        out[col] = out[col].astype(float)
    for col in ("beats_baseline", "single_best"):
        out[col] = out[col].astype("boolean")
    out["baseline"] = out["baseline"].fillna("")
    return out


def _best_margins(records, engine, id_ds, members_of, present, proxies) -> None:
    """Fill ``margin`` .. ``single_best`` of the best accuracy x per OOD target (in place)."""
    targets: dict[tuple, list[dict]] = {}
    for rec in records:
        if rec["y_kind"] in MARGIN_KINDS and rec["x_protocol"] not in proxies:
            key = (rec["y_dataset"], rec["y_protocol"], rec["y_arm"], rec["method"])
            targets.setdefault(key, []).append(rec)
    for (label, yp, ya, method), recs in targets.items():
        ranked = sorted((r for r in recs if np.isfinite(r["value"])), key=lambda r: -r["value"])
        if len(ranked) < 2:
            continue
        best, runner = ranked[0], ranked[1]
        datasets = [d for d in members_of[label] if (yp, ya) in present[d]]
        diffs = [
            engine.paired_difference(
                method,
                (id_ds, best["x_protocol"], best["x_arm"]),
                (id_ds, runner["x_protocol"], runner["x_arm"]),
                (d, yp, ya),
            )
            for d in datasets
        ]
        diffs = [(v, s) for v, s in diffs if np.isfinite(v)]
        if not diffs:
            continue
        value = float(np.mean([v for v, _ in diffs]))
        low, high = percentile_interval(np.mean([s for _, s in diffs], axis=0), engine.ci)
        best.update(
            margin=value,
            margin_ci_low=low,
            margin_ci_high=high,
            single_best=bool(low > 0) if np.isfinite(low) else None,
        )


def with_proxies(acc: pd.DataFrame, proxies: pd.DataFrame) -> pd.DataFrame:
    """The accuracy table plus the proxy rows (results/tables/proxies.csv: model, dataset,
    proxy, arm, value) as measurements of the same models and data sets: protocol = the proxy's
    name, top1 = its value, the model's and data set's columns (domain, shift group, backbone,
    paradigm ...) taken from the accuracy table. Proxies of models or data sets the accuracy
    table lacks are dropped (they have no accuracy to be correlated with)."""
    unknown = sorted(set(proxies["proxy"]) - set(registry.PROXIES))
    if unknown:
        raise ValueError(f"unknown proxies {unknown} (known: {', '.join(registry.PROXIES)})")
    model_columns = [c for c in ("method", "backbone", "arch", "paradigm") if c in acc]
    dataset_columns = [c for c in ("domain", "shift_group") if c in acc]
    models = acc.drop_duplicates("model").set_index("model")[model_columns]
    datasets = acc.drop_duplicates("dataset").set_index("dataset")[dataset_columns]
    rows = (
        proxies.rename(columns={"proxy": "protocol", "value": "top1"})[
            ["model", "dataset", "protocol", "arm", "top1"]
        ]
        .join(models, on="model", how="inner")
        .join(datasets, on="dataset", how="inner")
    )
    return pd.concat([acc, rows], ignore_index=True)


def _subset_specs(acc, subsets, min_subset, models) -> list[tuple[str, list[str]]]:
    specs = [("all", list(models))]
    for col in subsets:
        per_model = acc[["model", col]].dropna().drop_duplicates()
        clash = per_model["model"][per_model["model"].duplicated()].unique().tolist()
        if clash:
            raise ValueError(f"models with more than one {col!r}: {clash}")
        for value, grp in sorted(per_model.groupby(col), key=lambda kv: str(kv[0])):
            members = sorted(set(grp["model"]) & set(models))
            if len(members) >= min_subset:
                specs.append((f"{col}={value}", members))
    return specs


class _Engine:
    """Computes rows for one subset of models.

    Caches the bootstrap index matrices by n and, per (variable, model set, method), the
    per-variable part of :func:`vectorized_stat` (sign arrays, ranks), which one variable
    shares with every other variable it is correlated with.
    """

    def __init__(
        self,
        wide: pd.DataFrame,
        n_resamples: int,
        seed: int,
        ci: float,
        directions: Mapping[str, int] | None = None,
        static_rankers: Sequence[str] = (),
        ranker_values: Mapping[str, Mapping[str, float]] | None = None,
        proxies: Collection[str] = (),
    ):
        self.wide = wide
        self.proxies = set(proxies)
        self.directions = dict(directions or {})
        self._columns = {key: wide[key].to_numpy(dtype=float) for key in wide.columns}
        self.rankers = tuple(static_rankers)
        values = dict(ranker_values or {})
        self._ranker_columns = {
            name: np.array([values[name].get(m, np.nan) for m in wide.index], dtype=float)
            for name in self.rankers
            if name != RANDOM_RANKER
        }
        self._ranker_results: dict[tuple, tuple[float, np.ndarray]] = {}
        self.n_resamples = n_resamples
        self.seed = seed
        self.ci = ci
        self._indices: dict[int, np.ndarray] = {}
        self._prepared: dict[tuple, tuple] = {}

    def indices(self, n: int) -> np.ndarray:
        if n not in self._indices:
            self._indices[n] = bootstrap_indices(n, self.n_resamples, self.seed)
        return self._indices[n]

    def _prep(self, method: str, key: tuple, keep: np.ndarray, resampled: np.ndarray):
        cache_key = (method, key, keep.tobytes())
        if cache_key not in self._prepared:
            if method == "weightedtau":  # shares Kendall's sign array
                signs = self._prep("kendall", key, keep, resampled)[0]
                self._prepared[cache_key] = _weightedtau_prepare(resampled, signs)
            else:
                self._prepared[cache_key] = _prepare(method, resampled)
        return self._prepared[cache_key]

    def _samples(self, method, xkey, ykey, keep, xs, ys) -> np.ndarray:
        if method in _PAIRWISE and xs.size * xs.shape[1] > _KENDALL_CHUNK_ELEMENTS:
            return vectorized_stat(method, xs, ys)  # too big to cache: chunked
        px = self._prep(method, xkey, keep, xs)
        py = self._prep(method, ykey, keep, ys)
        return _combine(method, px, py)

    def ranker_results(self, method: str, ykey: tuple, keep: np.ndarray) -> dict:
        """Per eligible static ranker: (coefficient with y, resampled coefficients) on the
        models ``keep`` and their resamples (the random ranker: 0 and zeros)."""
        out = {}
        n = int(keep.sum())
        for name in self.rankers:
            if name == RANDOM_RANKER:
                out[name] = (0.0, np.zeros(self.n_resamples))
                continue
            r = self._ranker_columns[name][keep]
            if not np.isfinite(r).all() or np.ptp(r) == 0:
                continue
            cache_key = (method, name, ykey, keep.tobytes())
            if cache_key not in self._ranker_results:
                y = self._columns[ykey][keep]
                idx = self.indices(n)
                value = float(_SCIPY[method](r, y).statistic)
                samples = self._samples(method, ("ranker", name), ykey, keep, r[idx], y[idx])
                self._ranker_results[cache_key] = (value, samples)
            out[name] = self._ranker_results[cache_key]
        return out

    def paired_difference(
        self, method: str, akey: tuple, bkey: tuple, ykey: tuple
    ) -> tuple[float, np.ndarray | None]:
        """``method``'s coefficient of a with y minus that of b with y, on the models having
        all three, and the same difference on each of their resamples (paired)."""
        a, b, y = self._columns[akey], self._columns[bkey], self._columns[ykey]
        keep = np.isfinite(a) & np.isfinite(b) & np.isfinite(y)
        n = int(keep.sum())
        if n < MIN_N:
            return float("nan"), None
        a, b, y = a[keep], b[keep], y[keep]
        if np.ptp(y) == 0 or np.ptp(a) == 0 or np.ptp(b) == 0:
            return float("nan"), None
        idx = self.indices(n)
        value = float(_SCIPY[method](a, y).statistic - _SCIPY[method](b, y).statistic)
        sa = self._samples(method, akey, ykey, keep, a[idx], y[idx])
        sb = self._samples(method, bkey, ykey, keep, b[idx], y[idx])
        return value, sa - sb

    def row(self, xkey: tuple, ykey: tuple) -> dict:
        x = self._columns[xkey]
        y = self._columns[ykey]
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        n = int(keep.sum())
        res: dict = {"n": n, "methods": {}, "regret_at_1": float("nan")}
        nan = float("nan")
        if n < MIN_N:
            for method in METHODS:
                res["methods"][method] = {"value": nan, "p": nan, "samples": None, "ci": (nan, nan)}
            return res
        res["regret_at_1"] = regret_at_1(
            x,
            y,
            x_direction=self.directions.get(xkey[1], 1),
            y_direction=self.directions.get(ykey[1], 1),
        )
        point = correlate(x, y)
        idx = self.indices(n)
        xs, ys = x[idx], y[idx]
        for method in METHODS:
            value, p = point[method]
            if np.isfinite(value):
                samples = self._samples(method, xkey, ykey, keep, xs, ys)
                interval = percentile_interval(samples, self.ci)
            else:
                samples, interval = None, (nan, nan)
            entry = {
                "value": value,
                "p": p,
                "p_method": p_method(method, n) if np.isfinite(value) else "none",
                "samples": samples,
                "ci": interval,
            }
            if samples is not None and self.rankers and ykey[1] not in self.proxies:
                entry["rankers"] = self.ranker_results(method, ykey, keep)
                entry["baseline"] = _baseline(
                    self.directions.get(xkey[1], 1), value, samples, entry["rankers"], self.ci
                )
            res["methods"][method] = entry
        return res


def _baseline(direction: int, value: float, samples, rankers: dict, ci: float) -> dict | None:
    """The best of ``rankers`` (name -> (value, samples)) against x's oriented ``value`` and
    ``samples``: the columns baseline .. beats_baseline."""
    if not rankers:
        return None
    name = max(rankers, key=lambda r: rankers[r][0])  # first of the best on a tie
    ranker_value, ranker_samples = rankers[name]
    low, high = percentile_interval(direction * np.asarray(samples) - ranker_samples, ci)
    return {
        "baseline": name,
        "baseline_value": ranker_value,
        "baseline_diff": direction * value - ranker_value,
        "baseline_ci_low": low,
        "baseline_ci_high": high,
        "beats_baseline": bool(low > 0) if np.isfinite(low) else None,
    }


def _mean_result(parts: list[dict], ci: float, direction: int = 1) -> dict:
    """Average per-data-set results (those with a finite coefficient) and their resamples.

    Per resample the coefficients of the averaged data sets are averaged; a resample degenerate
    on any of them is NaN and so skipped by the percentile interval.  ``regret_at_1`` is the mean
    of the same data sets' regrets.
    """
    nan = float("nan")
    # correlate() is NaN for all methods or none, so the averaged data sets agree across methods
    ok = [p for p in parts if np.isfinite(p["methods"][METHODS[0]]["value"])]
    res: dict = {
        "n": min(p["n"] for p in (ok or parts)),
        "n_datasets": len(ok),
        "methods": {},
        # the mean regret over the same data sets (each finite: n >= MIN_N there)
        "regret_at_1": float(np.mean([p["regret_at_1"] for p in ok])) if ok else nan,
    }
    for method in METHODS:
        if not ok:
            res["methods"][method] = {"value": nan, "p": nan, "ci": (nan, nan)}
            continue
        value = float(np.mean([p["methods"][method]["value"] for p in ok]))
        samples = np.mean([p["methods"][method]["samples"] for p in ok], axis=0)
        res["methods"][method] = {
            "value": value,
            "p": nan,
            "ci": percentile_interval(samples, ci),
        }
        if "rankers" in ok[0]["methods"][method]:
            per_part = [p["methods"][method]["rankers"] for p in ok]
            common = [r for r in per_part[0] if all(r in pr for pr in per_part)]
            rankers = {
                r: (
                    float(np.mean([pr[r][0] for pr in per_part])),
                    np.mean([pr[r][1] for pr in per_part], axis=0),
                )
                for r in common
            }
            res["methods"][method]["baseline"] = _baseline(direction, value, samples, rankers, ci)
    return res


def _records(xp, xa, xd, yp, ya, yd, subset, res, kind, group, n_datasets) -> list[dict]:
    out = []
    for method in METHODS:
        m = res["methods"][method]
        out.append(
            {
                "x_protocol": xp,
                "x_arm": xa,
                "x_dataset": xd,
                "y_protocol": yp,
                "y_arm": ya,
                "y_dataset": yd,
                "subset": subset,
                "method": method,
                "n": res["n"],
                "value": m["value"],
                "p_value": m["p"],
                "ci_low": m["ci"][0],
                "ci_high": m["ci"][1],
                "y_kind": kind,
                "y_shift_group": group,
                "n_datasets": n_datasets,
                "regret_at_1": res["regret_at_1"],
                "p_method": m.get("p_method", "none"),
                **(m.get("baseline") or _NO_BASELINE),
                **_NO_MARGIN,
            }
        )
    return out


_NO_BASELINE = {
    "baseline": "",
    "baseline_value": float("nan"),
    "baseline_diff": float("nan"),
    "baseline_ci_low": float("nan"),
    "baseline_ci_high": float("nan"),
    "beats_baseline": None,
}
_NO_MARGIN = {
    "margin": float("nan"),
    "margin_ci_low": float("nan"),
    "margin_ci_high": float("nan"),
    "single_best": None,
}


def run_job(
    accuracy: str,
    proxies: Sequence[str],
    output: str,
    analysis: dict,
    log,
    ranker_values: Mapping[str, Mapping[str, float]] | None = None,
) -> None:
    """Rule correlations: the correlation table of the accuracy table (and of the proxies
    table, ``proxies``: [] or its path) with the analysis settings (config section
    ``analysis``), each proxy with its registry direction, each row against the static rankers
    ``analysis["static_rankers"]`` (values ``ranker_values``: ranker -> model -> value),
    written to ``output``."""
    from workflow_scripts.io import save_csv

    acc = pd.read_csv(accuracy)
    for path in proxies:
        acc = with_proxies(acc, pd.read_csv(path))
    table = correlation_table(
        acc,
        n_resamples=analysis["bootstrap_resamples"],
        seed=analysis["bootstrap_seed"],
        min_subset=analysis["min_subset"],
        subsets=list(analysis["subsets"]),
        directions={name: entry["direction"] for name, entry in registry.PROXIES.items()},
        proxies=tuple(registry.PROXIES),
        missing=analysis["missing"],
        static_rankers=analysis.get("static_rankers", ()),
        ranker_values=ranker_values,
    )
    save_csv(output, table)
    log.info("%d correlation rows", len(table))
