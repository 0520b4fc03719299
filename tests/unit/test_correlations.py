"""Tests for workflow_scripts.correlations against scipy.stats and hand-rolled oracles."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from workflow_scripts import correlations as C

SCIPY = {
    "kendall": stats.kendalltau,
    "spearman": stats.spearmanr,
    "pearson": stats.pearsonr,
    "weightedtau": stats.weightedtau,
}
#: The methods (and the column order) of the table before weightedtau and regret_at_1.
OLD_METHODS = ("kendall", "spearman", "pearson")
OLD_COLUMNS = [
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
    "y_kind",
    "y_shift_group",
    "n_datasets",
]


def _same(a, b):
    """Equal, NaN equal to NaN (weightedtau's p-value)."""
    return a == b or (np.isnan(a) and np.isnan(b))


def _reference_p(method, x, y):
    """The p-value correlate() must give: for n <= 10 the exact permutation p from scipy's
    exhaustive permutation_test (statistic |coefficient|, 'greater': P(|T| >= |t|)), else
    scipy's own; NaN for the weighted tau."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if method == "weightedtau":
        return np.nan
    if x.size > C.EXACT_P_MAX_N:
        return SCIPY[method](x, y).pvalue
    return stats.permutation_test(
        (y,),
        lambda b: abs(SCIPY[method](x, b).statistic),
        permutation_type="pairings",
        n_resamples=np.inf,
        alternative="greater",
    ).pvalue


def _same_p(a, b):
    return (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def _scipy_or_nan(method, x, y):
    """scipy's statistic, NaN for constant input (scipy warns and returns NaN there)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan
    return SCIPY[method](x, y).statistic


# --------------------------------------------------------------------------------------------
# correlate


@pytest.mark.parametrize("ties", [False, True])
def test_correlate_equals_scipy_exactly(ties):
    rng = np.random.default_rng(1)
    x = rng.normal(size=15)
    y = x + rng.normal(size=15)
    if ties:
        x, y = np.round(x), np.round(y)
    out = C.correlate(x, y)
    assert set(out) == set(C.METHODS) == set(SCIPY)
    for method, fn in SCIPY.items():
        res = fn(x, y)
        assert out[method][0] == res.statistic and _same(out[method][1], res.pvalue)
    assert np.isnan(out["weightedtau"][1])  # weightedtau has no p-value


def test_correlate_kendall_is_tau_b():
    x = np.array([1, 1, 2, 3, 4, 4, 5.0])
    y = np.array([2, 1, 1, 3, 5, 4, 4.0])
    assert C.correlate(x, y)["kendall"][0] == stats.kendalltau(x, y, variant="b").statistic
    assert C.correlate(x, y)["kendall"][0] != stats.kendalltau(x, y, variant="c").statistic


def test_correlate_constant_input_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = C.correlate([1, 2, 3, 4], [5, 5, 5, 5])
        out2 = C.correlate([7, 7, 7], [1, 2, 3])
    for res in (out, out2):
        for method in C.METHODS:
            assert np.isnan(res[method][0]) and np.isnan(res[method][1])


def test_correlate_drops_nonfinite_pairs_and_small_n():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    y = np.array([2.0, 1.0, 3.0, np.nan, 7.0])
    out = C.correlate(x, y)
    # complete pairs: (1, 2), (2, 1), (5, 7): n = 3, enough
    for method, fn in SCIPY.items():
        ref = fn([1.0, 2.0, 5.0], [2.0, 1.0, 7.0])
        assert out[method][0] == ref.statistic
        assert _same_p(out[method][1], _reference_p(method, [1.0, 2.0, 5.0], [2.0, 1.0, 7.0]))
    assert np.isnan(C.correlate([1.0, 2.0], [2.0, 1.0])["kendall"][0])


# --------------------------------------------------------------------------------------------
# bootstrap_indices, vectorized_stat


def test_bootstrap_indices():
    idx = C.bootstrap_indices(7, 50, 3)
    assert idx.shape == (50, 7)
    assert np.issubdtype(idx.dtype, np.integer)
    np.testing.assert_array_equal(idx, np.random.default_rng(3).integers(0, 7, (50, 7)))
    np.testing.assert_array_equal(idx, C.bootstrap_indices(7, 50, 3))
    assert not np.array_equal(idx, C.bootstrap_indices(7, 50, 4))
    assert idx.min() >= 0 and idx.max() <= 6


def _resamples_with_ties(n=9, n_resamples=300, seed=5):
    rng = np.random.default_rng(seed)
    x0 = np.round(rng.normal(size=n) * 2)  # ties already in the data
    y0 = np.round(x0 + rng.normal(size=n) * 2)
    idx = C.bootstrap_indices(n, n_resamples, seed)
    xs, ys = x0[idx], y0[idx]
    # degenerate rows: constant x, constant y, both constant
    xs[0] = 3.0
    ys[1] = -1.0
    xs[2] = ys[2] = 0.5
    # a constant row whose mean is inexact in floating point (9 x 61.7 / 9 != 61.7)
    xs[3] = 61.7
    assert (xs[3] - xs[3].mean()).any()
    return xs, ys


@pytest.mark.parametrize("method", C.METHODS)
def test_vectorized_stat_equals_scipy_row_by_row(method):
    xs, ys = _resamples_with_ties()
    got = C.vectorized_stat(method, xs, ys)
    assert got.shape == (xs.shape[0],)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.array([_scipy_or_nan(method, a, b) for a, b in zip(xs, ys)])
    assert np.isnan(got[:4]).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12, equal_nan=True)
    # ties are indeed present in most resamples
    assert np.mean([len(np.unique(r)) < r.size for r in xs]) > 0.9


