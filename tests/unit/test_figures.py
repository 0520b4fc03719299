"""Tests for the figure modules (workflow_scripts/figures/<name>.py): files written atomically,
readable, figures closed."""

from __future__ import annotations

import importlib
import itertools
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from workflow_scripts import registry
from workflow_scripts.figures import common as C
from workflow_scripts.figures import (
    f1_id_protocols,
    f2_id_vs_ood,
    f3_scatter,
    f5_shift_groups,
    f6_paradigm_backbone,
    f7_proxies,
)
from workflow_scripts.correlations import correlation_table

OOD = [
    ("v2", "same_label_shift"),
    ("sketch", "same_label_shift"),
    ("rend", "same_label_shift"),
    ("cifar", "new_label"),
    ("flowers", "new_label"),
    ("dtd", "new_label"),
]


def synthetic_accuracy(n_models=12, seed=0, finetune=True):
    """12 models, 1 + 6 data sets, knn/linear x raw/bn (+ fine-tuning on the id set only)."""
    rng = np.random.default_rng(seed)
    rows = []
    datasets = [("inet", "id", "in_domain")] + [(d, "ood", g) for d, g in OOD]
    for m in range(n_models):
        backbone = "vit" if m % 2 else "resnet"
        paradigm = ("discriminative", "generative", "baseline")[m % 3]
        quality = rng.normal()
        for ds, domain, group in datasets:
            pas = [(p, a) for p in ("knn", "linear") for a in ("raw", "bn")]
            if finetune and domain == "id":
                pas.append(("finetune", "raw"))
            for protocol, arm in pas:
                top1 = 60 + 8 * quality + rng.normal(0, 3) + 2 * (arm == "bn")
                rows.append(
                    {
                        "model": f"model_{m:02d}",
                        "method": f"meth{m}",
                        "backbone": backbone,
                        "paradigm": paradigm,
                        "dataset": ds,
                        "domain": domain,
                        "shift_group": group,
                        "protocol": protocol,
                        "arm": arm,
                        "top1": top1,
                        "top5": np.nan,
                        "run": "synthetic",
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def acc():
    return synthetic_accuracy()


@pytest.fixture(scope="module")
def corr(acc):
    return correlation_table(acc, n_resamples=50, seed=0, min_subset=4)


def _call(name, acc, corr, opts, png, pdf):
    """plot() of figure ``name`` with the tables its registry entry reads, in that order."""
    figure = importlib.import_module(f"workflow_scripts.figures.{name}")
    tables = {"accuracy": acc, "correlations": corr}
    figure.plot(*(tables[t] for t in registry.FIGURES[name]["inputs"]), opts, png, pdf)


def _check_outputs(directory, png, pdf):
    import matplotlib.image as mpimg

    assert sorted(p.name for p in directory.iterdir()) == sorted([png.name, pdf.name])
    assert pdf.stat().st_size > 1000
    assert pdf.read_bytes()[:5] == b"%PDF-"
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[2] == 4  # RGBA
    assert image.shape[0] > 200 and image.shape[1] > 200
    # not a blank canvas
    assert image[..., :3].std() > 0.05
    return image


PLOTS = [
    "f1_id_protocols",
    "f2_id_vs_ood",
    "f3_scatter",
    "f4_bn_effect",
    "f5_shift_groups",
    "f6_paradigm_backbone",
]


@pytest.mark.parametrize("name", PLOTS)
def test_writes_png_and_pdf(tmp_path, acc, corr, name):
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    _call(name, acc, corr, {}, png, pdf)
    _check_outputs(tmp_path, png, pdf)
    assert set(plt.get_fignums()) == before  # figure closed
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"


@pytest.mark.parametrize("name", PLOTS)
def test_dpi_scales_png(tmp_path, acc, corr, name):
    sizes = []
    for dpi in (40, 80):
        out = tmp_path / str(dpi)
        out.mkdir()
        png, pdf = out / "fig.png", out / "fig.pdf"
        _call(name, acc, corr, {"dpi": dpi, "annotate": False}, png, pdf)
        sizes.append(np.array(_check_outputs(out, png, pdf).shape[:2], dtype=float))
    ratio = sizes[1] / sizes[0]
    np.testing.assert_allclose(ratio, [2.0, 2.0], rtol=0.03)


def test_options(tmp_path, acc, corr):
    import matplotlib.image as mpimg

    heights = {}
    for label, opts in {
        "all": {},
        "bn": {"y_arms": ["bn"]},
        "knn_bn": {"y_protocols": ["knn"], "y_arms": ["bn"]},
    }.items():
        png = tmp_path / f"f2_{label}.png"
        f2_id_vs_ood.plot(corr, {**opts, "dpi": 50}, png, tmp_path / f"f2_{label}.pdf")
        heights[label] = mpimg.imread(png).shape[0]
    # 4 panels > 2 panels > 1 panel
    assert heights["all"] > heights["bn"] > heights["knn_bn"]
    for name, opts in [
        (
            "f1_id_protocols",
            {
                "method": "spearman",
                "subset": "backbone=vit",
                "cmap": "mako",
                "font_scale": 1.3,
                "title": "custom",
            },
        ),
        (
            "f3_scatter",
            {
                "x_protocol": "knn",
                "x_arm": "raw",
                "y_protocol": "linear",
                "y_arm": "raw",
                "col_wrap": 2,
                "label_points": True,
            },
        ),
        (
            "f4_bn_effect",
            {
                "include_ood_mean": False,
                "method": "pearson",
                "subsets": ["all", "backbone=vit", "backbone=resnet"],
            },
        ),
    ]:
        out = tmp_path / name
        out.mkdir()
        _call(name, acc, corr, opts, out / "a.png", out / "a.pdf")
        _check_outputs(out, out / "a.png", out / "a.pdf")


def test_errors_leave_no_files(tmp_path, acc, corr):
    png, pdf = tmp_path / "x.png", tmp_path / "x.pdf"
    with pytest.raises(ValueError, match="nope"):
        f3_scatter.plot(acc, {"x_protocol": "nope"}, png, pdf)
    with pytest.raises(ValueError):
        f1_id_protocols.plot(corr, {"method": "tau"}, png, pdf)
    with pytest.raises(ValueError):
        f2_id_vs_ood.plot(corr, {"y_protocols": ["finetune"]}, png, pdf)
    with pytest.raises(ValueError, match="subset"):
        f1_id_protocols.plot(corr, {"subset": "backbone=cnn"}, png, pdf)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_old_file_and_no_temp(tmp_path, acc, corr, monkeypatch):
    import matplotlib.figure

    png, pdf = tmp_path / "f1.png", tmp_path / "f1.pdf"
    png.write_bytes(b"old")
    original = matplotlib.figure.Figure.savefig

    def failing(self, fname, *args, **kwargs):
        if str(fname).endswith(".pdf"):
            original(self, fname, *args, **kwargs)  # writes part of the output...
            raise OSError("disk full")
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", failing)
    with pytest.raises(OSError):
        f1_id_protocols.plot(corr, {}, png, pdf)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f1.png"]  # the PNG was finished
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_f1_matrix_uses_pair_rows(tmp_path, corr):
    """Rows of other kinds (OOD) must not leak into the in-domain matrix: a table with only the
    OOD rows has no pairs."""
    with pytest.raises(ValueError, match="pairs"):
        f1_id_protocols.plot(
            corr[corr.x_dataset != corr.y_dataset], {}, tmp_path / "a.png", tmp_path / "a.pdf"
        )


def test_labels():
    assert C.protocol_arm_label("knn", "raw") == "kNN"
    assert C.protocol_arm_label("linear", "bn") == "linear (BN)"
    assert C.protocol_arm_label("fewshot10", "raw") == "few-shot 10%"
    assert C.protocol_arm_label("fewshot1", "bn") == "few-shot 1% (BN)"
    assert C.protocol_arm_label("mystery", "other") == "mystery (other)"
    assert C.dataset_label("mean_ood") == "mean OOD"
    assert C.dataset_label("group:new_label") == "mean: new label"
    assert [C.stars(p) for p in (0.2, 0.04, 0.009, 0.0009, float("nan"))] == [
        "",
        "*",
        "**",
        "***",
        "",
    ]


def test_import_has_no_side_effects():
    modules = ["workflow_scripts.figures", "workflow_scripts.figures.common"]
    modules += [f"workflow_scripts.figures.{name}" for name in registry.FIGURES]
    code = (
        f"import sys, workflow_scripts.correlations, {', '.join(modules)}; "
        "print('matplotlib.pyplot' in sys.modules, 'seaborn' in sys.modules, "
        "'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(__import__("pathlib").Path(__file__).parents[2]),
    )
    assert out.stdout.split() == ["False", "False", "False"]


# --------------------------------------------------------------------------------------------
# F5 and F6: the drawn values equal hand-built inputs


def _capture_texts(monkeypatch, figure):
    """Record, per axes with a title, the annotations {(row, col): text} when ``figure`` (a
    figure module) saves."""
    captured = []
    original = figure.save

    def recording(fig, png, pdf, dpi):
        for ax in fig.axes:
            if ax.get_title():
                cells = {}
                for t in ax.texts:
                    x, y = t.get_position()
                    cells[(int(y - 0.5), int(x - 0.5))] = t.get_text()
                captured.append((ax.get_title(), cells))
        original(fig, png, pdf, dpi)

    monkeypatch.setattr(figure, "save", recording)
    return captured


def _capture_notes(monkeypatch, figure):
    """Record every text drawn on the axes of a figure when ``figure`` (a figure module) saves."""
    captured = []
    original = figure.save

    def recording(fig, png, pdf, dpi):
        captured.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        original(fig, png, pdf, dpi)

    monkeypatch.setattr(figure, "save", recording)
    return captured


def hand_correlations():
    """Group-mean rows for 2 x (protocol, arm) x 2 y (protocol, arm) x 2 groups + mean_ood,
    shuffled, plus rows F5 must ignore (other method/subset, per-data-set and pair rows)."""
    rows, value = [], 0.0
    xs = [("knn", "raw"), ("linear", "bn")]
    ys = [("knn", "raw"), ("linear", "bn")]
    for (xp, xa), (yp, ya) in itertools.product(xs, ys):
        for yd, kind, group, k in [
            ("group:style", "group", "style", 2),
            ("group:new_label", "group", "new_label", 3),
            ("mean_ood", "mean", "", 5),
        ]:
            value += 0.037
            best = (xp, xa) == ("linear", "bn")  # the higher value of each column
            rows.append(
                dict(
                    x_protocol=xp,
                    x_arm=xa,
                    x_dataset="inet",
                    y_protocol=yp,
                    y_arm=ya,
                    y_dataset=yd,
                    subset="all",
                    method="kendall",
                    n=9,
                    value=round(value - 0.4, 4),
                    p_value=np.nan,
                    # the interval excludes 0 where |value| > 0.1
                    ci_low=round(value - 0.4, 4) - 0.1,
                    ci_high=round(value - 0.4, 4) + 0.1,
                    y_kind=kind,
                    y_shift_group=group,
                    n_datasets=k,
                    # a single best predictor in the style group only
                    margin=0.1 if best else np.nan,
                    margin_ci_low=(0.05 if yd == "group:style" else -0.05) if best else np.nan,
                    margin_ci_high=0.2 if best else np.nan,
                    single_best=(yd == "group:style") if best else None,
                )
            )
    distractors = []
    for r in rows:
        distractors.append({**r, "method": "spearman", "value": 0.99})
        distractors.append({**r, "subset": "backbone=vit", "value": -0.99})
    distractors.append(
        {**rows[0], "y_dataset": "sketch", "y_kind": "dataset", "value": 0.5, "n_datasets": 1}
    )
    distractors.append(
        {
            **rows[0],
            "y_protocol": "linear",
            "y_arm": "bn",
            "y_dataset": "inet",
            "y_kind": "pair",
            "value": 0.7,
            "n_datasets": 1,
        }
    )
    frame = pd.DataFrame(rows + distractors)
    # group order in the table: style before new_label (as correlation_table writes them)
    return frame.sample(frac=1.0, random_state=3).sort_values(
        "y_dataset",
        key=lambda s: s.map({"group:style": 0, "group:new_label": 1}).fillna(2),
        kind="stable",
    ), pd.DataFrame(rows)


def test_f5_cells_equal_hand_built_rows(tmp_path, monkeypatch):
    frame, truth = hand_correlations()
    captured = _capture_texts(monkeypatch, f5_shift_groups)
    cells = f5_shift_groups.plot(frame, {"dpi": 80}, tmp_path / "f5.png", tmp_path / "f5.pdf")
    _check_outputs(tmp_path, tmp_path / "f5.png", tmp_path / "f5.pdf")
    key = ["x_protocol", "x_arm", "y_protocol", "y_arm", "y_dataset"]
    merged = cells.merge(truth, on=key, suffixes=("", "_true"), validate="one_to_one")
    assert len(merged) == len(truth) == 2 * 2 * 3
    np.testing.assert_array_equal(merged["value"], merged["value_true"])

    def text(v):  # by hand: in parentheses when the interval [v - 0.1, v + 0.1] includes 0
        return f"{v:.2f}" if abs(v) > 0.1 else f"({v:.2f})"

    assert (merged["text"] == merged["value_true"].map(text)).all()
    assert merged["text"].str.startswith("(").any() and not merged["text"].str.startswith("(").all()
    # framed: the best row of a column where the margin's interval excludes 0 (style only)
    framed = merged[merged["framed"]]
    assert set(framed["y_dataset"]) == {"group:style"} and len(framed) == 2
    assert (framed["x_protocol"] == "linear").all()
    assert (merged["best"] == (merged["x_protocol"] == "linear")).all()
    # positions: rows in canonical protocol order, columns = groups in table order, then mean
    rows = {("knn", "raw"): 0, ("linear", "bn"): 1}
    cols = {"group:style": 0, "group:new_label": 1, "mean_ood": 2}
    assert (merged["row"] == [rows[(p, a)] for p, a in zip(merged.x_protocol, merged.x_arm)]).all()
    assert (merged["col"] == merged["y_dataset"].map(cols)).all()
    # the figure's annotations are exactly these texts, panel by panel
    panels = [(title, texts) for title, texts in captured if title.startswith("OOD accuracy")]
    assert [t.split("\n")[0] for t, _ in panels] == [
        "OOD accuracy under kNN",
        "OOD accuracy under linear (BN)",
    ]
    for (_, texts), (yp, ya) in zip(panels, [("knn", "raw"), ("linear", "bn")]):
        want = truth[(truth.y_protocol == yp) & (truth.y_arm == ya)]
        assert texts == {
            (rows[(r.x_protocol, r.x_arm)], cols[r.y_dataset]): text(r.value)
            for r in want.itertuples()
        }


def test_f5_options_and_errors(tmp_path):
    frame, truth = hand_correlations()
    cells = f5_shift_groups.f5_cells(frame, {"y_arms": ["bn"], "include_mean": False})
    assert set(cells["y_protocol"]) == {"linear"} and set(cells["y_dataset"]) == {
        "group:style",
        "group:new_label",
    }
    spear = f5_shift_groups.f5_cells(frame, {"method": "spearman"})
    assert (spear["value"] == 0.99).all()
    with pytest.raises(ValueError, match="shift-group"):
        f5_shift_groups.plot(
            frame[~frame.y_dataset.str.startswith("group:")],
            {},
            tmp_path / "a.png",
            tmp_path / "a.pdf",
        )
    with pytest.raises(ValueError, match="y_protocols"):
        f5_shift_groups.f5_cells(frame, {"y_protocols": ["finetune"]})
    assert list(tmp_path.iterdir()) == []


def test_f5_on_correlation_table(corr):
    """On a real correlation table, every cell is the group row of the table."""
    cells = f5_shift_groups.f5_cells(corr, {})
    rows = corr[
        (corr.method == "kendall") & (corr.subset == "all") & corr.y_kind.isin(["group", "mean"])
    ]
    assert len(cells) == len(rows)
    merged = cells.merge(
        rows, on=["x_protocol", "x_arm", "y_protocol", "y_arm", "y_dataset"], suffixes=("", "_t")
    )
    np.testing.assert_array_equal(merged["value"], merged["value_t"])


def hand_accuracy(include_vit=True, shared=True):
    """Models (method, backbone, paradigm); top1 = 10 * model index + data set/protocol offsets."""
    models = [
        ("a_resnet", "a", "resnet", "discriminative"),
        ("b_resnet1", "b", "resnet", "discriminative"),
        ("b_resnet2", "b", "resnet", "discriminative"),
        ("d_resnet", "d", "resnet", "discriminative"),
    ]
    if include_vit:
        models += [
            ("a_vit" if shared else "e_vit", "a" if shared else "e", "vit", "discriminative"),
            ("b_vit" if shared else "f_vit", "b" if shared else "f", "vit", "discriminative"),
            ("c_vit", "c", "vit", "generative"),
            ("g_vit", "g", "vit", "generative"),
            ("r_vit", "random", "vit", "baseline"),
        ]
    datasets = [("inet", "id", "in_domain"), ("o1", "ood", "style"), ("o2", "ood", "new")]
    rows = []
    for i, (model, method, backbone, paradigm) in enumerate(models):
        for j, (ds, domain, group) in enumerate(datasets):
            protocols = ["knn", "linear"] + (["finetune"] if domain == "id" else [])
            for k, protocol in enumerate(protocols):
                for arm in ("raw", "bn"):
                    if model == "d_resnet" and ds == "o2" and protocol == "linear":
                        continue  # incomplete OOD coverage: no mean OOD for this one
                    rows.append(
                        dict(
                            model=model,
                            method=method,
                            backbone=backbone,
                            arch=backbone + "_x",
                            paradigm=paradigm,
                            dataset=ds,
                            domain=domain,
                            shift_group=group,
                            protocol=protocol,
                            arm=arm,
                            top1=10.0 * i + 3.0 * j + 1.0 * k + (0.5 if arm == "bn" else 0.0),
                        )
                    )
    return pd.DataFrame(rows)


def test_f6_pairs_methods_across_backbones(tmp_path):
    acc = hand_accuracy()
    data = f6_paradigm_backbone.plot(acc, {"dpi": 80}, tmp_path / "f6.png", tmp_path / "f6.pdf")
    _check_outputs(tmp_path, tmp_path / "f6.png", tmp_path / "f6.pdf")
    assert data["arm"] == "bn" and data["notes"] == {}
    pairs = data["pairs"]
    assert sorted(pairs["method"].unique()) == ["a", "b"]  # c, d, g, random: one backbone only
    idx = {m: i for i, m in enumerate(acc.drop_duplicates("model")["model"])}

    def expected(models, measure, protocol):
        k = {"knn": 0, "linear": 1, "finetune": 2}[protocol]
        sets = [0] if measure == "in-domain" else [1, 2]
        return np.mean([10.0 * idx[m] + 3.0 * j + k + 0.5 for m in models for j in sets])

    for row in pairs.itertuples():
        models = row.models.split(",")
        assert models == sorted(
            m
            for m in idx
            if m.startswith(row.method + "_")
            and acc.loc[acc.model == m, "backbone"].iloc[0] == row.backbone
        )
        assert row.n_models == len(models)
        assert row.top1 == pytest.approx(expected(models, row.measure, row.protocol))
    got = {
        (r.method, r.measure, r.protocol): set(g)
        for (r, g) in [
            (
                r,
                pairs[
                    (pairs.method == r.method)
                    & (pairs.measure == r.measure)
                    & (pairs.protocol == r.protocol)
                ]["backbone"],
            )
            for r in pairs.itertuples()
        ]
    }
    assert all(v == {"resnet", "vit"} for v in got.values())
    assert sorted({(m, p) for m, ms, p in got if ms == "in-domain"}) == sorted(
        (m, p) for m in "ab" for p in ("knn", "linear", "finetune")
    )
    assert sorted({(m, p) for m, ms, p in got if ms == "mean OOD"}) == sorted(
        (m, p) for m in "ab" for p in ("knn", "linear")
    )
    vit = data["vit"]
    assert set(vit["model"]) == {"a_vit", "b_vit", "c_vit", "g_vit", "r_vit"}
    assert dict(vit.drop_duplicates("model").set_index("model")["paradigm"]) == {
        "a_vit": "discriminative",
        "b_vit": "discriminative",
        "c_vit": "generative",
        "g_vit": "generative",
        "r_vit": "baseline",
    }
    for r in vit.itertuples():
        assert r.top1 == pytest.approx(expected([r.model], r.measure, r.protocol))
    raw = f6_paradigm_backbone.f6_data(acc, {"arm": "raw"})
    assert raw["arm"] == "raw"
    np.testing.assert_allclose(raw["pairs"]["top1"].to_numpy() + 0.5, pairs["top1"].to_numpy())


def test_f6_incomplete_ood_coverage_has_no_mean():
    m = f6_paradigm_backbone.f6_measures(hand_accuracy(), "bn")
    d = m[m.model == "d_resnet"]
    assert set(d.loc[d.measure == "mean OOD", "protocol"]) == {"knn"}


@pytest.mark.parametrize(
    "include_vit,shared,missing", [(False, True, {"vit", "pairs"}), (True, False, {"pairs"})]
)
def test_f6_empty_parts_give_a_note(tmp_path, monkeypatch, include_vit, shared, missing):
    acc = hand_accuracy(include_vit=include_vit, shared=shared)
    captured = _capture_notes(monkeypatch, f6_paradigm_backbone)
    data = f6_paradigm_backbone.plot(acc, {"dpi": 80}, tmp_path / "f6.png", tmp_path / "f6.pdf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f6.pdf", "f6.png"]
    assert set(data["notes"]) == missing
    # each missing part is explained on the figure
    for part, prefix in (("vit", "(a) "), ("pairs", "(b) ")):
        if part in missing:
            assert prefix + data["notes"][part] in captured
    assert data["pairs"].empty
    assert data["vit"].empty == ("vit" in missing)


def test_f6_single_paradigm_within_vit_is_a_note():
    acc = hand_accuracy()
    acc = acc[~acc.model.isin(["c_vit", "g_vit", "r_vit"])]
    data = f6_paradigm_backbone.f6_data(acc, {})
    assert "vit" in data["notes"] and data["vit"].empty and not data["pairs"].empty


# --------------------------------------------------------------------------------------------
# F7: proxies


@pytest.fixture(scope="module")
def corr_proxies(acc):
    from workflow_scripts.correlations import with_proxies

    rng = np.random.default_rng(4)
    rows = [
        {
            "model": m,
            "dataset": d,
            "split": "train",
            "proxy": p,
            "arm": a,
            "value": float(rng.normal()),
            "n_samples": 10,
            "seed": 0,
        }
        for m, d in acc[["model", "dataset"]].drop_duplicates().itertuples(index=False)
        for p in ("rankme", "nc1")
        for a in ("raw", "bn")
    ]
    merged = with_proxies(acc, pd.DataFrame(rows))
    return correlation_table(
        merged,
        n_resamples=20,
        seed=0,
        min_subset=4,
        directions={"nc1": -1},
        proxies=("rankme", "nc1"),
    )


def test_f7_cells_are_the_proxy_rows_of_the_table(corr_proxies, tmp_path):
    cells = f7_proxies.f7_cells(corr_proxies, {"method": "spearman"})
    assert list(dict.fromkeys(cells["subset"])) == ["all", "backbone=resnet", "backbone=vit"]
    # every cell is the matching row of the table, x a proxy, y an in-domain accuracy or its
    # mean over the OOD sets
    for cell in cells.sample(25, random_state=0).itertuples(index=False):
        kind = "mean" if cell.column.endswith("mean OOD") else "pair"
        rows = corr_proxies[
            (corr_proxies.method == "spearman")
            & (corr_proxies.subset == cell.subset)
            & (corr_proxies.x_protocol == cell.x_protocol)
            & (corr_proxies.x_arm == cell.x_arm)
            & (corr_proxies.y_kind == kind)
        ]
        values = [
            r.value
            for r in rows.itertuples()
            if C.protocol_arm_label(r.y_protocol, r.y_arm) == cell.column.split(", mean")[0]
        ]
        assert values == [cell.value]
    # rows in registry order (RankMe before NC1, raw before BN), no accuracy as a row
    first = cells[cells.panel == 0].drop_duplicates("row").sort_values("row")
    assert list(zip(first.x_protocol, first.x_arm)) == [
        ("rankme", "raw"),
        ("rankme", "bn"),
        ("nc1", "raw"),
        ("nc1", "bn"),
    ]
    only_id = f7_proxies.f7_cells(corr_proxies, {"include_ood_mean": False, "subsets": ["all"]})
    assert not only_id["column"].str.contains("mean OOD").any() and set(only_id.subset) == {"all"}
    assert (
        f7_proxies.proxy_label("nc1", "bn") == "NC1 ↓ (BN)"
        and f7_proxies.proxy_label("rankme", "raw") == "RankMe ↑"
    )
    png, pdf = tmp_path / "f7.png", tmp_path / "f7.pdf"
    f7_proxies.plot(corr_proxies, {}, png, pdf)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:4] == b"%PDF"


def test_f1_to_f5_ignore_the_proxies(corr, corr_proxies, tmp_path):
    """The accuracy figures draw the same cells with and without proxies in the table."""
    a = f5_shift_groups.f5_cells(corr, {})
    b = f5_shift_groups.f5_cells(corr_proxies, {})
    pd.testing.assert_frame_equal(
        a[["y_protocol", "x_protocol", "y_dataset", "value"]],
        b[["y_protocol", "x_protocol", "y_dataset", "value"]],
    )


# --------------------------------------------------------------------------------------------
# intervals in the figures (F1, F2, F5, F7) and the baselines (F9)


def _interval_text(value, low, high, n=None, suffix=""):
    """The expected annotation, by hand: parentheses when [low, high] includes 0."""
    text = f"{value:.2f}{suffix}"
    if not (low > 0 or high < 0):
        text = f"({text})"
    return text if n is None else f"{text}\nn={n}"


def test_f5_frames_only_a_single_best_and_labels_the_rest(tmp_path):
    frame, _ = hand_correlations()
    patches, labels = [], []
    original = f5_shift_groups.save

    def recording(fig, png, pdf, dpi):
        for ax in fig.axes:
            if ax.get_title().startswith("OOD accuracy"):
                patches.append([(p.get_x(), p.get_y(), p.get_linestyle()) for p in ax.patches])
                labels.append([t.get_text() for t in ax.get_xticklabels()])
        original(fig, png, pdf, dpi)

    f5_shift_groups.save = recording
    try:
        f5_shift_groups.plot(frame, {"dpi": 60}, tmp_path / "f5.png", tmp_path / "f5.pdf")
    finally:
        f5_shift_groups.save = original
    assert len(patches) == 2
    for drawn, names in zip(patches, labels):
        # row 1 (linear (BN)) is the best of every column: solid in column 0 (style), dashed
        # in columns 1 (new label) and 2 (mean OOD)
        solid = {(round(x - 0.04), round(y - 0.04)) for x, y, ls in drawn if ls in ("-", "solid")}
        dashed = {
            (round(x - 0.06), round(y - 0.06)) for x, y, ls in drawn if ls in ("--", "dashed")
        }
        assert solid == {(0, 1)} and dashed == {(1, 1), (2, 1)}
        assert ["no single\nbest" in name for name in names] == [False, True, True]


@pytest.fixture(scope="module")
def corr_gap():
    """The synthetic table with model_03 lacking one OOD set: n varies in F2's panels."""
    acc = synthetic_accuracy()
    acc = acc[~((acc.model == "model_03") & (acc.dataset == "sketch"))]
    return correlation_table(acc, n_resamples=50, seed=0, min_subset=4)


def test_f2_marks_intervals_and_varying_n(corr_gap, monkeypatch, tmp_path):
    captured = []
    original = f2_id_vs_ood.save

    def recording(fig, png, pdf, dpi):  # F2's panel titles are left-aligned
        for ax in fig.axes:
            if ax.get_title(loc="left"):
                captured.append(
                    (ax.get_title(loc="left"), {i: t.get_text() for i, t in enumerate(ax.texts)})
                )
        original(fig, png, pdf, dpi)

    monkeypatch.setattr(f2_id_vs_ood, "save", recording)
    f2_id_vs_ood.plot(
        corr_gap, {"dpi": 60, "y_arms": ["bn"]}, tmp_path / "a.png", tmp_path / "b.png"
    )
    sel = corr_gap[
        (corr_gap.method == "kendall")
        & (corr_gap.subset == "all")
        & (corr_gap.x_dataset != corr_gap.y_dataset)
        & (corr_gap.y_arm == "bn")
    ]
    assert set(sel["n"]) == {11, 12}
    for title, texts in captured:
        yp = "knn" if title.startswith("OOD accuracy under kNN") else "linear"
        rows = sel[sel.y_protocol == yp]
        expected = {_interval_text(r.value, r.ci_low, r.ci_high, r.n) for r in rows.itertuples()}
        assert set(texts.values()) == expected
    assert len(captured) == 2
    assert (
        any(t.startswith("(") for _, texts in captured for t in texts.values())
        or ((sel.ci_low > 0) | (sel.ci_high < 0)).all()
    )


def test_f1_and_f7_mark_intervals(corr, corr_proxies, monkeypatch, tmp_path):
    captured = _capture_texts(monkeypatch, f1_id_protocols)
    f1_id_protocols.plot(corr, {"dpi": 60}, tmp_path / "a.png", tmp_path / "b.pdf")
    pairs = corr[(corr.method == "kendall") & (corr.subset == "all") & (corr.y_kind == "pair")]
    assert pairs["n"].nunique() == 1  # no n= in the cells
    ((_, texts),) = captured
    expected = {
        _interval_text(r.value, r.ci_low, r.ci_high, suffix=C.stars(r.p_value))
        for r in pairs.itertuples()
    }
    assert set(texts.values()) - {"1"} == expected
    cells = f7_proxies.f7_cells(corr_proxies, {})
    want = cells.apply(lambda r: _interval_text(r.value, r.ci_low, r.ci_high), axis=1)
    assert (cells["text"] == want).all()


def test_f9_cells_are_the_baseline_columns(tmp_path, monkeypatch):
    from workflow_scripts.figures import f9_baselines

    acc = synthetic_accuracy()
    models = sorted(acc.model.unique())
    rankers = {"params": {m: float(i % 3) for i, m in enumerate(models)}}
    corr = correlation_table(
        acc,
        n_resamples=50,
        seed=0,
        min_subset=4,
        static_rankers=("params", "random"),
        ranker_values=rankers,
    )
    cells = f9_baselines.f9_cells(corr, {})
    rows = corr[
        (corr.method == "kendall") & (corr.subset == "all") & corr.y_kind.isin(["pair", "mean"])
    ]
    assert len(cells) == len(rows)
    key = ["x_protocol", "x_arm", "value"]
    merged = cells.merge(rows, on=key, suffixes=("", "_t"))
    assert (merged["baseline_diff"] == merged["baseline_diff_t"]).all()
    codes = f9_baselines.ranker_codes(cells["baseline"])
    assert codes == {
        n: "AB"[i]
        for i, n in enumerate(sorted(set(cells.baseline), key=["params", "random"].index))
    }
    for c in cells.itertuples():
        suffix = c.code
        assert c.text == (
            f"{c.baseline_diff:+.2f}{suffix}"
            if c.baseline_ci_low > 0 or c.baseline_ci_high < 0
            else f"({c.baseline_diff:+.2f}{suffix})"
        )
        assert c.beats_baseline == (c.baseline_ci_low > 0)
    png, pdf = tmp_path / "f9.png", tmp_path / "f9.pdf"
    f9_baselines.plot(corr, {"dpi": 60}, png, pdf)
    _check_outputs(tmp_path, png, pdf)
    with pytest.raises(ValueError, match="analysis.static_rankers"):
        f9_baselines.f9_cells(correlation_table(acc, n_resamples=20, seed=0), {})


def test_f7_colours_agreement_with_each_proxys_arrow_and_stacks_its_panels(
    corr_proxies, monkeypatch, tmp_path
):
    """The colour of an F7 cell is the coefficient times the proxy's direction (red is always
    "orders the models as its arrow says"), its number the coefficient; panels (subset x
    in-domain / mean OOD) are stacked, so the width does not grow with the subsets."""
    drawn, sizes = [], []
    original_heatmap, original_save = f7_proxies.heatmap, f7_proxies.save

    def heatmap(ax, sns, frame, **kwargs):
        drawn.append((ax.figure, frame.copy(), kwargs["annot"]))
        return original_heatmap(ax, sns, frame, **kwargs)

    def save(fig, png, pdf, dpi):
        sizes.append(tuple(fig.get_size_inches()))
        original_save(fig, png, pdf, dpi)

    monkeypatch.setattr(f7_proxies, "heatmap", heatmap)
    monkeypatch.setattr(f7_proxies, "save", save)
    cells = f7_proxies.plot(corr_proxies, {}, tmp_path / "a.png", tmp_path / "a.pdf")
    subsets = list(dict.fromkeys(cells["subset"]))
    assert len(drawn) == 2 * len(subsets)  # in-domain and mean OOD per subset
    fig, frame, annot = drawn[0]
    first = cells[(cells["subset"] == "all") & ~cells["column"].str.endswith("mean OOD")]
    for cell in first.itertuples():
        sign = -1 if cell.x_protocol == "nc1" else 1  # RankMe up, NC1 down (registry)
        label = f7_proxies.proxy_label(cell.x_protocol, cell.x_arm)
        col = list(frame.columns).index(cell.column)
        assert frame.loc[label].iloc[col] == pytest.approx(sign * cell.value)
        assert annot[list(frame.index).index(label), col] == cell.text  # the coefficient
    f7_proxies.plot(corr_proxies, {"subsets": ["all"]}, tmp_path / "b.png", tmp_path / "b.pdf")
    assert sizes[0][0] == sizes[1][0] and sizes[0][1] > sizes[1][1]


@pytest.mark.parametrize("option, expected", [("auto", True), (False, False), (True, True)])
def test_f3_and_f6_write_the_model_keys_where_they_fit(
    acc, monkeypatch, tmp_path, option, expected
):
    """label_points auto: the keys beside the points of a panel with at most LABEL_LIMIT
    models (here F3's panels and F6's ViT part hold fewer); false: none; and auto stops
    labelling above the limit."""
    notes = _capture_notes(monkeypatch, f3_scatter)
    f3_scatter.plot(
        acc, {"label_points": option, "dpi": 60}, tmp_path / "a.png", tmp_path / "b.pdf"
    )
    models = set(acc["model"])
    assert len(models) <= C.LABEL_LIMIT
    assert (models <= set(notes)) == expected and (not set(notes) & models) == (not expected)
    hand = hand_accuracy()
    vit = set(hand.loc[hand["backbone"] == "vit", "model"])
    notes6 = _capture_notes(monkeypatch, f6_paradigm_backbone)
    f6_paradigm_backbone.plot(
        hand, {"label_points": option, "dpi": 60}, tmp_path / "c.png", tmp_path / "d.pdf"
    )
    assert (vit <= set(notes6)) == expected
    assert C.label_points("auto", C.LABEL_LIMIT) and not C.label_points("auto", C.LABEL_LIMIT + 1)


def test_dollar_signs_in_names_are_drawn_as_text(tmp_path, acc, corr):
    """Issue 28: a model named with '$' (matplotlib mathtext) used to crash F3; every figure
    now draws text as written."""
    renamed = acc.assign(model=acc["model"] + "$\\nosuchcommand{$")  # invalid as mathtext
    png, pdf = tmp_path / "f3.png", tmp_path / "f3.pdf"
    _call("f3_scatter", renamed, corr, {"label_points": True}, png, pdf)
    _check_outputs(tmp_path, png, pdf)
