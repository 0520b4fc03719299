"""benchmarks/: the GPU throughput script runs (CPU smoke run) and the compute estimate's
arithmetic matches hand-computed cases."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def est():
    return _load("compute_estimate")


# ------------------------------------------------------------------------------------------------
# gpu_throughput.py --smoke


def _positive(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value > 0
        and math.isfinite(value)
    )


def test_gpu_throughput_smoke_writes_every_section(tmp_path):
    out = tmp_path / "gt"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_throughput.py"), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "gpu_throughput.json").read_text())
    sections = ("forward", "train", "loader", "determinism", "knn", "linear")
    assert set(sections) <= set(data)
    for name in sections:
        assert "error" not in data[name] and "skipped" not in data[name], (name, data[name])
    assert data["meta"]["smoke"] is True and data["meta"]["device"] == "cpu"
    archs = ("resnet50", "vit_base_patch16_224")
    for name in ("forward", "train"):
        for arch in archs:
            for prec in ("fp32", "tf32", "bf16"):
                row = data[name][arch][prec]
                assert _positive(row["img_s"]), (name, arch, prec, row)
                assert row["effective"] == ("bf16" if prec == "bf16" else "fp32")
    loader = data["loader"]
    assert _positive(loader["jpeg_kb_mean"])
    for transform in ("eval", "train"):
        assert _positive(loader["per_worker_img_s"][transform])
        for workers in ("1", "2"):
            assert _positive(loader[transform][workers]["img_s"])
    for arch in archs:
        for prec in ("fp32", "tf32", "bf16"):
            row = data["determinism"][arch][prec]
            assert isinstance(row["bitwise_equal"], bool)
            assert row["max_abs_weight_diff"] >= 0
    knn = data["knn"]
    for key in ("seconds", "queries_s", "effective_tflops", "raw_search_s"):
        assert _positive(knn[key]), (key, knn)
    assert knn["n_train"] > knn["n_test"] > 0
    linear = data["linear"]
    for key in ("epoch_s", "samples_s", "ms_per_step"):
        assert _positive(linear[key]), (key, linear)
    assert linear["classes"] == 1000 and linear["heads"] == 2 and linear["batch"] == 1024
    # the human summary ends the output
    assert "bitwise-equal reruns" in proc.stdout


# ------------------------------------------------------------------------------------------------
# compute_estimate.py arithmetic


def test_loader_bound_stage_takes_workers_times_decode_rate(est):
    assert est.image_rate(5000.0, 8, 300.0) == (2400.0, "loader")


def test_device_bound_stage_takes_the_device_rate(est):
    assert est.image_rate(1000.0, 8, 300.0) == (1000.0, "device")
    assert est.image_rate(2400.0, 8, 300.0) == (2400.0, "device")  # a tie is the device's


def test_hours_are_images_times_epochs_times_arms_over_rate(est):
    assert est.stage_hours(1_281_167, 100, 2, 1000.0) == pytest.approx(
        1_281_167 * 100 * 2 / 1000 / 3600
    )
    assert est.stage_hours(3600, 1, 1, 1.0) == pytest.approx(1.0)


def test_knn_and_linear_flops(est):
    assert est.knn_flops(1000, 100, 2048, 2) == 2 * 1000 * 100 * 2048 * 2
    # per epoch and head: 6 D C per train sample, 2 D C per test sample
    assert est.linear_flops(1000, 100, 2048, 10, 2, 3) == 3 * 2 * 2048 * 10 * (6 * 1000 + 2 * 100)


def test_longest_job_is_the_max_over_jobs(est):
    jobs = [{"job": "a", "hours": 3.0}, {"job": "b", "hours": 30.0}, {"job": "c", "hours": 7.5}]
    assert est.longest_job(jobs)["job"] == "b"


def test_targets(est):
    assert est.meets_targets("faithful", 1200.0, 24.0)
    assert not est.meets_targets("faithful", 1100.0, 24.5)  # one job too long
    assert not est.meets_targets("faithful", 1300.0, 10.0)
    assert est.meets_targets("fast", 500.0, 100.0)  # no per-job limit
    assert not est.meets_targets("fast", 500.1, 1.0)


def _tiny_study(est, basis="assumed"):
    fig = est.Figure
    config = {
        "arms": ["raw", "bn"],
        "protocols": ["knn", "linear", "finetune", "fewshot"],
        "features": {"workers": 4},
        "finetune": {"epochs": 10, "workers": 2},
        "fewshot": {"percents": [10], "epochs": 3, "extra_seeds": []},
        "linear": {"epochs": 4, "base_lrs": [0.1], "seeds": [42]},
    }
    datasets = pd.DataFrame(
        [
            {"key": "idset", "role": "id", "num_classes": 10, "n_train": 1000, "n_test": 100},
            {"key": "oodset", "role": "ood", "num_classes": 5, "n_train": 500, "n_test": 50},
        ]
    )
    per_prec = {"fp32": 1000.0, "tf32": 1000.0, "bf16": 4000.0}
    rates = est.Rates(
        forward={"resnet50": {p: fig(v, basis, "test") for p, v in per_prec.items()}},
        train={
            "resnet50": {
                "fp32": fig(20.0, basis, "t"),
                "tf32": fig(50.0, basis, "t"),
                "bf16": fig(500.0, basis, "t"),
            }
        },
        compile={
            "forward": {"resnet50": fig(2.0, basis, "t")},
            "train": {"resnet50": fig(1.5, basis, "t")},
        },
        decode={"eval": fig(100.0, "measured", "t"), "train": fig(30.0, "measured", "t")},
        knn_tflops={"cuda": fig(2.0, basis, "t")},
        linear_tflops={"cuda": fig(0.5, basis, "t")},
    )
    return config, datasets, {"m1": "resnet50"}, rates


def test_plan_of_a_tiny_study_by_hand(est):
    config, datasets, models, rates = _tiny_study(est)
    jobs = est.plan(config, datasets, models, rates, "faithful")
    by = {(j["stage"], j["job"]): j for j in jobs}
    # one extraction, kNN and linear job per data set; fine-tuning per (run, arm)
    assert sorted(by) == sorted(
        [
            ("extraction", "idset"),
            ("extraction", "oodset"),
            ("knn", "idset"),
            ("knn", "oodset"),
            ("linear", "idset"),
            ("linear", "oodset"),
            ("finetune", "finetune raw"),
            ("finetune", "finetune bn"),
            ("fewshot", "fewshot10 raw"),
            ("fewshot", "fewshot10 bn"),
        ]
    )
    # extraction: fp32 device 1000 img/s vs 4 workers x 100 = 400 -> loader-bound
    ext = by[("extraction", "idset")]
    assert (ext["rate"], ext["bound"]) == (400.0, "loader")
    assert ext["hours"] == pytest.approx(1100 / 400 / 3600)
    # kNN: both arms, 2 n_train n_test D at 2 TFLOP/s
    assert by[("knn", "oodset")]["hours"] == pytest.approx(2 * 2 * 500 * 50 * 2048 / 2e12 / 3600)
    # linear: 2 heads (arms x lrs x seeds), 4 epochs, 5 classes at 0.5 TFLOP/s
    assert by[("linear", "oodset")]["hours"] == pytest.approx(
        4 * 2 * 2048 * 5 * (6 * 500 + 2 * 50) / 0.5e12 / 3600
    )
    # fine-tuning: tf32 device 50 img/s vs 2 workers x 30 = 60 -> device-bound; + the test split
    # scored once at min(tf32 forward 1000, 2 workers x 100 eval decode) = 200 img/s
    ft = by[("finetune", "finetune raw")]
    assert (ft["rate"], ft["bound"]) == (50.0, "device")
    assert ft["hours"] == pytest.approx(1000 * 10 / 50 / 3600 + 100 / 200 / 3600)
    # few-shot 10%: floor(0.1 x 1000 / 10) = 10 per class x 10 classes, 3 epochs
    fs = by[("fewshot", "fewshot10 bn")]
    assert fs["hours"] == pytest.approx(100 * 3 / 50 / 3600 + 100 / 200 / 3600)
    summary = est.summarize(jobs, "faithful")
    assert summary["total_h"] == pytest.approx(sum(j["hours"] for j in jobs))
    assert summary["longest"]["job"] in ("finetune raw", "finetune bn")
    assert summary["meets_targets"]
    assert summary["total_basis"] == "assumed"
    rows = {(r["stage"], r["arch"]): r for r in summary["rows"]}
    assert rows[("finetune", "resnet50")]["jobs"] == 2
    assert rows[("finetune", "resnet50")]["hours"] == pytest.approx(2 * ft["hours"])


def test_fast_scenario_bf16_compile_and_loader_bound(est):
    config, datasets, models, rates = _tiny_study(est)
    jobs = est.plan(config, datasets, models, rates, "fast", compile_=True)
    ft = next(j for j in jobs if j["job"] == "finetune raw")
    # bf16 500 img/s x compile 1.5 = 750 > 2 workers x 30 -> loader-bound at 60 img/s
    assert (ft["rate"], ft["bound"], ft["precision"]) == (60.0, "loader", "bf16+compile")
    more = est.plan(
        config,
        datasets,
        models,
        rates,
        "fast",
        compile_=True,
        workers={"features": 4, "finetune": 100},
    )
    ft = next(j for j in more if j["job"] == "finetune raw")
    assert (ft["rate"], ft["bound"]) == (750.0, "device")
    # the faithful scenario never applies the compile factor
    faithful = est.plan(config, datasets, models, rates, "faithful", compile_=True)
    assert next(j for j in faithful if j["job"] == "finetune raw")["rate"] == 50.0


def test_measured_only_when_every_input_is(est):
    config, datasets, models, rates = _tiny_study(est, basis="measured")
    jobs = est.plan(config, datasets, models, rates, "faithful")
    assert all(j["basis"] == "measured" for j in jobs)
    config, datasets, models, rates = _tiny_study(est, basis="assumed")
    jobs = est.plan(config, datasets, models, rates, "faithful")
    # loader-bound extraction still depends on the assumed device rate being the larger one
    assert all(j["basis"] == "assumed" for j in jobs)


def test_markdown_table_has_stages_totals_longest_and_targets(est):
    config, datasets, models, rates = _tiny_study(est)
    config = dict(config, protocols=[*config["protocols"], "attentive"], attentive={"epochs": 2})
    summaries = {
        s: est.summarize(est.plan(config, datasets, models, rates, s), s) for s in est.SCENARIOS
    }
    table = est.markdown_table(summaries)
    for stage in est.STAGES:
        assert f"| {stage} | resnet50 |" in table
    assert "**total**" in table and "**longest job**" in table and "**meets target**" in table
    assert "(A)" in table and "**yes**" in table


def test_assumed_table_covers_the_paper_archs_and_cites_sources(est):
    for kind in ("forward", "train"):
        for arch in est.PAPER_ARCH_COUNTS:
            for prec in ("fp32", "tf32", "bf16"):
                fig = est.ASSUMED[kind][arch][prec]
                assert fig.basis == "assumed" and fig.value > 0
                keys = fig.source[fig.source.rindex("[") + 1 : -1].split(", ")
                assert keys and all(key in est.SRC for key in keys)
    # hand check of two derivations: A100 figures x 1.8
    assert est.ASSUMED["train"]["resnet50"]["tf32"].value == pytest.approx(938 * 1.8)
    assert est.ASSUMED["forward"]["vit_base_patch16_224"]["bf16"].value == pytest.approx(3324 * 1.8)


def test_rates_from_a_gpu_throughput_json(est, tmp_path):
    data = {
        "meta": {"device": "cuda", "gpu": "NVIDIA H200", "smoke": False},
        "forward": {
            "batch": 256,
            "resnet50": {"fp32": {"img_s": 3000.0}},
            "vit_base_patch16_224": {"bf16": {"img_s": 6000.0}},
        },
        "train": {"resnet50": {"tf32": {"img_s": 1500.0}}},
        "loader": {"per_worker_img_s": {"eval": 250.0, "train": 200.0}},
        "knn": {"effective_tflops": 40.0, "method": "x"},
        "linear": {
            "epoch_s": 2.0,
            "n_train": 1000,
            "n_test": 100,
            "dim": 2048,
            "classes": 1000,
            "heads": 2,
        },
        "compile": {"resnet50": {"train_speedup_vs_eager": 1.25}},
    }
    path = tmp_path / "gpu_throughput.json"
    path.write_text(json.dumps(data))
    rates = est.rates_from_json(path)
    assert rates.forward["resnet50"]["fp32"].value == 3000.0
    assert rates.forward["resnet50"]["fp32"].basis == "measured"
    assert rates.forward["resnet50"]["bf16"].basis == "assumed"  # not in the JSON: the table
    beit = rates.forward["beitv2_base_patch16_224"]["bf16"]
    assert beit.value == pytest.approx(6000.0 * est.BEIT_OVER_VIT) and beit.basis == "assumed"
    assert rates.train["resnet50"]["tf32"].value == 1500.0
    assert rates.decode["train"] == est.Figure(200.0, "measured", rates.decode["train"].source)
    assert rates.knn_tflops["cuda"].value == 40.0
    assert rates.linear_tflops["cuda"].value == pytest.approx(
        2 * 2048 * 1000 * (6 * 1000 + 2 * 100) / 2.0 / 1e12
    )
    assert rates.compile["train"]["resnet50"].value == 1.25


def test_longest_job_counts_a_batched_workflow_job_once(est):
    jobs = [
        {"job": "finetune raw", "hours": 20.0, "basis": "assumed", "group": "ft/m1"},
        {"job": "fewshot10 raw", "hours": 6.0, "basis": "assumed", "group": "ft/m1"},
        {"job": "imagenet", "hours": 25.0, "basis": "assumed", "group": "ext/m1"},
    ]
    longest = est.longest_job(jobs)
    assert longest["hours"] == 26.0 and longest["job"] == "finetune raw + fewshot10 raw"
    config, datasets, models, rates = _tiny_study(est)
    single = est.longest_job(est.plan(config, datasets, models, rates, "faithful"))
    batched = est.longest_job(
        est.plan({**config, "batch_runs": True}, datasets, models, rates, "faithful")
    )
    jobs = est.plan(config, datasets, models, rates, "faithful")
    assert single["hours"] == max(j["hours"] for j in jobs)
    assert batched["hours"] == pytest.approx(
        sum(j["hours"] for j in jobs if j["stage"] in ("finetune", "fewshot"))
    )


def test_attentive_stage_by_hand(est):
    """Tokens of the train subset and the test split at the extraction rate, then the head's
    FLOPs (per sample 2 (T D^2 + Q T D + T D + D C), x3 for a training step) per epoch and
    probe at the linear rate; one job per data set."""
    config, datasets, models, rates = _tiny_study(est)
    config = dict(config, protocols=[*config["protocols"], "attentive"])
    config["attentive"] = {"epochs": 2, "queries": 32, "seeds": [0], "train_percent": 10}
    jobs = est.plan(config, datasets, models, rates, "faithful")
    att = {j["job"]: j for j in jobs if j["stage"] == "attentive"}
    assert sorted(att) == ["idset", "oodset"]
    t, d, q, c = 49, 2048, 32, 5  # resnet50's tokens; oodset has 5 classes
    forward = 2 * (t * d * d + q * t * d + t * d + d * c)
    n_sub, n_test = 0.1 * 500, 50
    head = 2 * 2 * forward * (3 * n_sub + n_test)  # 2 epochs x 2 arms
    tokens = (n_sub + n_test) / 400  # loader-bound extraction: 4 workers x 100 img/s
    assert att["oodset"]["hours"] == pytest.approx(tokens / 3600 + head / 0.5e12 / 3600)
    assert att["oodset"]["rate"] == 400.0 and att["oodset"]["bound"] == "loader"