@pytest.mark.parametrize("method", C.METHODS)
def test_vectorized_stat_kendall_chunking(method, monkeypatch):
    xs, ys = _resamples_with_ties(n=6, n_resamples=101)
    full = C.vectorized_stat(method, xs, ys)
    monkeypatch.setattr(C, "_KENDALL_CHUNK_ELEMENTS", 36 * 7)  # chunks of 7 rows
    np.testing.assert_array_equal(C.vectorized_stat(method, xs, ys), full)


def test_vectorized_stat_perfect_and_reversed():
    x = np.tile(np.arange(6.0), (2, 1))
    y = np.vstack([np.arange(6.0) ** 3, -np.arange(6.0)])
    np.testing.assert_allclose(C.vectorized_stat("kendall", x, y), [1.0, -1.0])
    np.testing.assert_allclose(C.vectorized_stat("spearman", x, y), [1.0, -1.0])
    np.testing.assert_allclose(C.vectorized_stat("weightedtau", x, y), [1.0, -1.0])
    with pytest.raises(ValueError):
        C.vectorized_stat("tau", x, y)


@pytest.mark.parametrize("n", [3, 7, 12, 40, 130])
def test_weightedtau_vectorised_equals_scipy_on_bootstrap_resamples(n):
    """Row by row against scipy.stats.weightedtau on resamples of data that has ties of its own:
    ties in x only, in y only and in both (a model drawn twice), and degenerate rows."""
    rng = np.random.default_rng(n)
    worst = 0.0
    for levels in (2, 5, None):
        x0 = rng.normal(size=n)
        y0 = x0 + rng.normal(size=n)
        if levels:
            x0 = np.round(x0 * levels)
            y0 = np.round(y0 * levels)
        n_resamples = 40 if n > 100 else 400
        idx = C.bootstrap_indices(n, n_resamples, n + 1)
        xs, ys = x0[idx], y0[idx]
        got = C.vectorized_stat("weightedtau", xs, ys)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = np.array([_scipy_or_nan("weightedtau", a, b) for a, b in zip(xs, ys)])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12, equal_nan=True)
        worst = max(worst, np.nanmax(np.abs(got - ref), initial=0.0))
        # symmetric, as scipy's rank=True (the mean of the two lexicographic rankings)
        np.testing.assert_allclose(C.vectorized_stat("weightedtau", ys, xs), got, atol=1e-14)
        # joint ties (repeated models) in most resamples (all distinct: n! / n^n of them)
        assert np.mean([len({*zip(a, b)}) < n for a, b in zip(xs, ys)]) > 0.7
    assert worst < 1e-12


def test_weightedtau_rows_with_mixed_ties_and_degenerate_rows():
    xs, ys = _resamples_with_ties()
    # ties in x broken by y in opposite directions, and the same with x and y exchanged
    xs[4], ys[4] = [1, 1, 1, 2, 2, 3, 3, 3, 0], [5, 4, 3, 3, 9, 1, 2, 2, 0]
    xs[5], ys[5] = ys[4], xs[4]
    got = C.vectorized_stat("weightedtau", xs, ys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.array([_scipy_or_nan("weightedtau", a, b) for a, b in zip(xs, ys)])
    assert np.isnan(got[:4]).all()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12, equal_nan=True)


def test_weightedtau_weighs_the_top():
    # one swapped pair: at the top it costs the weighted tau more than at the bottom, while
    # Kendall's tau does not see a difference
    x = np.arange(10.0)
    top = x.copy()
    top[[8, 9]] = top[[9, 8]]
    bottom = x.copy()
    bottom[[0, 1]] = bottom[[1, 0]]
    assert C.correlate(x, top)["kendall"][0] == C.correlate(x, bottom)["kendall"][0]
    assert C.correlate(x, top)["weightedtau"][0] < C.correlate(x, bottom)["weightedtau"][0] < 1
    got = C.vectorized_stat("weightedtau", np.vstack([x, x]), np.vstack([top, bottom]))
    np.testing.assert_allclose(
        got,
        [stats.weightedtau(x, top).statistic, stats.weightedtau(x, bottom).statistic],
        atol=1e-14,
    )


# --------------------------------------------------------------------------------------------
# regret_at_1


def test_regret_at_1_hand_computed():
    # x picks the third model (y 20); the best y is 30
    assert C.regret_at_1([1, 2, 3], [10, 30, 20]) == 10.0
    # x's first choice is the best in y
    assert C.regret_at_1([1, 2, 3], [10, 20, 30]) == 0.0
    # ties for x's first place: the mean y of the tied models (10 and 20 -> 15)
    assert C.regret_at_1([3, 3, 1], [10, 20, 30]) == 15.0
    assert C.regret_at_1([3, 3, 3], [10, 20, 30]) == 10.0  # constant x: best - mean
    # a lower-is-better x: its first choice is the smallest x
    x, y = [0.1, 0.5, 0.3], [50.0, 40.0, 45.0]
    assert C.regret_at_1(x, y, x_direction=-1) == 0.0
    assert C.regret_at_1(x, y) == 10.0
    assert C.regret_at_1([0.2, 0.2, 0.9], [41.0, 44.0, 50.0], x_direction=-1) == 7.5
    # a lower-is-better y (an error rate): the best is the smallest
    assert C.regret_at_1([1, 2, 3], [5.0, 3.0, 9.0], y_direction=-1) == 6.0
    # pairs with a missing value are dropped: models 2 and 3 remain, x picks model 3
    assert C.regret_at_1([np.nan, 1, 2], [100, 5, 3]) == 2.0
    assert np.isnan(C.regret_at_1([np.nan, 1], [1, np.nan]))
    with pytest.raises(ValueError, match="direction"):
        C.regret_at_1([1, 2], [1, 2], x_direction=0)
    with pytest.raises(ValueError, match="differ"):
        C.regret_at_1([1, 2], [1, 2, 3])


