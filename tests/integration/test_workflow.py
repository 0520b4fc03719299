"""End to end: the whole DAG on the smoke configuration, checked against independent oracles."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from snakerun import SMOKE, SMOKE_FILES, planned_jobs, snakemake

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(smoke_run):
    """The session's one local smoke run (conftest.py)."""
    return smoke_run


def test_tables_have_the_promised_shape(run):
    acc = pd.read_csv(run / "results/tables/accuracy.csv")
    assert list(acc.columns[:10]) == [
        "model",
        "method",
        "backbone",
        "arch",
        "paradigm",
        "dataset",
        "domain",
        "shift_group",
        "protocol",
        "arm",
    ]
    assert {"top1", "top5", "seed", "epochs", "code_version"} <= set(acc.columns)
    frozen = acc[acc.protocol.isin(["knn", "linear", "linear_online"])]
    trained = acc[~acc.protocol.isin(["knn", "linear", "linear_online"])]
    assert len(frozen) == 4 * 3 * 3 * 2
    assert set(trained["protocol"]) == {"finetune", "fewshot10", "fewshot1"}
    assert len(trained) == 4 * 3 * 2 and set(trained["dataset"]) == {"shapes"}
    assert (trained.query("protocol == 'fewshot10'")["n_train"] == 100).all()
    assert (trained.query("protocol == 'fewshot1'")["n_train"] == 10).all()
    assert not acc.duplicated(["model", "dataset", "protocol", "arm"]).any()
    assert acc["top1"].between(0, 100).all()
    assert acc.loc[acc.dataset == "count", "top5"].isna().all()  # 4 classes: no top-5
    assert acc.loc[acc.dataset == "shapes", "top5"].between(0, 100).all()
    corr = pd.read_csv(run / "results/tables/correlations.csv")
    assert list(corr.columns[:13]) == [
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
    ]
    assert set(corr["method"]) == {"kendall", "spearman", "pearson", "weightedtau"}
    assert (corr.loc[corr.subset == "all", "n"] == 4).all()
    assert set(corr["missing"]) == {"pairwise"}
    # protocol proxies: 4 models x 3 data sets x 5 proxies x 2 arms, each an x of the analysis
    proxies = pd.read_csv(run / "results/tables/proxies.csv")
    assert len(proxies) == 4 * 3 * 5 * 2 and (proxies["split"] == "train").all()
    assert set(corr.loc[corr.y_kind == "transfer", "x_protocol"]) == set(proxies["proxy"])
    # the analysis reports the agreement of the cached and the faithful (online) probe
    cached_vs_online = corr.query(
        "x_protocol == 'linear' and y_protocol == 'linear_online' "
        "and x_arm == y_arm and y_kind == 'pair' and subset == 'all'"
    )
    assert set(cached_vs_online["method"]) == {"kendall", "spearman", "pearson", "weightedtau"}
    for pct, per_class in ((10, 10), (1, 1)):
        subset = np.load(run / f"results/splits/shapes/fewshot_{pct}.npy")
        labels = np.load(run / "results/labels/shapes/train.npy")
        assert subset.dtype == np.int64 and np.all(np.bincount(labels[subset]) == per_class)
    # every registered figure is drawn but F6 (it needs a method on both backbones or both
    # paradigms within the ViTs: not in the smoke zoo) and F8 (no published numbers)
    from workflow_scripts import registry

    undrawable = {"f6_paradigm_backbone", "f8_published"}
    for figure in registry.FIGURES:
        for ext in ("png", "pdf"):
            path = run / f"results/figures/{figure}.{ext}"
            if figure in undrawable:
                assert not path.exists(), figure
            else:
                assert path.stat().st_size > 1000, figure
    models = pd.read_csv(run / "results/tables/models.csv")
    assert models["key"].tolist() == [
        "random_resnet",
        "simclr_resnet",
        "supervised_resnet",
        "mae_vit",
    ]
    datasets = pd.read_csv(run / "results/tables/datasets.csv")
    assert (datasets["measured_train"] == datasets["n_train"]).all()
    for table in ("models", "datasets", "accuracy"):
        assert (run / f"results/tables/{table}.html").stat().st_size > 500


