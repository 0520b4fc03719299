"""Tests for workflow_scripts.tables: T1/T2 equal the configured tables, sizes are measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workflow_scripts import tables as T
from workflow_scripts.config import read_table

ROOT = Path(__file__).resolve().parents[2]


def _tsv(name):
    """The table as plain strings, read independently of the config module."""
    return pd.read_csv(ROOT / "config" / name, sep="\t", dtype=str, keep_default_na=False)


def _as_str(frame):
    return frame.astype(object).where(frame.notna(), "").astype(str)


def test_models_table_equals_model_tsv(tmp_path):
    rows = [
        dict(r)
        for _, r in read_table(ROOT / "config/models_demo.tsv", "models", "models").iterrows()
    ]
    t1 = T.models_table(rows)
    raw = _tsv("models_demo.tsv").rename(columns={"family": "backbone"})
    assert list(t1.columns) == list(T.MODEL_COLUMNS)
    assert list(t1["key"]) == list(raw["key"])
    pd.testing.assert_frame_equal(_as_str(t1), raw[list(T.MODEL_COLUMNS)], check_dtype=False)
    # round trip through the CSV written by the rule
    T.save_html(tmp_path / "t1.html", t1, "T1")
    t1.to_csv(tmp_path / "t1.csv", index=False)
    back = pd.read_csv(tmp_path / "t1.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(back, raw[list(T.MODEL_COLUMNS)], check_dtype=False)
    html = (tmp_path / "t1.html").read_text()
    assert html.count("<tr") == len(raw) + 1 and "simmim_vit" in html


def test_models_table_keeps_order_and_note_column():
    rows = [
        {
            c: f"{c}{i}"
            for c in [
                "key",
                "method",
                "arch",
                "family",
                "paradigm",
                "embedding",
                "source",
                "seed",
                "steps",
                "epochs",
                "format",
                "url",
                "sha256",
                "note",
            ]
        }
        for i in (2, 1)
    ]
    t1 = T.models_table(rows)
    assert list(t1["key"]) == ["key2", "key1"]
    assert list(t1.columns)[-1] == "note" and list(t1["backbone"]) == ["family2", "family1"]
    with pytest.raises(ValueError, match="repeat"):
        T.models_table(rows + rows[:1])
    with pytest.raises(ValueError, match="paradigm"):
        T.models_table([{k: v for k, v in rows[0].items() if k != "paradigm"}])


def test_datasets_table_equals_tsv_and_measures_labels(tmp_path):
    frame = read_table(ROOT / "config/datasets_demo.tsv", "datasets", "datasets")
    rows = [dict(r) for _, r in frame.iterrows()]
    rng = np.random.default_rng(0)
    labels, truth = {}, {}
    for i, row in enumerate(rows[:3]):  # label files for three sets only
        n_tr, n_te = 50 + 7 * i, 20 + i
        classes = 3 + i
        y_tr = rng.integers(0, classes, n_tr)
        y_tr[:classes] = np.arange(classes)  # every class present
        paths = (tmp_path / f"{row['key']}_train.npy", tmp_path / f"{row['key']}_test.npy")
        np.save(paths[0], y_tr.astype(np.int64))
        np.save(paths[1], rng.integers(0, classes, n_te).astype(np.int64))
        labels[row["key"]] = paths
        truth[row["key"]] = (n_tr, n_te, classes)
    t2 = T.datasets_table(rows, labels)
    raw = _tsv("datasets_demo.tsv")
    cols = list(T.DATASET_COLUMNS)
    assert list(t2.columns) == cols + [
        "measured_train",
        "measured_test",
        "classes_in_train",
        "description",
    ]
    pd.testing.assert_frame_equal(
        _as_str(t2[cols + ["description"]]), raw[cols + ["description"]], check_dtype=False
    )
    for r in t2.itertuples():
        if r.key in truth:
            assert (r.measured_train, r.measured_test, r.classes_in_train) == truth[r.key]
        else:
            assert pd.isna(r.measured_train) and pd.isna(r.classes_in_train)
    with pytest.raises(ValueError, match="not in the table"):
        T.datasets_table(rows[:1], {"nope": labels[rows[0]["key"]]})


def test_accuracy_html_lists_every_row(tmp_path):
    acc = pd.DataFrame({"model": ["m1", "m2"], "top1": [12.345, np.nan], "n_seeds": [1, 2]})
    T.save_html(tmp_path / "a.html", acc, "T3 <accuracy>")
    html = (tmp_path / "a.html").read_text()
    assert "T3 &lt;accuracy&gt;" in html and "12.35" in html and html.count("<tr") == 3
    assert [p.name for p in tmp_path.iterdir()] == ["a.html"]


def test_import_is_light():
    code = "import sys, workflow_scripts.tables; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(ROOT)
    )
    assert out.stdout.strip() == "False"


def test_paper_t1_carries_the_published_linear_numbers():
    """T1 of the paper zoo holds the sources' published linear-probe top-1."""
    import yaml

    from workflow_scripts.config import load_study

    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "config" / "paper.yaml").read_text())
    study = load_study(config, root)
    t1 = T.models_table([study.model(k) for k in study.model_keys]).set_index("key")
    assert len(t1) == 26
    expected = {
        "jigsaw": 48.57,
        "swav": 75.3,
        "mae": 68.0,
        "dino_vitb16": 78.2,
        "milan": 78.9,
        "pixmim": 67.5,
        "byol": 72.29,
    }
    for key, value in expected.items():
        assert t1.loc[key, "published_linear"] == value, key
    assert t1.loc[["densecl", "maskfeat", "beit_v2"], "published_linear"].isna().all()
    assert list(t1.columns[-2:]) == ["published_linear", "note"]