# --------------------------------------------------------------------------------------------
# correlation_table on a hand-made table

MODELS = {
    # model: (backbone, paradigm, quality)
    "m1": ("resnet", "discriminative", 0.0),
    "m2": ("resnet", "discriminative", 1.0),
    "m3": ("resnet", "generative", 2.5),
    "m4": ("resnet", "discriminative", 2.0),
    "m5": ("vit", "generative", 4.0),
    "m6": ("vit", "discriminative", 3.0),
}
DATASETS = {
    # dataset: (domain, shift_group, protocol-arms)
    "inet": (
        "id",
        "in_domain",
        [("knn", "raw"), ("knn", "bn"), ("linear", "raw"), ("linear", "bn"), ("finetune", "raw")],
    ),
    "ood_a": (
        "ood",
        "same_label_shift",
        [("knn", "raw"), ("knn", "bn"), ("linear", "raw"), ("linear", "bn")],
    ),
    "ood_b": (
        "ood",
        "same_label_shift",
        [("knn", "raw"), ("knn", "bn"), ("linear", "raw"), ("linear", "bn")],
    ),
    "ood_c": ("ood", "new_label", [("knn", "raw"), ("knn", "bn")]),
}


def make_table(drop=()):
    rng = np.random.default_rng(0)
    rows = []
    for (model, (backbone, paradigm, q)), (ds, (domain, group, pas)) in itertools.product(
        MODELS.items(), DATASETS.items()
    ):
        for protocol, arm in pas:
            if (model, ds, protocol, arm) in drop:
                continue
            top1 = 50 + 5 * q + rng.normal(0, 4) + (2 if arm == "bn" else 0)
            rows.append(
                {
                    "model": model,
                    "method": model.upper(),
                    "backbone": backbone,
                    "paradigm": paradigm,
                    "dataset": ds,
                    "domain": domain,
                    "shift_group": group,
                    "protocol": protocol,
                    "arm": arm,
                    "top1": round(top1),
                    "top5": np.nan,
                    "source": "synthetic",
                }
            )
    # shuffle: the output must not depend on the input row order
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)


def vec(acc, ds, protocol, arm, models=None):
    sel = acc[(acc.dataset == ds) & (acc.protocol == protocol) & (acc.arm == arm)]
    s = sel.set_index("model")["top1"].astype(float).sort_index()
    return s if models is None else s.reindex(models)


B, SEED = 200, 11


@pytest.fixture(scope="module")
def acc():
    return make_table()


@pytest.fixture(scope="module")
def corr(acc):
    return C.correlation_table(acc, n_resamples=B, seed=SEED, min_subset=4)


def _one(corr, **kw):
    sel = corr
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, kw
    return sel.iloc[0]


def test_columns(corr):
    assert list(corr.columns[: len(C.COLUMNS)]) == list(C.COLUMNS)
    assert list(corr.columns) == [*C.COLUMNS, *C.EXTRA_COLUMNS]
    # the columns of before, in their order, then regret_at_1 and the missing-value policy
    assert list(corr.columns) == [
        *OLD_COLUMNS,
        "regret_at_1",
        "missing",
        "p_method",
        *C.EXTRA_COLUMNS[C.EXTRA_COLUMNS.index("baseline") :],
    ]
    assert set(corr["missing"]) == {"pairwise"}
    assert set(corr["p_method"]) <= {"permutation", "scipy", "none"}
    assert set(corr.loc[corr["method"] == "weightedtau", "p_method"]) == {"none"}
    assert corr["n"].dtype.kind == "i"
    assert corr["regret_at_1"].dtype.kind == "f"
    assert list(C.METHODS) == [*OLD_METHODS, "weightedtau"]
    assert list(corr["method"].unique()) == list(C.METHODS)


def test_old_methods_unchanged_by_weightedtau(acc, corr, monkeypatch):
    """The kendall/spearman/pearson rows are those of the table computed without weightedtau
    (the code path before it: the same engine with the three methods), regret_at_1 dropped
    there and here."""
    monkeypatch.setattr(C, "METHODS", OLD_METHODS)
    old = C.correlation_table(acc, n_resamples=B, seed=SEED, min_subset=4)
    assert set(old["method"]) == set(OLD_METHODS)
    new = corr[corr.method != "weightedtau"].reset_index(drop=True)
    pd.testing.assert_frame_equal(new[OLD_COLUMNS], old[OLD_COLUMNS])
    pd.testing.assert_series_equal(new["regret_at_1"], old["regret_at_1"])


def test_weightedtau_rows(acc, corr):
    wt = corr[corr.method == "weightedtau"]
    assert len(wt) == len(corr) / len(C.METHODS)
    assert wt["p_value"].isna().all()
    assert wt["value"].notna().all() and wt["ci_low"].notna().all()
    assert ((wt.ci_low <= wt.value + 1e-12) | (wt.y_kind.isin(["mean", "group"]))).all()
    assert (wt.ci_low <= wt.ci_high).all()


def test_uncached_chunked_path_gives_the_same_table(acc, corr, monkeypatch):
    # sign arrays too big to cache: vectorized_stat's chunks, without the engine's cache
    monkeypatch.setattr(C, "_KENDALL_CHUNK_ELEMENTS", 6 * 6 * 7)
    pd.testing.assert_frame_equal(
        C.correlation_table(acc, n_resamples=B, seed=SEED, min_subset=4), corr
    )


