"""Tests for workflow_scripts.correlations against scipy.stats and hand-rolled oracles."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from workflow_scripts import correlations as C

SCIPY = {"kendall": stats.kendalltau, "spearman": stats.spearmanr, "pearson": stats.pearsonr}


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
    assert set(out) == set(C.METHODS)
    for method, fn in SCIPY.items():
        res = fn(x, y)
        assert out[method] == (res.statistic, res.pvalue)


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
        assert out[method] == (ref.statistic, ref.pvalue)
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
    with pytest.raises(ValueError):
        C.vectorized_stat("tau", x, y)


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
    "inet": ("id", "in_domain", [("knn", "raw"), ("knn", "bn"), ("linear", "raw"),
                                 ("linear", "bn"), ("finetune", "raw")]),
    "ood_a": ("ood", "same_label_shift", [("knn", "raw"), ("knn", "bn"), ("linear", "raw"),
                                          ("linear", "bn")]),
    "ood_b": ("ood", "same_label_shift", [("knn", "raw"), ("knn", "bn"), ("linear", "raw"),
                                          ("linear", "bn")]),
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
            rows.append({
                "model": model, "method": model.upper(), "backbone": backbone,
                "paradigm": paradigm, "dataset": ds, "domain": domain, "shift_group": group,
                "protocol": protocol, "arm": arm, "top1": round(top1), "top5": np.nan,
                "source": "synthetic",
            })
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
    assert corr["n"].dtype.kind == "i"


def test_exact_row_set(corr):
    # x: 5 in-domain (protocol, arm); pairs C(5, 2) = 10
    # dataset rows: 5 x (4 + 4 + 2) = 50; mean_ood: 5 x 4 = 20
    # group same_label_shift: 5 x 4 = 20; group new_label: 5 x 2 = 10  -> 110 per subset/method
    # subsets: all, backbone=resnet (4 models), paradigm=discriminative (4); vit/generative: 2
    assert sorted(corr["subset"].unique()) == [
        "all", "backbone=resnet", "paradigm=discriminative"]
    assert len(corr) == 110 * 3 * 3
    per = corr[(corr.subset == "all") & (corr.method == "kendall")]
    assert per.groupby("y_kind").size().to_dict() == {
        "pair": 10, "dataset": 50, "mean": 20, "group": 30}
    assert set(per["y_dataset"]) == {
        "inet", "ood_a", "ood_b", "ood_c", "mean_ood", "group:same_label_shift",
        "group:new_label"}
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
    order = [("knn", "raw"), ("knn", "bn"), ("linear", "raw"), ("linear", "bn"),
             ("finetune", "raw")]
    pairs = corr[(corr.y_kind == "pair") & (corr.subset == "all") & (corr.method == "pearson")]
    got = list(zip(zip(pairs.x_protocol, pairs.x_arm), zip(pairs.y_protocol, pairs.y_arm)))
    assert got == list(itertools.combinations(order, 2))
    assert C.order_protocol_arms([("zeta", "raw"), ("alpha", "bn"), ("fewshot1", "raw"),
                                  ("linear_online", "bn"), ("knn", "bn"), ("knn", "raw"),
                                  ("fewshot10", "raw"), ("alpha", "raw")]) == [
        ("knn", "raw"), ("knn", "bn"), ("linear_online", "bn"), ("fewshot10", "raw"),
        ("fewshot1", "raw"), ("alpha", "raw"), ("alpha", "bn"), ("zeta", "raw")]


@pytest.mark.parametrize("method", C.METHODS)
def test_point_estimates_equal_scipy(acc, corr, method):
    x = vec(acc, "inet", "knn", "bn")
    y = vec(acc, "inet", "finetune", "raw")
    row = _one(corr, y_kind="pair", subset="all", method=method, x_protocol="knn", x_arm="bn",
               y_protocol="finetune", y_arm="raw")
    ref = SCIPY[method](x.to_numpy(), y.to_numpy())
    assert row["n"] == 6
    assert row["value"] == ref.statistic and row["p_value"] == ref.pvalue

    # an OOD row, in a subset
    resnet = [m for m, v in MODELS.items() if v[0] == "resnet"]
    x = vec(acc, "inet", "linear", "raw", resnet)
    y = vec(acc, "ood_b", "knn", "bn", resnet)
    row = _one(corr, y_kind="dataset", subset="backbone=resnet", method=method,
               x_protocol="linear", x_arm="raw", y_protocol="knn", y_arm="bn",
               y_dataset="ood_b")
    ref = SCIPY[method](x.to_numpy(), y.to_numpy())
    assert row["n"] == 4
    assert row["value"] == ref.statistic and row["p_value"] == ref.pvalue
    assert row["y_shift_group"] == "same_label_shift"


def test_mean_and_group_rows_are_means_of_dataset_rows(corr):
    sel = corr[(corr.subset == "all") & (corr.method == "spearman") & (corr.x_protocol == "knn")
               & (corr.x_arm == "raw") & (corr.y_protocol == "knn") & (corr.y_arm == "raw")]
    per_ds = sel[sel.y_kind == "dataset"].set_index("y_dataset")["value"]
    assert set(per_ds.index) == {"ood_a", "ood_b", "ood_c"}
    mean = sel[sel.y_dataset == "mean_ood"].iloc[0]
    assert mean["value"] == pytest.approx(per_ds.mean(), abs=1e-15)
    assert np.isnan(mean["p_value"]) and mean["n_datasets"] == 3
    grp = sel[sel.y_dataset == "group:same_label_shift"].iloc[0]
    assert grp["value"] == pytest.approx((per_ds["ood_a"] + per_ds["ood_b"]) / 2, abs=1e-15)
    assert grp["n_datasets"] == 2 and np.isnan(grp["p_value"])
    # linear y exists on ood_a and ood_b only -> mean over those two
    sel = corr[(corr.subset == "all") & (corr.method == "kendall") & (corr.x_protocol == "knn")
               & (corr.x_arm == "bn") & (corr.y_protocol == "linear") & (corr.y_arm == "bn")]
    per_ds = sel[sel.y_kind == "dataset"].set_index("y_dataset")["value"]
    assert set(per_ds.index) == {"ood_a", "ood_b"}
    mean = sel[sel.y_dataset == "mean_ood"].iloc[0]
    assert mean["value"] == pytest.approx(per_ds.mean(), abs=1e-15)
    assert mean["n_datasets"] == 2


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
            row = _one(corr, y_kind="pair", subset="all", method=method, x_protocol="knn",
                       x_arm="raw", y_protocol="linear", y_arm="bn")
            np.testing.assert_allclose([row.ci_low, row.ci_high], _oracle_ci(samples),
                                       atol=1e-12)
            assert row.ci_low <= row.ci_high
        # the mean over OOD data sets: same indices for every data set, mean per resample
        ys = {d: vec(acc, d, "knn", "bn").to_numpy() for d in ("ood_a", "ood_b", "ood_c")}
        for method in C.METHODS:
            per = np.array([[_scipy_or_nan(method, x[i], ys[d][i]) for i in idx] for d in ys])
            for label, members in [("mean_ood", [0, 1, 2]),
                                   ("group:same_label_shift", [0, 1]),
                                   ("group:new_label", [2])]:
                row = _one(corr, y_dataset=label, subset="all", method=method,
                           x_protocol="knn", x_arm="raw", y_protocol="knn", y_arm="bn")
                np.testing.assert_allclose([row.ci_low, row.ci_high],
                                           _oracle_ci(per[members].mean(axis=0)), atol=1e-12)
        # a subset: indices drawn for its own n
        sub = [m for m in models if MODELS[m][1] == "discriminative"]
        pos = [models.index(m) for m in sub]
        idx4 = np.random.default_rng(SEED).integers(0, 4, (B, 4))
        y = vec(acc, "ood_a", "linear", "raw").to_numpy()
        samples = [_scipy_or_nan("kendall", x[pos][i], y[pos][i]) for i in idx4]
    row = _one(corr, y_dataset="ood_a", subset="paradigm=discriminative", method="kendall",
               x_protocol="knn", x_arm="raw", y_protocol="linear", y_arm="raw")
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
    row = _one(corr, y_dataset="ood_a", subset="all", method="pearson", x_protocol="knn",
               x_arm="raw", y_protocol="linear", y_arm="bn")
    keep = [m for m in sorted(MODELS) if m not in ("m1", "m2")]
    ref = stats.pearsonr(vec(acc, "inet", "knn", "raw", keep), vec(acc, "ood_a", "linear", "bn",
                                                                   keep))
    assert row["n"] == 4 and row["value"] == ref.statistic and row["p_value"] == ref.pvalue
    # in the resnet subset (m1..m4) only m3 and m4 remain: n = 2 -> NaN
    row = _one(corr, y_dataset="ood_a", subset="backbone=resnet", method="kendall",
               x_protocol="knn", x_arm="raw", y_protocol="linear", y_arm="bn")
    assert row["n"] == 2
    assert np.isnan([row.value, row.p_value, row.ci_low, row.ci_high]).all()


def test_min_subset_threshold(acc):
    corr = C.correlation_table(acc, n_resamples=20, seed=0, min_subset=2)
    assert sorted(corr["subset"].unique()) == [
        "all", "backbone=resnet", "backbone=vit", "paradigm=discriminative",
        "paradigm=generative"]
    corr = C.correlation_table(acc, n_resamples=20, seed=0, min_subset=5, subsets=["paradigm"])
    assert list(corr["subset"].unique()) == ["all"]


def test_constant_column_gives_nan_row(acc):
    acc = acc.copy()
    acc.loc[(acc.dataset == "ood_c") & (acc.protocol == "knn") & (acc.arm == "raw"),
            "top1"] = 40.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        corr = C.correlation_table(acc, n_resamples=30, seed=0, subsets=())
    row = _one(corr, y_dataset="ood_c", method="kendall", x_protocol="knn", x_arm="raw",
               y_protocol="knn", y_arm="raw")
    assert np.isnan([row.value, row.p_value, row.ci_low, row.ci_high]).all()
    # the mean skips the NaN data set
    sel = corr[(corr.method == "kendall") & (corr.x_protocol == "knn") & (corr.x_arm == "raw")
               & (corr.y_protocol == "knn") & (corr.y_arm == "raw")]
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