def test_feature_cache_layout(run):
    for dataset, n_train, n_test in (("shapes", 1000, 200), ("count", 200, 100)):
        for split, n in (("train", n_train), ("test", n_test)):
            labels = np.load(run / f"results/labels/{dataset}/{split}.npy")
            assert labels.dtype == np.int64 and labels.shape == (n,)
            for model, dim in (("simclr_resnet", 128), ("mae_vit", 64)):
                feats = np.load(run / f"results/features/{model}/{dataset}/{split}.npy")
                assert feats.shape == (n, dim) and feats.dtype == np.float32
                meta = json.loads(
                    (run / f"results/features/{model}/{dataset}/{split}.json").read_text()
                )
                assert meta["n"] == n and meta["d"] == dim and meta["dtype"] == "float32"
                weights = run / f"results/checkpoints/{model}.safetensors"
                import hashlib

                assert meta["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_knn_accuracy_equals_scikit_learn_on_the_cache(run):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    acc = pd.read_csv(run / "results/tables/accuracy.csv")
    for model in ("random_resnet", "mae_vit"):
        for dataset in ("shapes", "count"):
            base = run / "results/features" / model / dataset
            xtr, xte = np.load(base / "train.npy"), np.load(base / "test.npy")
            ytr = np.load(run / f"results/labels/{dataset}/train.npy")
            yte = np.load(run / f"results/labels/{dataset}/test.npy")
            scaler = StandardScaler().fit(xtr)
            for arm, (a, b) in {
                "raw": (xtr, xte),
                "bn": (scaler.transform(xtr), scaler.transform(xte)),
            }.items():
                clf = KNeighborsClassifier(
                    n_neighbors=20, weights="distance", algorithm="brute"
                ).fit(a, ytr)
                expected = (clf.predict(b) == yte).mean() * 100
                got = acc.query(
                    "model == @model and dataset == @dataset and protocol == 'knn' and arm == @arm"
                )
                assert got["top1"].item() == pytest.approx(expected, abs=1e-9)


def override(workdir, text):
    path = workdir / "override.yaml"
    path.write_text(text)
    return ["--configfile", *SMOKE_FILES, str(path)]


def test_rerun_is_a_no_op_and_one_figure_rerenders_alone(run):
    assert planned_jobs(snakemake(run, "-n")) == {}
    plan = planned_jobs(snakemake(run, "-n", *override(run, "figures: {f2: {dpi: 61}}\n")))
    assert plan == {"f2_id_vs_ood": 1, "all": 1}
    plan = planned_jobs(snakemake(run, "-n", *override(run, "knn: {k: 5}\n")))
    assert plan["knn_probe"] == 4 and "linear_probe" not in plan and "extract_features" not in plan
    assert "finetune" not in plan and "pretrain" not in plan and "linear_online" not in plan
    assert {"accuracy_table", "correlations"} <= set(plan)


def test_extra_fewshot_seeds_plan_their_own_subsets(run):
    plan = planned_jobs(snakemake(run, "-n", *override(run, "fewshot: {extra_seeds: [7, 8]}\n")))
    assert plan["fewshot_split_extra_seed"] == 2 * 2  # 2 sizes x 2 extra seeds
    assert plan["finetune"] == 4 and "fewshot_split" not in plan
    assert "knn_probe" not in plan and "extract_features" not in plan


def test_bad_input_fails_before_any_job(tmp_path):
    proc = snakemake(tmp_path, "-n", "--config", "models=[simclr_resnet,dino]", check=False)
    assert proc.returncode != 0
    assert "config key 'models': unknown model key(s) 'dino'" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_one_arm_plans_no_bn_figure(run):
    plan = planned_jobs(snakemake(run, "-n", "--config", "arms=[raw]"))
    assert "f4_bn_effect" not in plan and plan["f3_scatter"] == 1 and plan["knn_probe"] == 4


def test_per_dataset_jobs_give_the_same_results(run, tmp_path):
    """batch_datasets=false: one job per (model, data set); same files, same values."""
    plan = planned_jobs(snakemake(tmp_path, "-n", "--config", "batch_datasets=false"))
    assert plan["extract_features"] == 4 * 3 and plan["knn_probe"] == 4 * 3
    target = "results/probes/knn/simclr_resnet/count.csv"
    snakemake(tmp_path, target, "--cores", "2", "--config", "batch_datasets=false")
    for split in ("train", "test"):
        a = np.load(tmp_path / f"results/features/simclr_resnet/count/{split}.npy")
        b = np.load(run / f"results/features/simclr_resnet/count/{split}.npy")
        np.testing.assert_array_equal(a, b)  # fixed seed + step budget: bit-identical weights
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / target), pd.read_csv(run / target))
    assert not (tmp_path / "results/features/simclr_resnet/shapes_sketch").exists()