def test_exact_row_set(corr):
    # x: 5 in-domain (protocol, arm); pairs C(5, 2) = 10
    # dataset rows: 5 x (4 + 4 + 2) = 50; mean_ood: 5 x 4 = 20
    # group same_label_shift: 5 x 4 = 20; group new_label: 5 x 2 = 10  -> 110 per subset/method
    # subsets: all, backbone=resnet (4 models), paradigm=discriminative (4); vit/generative: 2
    assert sorted(corr["subset"].unique()) == ["all", "backbone=resnet", "paradigm=discriminative"]
    assert len(corr) == 110 * 3 * 4  # 4 methods
    per = corr[(corr.subset == "all") & (corr.method == "kendall")]
    assert per.groupby("y_kind").size().to_dict() == {
        "pair": 10,
        "dataset": 50,
        "mean": 20,
        "group": 30,
    }
    assert set(per["y_dataset"]) == {
        "inet",
        "ood_a",
        "ood_b",
        "ood_c",
        "mean_ood",
        "group:same_label_shift",
        "group:new_label",
    }
    assert (per["x_dataset"] == "inet").all()
    keys = ["x_protocol", "x_arm", "y_protocol", "y_arm", "y_dataset", "subset", "method"]
    assert not corr.duplicated(keys).any()
    # finetune only in domain: never a y off the in-domain set
    assert not ((corr.y_protocol == "finetune") & (corr.y_dataset != "inet")).any()
    assert len(per[(per.x_protocol == "finetune") & (per.y_kind == "dataset")]) == 10
    # ood_c has knn only
    assert set(per.loc[per.y_dataset == "ood_c", "y_protocol"]) == {"knn"}
    assert set(per.loc[per.y_dataset == "group:new_label", "y_protocol"]) == {"knn"}


def test_pair_order_is_canonical(corr):
    order = [
        ("knn", "raw"),
        ("knn", "bn"),
        ("linear", "raw"),
        ("linear", "bn"),
        ("finetune", "raw"),
    ]
    pairs = corr[(corr.y_kind == "pair") & (corr.subset == "all") & (corr.method == "pearson")]
    got = list(zip(zip(pairs.x_protocol, pairs.x_arm), zip(pairs.y_protocol, pairs.y_arm)))
    assert got == list(itertools.combinations(order, 2))
    assert C.order_protocol_arms(
        [
            ("zeta", "raw"),
            ("alpha", "bn"),
            ("fewshot1", "raw"),
            ("linear_online", "bn"),
            ("knn", "bn"),
            ("knn", "raw"),
            ("fewshot10", "raw"),
            ("alpha", "raw"),
        ]
    ) == [
        ("knn", "raw"),
        ("knn", "bn"),
        ("linear_online", "bn"),
        ("fewshot10", "raw"),
        ("fewshot1", "raw"),
        ("alpha", "raw"),
        ("alpha", "bn"),
        ("zeta", "raw"),
    ]


@pytest.mark.parametrize("method", C.METHODS)
def test_point_estimates_equal_scipy(acc, corr, method):
    x = vec(acc, "inet", "knn", "bn")
    y = vec(acc, "inet", "finetune", "raw")
    row = _one(
        corr,
        y_kind="pair",
        subset="all",
        method=method,
        x_protocol="knn",
        x_arm="bn",
        y_protocol="finetune",
        y_arm="raw",
    )
    ref = SCIPY[method](x.to_numpy(), y.to_numpy())
    assert row["n"] == 6
    assert row["value"] == ref.statistic
    assert _same_p(row["p_value"], _reference_p(method, x.to_numpy(), y.to_numpy()))
    assert row["p_method"] == ("none" if method == "weightedtau" else "permutation")

    # an OOD row, in a subset
    resnet = [m for m, v in MODELS.items() if v[0] == "resnet"]
    x = vec(acc, "inet", "linear", "raw", resnet)
    y = vec(acc, "ood_b", "knn", "bn", resnet)
    row = _one(
        corr,
        y_kind="dataset",
        subset="backbone=resnet",
        method=method,
        x_protocol="linear",
        x_arm="raw",
        y_protocol="knn",
        y_arm="bn",
        y_dataset="ood_b",
    )
    ref = SCIPY[method](x.to_numpy(), y.to_numpy())
    assert row["n"] == 4
    assert row["value"] == ref.statistic
    assert _same_p(row["p_value"], _reference_p(method, x.to_numpy(), y.to_numpy()))
    assert row["y_shift_group"] == "same_label_shift"


def test_mean_and_group_rows_are_means_of_dataset_rows(corr):
    sel = corr[
        (corr.subset == "all")
        & (corr.method == "spearman")
        & (corr.x_protocol == "knn")
        & (corr.x_arm == "raw")
        & (corr.y_protocol == "knn")
        & (corr.y_arm == "raw")
    ]
    per_ds = sel[sel.y_kind == "dataset"].set_index("y_dataset")["value"]
    assert set(per_ds.index) == {"ood_a", "ood_b", "ood_c"}
    mean = sel[sel.y_dataset == "mean_ood"].iloc[0]
    assert mean["value"] == pytest.approx(per_ds.mean(), abs=1e-15)
    assert np.isnan(mean["p_value"]) and mean["n_datasets"] == 3
    grp = sel[sel.y_dataset == "group:same_label_shift"].iloc[0]
    assert grp["value"] == pytest.approx((per_ds["ood_a"] + per_ds["ood_b"]) / 2, abs=1e-15)
    assert grp["n_datasets"] == 2 and np.isnan(grp["p_value"])
    # linear y exists on ood_a and ood_b only -> mean over those two
    sel = corr[
        (corr.subset == "all")
        & (corr.method == "kendall")
        & (corr.x_protocol == "knn")
        & (corr.x_arm == "bn")
        & (corr.y_protocol == "linear")
        & (corr.y_arm == "bn")
    ]
    per_ds = sel[sel.y_kind == "dataset"].set_index("y_dataset")["value"]
    assert set(per_ds.index) == {"ood_a", "ood_b"}
    mean = sel[sel.y_dataset == "mean_ood"].iloc[0]
    assert mean["value"] == pytest.approx(per_ds.mean(), abs=1e-15)
    assert mean["n_datasets"] == 2


