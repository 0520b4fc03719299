"""workflow_scripts.plan: the jobs, outputs and resources a configuration plans, checked
against hand-computed values for the demo and the paper configuration."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from workflow_scripts import registry
from workflow_scripts.config import load_study
from workflow_scripts.plan import RUN_TIME_KEYS, Plan

ROOT = Path(__file__).resolve().parents[2]


def _plan(name="config", **changes) -> Plan:
    config = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            config.setdefault(section, {})[sub] = value
        else:
            config[section] = value
    return Plan(config, load_study(config, ROOT))


def test_trained_runs_and_their_units():
    plan = _plan("paper", fewshot__extra_seeds=[7])
    assert plan.trained_protocols == ["finetune", "fewshot10", "fewshot1"]
    assert plan.trained_runs == {
        "finetune": ("finetune", None, None),
        "fewshot10": ("fewshot10", "10", 42),
        "fewshot10_seed7": ("fewshot10", "10", 7),
        "fewshot1": ("fewshot1", "1", 42),
        "fewshot1_seed7": ("fewshot1", "1", 7),
    }
    model = plan.models[0]
    unit = SimpleNamespace(model=model, run="fewshot1_seed7", arm="bn")
    assert plan.job_runs(unit) == [
        {
            "run": "fewshot1_seed7",
            "arm": "bn",
            "protocol": "fewshot1",
            "subset_seed": 7,
            "split": "results/splits/imagenet/fewshot_1_seed7.npy",
        }
    ]
    assert plan.job_splits(unit) == ["results/splits/imagenet/fewshot_1_seed7.npy"]
    recipe = plan.job_recipes(unit)["fewshot1"]
    assert not set(recipe) & set(RUN_TIME_KEYS)
    assert recipe == {k: v for k, v in plan.config["fewshot"].items() if k not in RUN_TIME_KEYS}
    assert plan.trained_outputs("fewshot10", model) == [
        f"results/trained/{model}/{run}/{arm}.csv"
        for run in ("fewshot10", "fewshot10_seed7")
        for arm in ("raw", "bn")
    ]
    # unbatched: one job per (run, arm), the local collect job gathers; nothing gathered here
    assert plan.per_run("results/trained/{model}/{run}/{arm}.csv") == (
        "results/trained/{model}/{run}/{arm}.csv"
    )
    assert plan.gathered_outputs() == []


def test_batched_runs_cover_every_run_and_arm_of_a_model():
    plan = _plan("config")
    assert plan.batch_runs
    runs = plan.job_runs(SimpleNamespace(model=plan.models[0]))
    assert [(u["run"], u["arm"]) for u in runs] == [
        (r, a) for r in ("finetune", "fewshot10", "fewshot1") for a in ("raw", "bn")
    ]
    assert plan.job_splits(SimpleNamespace(model=plan.models[0])) == [
        "results/splits/shapes/fewshot_10.npy",
        "results/splits/shapes/fewshot_1.npy",
    ]
    assert plan.per_run("logs/finetune/{model}/{run}/{arm}.log") == "logs/finetune/{model}.log"
    assert len(plan.per_run("results/trained/{model}/{run}/{arm}.csv")) == 6
    assert plan.gathered_outputs() == [
        f"results/probes/{p}/{{model}}/shapes.csv" for p in ("finetune", "fewshot10", "fewshot1")
    ]


def test_paper_resources_by_hand():
    plan = _plan("paper")
    cfg = plan.config
    vit = next(m for m in plan.models if plan.study.model(m)["arch"] == "vit_base_patch16_224")
    wc = SimpleNamespace(model=vit, dataset="imagenet", run="finetune", arm="raw")
    workers, gpus = cfg["finetune"]["workers"], cfg["finetune"]["gpus"]
    assert plan.finetune_cpus(wc) == (cfg["threads"]["finetune"] + workers) * gpus
    assert plan.mem_mb_training(wc) == gpus * (registry.HOST_MB + workers * registry.WORKER_MB)
    assert plan.finetune_gpus(wc) == gpus  # device auto + a 224-pixel arch: a GPU job
    # extraction: process + workers + the job's features once (N x 768 float32)
    images = int(plan.study.dataset("imagenet")["n_train"]) + int(
        plan.study.dataset("imagenet")["n_test"]
    )
    features = -(-images * 768 * 4 // 2**20)
    process = registry.HOST_MB + cfg["features"]["workers"] * registry.WORKER_MB
    assert plan.mem_mb_extraction(wc) == process + features
    assert plan.mem_mb_features(3, 1000)(wc) == 1000 + -(-3 * images * 768 * 4 // 2**20)
    assert plan.extraction_cpus(wc) == cfg["features"]["threads"] + cfg["features"]["workers"]
    assert plan.per_job("results/probes/knn/{model}/{dataset}.csv") == (
        "results/probes/knn/{model}/{dataset}.csv"
    )  # one job per (model, data set)
    assert plan.job_datasets(wc) == ["imagenet"]


def test_attentive_probe_resources_by_hand():
    """An attentive job: a GPU for the paper's archs, and host memory for the process and one
    data set's float16 tokens: ViT-B/16 196 x 768, ResNet-50 49 x 2048, of the 10 % train
    subset and the test split."""
    plan = _plan("paper")
    cfg = plan.config
    process = registry.HOST_MB + cfg["features"]["workers"] * registry.WORKER_MB
    imagenet = plan.study.dataset("imagenet")
    images = 0.1 * int(imagenet["n_train"]) + int(imagenet["n_test"])
    for arch, tokens, width in (("vit_base_patch16_224", 196, 768), ("resnet50", 49, 2048)):
        model = next(m for m in plan.models if plan.study.model(m)["arch"] == arch)
        wc = SimpleNamespace(model=model, dataset="imagenet")
        assert plan.attentive_gpus(wc) == 1
        expected = process + -(-images * tokens * width * 2 // 1e6)
        assert plan.attentive_memory_mb(wc) == expected
    assert plan.attentive_memory_mb(SimpleNamespace(model="mae", dataset="imagenet")) < 64_000
    demo = _plan("config")
    wc = SimpleNamespace(model=demo.models[0])
    assert demo.attentive_gpus(wc) == 0
    # the demo's largest set: half of 5,000 train + 1,000 test images of 4 x 128 (ResNet)
    # tokens
    assert demo.attentive_memory_mb(wc) == 3000 + -(-3500 * 512 * 2 // 1e6)


def test_demo_jobs_are_cpu_jobs_per_model():
    plan = _plan("config")
    wc = SimpleNamespace(model=plan.models[0])
    assert plan.extraction_gpus(wc) == 0 and plan.finetune_gpus(wc) == 0
    assert plan.job_memory_mb(wc, "finetune") == 3000
    assert plan.job_datasets(wc) == plan.datasets
    assert (
        plan.per_job_log("logs/knn_probe/{model}/{dataset}.log") == "logs/knn_probe/{model}/all.log"
    )
    pairs = plan.job_pairs(wc)
    assert pairs == [(d, s) for d in plan.datasets for s in ("train", "test")]
    assert plan.per_job_pairs("f/{model}/{dataset}/{split}.npy") == [
        f"f/{{model}}/{d}/{s}.npy" for d, s in pairs
    ]


@pytest.mark.parametrize(("arms", "f4"), [(["raw", "bn"], True), (["raw"], False)])
def test_figures_and_their_options(arms, f4):
    plan = _plan("config", arms=arms)
    assert ("f4_bn_effect" in plan.figures) is f4
    assert plan.figures[:3] == ["f1_id_protocols", "f2_id_vs_ood", "f3_scatter"]
    options = plan.figure_options("f3_scatter")
    assert options["x_arm"] == options["y_arm"] == arms[-1]
    assert plan.figure_options("f1_id_protocols") == plan.config["figures"]["f1"]


def test_targets_are_unique_and_cover_every_stage():
    for name in ("config", "paper"):
        plan = _plan(name)
        targets = plan.all_targets()
        assert len(targets) == len(set(targets))
        n_frozen = len(plan.frozen_protocols) * len(plan.models) * len(plan.datasets)
        n_trained = len(plan.trained_protocols) * len(plan.models)
        assert len(plan.probe_results()) == n_frozen + n_trained
        assert {f"results/figures/{f}.pdf" for f in plan.figures} <= set(targets)


def test_pretrain_hp_merges_the_method_section():
    plan = _plan("config")
    mae = next(
        m for m in plan.models_for_rule("pretrain") if plan.study.model(m)["method"] == "mae"
    )
    hp = plan.weights_spec(SimpleNamespace(model=mae))
    assert "methods" not in hp
    assert hp["mask_ratio"] == plan.config["pretrain"]["methods"]["mae"]["mask_ratio"]
    assert hp["mean"] == plan.config["transform"]["mean"]


def test_reordered_config_keys_give_the_same_params():
    """Snakemake compares params by repr: reordering a configuration's keys must not rerun."""
    plan = _plan("config")
    config = {}
    for key in reversed(list(plan.config)):  # every mapping's keys in reverse order
        value = plan.config[key]
        config[key] = dict(reversed(list(value.items()))) if isinstance(value, dict) else value
    config["pretrain"]["methods"] = {
        m: dict(reversed(list(hp.items()))) for m, hp in plan.config["pretrain"]["methods"].items()
    }
    other = Plan(config, plan.study)
    mae = next(
        m for m in plan.models_for_rule("pretrain") if plan.study.model(m)["method"] == "mae"
    )
    wc = SimpleNamespace(model=mae, run="finetune", arm="raw")
    assert list(config["pretrain"]) != list(plan.config["pretrain"])
    for method in ("weights_spec", "job_recipes", "transform_of"):
        assert repr(getattr(other, method)(wc)) == repr(getattr(plan, method)(wc)), method
    for section in ("transform", "analysis", "linear_online"):
        assert repr(other.section(section)) == repr(plan.section(section))
    assert repr(other.probe_settings("linear")) == repr(plan.probe_settings("linear"))
    assert repr(other.figure_options("f3_scatter")) == repr(plan.figure_options("f3_scatter"))
    assert "device" not in plan.probe_settings("linear") and "report" not in plan.probe_settings(
        "linear"
    )