def _published_rows():
    base = {
        c: "x"
        for c in [
            "method",
            "arch",
            "family",
            "paradigm",
            "embedding",
            "source",
            "seed",
            "steps",
            "epochs",
            "format",
            "url",
            "sha256",
        ]
    }
    return [
        {**base, "key": k, "published_linear": p, "note": "n"}
        for k, p in (("a", 70.0), ("b", None), ("c", 60.5))
    ]


def _accuracy(arms=("raw", "bn")):
    rows = []
    for model, top1 in (("a", 50.0), ("b", 40.0), ("c", 45.0)):
        for arm in arms:
            rows += [
                {
                    "model": model,
                    "dataset": "inet",
                    "domain": "id",
                    "protocol": "linear",
                    "arm": arm,
                    "top1": top1 + (arm == "bn"),
                },
                {
                    "model": model,
                    "dataset": "ood1",
                    "domain": "ood",
                    "protocol": "linear",
                    "arm": arm,
                    "top1": 1.0,
                },
                {
                    "model": model,
                    "dataset": "inet",
                    "domain": "id",
                    "protocol": "knn",
                    "arm": arm,
                    "top1": 2.0,
                },
            ]
    return pd.DataFrame(rows)


def test_t1_sets_the_measured_linear_accuracy_beside_the_published_one():
    t1 = T.models_table(_published_rows(), _accuracy())
    columns = list(t1.columns)
    assert columns[columns.index("published_linear") + 1] == "measured_linear"
    # in-domain linear, BN arm (51, 41, 46), whatever the published value
    assert t1["measured_linear"].tolist() == [51.0, 41.0, 46.0]
    assert T.models_table(_published_rows(), _accuracy(("raw",)))["measured_linear"].tolist() == [
        50.0,
        40.0,
        45.0,
    ]
    assert "measured_linear" not in T.models_table(_published_rows()).columns


def test_f8_ranks_this_run_against_the_published_numbers(tmp_path):
    from scipy import stats

    from workflow_scripts.figures import f8_published

    t1 = T.models_table(_published_rows(), _accuracy())
    t1 = pd.concat(
        [
            t1,
            t1.assign(
                key=["d", "e", "f"],
                published_linear=[65.0, 80.0, 55.0],
                measured_linear=[44.0, 60.0, 39.0],
            ),
        ],
        ignore_index=True,
    )
    data = f8_published.f8_data(t1)
    assert data["n"] == 5 and "b" not in set(data["points"]["key"])  # b has no published number
    keep = t1[t1["published_linear"].notna()]
    tau = stats.kendalltau(
        keep["published_linear"].astype(float), keep["measured_linear"].astype(float)
    )
    assert data["kendall"] == pytest.approx((tau.statistic, tau.pvalue))
    png, pdf = tmp_path / "f8.png", tmp_path / "f8.pdf"
    f8_published.plot(t1, {}, png, pdf)
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError, match="measured_linear"):
        f8_published.f8_data(t1.drop(columns="measured_linear"))


def test_make_t1_reads_one_accuracy_path_given_as_a_string(tmp_path):
    """Snakemake hands a one-file named input over as a plain string."""
    path = tmp_path / "accuracy.csv"
    _accuracy().to_csv(path, index=False)
    outputs = {"csv": str(tmp_path / "t1.csv"), "html": str(tmp_path / "t1.html")}
    params = {"table": "models", "rows": _published_rows(), "title": "T1"}
    for accuracy in (str(path), [str(path)]):
        t1 = T.make(params, {"accuracy": accuracy}, outputs)
        assert t1["measured_linear"].tolist() == [51.0, 41.0, 46.0]
    assert "measured_linear" not in T.make(params, {"accuracy": []}, outputs).columns