def _oracle_regret(x: pd.Series, y: pd.Series, x_dir=1, y_dir=1) -> float:
    """Hand-rolled: the models x ranks first (ties: all of them), their mean y, against the
    best y, with pandas on the models having both values."""
    both = pd.concat({"x": x * x_dir, "y": y * y_dir}, axis=1).dropna()
    chosen = both.loc[both.x == both.x.max(), "y"].mean()
    return both.y.max() - chosen


def test_regret_rows_equal_hand_computed(acc, corr):
    resnet = [m for m, v in MODELS.items() if v[0] == "resnet"]
    cases = [
        (
            dict(
                y_kind="pair",
                subset="all",
                x_protocol="knn",
                x_arm="bn",
                y_protocol="finetune",
                y_arm="raw",
            ),
            "inet",
            None,
        ),
        (
            dict(
                y_kind="dataset",
                subset="backbone=resnet",
                x_protocol="linear",
                x_arm="raw",
                y_protocol="knn",
                y_arm="bn",
                y_dataset="ood_b",
            ),
            "ood_b",
            resnet,
        ),
    ]
    seen = []
    for sel, y_ds, models in cases:
        x = vec(acc, "inet", sel["x_protocol"], sel["x_arm"], models)
        y = vec(acc, y_ds, sel["y_protocol"], sel["y_arm"], models)
        want = _oracle_regret(x, y)
        for method in C.METHODS:
            row = _one(corr, method=method, **sel)
            assert row["regret_at_1"] == pytest.approx(want, abs=1e-12)
        seen.append(want)
    assert max(seen) > 0  # not only trivial cases
    # every per-data-set row of all models
    rows = corr[(corr.method == "kendall") & (corr.subset == "all") & (corr.y_kind == "dataset")]
    for row in rows.itertuples():
        x = vec(acc, "inet", row.x_protocol, row.x_arm)
        y = vec(acc, row.y_dataset, row.y_protocol, row.y_arm)
        assert row.regret_at_1 == pytest.approx(_oracle_regret(x, y), abs=1e-12)
    assert (rows["regret_at_1"] >= 0).all()


def test_regret_rows_with_a_tie_for_first_place(acc):
    # m5 and m6 tie for the first place in in-domain kNN (raw): their mean y counts
    acc = acc.copy()
    top = (acc.dataset == "inet") & (acc.protocol == "knn") & (acc.arm == "raw")
    acc.loc[top & acc.model.isin(["m5", "m6"]), "top1"] = 99.0
    corr = C.correlation_table(acc, n_resamples=20, seed=0, subsets=())
    x = vec(acc, "inet", "knn", "raw")
    for y_ds, yp, ya in [
        ("inet", "linear", "raw"),
        ("ood_a", "linear", "bn"),
        ("ood_c", "knn", "bn"),
    ]:
        y = vec(acc, y_ds, yp, ya)
        assert y["m5"] != y["m6"]
        want = y.max() - (y["m5"] + y["m6"]) / 2
        assert want == pytest.approx(_oracle_regret(x, y))
        row = _one(
            corr,
            method="spearman",
            x_protocol="knn",
            x_arm="raw",
            y_protocol=yp,
            y_arm=ya,
            y_dataset=y_ds,
        )
        assert row["regret_at_1"] == pytest.approx(want, abs=1e-12)


def test_regret_mean_rows_are_means_of_dataset_rows(corr):
    sel = corr[
        (corr.subset == "all")
        & (corr.method == "weightedtau")
        & (corr.x_protocol == "linear")
        & (corr.x_arm == "bn")
        & (corr.y_protocol == "knn")
        & (corr.y_arm == "raw")
    ]
    per_ds = sel[sel.y_kind == "dataset"].set_index("y_dataset")["regret_at_1"]
    mean = sel[sel.y_dataset == "mean_ood"].iloc[0]
    assert mean["regret_at_1"] == pytest.approx(per_ds.mean(), abs=1e-12)
    grp = sel[sel.y_dataset == "group:same_label_shift"].iloc[0]
    assert grp["regret_at_1"] == pytest.approx((per_ds["ood_a"] + per_ds["ood_b"]) / 2, abs=1e-12)
    # the same value on every method's row of an (x, y, subset)
    keys = ["x_protocol", "x_arm", "y_protocol", "y_arm", "y_dataset", "subset"]
    assert (corr.groupby(keys)["regret_at_1"].nunique(dropna=False) == 1).all()