def test_proxies_plan_one_job_per_model_and_a_table():
    plan = _plan("config", protocols=["knn", "linear"])
    assert not plan.proxies and not plan.proxy_results()
    assert "results/tables/proxies.csv" not in plan.all_targets()
    assert "f7_proxies" not in plan.figures and "f7_proxies" in _plan("config").figures
    plan = _plan("config", protocols=["fewshot", "proxies"])  # proxies still extract features
    assert plan.proxies and plan.frozen_protocols == []
    results = plan.proxy_results()
    assert results == [
        f"results/probes/proxies/{m}/{d}.csv" for m in plan.models for d in plan.datasets
    ]
    targets = plan.all_targets()
    assert "results/tables/proxies.csv" in targets and set(results) <= set(targets)
    assert f"results/features/{plan.models[0]}/{plan.datasets[0]}/train.npy" in targets
    assert not any("proxies" in path for path in plan.probe_results())  # no accuracy


def test_published_numbers_bring_t1_and_f8():
    assert not _plan("config").published and "f8_published" not in _plan("config").figures
    paper = _plan("paper")
    assert paper.published and "f8_published" in paper.figures


def test_a_merged_table_is_stale_once_results_tables_is_empty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    merged = tmp_path / "results/tables/accuracy_merged.csv"
    assert _plan().stale_outputs() == []
    merged.parent.mkdir(parents=True)
    merged.write_text("model\n")
    assert _plan().stale_outputs() == ["results/tables/accuracy_merged.csv"]
    published = str(ROOT / "config/published_imagenet.csv")
    assert _plan(models=[], results_tables=[published]).stale_outputs() == []
