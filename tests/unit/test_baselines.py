"""The null baselines and the best-predictor margins of the correlation table (issue 23, items
5 and 6), against an independent re-implementation: scipy's coefficients on every bootstrap
resample drawn with numpy's generator (as ``bootstrap_indices`` documents), percentiles with
``np.nanpercentile``."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from workflow_scripts import correlations as C

B, SEED = 60, 5
MODELS = [f"m{i}" for i in range(8)]
QUALITY = np.array([0.0, 1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 6.5])
ID, OODS = "inet", ("ood_a", "ood_b")
RANKERS = {
    # tracks quality with noise; one tie
    "params": dict(zip(MODELS, [1.0, 3.0, 2.0, 2.0, 5.0, 4.0, 8.0, 7.0])),
    # no value for m3: eligible only on rows without m3
    "pretrain_epochs": dict(zip(MODELS, [100.0, 200.0, 300.0, np.nan, 400.0, 800.0, 800.0, 1e3])),
    # ranks the models backwards: never better than the random order
    "anti": dict(zip(MODELS, -QUALITY - 0.1 * np.arange(8))),
    # the same for every model: never eligible
    "const": dict.fromkeys(MODELS, 1.0),
}
SCIPY = {
    "kendall": lambda a, b: stats.kendalltau(a, b).statistic,
    "spearman": lambda a, b: stats.spearmanr(a, b).statistic,
    "pearson": lambda a, b: stats.pearsonr(a, b).statistic,
    "weightedtau": lambda a, b: stats.weightedtau(a, b).statistic,
}


def accuracy_table() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for i, model in enumerate(MODELS):
        for ds in (ID, *OODS):
            for protocol in ("knn", "linear", "finetune") if ds == ID else ("knn", "linear"):
                rows.append(
                    dict(
                        model=model,
                        method=model,
                        backbone="resnet" if i < 5 else "vit",
                        paradigm="discriminative",
                        dataset=ds,
                        domain="id" if ds == ID else "ood",
                        shift_group="in_domain" if ds == ID else "style",
                        protocol=protocol,
                        arm="raw",
                        top1=round(50 + 5 * QUALITY[i] + rng.normal(0, 4), 1),
                    )
                )
    # two proxies of the in-domain features: nc1 (lower is better), rankme
    for i, model in enumerate(MODELS):
        for proxy, value in (("nc1", 10 - QUALITY[i] + rng.normal(0, 1)), ("rankme", rng.normal())):
            rows.append({**rows[0], "model": model, "method": model, "protocol": proxy})
            rows[-1].update(top1=value, backbone="resnet" if i < 5 else "vit")
    return pd.DataFrame(rows)


def table(rankers=("params", "pretrain_epochs", "anti", "const", "random"), **kw):
    return C.correlation_table(
        accuracy_table(),
        n_resamples=B,
        seed=SEED,
        min_subset=3,
        subsets=["backbone"],
        directions={"nc1": -1, "rankme": 1},
        proxies=("nc1", "rankme"),
        static_rankers=rankers,
        ranker_values=RANKERS,
        **kw,
    )


@pytest.fixture(scope="module")
def corr():
    return table()


def column(dataset, protocol, models):
    acc = accuracy_table()
    sel = acc[(acc.dataset == dataset) & (acc.protocol == protocol)].set_index("model")["top1"]
    return sel.reindex(models).to_numpy(dtype=float)


def stat(method, a, b):
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(SCIPY[method](a, b))


def resampled(method, a, b, n):
    idx = np.random.default_rng(SEED).integers(0, n, (B, n))
    return np.array([stat(method, a[i], b[i]) for i in idx])


def interval(samples):
    return tuple(np.nanpercentile(samples, [2.5, 97.5]))


def oracle_baseline(method, x, y, models, direction=1):
    """(name, value, diff, low, high) of the best eligible ranker, by scipy on each resample."""
    n = len(models)
    candidates = {}
    for name in ("params", "pretrain_epochs", "anti", "const"):
        r = np.array([RANKERS[name][m] for m in models])
        if np.isfinite(r).all() and np.ptp(r) > 0:
            candidates[name] = (stat(method, r, y), resampled(method, r, y, n))
    candidates["random"] = (0.0, np.zeros(B))
    name = max(candidates, key=lambda k: candidates[k][0])
    value, samples = candidates[name]
    diff = direction * stat(method, x, y) - value
    low, high = interval(direction * resampled(method, x, y, n) - samples)
    return name, value, diff, low, high


def row(corr, **kw):
    sel = corr
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, kw
    return sel.iloc[0]


@pytest.mark.parametrize("method", list(C.METHODS))
@pytest.mark.parametrize(
    "x, y, subset",
    [
        ("knn", "linear", "all"),  # pretrain_epochs lacks m3: not eligible
        ("knn", "finetune", "backbone=resnet"),  # m3 is a resnet: still not eligible
        ("linear", "finetune", "backbone=vit"),  # every vit has epochs: eligible
        ("nc1", "linear", "all"),  # a lower-is-better proxy: oriented
        ("rankme", "finetune", "backbone=vit"),
    ],
)
def test_in_domain_rows_against_the_best_static_ranker(corr, method, x, y, subset):
    models = sorted(
        {"all": MODELS, "backbone=resnet": MODELS[:5], "backbone=vit": MODELS[5:]}[subset]
    )
    got = row(corr, x_protocol=x, y_protocol=y, y_kind="pair", method=method, subset=subset)
    xs, ys = column(ID, x, models), column(ID, y, models)
    name, value, diff, low, high = oracle_baseline(
        method, xs, ys, models, direction=-1 if x == "nc1" else 1
    )
    assert got["n"] == len(models)
    assert got["baseline"] == name
    assert got["baseline_value"] == pytest.approx(value, abs=1e-12)
    assert got["baseline_diff"] == pytest.approx(diff, abs=1e-12)
    assert (got["baseline_ci_low"], got["baseline_ci_high"]) == pytest.approx((low, high), abs=1e-9)
    assert got["beats_baseline"] == (low > 0)


def test_rankers_chosen_as_their_values_say(corr):
    k = corr[(corr.method == "kendall") & (corr.y_kind == "pair") & (corr.baseline != "")]
    assert "pretrain_epochs" in set(k[k.subset == "backbone=vit"].baseline)
    assert "pretrain_epochs" not in set(k[k.subset != "backbone=vit"].baseline)
    assert not k.baseline.isin(["const"]).any()
    assert not k[k.subset == "all"].baseline.isin(["anti"]).any()
    # with only the constant ranker, the random order is the baseline: its difference is the
    # row's own (oriented) coefficient and interval
    alone = table(rankers=("const", "random"))
    rows = alone[alone.baseline != ""]
    assert set(rows.baseline) == {"random"} and (rows.baseline_value == 0).all()
    sign = np.where(rows.x_protocol == "nc1", -1.0, 1.0)
    np.testing.assert_allclose(rows.baseline_diff, sign * rows.value, atol=1e-12)
    is_mean = rows.y_kind.isin(["mean", "group"])
    plain = rows[~is_mean & (sign > 0)]
    np.testing.assert_allclose(plain.baseline_ci_low, plain.ci_low, atol=1e-12)
    np.testing.assert_allclose(plain.baseline_ci_high, plain.ci_high, atol=1e-12)
    flipped = rows[~is_mean & (sign < 0)]
    np.testing.assert_allclose(flipped.baseline_ci_low, -flipped.ci_high, atol=1e-12)
    assert (rows.beats_baseline == (rows.baseline_ci_low > 0)).all()


def test_no_baseline_where_y_is_a_proxy_or_without_rankers(corr):
    proxy_y = corr[corr.y_protocol.isin(["nc1", "rankme"])]
    assert len(proxy_y) and (proxy_y.baseline == "").all()
    assert proxy_y.baseline_value.isna().all() and proxy_y.beats_baseline.isna().all()
    assert (corr.loc[~corr.y_protocol.isin(["nc1", "rankme"]), "baseline"] != "").all()
    none = table(rankers=())
    assert (none.baseline == "").all() and none.baseline_diff.isna().all()
    # the other columns do not depend on the rankers
    pd.testing.assert_frame_equal(
        none.drop(columns=[c for c in C.EXTRA_COLUMNS if c.startswith(("baseline", "beats"))]),
        corr.drop(columns=[c for c in C.EXTRA_COLUMNS if c.startswith(("baseline", "beats"))]),
    )
    with pytest.raises(ValueError, match="without values: \\['flops'\\]"):
        table(rankers=("flops",))


@pytest.mark.parametrize("method", ["kendall", "pearson"])
def test_mean_rows_average_the_per_data_set_rankers(corr, method):
    models = sorted(MODELS)
    x = column(ID, "knn", models)
    per_ds = {}
    for ds in OODS:
        y = column(ds, "linear", models)
        for name in ("params", "anti"):
            r = np.array([RANKERS[name][m] for m in models])
            per_ds[(ds, name)] = (stat(method, r, y), resampled(method, r, y, 8))
        per_ds[(ds, "x")] = (stat(method, x, y), resampled(method, x, y, 8))
    means = {
        name: (
            np.mean([per_ds[(d, name)][0] for d in OODS]),
            np.mean([per_ds[(d, name)][1] for d in OODS], axis=0),
        )
        for name in ("params", "anti")
    }
    means["random"] = (0.0, np.zeros(B))
    best = max(means, key=lambda k: means[k][0])
    x_mean = np.mean([per_ds[(d, "x")][0] for d in OODS])
    x_samples = np.mean([per_ds[(d, "x")][1] for d in OODS], axis=0)
    for label in ("mean_ood", "group:style"):  # one shift group: the same data sets
        got = row(
            corr,
            x_protocol="knn",
            y_protocol="linear",
            y_dataset=label,
            method=method,
            subset="all",
        )
        assert got["baseline"] == best
        assert got["baseline_value"] == pytest.approx(means[best][0], abs=1e-12)
        assert got["baseline_diff"] == pytest.approx(x_mean - means[best][0], abs=1e-12)
        low, high = interval(x_samples - means[best][1])
        assert (got["baseline_ci_low"], got["baseline_ci_high"]) == pytest.approx((low, high))


@pytest.mark.parametrize("method", list(C.METHODS))
@pytest.mark.parametrize("target", ["ood_a", "ood_b", "mean_ood"])
def test_margin_of_the_best_predictor_over_the_runner_up(corr, method, target):
    models = sorted(MODELS)
    datasets = OODS if target == "mean_ood" else (target,)
    rows = corr[
        (corr.y_dataset == target)
        & (corr.y_protocol == "knn")
        & (corr.method == method)
        & (corr.subset == "all")
    ]
    acc_rows = rows[~rows.x_protocol.isin(["nc1", "rankme"])]
    ranked = acc_rows.sort_values("value", ascending=False)
    best, runner = ranked.iloc[0], ranked.iloc[1]
    # only the best accuracy row carries a margin; proxies never do
    assert rows.margin.notna().sum() == 1 and np.isfinite(best["margin"])
    diffs, samples = [], []
    for ds in datasets:
        y = column(ds, "knn", models)
        a, b = column(ID, best.x_protocol, models), column(ID, runner.x_protocol, models)
        diffs.append(stat(method, a, y) - stat(method, b, y))
        samples.append(resampled(method, a, y, 8) - resampled(method, b, y, 8))
    assert best["margin"] == pytest.approx(np.mean(diffs), abs=1e-12)
    assert best["margin"] == pytest.approx(best["value"] - runner["value"], abs=1e-12)
    low, high = interval(np.mean(samples, axis=0))
    assert (best["margin_ci_low"], best["margin_ci_high"]) == pytest.approx((low, high))
    assert best["single_best"] == (low > 0)
    assert rows.drop(index=best.name).single_best.isna().all()


def test_a_clear_best_predictor_is_single():
    """One in-domain protocol equal to the OOD accuracy, the others reversed: single best,
    margin 2 on every resample; a tie of the top two is no single best."""
    acc = accuracy_table()
    ood = acc[(acc.dataset == "ood_a") & (acc.protocol == "knn")].set_index("model")["top1"]
    is_knn = (acc.dataset == ID) & (acc.protocol == "knn")
    acc.loc[is_knn, "top1"] = acc.loc[is_knn, "model"].map(ood).to_numpy()
    for protocol in ("linear", "finetune"):  # in reverse order: tau = -1
        other = (acc.dataset == ID) & (acc.protocol == protocol)
        acc.loc[other, "top1"] = -acc.loc[other, "model"].map(ood).to_numpy()
    corr = C.correlation_table(acc, n_resamples=200, seed=0, subsets=[], proxies=("nc1", "rankme"))
    got = row(
        corr, x_protocol="knn", y_protocol="knn", y_dataset="ood_a", method="kendall", subset="all"
    )
    assert got["value"] == pytest.approx(1.0) and got["single_best"] == True  # noqa: E712
    assert got["margin"] == pytest.approx(2.0) and got["margin_ci_low"] == pytest.approx(2.0)
    # linear equal to knn: the top two tie, the margin is 0 on every resample
    same = (acc.dataset == ID) & (acc.protocol == "linear")
    acc.loc[same, "top1"] = acc.loc[same, "model"].map(ood).to_numpy()
    tie = C.correlation_table(acc, n_resamples=50, seed=0, subsets=[], proxies=("nc1", "rankme"))
    rows = tie[(tie.y_dataset == "ood_a") & (tie.y_protocol == "knn") & (tie.method == "kendall")]
    best = rows[rows.margin.notna()]
    assert len(best) == 1 and best.iloc[0]["margin"] == pytest.approx(0.0, abs=1e-12)
    assert best.iloc[0]["single_best"] == False  # noqa: E712