def test_regret_directions(acc, corr):
    # knn declared lower-is-better: x's choice and the best y follow it; coefficients do not
    flipped = C.correlation_table(
        acc, n_resamples=B, seed=SEED, min_subset=4, directions={"knn": -1}
    )
    pd.testing.assert_frame_equal(
        flipped.drop(columns="regret_at_1"), corr.drop(columns="regret_at_1")
    )
    for xp, xa, yp, ya, ds in [
        ("knn", "raw", "linear", "bn", "ood_a"),
        ("linear", "raw", "knn", "bn", "ood_b"),
        ("knn", "bn", "knn", "raw", "ood_c"),
    ]:
        row = _one(
            flipped,
            method="kendall",
            subset="all",
            x_protocol=xp,
            x_arm=xa,
            y_protocol=yp,
            y_arm=ya,
            y_dataset=ds,
        )
        want = _oracle_regret(
            vec(acc, "inet", xp, xa),
            vec(acc, ds, yp, ya),
            x_dir=-1 if xp == "knn" else 1,
            y_dir=-1 if yp == "knn" else 1,
        )
        assert row["regret_at_1"] == pytest.approx(want, abs=1e-12)
    # unaffected: x and y both accuracies of other protocols
    same = (corr.x_protocol != "knn") & (corr.y_protocol != "knn")
    pd.testing.assert_series_equal(flipped.loc[same, "regret_at_1"], corr.loc[same, "regret_at_1"])
    assert not np.allclose(flipped.loc[~same, "regret_at_1"], corr.loc[~same, "regret_at_1"])
    with pytest.raises(ValueError, match="directions"):
        C.correlation_table(acc, n_resamples=10, seed=0, directions={"knn": 2})


def _oracle_ci(samples, ci=0.95):
    return np.nanpercentile(samples, [50 * (1 - ci), 100 - 50 * (1 - ci)])


def test_ci_equals_hand_rolled_bootstrap(acc, corr):
    models = sorted(MODELS)
    idx = np.random.default_rng(SEED).integers(0, len(models), (B, len(models)))
    x = vec(acc, "inet", "knn", "raw").to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a pair row
        y = vec(acc, "inet", "linear", "bn").to_numpy()
        for method in C.METHODS:
            samples = [_scipy_or_nan(method, x[i], y[i]) for i in idx]
            row = _one(
                corr,
                y_kind="pair",
                subset="all",
                method=method,
                x_protocol="knn",
                x_arm="raw",
                y_protocol="linear",
                y_arm="bn",
            )
            np.testing.assert_allclose([row.ci_low, row.ci_high], _oracle_ci(samples), atol=1e-12)
            assert row.ci_low <= row.ci_high
        # the mean over OOD data sets: same indices for every data set, mean per resample
        ys = {d: vec(acc, d, "knn", "bn").to_numpy() for d in ("ood_a", "ood_b", "ood_c")}
        for method in C.METHODS:
            per = np.array([[_scipy_or_nan(method, x[i], ys[d][i]) for i in idx] for d in ys])
            for label, members in [
                ("mean_ood", [0, 1, 2]),
                ("group:same_label_shift", [0, 1]),
                ("group:new_label", [2]),
            ]:
                row = _one(
                    corr,
                    y_dataset=label,
                    subset="all",
                    method=method,
                    x_protocol="knn",
                    x_arm="raw",
                    y_protocol="knn",
                    y_arm="bn",
                )
                np.testing.assert_allclose(
                    [row.ci_low, row.ci_high], _oracle_ci(per[members].mean(axis=0)), atol=1e-12
                )
        # a subset: indices drawn for its own n
        sub = [m for m in models if MODELS[m][1] == "discriminative"]
        pos = [models.index(m) for m in sub]
        idx4 = np.random.default_rng(SEED).integers(0, 4, (B, 4))
        y = vec(acc, "ood_a", "linear", "raw").to_numpy()
        samples = [_scipy_or_nan("kendall", x[pos][i], y[pos][i]) for i in idx4]
    row = _one(
        corr,
        y_dataset="ood_a",
        subset="paradigm=discriminative",
        method="kendall",
        x_protocol="knn",
        x_arm="raw",
        y_protocol="linear",
        y_arm="raw",
    )
    np.testing.assert_allclose([row.ci_low, row.ci_high], _oracle_ci(samples), atol=1e-12)


def test_ci_ordered_and_reproducible(acc, corr):
    finite = corr.dropna(subset=["ci_low", "ci_high"])
    assert len(finite) > 0.9 * len(corr)
    assert (finite.ci_low <= finite.ci_high).all()
    again = C.correlation_table(acc, n_resamples=B, seed=SEED, min_subset=4)
    pd.testing.assert_frame_equal(corr, again)
    other = C.correlation_table(acc, n_resamples=B, seed=SEED + 1, min_subset=4)
    pd.testing.assert_series_equal(corr["value"], other["value"])
    assert not np.allclose(corr["ci_low"], other["ci_low"], equal_nan=True)


def test_missing_values_drop_models_and_small_n_is_nan():
    acc = make_table(drop={("m1", "ood_a", "linear", "bn"), ("m2", "inet", "knn", "raw")})
    corr = C.correlation_table(acc, n_resamples=50, seed=0, min_subset=4, subsets=("backbone",))
    row = _one(
        corr,
        y_dataset="ood_a",
        subset="all",
        method="pearson",
        x_protocol="knn",
        x_arm="raw",
        y_protocol="linear",
        y_arm="bn",
    )
    keep = [m for m in sorted(MODELS) if m not in ("m1", "m2")]
    ref = stats.pearsonr(
        vec(acc, "inet", "knn", "raw", keep), vec(acc, "ood_a", "linear", "bn", keep)
    )
    assert row["n"] == 4 and row["value"] == ref.statistic
    x = vec(acc, "inet", "knn", "raw", keep)
    assert _same_p(
        row["p_value"], _reference_p("pearson", x, vec(acc, "ood_a", "linear", "bn", keep))
    )
    # in the resnet subset (m1..m4) only m3 and m4 remain: n = 2 -> NaN
    row = _one(
        corr,
        y_dataset="ood_a",
        subset="backbone=resnet",
        method="kendall",
        x_protocol="knn",
        x_arm="raw",
        y_protocol="linear",
        y_arm="bn",
    )
    assert row["n"] == 2
    assert np.isnan([row.value, row.p_value, row.ci_low, row.ci_high, row.regret_at_1]).all()