def test_per_run_fine_tuning_jobs_give_the_same_results(run, tmp_path):
    """batch_runs=false (the paper's setting): one fine-tuning job per (model, run, arm), each
    its own process; the gathered protocol file equals the batched job's byte for byte."""
    plan = planned_jobs(snakemake(tmp_path, "-n", "--config", "batch_runs=false"))
    assert plan["finetune"] == 4 * 3 * 2 and plan["collect_trained"] == 4 * 3
    target = "results/probes/fewshot1/simclr_resnet/shapes.csv"
    snakemake(tmp_path, target, "--cores", "2", "--config", "batch_runs=false")
    for arm in ("raw", "bn"):
        assert (tmp_path / f"logs/finetune/simclr_resnet/fewshot1/{arm}.log").exists()
    assert (tmp_path / target).read_bytes() == (run / target).read_bytes()


def test_the_run_manifest_describes_the_accuracy_table(run):
    """results/tables/accuracy.json: the smoke run's configuration tables by sha256, the
    devices of each protocol (this machine has no GPU) and the pinned packages as installed."""
    import hashlib

    import yaml

    manifest = json.loads((run / "results/tables/accuracy.json").read_text())
    config = yaml.safe_load(SMOKE.read_text())
    root = SMOKE.parents[2]
    for name in ("models", "datasets"):
        table = root / config[f"{name}_table"]
        assert manifest["tables"][name]["sha256"] == hashlib.sha256(table.read_bytes()).hexdigest()
    protocols = ("fewshot1", "fewshot10", "finetune", "knn", "linear", "linear_online")
    assert manifest["devices"] == {p: ["cpu"] for p in protocols}
    assert manifest["packages"]["torch"]["installed"].startswith(
        manifest["packages"]["torch"]["pinned"]
    )
    assert len(manifest["config_sha256"]) == 64 and manifest["created_utc"]


def test_the_run_ends_with_the_summary_whose_numbers_are_the_tables(run):
    """results/summary.md is what the run printed last; its top-1 cells are T3's in-domain
    rows and its headline taus the correlation table's (read here with pandas)."""
    text = (run / "results/summary.md").read_text()
    printed = (run / "stdout.txt").read_text().rstrip()
    # the run is in its own folder (--directory), so the last line says which
    folder = f"(paths relative to the run folder {Path(run).resolve()})"
    assert printed.endswith(folder)
    assert printed[: -len(folder)].rstrip().endswith(text.rstrip())
    accuracy = pd.read_csv(run / "results/tables/accuracy.csv")
    ids = accuracy[accuracy["domain"] == "id"]
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    start = lines.index(header) + 2
    cells = {}
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        model, *values = [c.strip() for c in line.strip("|").split("|")]
        cells[model] = dict(zip(columns, values))
    assert sorted(cells) == sorted(ids["model"].unique())
    label = {"knn": "kNN", "linear": "linear"}
    for row in ids[ids["protocol"].isin(list(label))].itertuples():
        column = label[row.protocol] + (" (BN)" if row.arm == "bn" else "")
        assert cells[row.model][column] == f"{row.top1:.1f}", (row.model, column)
    corr = pd.read_csv(run / "results/tables/correlations.csv")
    knn_lin = corr[
        (corr["x_protocol"] == "knn")
        & (corr["x_arm"] == "raw")
        & (corr["y_protocol"] == "linear")
        & (corr["y_arm"] == "bn")
        & (corr["y_dataset"] == corr["x_dataset"])
        & (corr["subset"] == "all")
        & (corr["method"] == "kendall")
    ].iloc[0]
    assert (
        f"| kNN vs linear (BN) | {int(knn_lin['n'])} | {knn_lin['value']:.2f} | "
        f"[{knn_lin['ci_low']:.2f}, {knn_lin['ci_high']:.2f}] |" in text
    )


def test_no_empty_state_folder_stays_after_the_run(run):
    """Every fine-tuning job deleted its state at the end; the run's onsuccess removed the
    model folders left empty (issue 28), keeping results/state/finetune itself."""
    root = run / "results/state/finetune"
    assert (run / "results/tables/accuracy.csv").exists()
    assert not root.exists() or list(root.iterdir()) == []
