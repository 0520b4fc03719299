"""External result tables end to end (config results_tables): the analysis, T3 and the
figures on a published table alone (models: []), and a table merged into a finished run, which
reruns the analysis only."""

import os

import pandas as pd
import pytest
from scipy import stats
from snakerun import ROOT, copy_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.integration

PUBLISHED = ROOT / "config" / "published_imagenet.csv"
ANALYSIS = {"merge_results", "correlations", "t3_accuracy", "summary"}


def test_a_published_table_alone(tmp_path):
    """The README's command in its own run folder (`-d`), with the Snakefile's own
    configuration (the demo's, found beside the Snakefile)."""
    args = ("--cores", "2", "--config", "models=[]", f"results_tables=[{PUBLISHED}]")
    proc = snakemake(tmp_path, *args, configfiles=())
    out = proc.stdout + proc.stderr
    assert "figures not drawn: f2_id_vs_ood (no out-of-domain data set);" in out
    # the demo's static rankers are facts of model rows: none here, so only the random order
    assert "static rankers left out: params has no value for any analysed model" in out
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "figures",
        "summary.html",
        "summary.md",
        "tables",
    ]
    assert sorted(p.name for p in (tmp_path / "results/tables").iterdir()) == [
        "accuracy.html",
        "accuracy_merged.csv",
        "correlations.csv",
    ]
    figures = sorted(p.name for p in (tmp_path / "results/figures").iterdir())
    assert figures == [
        f"{f}.{e}"
        for f in ("f1_id_protocols", "f6_paradigm_backbone", "f9_baselines")
        for e in ("pdf", "png")
    ]
    published = pd.read_csv(PUBLISHED)
    merged = pd.read_csv(tmp_path / "results/tables/accuracy_merged.csv")
    assert (merged["source"] == "published_imagenet.csv").all()
    pd.testing.assert_frame_equal(merged[published.columns], published)
    corr = pd.read_csv(tmp_path / "results/tables/correlations.csv")
    row = corr.query(
        "method == 'kendall' and subset == 'all' and x_protocol == 'linear' "
        "and y_protocol == 'finetune'"
    ).iloc[0]
    wide = published.pivot(index="model", columns="protocol", values="top1")
    both = wide[["linear", "finetune"]].dropna()
    assert row["n"] == len(both)
    assert row["value"] == pytest.approx(stats.kendalltau(both["linear"], both["finetune"])[0])
    assert row["baseline"] == "random" and row["baseline_value"] == 0
    assert row["baseline_diff"] == pytest.approx(row["value"], abs=1e-12)
    assert planned_jobs(snakemake(tmp_path, "-n", *args[2:], configfiles=())) == {}


def test_a_table_merged_into_a_finished_run(smoke_run, tmp_path):
    run = copy_workdir(smoke_run, tmp_path / "run")
    acc = pd.read_csv(run / "results/tables/accuracy.csv")
    # published in-domain linear numbers of the four smoke models, and a fifth model measured
    # elsewhere with kNN (raw) on every smoke data set
    published = acc.query("protocol == 'linear' and arm == 'raw' and domain == 'id'")[
        ["model", "dataset", "domain", "shift_group", "protocol"]
    ].assign(arm="published", top1=[61.0, 40.5, 72.25, 55.0])
    datasets = acc.drop_duplicates("dataset")[["dataset", "domain", "shift_group"]]
    other = datasets.assign(
        model="other_vit",
        method="dino",
        backbone="vit",
        paradigm="discriminative",
        protocol="knn",
        arm="raw",
        top1=[66.0, 31.0, 12.5],
    )
    table = pd.concat([published, other], ignore_index=True)
    path = tmp_path / "elsewhere.csv"
    table.to_csv(path, index=False)
    args = ("--config", f"results_tables=[{path}]")
    plan = planned_jobs(snakemake(run, "-n", *args))
    assert ANALYSIS <= set(plan)
    assert set(plan) - ANALYSIS - {"all"} <= {n for n in plan if n.startswith("f")}
    snakemake(run, "--cores", "2", *args)

    merged = pd.read_csv(run / "results/tables/accuracy_merged.csv")
    assert merged["source"].value_counts().to_dict() == {"computed": len(acc), "elsewhere.csv": 7}
    corr = pd.read_csv(run / "results/tables/correlations.csv")
    knn = merged.query("protocol == 'knn' and arm == 'raw'").pivot(
        index="model", columns="dataset", values="top1"
    )
    row = corr.query(
        "method == 'spearman' and subset == 'all' and x_protocol == 'knn' and x_arm == 'raw' "
        "and y_protocol == 'knn' and y_arm == 'raw' and y_dataset == 'count'"
    ).iloc[0]
    assert row["n"] == 5  # the four computed models and other_vit
    assert row["value"] == pytest.approx(stats.spearmanr(knn["shapes"], knn["count"])[0])
    pair = corr.query(
        "method == 'kendall' and subset == 'all' and y_kind == 'pair' and x_protocol == 'knn' "
        "and x_arm == 'raw' and y_protocol == 'linear' and y_arm == 'published'"
    ).iloc[0]
    measured = knn.loc[published["model"], "shapes"]
    assert pair["n"] == 4
    assert pair["value"] == pytest.approx(stats.kendalltau(measured, published["top1"])[0])
    # this run's accuracies are untouched
    pd.testing.assert_frame_equal(pd.read_csv(run / "results/tables/accuracy.csv"), acc)

    # the table replaced by other numbers with an older time (`mv` of an earlier file, `cp -p`)
    # merges again: its sha256 is a param of merge_results (issue 28); a touch plans nothing
    os.utime(path)
    assert planned_jobs(snakemake(run, "-n", *args)) == {}
    first = path.read_bytes()
    changed = table.assign(top1=table["top1"] + 1)
    replacement = path.with_suffix(".new")
    changed.to_csv(replacement, index=False)
    os.utime(replacement, (946684800, 946684800))
    os.replace(replacement, path)
    plan = planned_jobs(snakemake(run, "-n", *args))
    assert {"merge_results", "correlations"} <= set(plan)
    path.write_bytes(first)
    assert planned_jobs(snakemake(run, "-n", *args)) == {}

    # the table dropped from the configuration: the merged table is no longer this study's
    # analysis table and does not stay behind beside it
    proc = snakemake(run, "--cores", "2")
    out = proc.stdout + proc.stderr
    assert not (run / "results/tables/accuracy_merged.csv").exists()
    assert "removed results/tables/accuracy_merged.csv" in out
    corr = pd.read_csv(run / "results/tables/correlations.csv")
    assert corr["n"].max() == 4  # the four smoke models alone