def test_min_subset_threshold(acc):
    corr = C.correlation_table(acc, n_resamples=20, seed=0, min_subset=2)
    assert sorted(corr["subset"].unique()) == [
        "all",
        "backbone=resnet",
        "backbone=vit",
        "paradigm=discriminative",
        "paradigm=generative",
    ]
    corr = C.correlation_table(acc, n_resamples=20, seed=0, min_subset=5, subsets=["paradigm"])
    assert list(corr["subset"].unique()) == ["all"]


def test_constant_column_gives_nan_row(acc):
    acc = acc.copy()
    acc.loc[(acc.dataset == "ood_c") & (acc.protocol == "knn") & (acc.arm == "raw"), "top1"] = 40.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        corr = C.correlation_table(acc, n_resamples=30, seed=0, subsets=())
    row = _one(
        corr,
        y_dataset="ood_c",
        method="kendall",
        x_protocol="knn",
        x_arm="raw",
        y_protocol="knn",
        y_arm="raw",
    )
    assert np.isnan([row.value, row.p_value, row.ci_low, row.ci_high]).all()
    # the mean skips the NaN data set
    sel = corr[
        (corr.method == "kendall")
        & (corr.x_protocol == "knn")
        & (corr.x_arm == "raw")
        & (corr.y_protocol == "knn")
        & (corr.y_arm == "raw")
    ]
    per = sel[sel.y_kind == "dataset"].set_index("y_dataset")["value"]
    mean = sel[sel.y_dataset == "mean_ood"].iloc[0]
    assert mean["value"] == pytest.approx((per["ood_a"] + per["ood_b"]) / 2)
    assert mean["n_datasets"] == 2


@pytest.mark.parametrize("n_id", [0, 2])
def test_needs_exactly_one_id_dataset(acc, n_id):
    acc = acc.copy()
    if n_id == 0:
        acc.loc[acc.dataset == "inet", "domain"] = "ood"
    else:
        acc.loc[acc.dataset == "ood_c", "domain"] = "id"
    with pytest.raises(ValueError, match="ood_c") as info:
        C.correlation_table(acc, n_resamples=10, seed=0)
    assert "inet" in str(info.value)


def test_duplicate_measurements_rejected(acc):
    acc = pd.concat([acc, acc.iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="several rows"):
        C.correlation_table(acc, n_resamples=10, seed=0)


# --------------------------------------------------------------------------------------------
# proxies in the analysis


def _proxy_table(acc, seed=3):
    """Proxy rows (results/tables/proxies.csv columns) for every model and data set of acc."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, ds in acc[["model", "dataset"]].drop_duplicates().itertuples(index=False):
        for proxy, arm in itertools.product(("logme", "nc1"), ("raw", "bn")):
            rows.append(
                {
                    "model": model,
                    "dataset": ds,
                    "split": "train",
                    "proxy": proxy,
                    "arm": arm,
                    "value": float(rng.normal()),
                    "n_samples": 50,
                    "seed": 0,
                }
            )
    return pd.DataFrame(rows)


def test_proxies_are_x_of_every_accuracy_and_never_y_on_ood(acc):
    proxies = _proxy_table(acc)
    merged = C.with_proxies(acc, proxies)
    assert len(merged) == len(acc) + len(proxies)
    row = merged[(merged.protocol == "nc1")].iloc[0]
    assert row["domain"] in ("id", "ood") and isinstance(row["backbone"], str)
    corr = C.correlation_table(
        merged,
        n_resamples=50,
        seed=SEED,
        min_subset=4,
        directions={"logme": 1, "nc1": -1},
        proxies=("logme", "nc1"),
    )
    # the accuracy rows are those of the table without proxies
    plain = C.correlation_table(acc, n_resamples=50, seed=SEED, min_subset=4)
    is_proxy = corr.x_protocol.isin(["logme", "nc1"]) | corr.y_protocol.isin(["logme", "nc1"])
    pd.testing.assert_frame_equal(corr[~is_proxy].reset_index(drop=True), plain)
    # a proxy is never y of an OOD data set, and is x of every in-domain pair with an accuracy
    assert not corr[corr.y_protocol.isin(["logme", "nc1"]) & (corr.y_kind != "pair")].shape[0]
    id_ds = C.identify_datasets(acc)[0]
    pairs = corr[(corr.y_kind == "pair") & (corr.method == "kendall") & (corr.subset == "all")]
    with_acc = pairs[
        pairs.x_protocol.isin(["logme", "nc1"]) ^ pairs.y_protocol.isin(["logme", "nc1"])
    ]
    assert with_acc.x_protocol.isin(["logme", "nc1"]).all()
    # values against scipy, and the regret by the lower-better proxy
    r = _one(
        corr,
        x_protocol="nc1",
        x_arm="bn",
        y_protocol="linear",
        y_arm="bn",
        y_dataset=id_ds,
        method="kendall",
        subset="all",
    )
    x = vec(merged, id_ds, "nc1", "bn")
    y = vec(merged, id_ds, "linear", "bn")
    assert r["value"] == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert r["regret_at_1"] == pytest.approx(y.max() - y[x.idxmin()])
    # transfer rows: the proxy on an OOD set with that set's accuracies, per data set
    transfer = corr[
        (corr.y_kind == "transfer") & (corr.method == "spearman") & (corr.subset == "all")
    ]
    assert set(transfer.x_protocol) == {"logme", "nc1"}
    assert (transfer.x_dataset == transfer.y_dataset).all() and id_ds not in set(transfer.x_dataset)
    t = transfer.iloc[0]
    xs = vec(merged, t.x_dataset, t.x_protocol, t.x_arm)
    ys = vec(merged, t.y_dataset, t.y_protocol, t.y_arm)
    assert t["value"] == pytest.approx(stats.spearmanr(xs, ys).statistic, abs=1e-12)
    with pytest.raises(ValueError, match="unknown proxies \\['svd'\\]"):
        C.with_proxies(acc, proxies.assign(proxy="svd"))


def test_listwise_drops_a_model_missing_any_measurement_pairwise_keeps_it():
    acc = make_table()
    # model m? lacks one OOD measurement: pairwise keeps it everywhere else, listwise drops it
    victim = sorted(acc.model.unique())[0]
    ood = acc[(acc.domain == "ood")].dataset.iloc[0]
    one = acc[(acc.model == victim) & (acc.dataset == ood)].iloc[0]
    acc = acc.drop(index=one.name)
    pair = C.correlation_table(acc, n_resamples=30, seed=SEED, min_subset=4)
    listw = C.correlation_table(acc, n_resamples=30, seed=SEED, min_subset=4, missing="listwise")
    assert set(pair["missing"]) == {"pairwise"} and set(listw["missing"]) == {"listwise"}
    id_ds = C.identify_datasets(acc)[0]
    kw = dict(
        x_protocol="knn",
        x_arm="raw",
        y_protocol="linear",
        y_arm="bn",
        y_dataset=id_ds,
        method="kendall",
        subset="all",
    )
    p, lw = _one(pair, **kw), _one(listw, **kw)
    n_all = acc.model.nunique()
    assert p["n"] == n_all and lw["n"] == n_all - 1
    x = vec(acc, id_ds, "knn", "raw").drop(victim)
    y = vec(acc, id_ds, "linear", "bn").drop(victim)
    assert lw["value"] == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    # the row with the missing value itself: n - 1 either way
    kw = dict(
        x_protocol="knn",
        x_arm="raw",
        y_protocol=one.protocol,
        y_arm=one.arm,
        y_dataset=ood,
        method="kendall",
        subset="all",
    )
    assert _one(pair, **kw)["n"] == _one(listw, **kw)["n"] == n_all - 1
    with pytest.raises(ValueError, match="missing must be one of"):
        C.correlation_table(acc, n_resamples=30, seed=SEED, missing="casewise")


# ----------------------------------------------------------------------------------------------
# exact p-values at small n


@pytest.mark.parametrize("method", ["kendall", "spearman", "pearson"])
def test_three_models_in_perfect_agreement_have_p_one_third(method):
    """n = 3, perfect agreement: of the 3! = 6 pairings two (the identity and the reversal)
    reach |coefficient| = 1, so the exact two-sided p is 2/6; the t-approximation gives 0."""
    x, y = [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]
    value, p = C.correlate(x, y)[method]
    assert value == pytest.approx(1.0) and p == pytest.approx(1 / 3, abs=1e-15)
    assert C.p_method(method, 3) == "permutation"
    assert stats.spearmanr(x, y).pvalue < 1e-6  # what the approximation said


@pytest.mark.parametrize("n", [5, 7, 10])
@pytest.mark.parametrize("method", ["kendall", "spearman", "pearson"])
def test_permutation_p_equals_scipys_exhaustive_permutation_test(method, n):
    """Against scipy.stats.permutation_test over every pairing (n_resamples=inf), statistic
    |coefficient|, 'greater': P(|T| >= |t|); ties in both variables."""
    rng = np.random.default_rng(n)
    x = rng.integers(0, 4, n).astype(float) + rng.choice([0.0, 0.5], n)
    y = 0.4 * x + rng.integers(0, 3, n)
    coefficient = {
        "kendall": lambda a, b: stats.kendalltau(a, b).statistic,
        "spearman": lambda a, b: stats.spearmanr(a, b).statistic,
        "pearson": lambda a, b: stats.pearsonr(a, b).statistic,
    }[method]
    if n == 10:  # scipy's Python loop over 3.6 M pairings takes many minutes: every 97th
        perms = C._permutations(n)[::97]
        sample = np.array([abs(coefficient(x, y[p])) for p in perms])
        assert np.mean(sample >= abs(coefficient(x, y)) - 1e-12) == pytest.approx(
            C.correlate(x, y)[method][1], abs=0.02
        )
        return
    oracle = stats.permutation_test(
        (y,),
        lambda b: abs(coefficient(x, b)),
        permutation_type="pairings",
        n_resamples=np.inf,
        alternative="greater",
    )
    assert C.correlate(x, y)[method][1] == pytest.approx(oracle.pvalue, abs=1e-12)


def test_above_ten_models_the_p_values_are_scipys_and_the_table_says_which():
    rng = np.random.default_rng(11)
    x = rng.normal(size=11)
    y = x + rng.normal(size=11)
    out = C.correlate(x, y)
    assert out["spearman"][1] == stats.spearmanr(x, y).pvalue
    assert out["pearson"][1] == stats.pearsonr(x, y).pvalue
    assert out["kendall"][1] == stats.kendalltau(x, y).pvalue
    assert [C.p_method(m, 11) for m in C.METHODS] == ["scipy", "scipy", "scipy", "none"]
    assert C._permutations(4).shape == (24, 4)
    assert len({tuple(p) for p in C._permutations(6)}) == 720
