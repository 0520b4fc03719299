"""GPU-hours of the paper study (config/paper.yaml), stage by stage, every figure marked measured
or assumed.

    python benchmarks/compute_estimate.py                 # assumed H100 rates, loader measured here
    python benchmarks/compute_estimate.py --rates results/gpu/gpu_throughput.json  # measured
    python benchmarks/compute_estimate.py --compile --workers 16  # compile factor, 16 workers
    python benchmarks/compute_estimate.py --device cuda --batch 128  # measure forward/train here
    python benchmarks/compute_estimate.py --throughput resnet50=2400,vit_base_patch16_224=900

Model (one GPU per job):

* Image stages run at the device's or the data loader's rate, whichever is slower:
  rate = min(device rate at the stage's precision, workers x per-worker decode rate).
  Extraction decodes with the eval transform (``features.workers`` loader processes),
  fine-tuning and few-shot with the train transform (``finetune.workers``; 8 where a key is
  missing); each fine-tuning job also scores the test split once at the extraction rate.
  hours = images x epochs x arms / rate / 3600.
* kNN and the linear probe run on cached features on their own device (``knn.device``,
  ``linear.device``, auto = CUDA; ``--knn-device`` / ``--linear-device``): kNN = arms x 2
  n_train n_test D float32 FLOPs at the device's kNN rate (exact search, no TF32); linear =
  epochs x heads x D x C x (6 n_train + 2 n_test) FLOPs at the device's linear-probe rate. On the
  CPU both use rates measured here with one thread, scaled linearly to ``threads.knn_probe`` /
  ``threads.linear_probe`` threads. Reading the feature files is not counted.
* Jobs as the workflow plans them: extraction, kNN and linear per (model, data set), fine-tuning
  per (model, run, arm) with run = finetune / fewshot<pct>; ``batch_datasets`` / ``batch_runs``
  merge them per model (the longest job then sums them). ``finetune.gpus`` is not modelled:
  hours are on one GPU.

Rates: ``--rates`` = the JSON written by ``benchmarks/gpu_throughput.py`` (measured on that
GPU; entries it lacks come from the table); otherwise the ASSUMED H100 table below
(``ASSUMED``: published A100/V100/RTX figures, each with its source in ``SRC``, scaled to an
H100 as documented next to each number); the loader's per-worker decode rates come from the
JSON, from ``--decode`` (assumed), or are measured on this machine; ``--device`` measures the
forward/train rates here (the old behaviour); ``--throughput`` gives extraction rates by hand
(assumed). In the output M = measured, A = assumed: a figure is M only if every rate it depends
on is measured (a loader-bound stage still depends on the device rate being the higher one).

Scenarios: ``faithful`` = fp32 extraction, TF32 fine-tuning (the authors' settings, the config
defaults); ``fast`` = bf16 extraction and fine-tuning (x the torch.compile factor with
``--compile``). Targets: faithful <= 1,200 H100-hours and no job over 24 h on one GPU; fast <=
500 H100-hours.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER_ARCH_COUNTS = {"resnet50": 17, "vit_base_patch16_224": 8, "beitv2_base_patch16_224": 1}
EMBEDDING = {
    "resnet50": "avgpool",
    "vit_base_patch16_224": "cls",
    "beitv2_base_patch16_224": "mean_patch",
}
DIMS = {"resnet50": 2048, "vit_base_patch16_224": 768, "beitv2_base_patch16_224": 768}
# (tokens, width) an attentive probe pools (workflow_scripts.attentive.TOKEN_SHAPES)
ATTENTIVE_TOKENS = {
    "resnet50": (49, 2048),
    "vit_base_patch16_224": (196, 768),
    "beitv2_base_patch16_224": (196, 768),
}
STAGES = ("extraction", "knn", "linear", "attentive", "finetune", "fewshot")
SCENARIOS = {
    "faithful": {"extraction": "fp32", "finetune": "tf32", "fewshot": "tf32", "compile": False},
    "fast": {"extraction": "bf16", "finetune": "bf16", "fewshot": "bf16", "compile": None},
}
TARGETS = {
    "faithful": {"total_h": 1200.0, "job_h": 24.0},
    "fast": {"total_h": 500.0, "job_h": None},
}
DEFAULT_WORKERS = 8


@dataclasses.dataclass(frozen=True)
class Figure:
    """A rate and where it comes from: basis 'measured' or 'assumed', and the source."""

    value: float
    basis: str
    source: str

    @property
    def mark(self) -> str:
        return "M" if self.basis == "measured" else "A"


# ------------------------------------------------------------------------------------------------
# ASSUMED H100 (SXM) rates, batch 256, img/s. Published figures are for A100 (and V100/RTX
# GPUs); they are scaled to an H100 by H100_OVER_A100 and the ratios below, each documented.

SRC = {
    "dle_a100": "NVIDIA DeepLearningExamples PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "
    "'Training performance: NVIDIA DGX A100 (8x A100 80GB)', 1 GPU, batch 256, "
    "pytorch-21.03 NGC: TF32 938 img/s, mixed precision 2470 img/s",
    "dle_v100": "same README, DGX-1 (V100 16GB), batch 256: training FP32 367 / AMP 1200 img/s, "
    "inference FP32 1261 / AMP 3382 img/s (inference/training = 3.44 FP32, 2.82 AMP)",
    "superblock": "pytorch-labs/superblock PR #9 (2024-03-24), benchmark.py on one A100, "
    "torchvision vit_b_16, batch 256, CUDA-event timing of 100 batches: 541.6 ms "
    "float32 (no TF32) = 473 img/s, 77.0 ms bfloat16 = 3324 img/s",
    "timm_train": "timm results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv (AMP): "
    "vit_base_patch16_224 390.86 / resnet50 826.06 samples/s = 0.473",
    "timm_infer": "timm results/benchmark-infer-amp-nchw-pt291-cu128-4090.csv and "
    "...-4090-dynamo.csv (RTX 4090, AMP, batch 1024), eager / torch.compile img/s: "
    "resnet50 4302.84 / 8039.05, vit_base_patch16_224 2992.79 / 3375.59, "
    "beitv2_base_patch16_224 2714.29 / 3296.38",
    "mlperf": "MLPerf Training v3.0 ResNet-50, Dell submissions with the same host: 16x "
    "H100-SXM5-80GB 7.8 min vs 16x A100-SXM-80GB 14.4 min (1.85x; analysis "
    "silvertonconsulting.com 2023-07-12); assumed for every image stage: 1.8x",
    "fp32_peak": "NVIDIA datasheets, FP32 (non-tensor) peak: V100 SXM2 15.7, A100 19.5, H100 "
    "SXM 67 TFLOPS",
    "compile_docs": "PyTorch torch.compile docs: 'benchmarks showing 30% to 2x speedups' -> "
    "training factor capped at 1.3",
}
H100_OVER_A100 = 1.8  # SRC["mlperf"]
A100_OVER_V100_FP32 = 19.5 / 15.7  # SRC["fp32_peak"], strict-fp32 convolutions scale with peak
V100_INFER_OVER_TRAIN = {"fp32": 1261 / 367, "amp": 3382 / 1200}  # SRC["dle_v100"]
TF32_OVER_AMP_TRAIN = 938 / 2470  # SRC["dle_a100"], ResNet-50 on A100; assumed for ViT too
VIT_OVER_RN50_TRAIN = 390.86 / 826.06  # SRC["timm_train"]
BEIT_OVER_VIT = 2714.29 / 2992.79  # SRC["timm_infer"], eager inference
COMPILE_FORWARD = {
    "resnet50": 8039.05 / 4302.84,
    "vit_base_patch16_224": 3375.59 / 2992.79,
    "beitv2_base_patch16_224": 3296.38 / 2714.29,
}  # SRC["timm_infer"]
COMPILE_TRAIN_CAP = 1.3  # SRC["compile_docs"]


def _assumed_table() -> dict:
    k = H100_OVER_A100
    rn = {
        "forward": {
            "fp32": (
                1261 * A100_OVER_V100_FP32 * k,
                "V100 FP32 inference 1261 x 19.5/15.7 (A100/V100 FP32 peak) x 1.8 (H100)",
                ("dle_v100", "fp32_peak", "mlperf"),
            ),
            "tf32": (
                938 * V100_INFER_OVER_TRAIN["fp32"] * k,
                "A100 TF32 training 938 x 3.44 (V100 FP32 inference/training) x 1.8",
                ("dle_a100", "dle_v100", "mlperf"),
            ),
            "bf16": (
                2470 * V100_INFER_OVER_TRAIN["amp"] * k,
                "A100 AMP training 2470 x 2.82 (V100 AMP inference/training) x 1.8",
                ("dle_a100", "dle_v100", "mlperf"),
            ),
        },
        "train": {
            "fp32": (
                367 * A100_OVER_V100_FP32 * k,
                "V100 FP32 training 367 x 19.5/15.7 x 1.8",
                ("dle_v100", "fp32_peak", "mlperf"),
            ),
            "tf32": (938 * k, "A100 TF32 training 938 x 1.8", ("dle_a100", "mlperf")),
            "bf16": (
                2470 * k,
                "A100 AMP training 2470 x 1.8 (bf16 assumed = fp16 AMP)",
                ("dle_a100", "mlperf"),
            ),
        },
    }
    vit_train_amp = 2470 * VIT_OVER_RN50_TRAIN
    vit = {
        "forward": {
            "fp32": (473 * k, "A100 float32 vit_b_16 473 x 1.8", ("superblock", "mlperf")),
            "tf32": (
                3324 * TF32_OVER_AMP_TRAIN * k,
                "A100 bf16 vit_b_16 3324 x 0.380 (ResNet-50 TF32/AMP on A100) x 1.8",
                ("superblock", "dle_a100", "mlperf"),
            ),
            "bf16": (3324 * k, "A100 bf16 vit_b_16 3324 x 1.8", ("superblock", "mlperf")),
        },
        "train": {
            "fp32": (
                473 / V100_INFER_OVER_TRAIN["fp32"] * k,
                "A100 float32 forward 473 / 3.44 (V100 FP32 inference/training) x 1.8",
                ("superblock", "dle_v100", "mlperf"),
            ),
            "tf32": (
                vit_train_amp * TF32_OVER_AMP_TRAIN * k,
                "A100 AMP ResNet-50 2470 x 0.473 (timm ViT-B/RN50) x 0.380 (TF32/AMP) x 1.8",
                ("dle_a100", "timm_train", "mlperf"),
            ),
            "bf16": (
                vit_train_amp * k,
                "A100 AMP ResNet-50 2470 x 0.473 (timm ViT-B/RN50 training) x 1.8",
                ("dle_a100", "timm_train", "mlperf"),
            ),
        },
    }
    table: dict = {"forward": {}, "train": {}, "compile": {"forward": {}, "train": {}}}
    for arch, base, scale, note in (
        ("resnet50", rn, 1.0, ""),
        ("vit_base_patch16_224", vit, 1.0, ""),
        ("beitv2_base_patch16_224", vit, BEIT_OVER_VIT, " x 0.907 (timm BEiT-v2/ViT-B inference)"),
    ):
        for kind in ("forward", "train"):
            table[kind][arch] = {}
            for prec, (value, how, keys) in base[kind].items():
                keys = keys + (("timm_infer",) if scale != 1.0 else ())
                table[kind][arch][prec] = Figure(value * scale, "assumed", _cite(how + note, keys))
        fwd = COMPILE_FORWARD[arch]
        table["compile"]["forward"][arch] = Figure(
            fwd,
            "assumed",
            _cite(f"RTX 4090 torch.compile / eager inference = {fwd:.3f}", ("timm_infer",)),
        )
        table["compile"]["train"][arch] = Figure(
            min(fwd, COMPILE_TRAIN_CAP),
            "assumed",
            _cite(
                f"the forward factor {fwd:.3f}, at most {COMPILE_TRAIN_CAP}",
                ("timm_infer", "compile_docs"),
            ),
        )
    table["knn_tflops"] = {
        "cuda": Figure(
            0.5 * 67.0,
            "assumed",
            _cite(
                "half the H100 SXM FP32 peak of 67 TFLOPS (distance matmul + "
                "topk without TF32, host re-rank)",
                ("fp32_peak",),
            ),
        )
    }
    table["linear_tflops"] = {
        "cuda": Figure(
            0.15 * 67.0,
            "assumed",
            _cite(
                "15% of the H100 SXM FP32 peak: small fp32 matmuls (batch "
                "1024 x D x C) and per-step overhead",
                ("fp32_peak",),
            ),
        )
    }
    return table


def _cite(how: str, keys: tuple[str, ...]) -> str:
    return f"{how} [{', '.join(keys)}]"


ASSUMED = _assumed_table()


# ------------------------------------------------------------------------------------------------
# the arithmetic (unit-tested)


def image_rate(device_rate: float, workers: int, decode_rate: float) -> tuple[float, str]:
    """(img/s, bound) of an image stage: the device or the data loader, whichever is slower."""
    loader = workers * decode_rate
    return (device_rate, "device") if device_rate <= loader else (loader, "loader")


def stage_hours(images: float, epochs: float, arms: float, rate: float) -> float:
    """images x epochs x arms / rate / 3600."""
    return images * epochs * arms / rate / 3600.0


def knn_flops(n_train: int, n_test: int, dim: int, arms: int) -> float:
    """Distance FLOPs of the exact kNN probe: 2 n_train n_test D per arm."""
    return 2.0 * n_train * n_test * dim * arms


def linear_flops(
    n_train: int, n_test: int, dim: int, classes: int, heads: int, epochs: int
) -> float:
    """Linear-probe FLOPs: per epoch and head, forward + backward on the train split (6 D C per
    sample) and one forward pass on the test split (2 D C per sample)."""
    return float(epochs) * heads * dim * classes * (6.0 * n_train + 2.0 * n_test)


def attentive_flops(
    n_train: float,
    n_test: int,
    tokens: int,
    dim: int,
    classes: int,
    queries: int,
    runs: int,
    epochs: int,
) -> float:
    """Attentive-probe (efficient probing) FLOPs on held tokens: per sample a forward pass of
    2 (T D^2 + Q T D + T D + D C) -- value projection, query-token scores, the weighted sums,
    the classifier -- three for a training step; per epoch and probe (arm x seed) the train
    subset trained and the test split scored once."""
    forward = 2.0 * (tokens * dim * dim + queries * tokens * dim + tokens * dim + dim * classes)
    return float(epochs) * runs * forward * (3.0 * n_train + n_test)


def longest_job(jobs: list[dict]) -> dict:
    """The longest job: jobs sharing a ``group`` (one workflow job running several of them,
    batch_datasets / batch_runs) count as one, with their hours summed."""
    groups: dict = {}
    for i, job in enumerate(jobs):
        key = job.get("group", i)
        if key in groups:
            merged = groups[key]
            merged["hours"] += job["hours"]
            merged["job"] += f" + {job['job']}"
            if job["basis"] != "measured":
                merged["basis"] = "assumed"
        else:
            groups[key] = dict(job)
    return max(groups.values(), key=lambda job: job["hours"])


def meets_targets(scenario: str, total_h: float, longest_h: float) -> bool:
    target = TARGETS[scenario]
    ok = total_h <= target["total_h"]
    if target["job_h"] is not None:
        ok = ok and longest_h <= target["job_h"]
    return ok


@dataclasses.dataclass
class Rates:
    """Everything the plan needs: device rates per arch and precision, the compile factors,
    per-worker decode rates and the kNN / linear FLOP rates per device."""

    forward: dict
    train: dict
    compile: dict
    decode: dict  # {"eval": Figure, "train": Figure} per loader worker
    knn_tflops: dict  # {"cuda": Figure, "cpu": Figure}
    linear_tflops: dict
    device_name: str = "H100 (assumed)"


def plan(
    config: dict,
    datasets: pd.DataFrame,
    models: dict[str, str],
    rates: Rates,
    scenario: str,
    *,
    compile_: bool = False,
    workers: dict | None = None,
    knn_device: str = "cuda",
    linear_device: str = "cuda",
) -> list[dict]:
    """Every job of the study with its hours on one device: ``models`` maps model key -> arch."""
    prec = SCENARIOS[scenario]
    use_compile = compile_ and prec["compile"] is not False
    workers = workers or {}
    w_feat = int(
        workers.get("features", config.get("features", {}).get("workers") or DEFAULT_WORKERS)
    )
    w_ft = int(
        workers.get("finetune", config.get("finetune", {}).get("workers") or DEFAULT_WORKERS)
    )
    arms = list(config.get("arms", ["raw", "bn"]))
    protocols = set(config.get("protocols", []))
    lin = config.get("linear", {})
    heads = len(arms) * len(lin.get("base_lrs", [0.1])) * len(lin.get("seeds", [42]))
    batch_runs = bool(config.get("batch_runs", False))
    batch_datasets = bool(config.get("batch_datasets", False))
    jobs: list[dict] = []

    def device_rate(kind: str, arch: str, precision: str) -> Figure:
        fig = getattr(rates, kind)[arch][precision]
        if use_compile:
            factor = rates.compile[kind][arch]
            basis = "measured" if fig.basis == factor.basis == "measured" else "assumed"
            return Figure(
                fig.value * factor.value,
                basis,
                f"{fig.source}; x torch.compile factor {factor.value:.3f}",
            )
        return fig

    def image_job(
        stage,
        model,
        arch,
        name,
        images,
        epochs,
        kind,
        precision,
        transform,
        n_workers,
        extra_images=0.0,
    ):
        dev = device_rate(kind, arch, precision)
        decode = rates.decode[transform]
        rate, bound = image_rate(dev.value, n_workers, decode.value)
        hours = stage_hours(images, epochs, 1, rate)
        # min(device, loader) is measured only if both sides are (the bound depends on both)
        inputs = [dev, decode]
        if extra_images:  # the test split scored once: eval transform at the extraction rate
            e_dev = device_rate("forward", arch, precision)
            e_rate, _ = image_rate(e_dev.value, n_workers, rates.decode["eval"].value)
            hours += stage_hours(extra_images, 1, 1, e_rate)
            inputs += [e_dev, rates.decode["eval"]]
        basis = "measured" if all(f.basis == "measured" for f in inputs) else "assumed"
        jobs.append(
            {
                "stage": stage,
                "model": model,
                "arch": arch,
                "job": name,
                "precision": precision + ("+compile" if use_compile else ""),
                "rate": rate,
                "unit": "img/s",
                "bound": bound,
                "basis": basis,
                "hours": hours,
                "workers": n_workers,
                "group": group(stage, model, name),
            }
        )

    def group(stage: str, model: str, name: str) -> str:
        """The workflow job a unit of work runs in (config batch_datasets / batch_runs)."""
        if stage in ("finetune", "fewshot"):
            return f"finetune/{model}" if batch_runs else f"{stage}/{model}/{name}"
        return f"{stage}/{model}" if batch_datasets else f"{stage}/{model}/{name}"

    idr = datasets[datasets["role"] == "id"].iloc[0] if (datasets["role"] == "id").any() else None
    for model, arch in models.items():
        dim = DIMS.get(arch) or _dim(arch)
        for row in datasets.itertuples():
            image_job(
                "extraction",
                model,
                arch,
                row.key,
                row.n_train + row.n_test,
                1,
                "forward",
                prec["extraction"],
                "eval",
                w_feat,
            )
            if "knn" in protocols:
                fig = rates.knn_tflops[knn_device]
                flops = knn_flops(row.n_train, row.n_test, dim, len(arms))
                jobs.append(
                    {
                        "stage": "knn",
                        "model": model,
                        "arch": arch,
                        "job": row.key,
                        "precision": "fp32",
                        "rate": fig.value,
                        "unit": "TFLOP/s",
                        "bound": knn_device,
                        "basis": fig.basis,
                        "hours": flops / (fig.value * 1e12) / 3600.0,
                        "group": group("knn", model, row.key),
                    }
                )
            if "linear" in protocols:
                fig = rates.linear_tflops[linear_device]
                flops = linear_flops(
                    row.n_train,
                    row.n_test,
                    dim,
                    row.num_classes,
                    heads,
                    int(lin.get("epochs", 100)),
                )
                jobs.append(
                    {
                        "stage": "linear",
                        "model": model,
                        "arch": arch,
                        "job": row.key,
                        "precision": "fp32",
                        "rate": fig.value,
                        "unit": "TFLOP/s",
                        "bound": linear_device,
                        "basis": fig.basis,
                        "hours": flops / (fig.value * 1e12) / 3600.0,
                        "group": group("linear", model, row.key),
                    }
                )
            if "attentive" in protocols:
                att = config["attentive"]
                share = min(1.0, float(att.get("train_percent", 100)) / 100)
                n_sub = share * row.n_train
                # the tokens: one forward pass over the subset and the test split, as extraction
                dev = device_rate("forward", arch, prec["extraction"])
                decode = rates.decode["eval"]
                rate, bound = image_rate(dev.value, w_feat, decode.value)
                token_h = stage_hours(n_sub + row.n_test, 1, 1, rate)
                fig = rates.linear_tflops[linear_device]
                tokens, width = ATTENTIVE_TOKENS.get(arch, (196, dim))
                flops = attentive_flops(
                    n_sub,
                    row.n_test,
                    tokens,
                    width,
                    row.num_classes,
                    int(att.get("queries", 32)),
                    len(arms) * len(att.get("seeds", [0])),
                    int(att.get("epochs", 90)),
                )
                inputs = [dev, decode, fig]
                jobs.append(
                    {
                        "stage": "attentive",
                        "model": model,
                        "arch": arch,
                        "job": row.key,
                        "precision": f"{prec['extraction']} tokens, fp32 head",
                        "rate": rate,
                        "unit": "img/s",
                        "bound": bound,
                        "basis": "measured"
                        if all(f.basis == "measured" for f in inputs)
                        else "assumed",
                        "hours": token_h + flops / (fig.value * 1e12) / 3600.0,
                        "group": group("attentive", model, row.key),
                    }
                )
        if idr is None:
            continue
        if "finetune" in protocols:
            for arm in arms:
                image_job(
                    "finetune",
                    model,
                    arch,
                    f"finetune {arm}",
                    idr.n_train,
                    config["finetune"]["epochs"],
                    "train",
                    prec["finetune"],
                    "train",
                    w_ft,
                    extra_images=idr.n_test,
                )
        if "fewshot" in protocols:
            fs = config["fewshot"]
            seeds = 1 + len(fs.get("extra_seeds") or [])
            for pct in fs["percents"]:
                per_class = math.floor(pct / 100 * idr.n_train / idr.num_classes)
                for seed in range(seeds):
                    for arm in arms:
                        suffix = f" s{seed}" if seeds > 1 else ""
                        image_job(
                            "fewshot",
                            model,
                            arch,
                            f"fewshot{pct}{suffix} {arm}",
                            per_class * idr.num_classes,
                            fs["epochs"],
                            "train",
                            prec["fewshot"],
                            "train",
                            w_ft,
                            extra_images=idr.n_test,
                        )
    return jobs


def _dim(arch: str) -> int:
    from workflow_scripts import registry

    return int(registry.ARCHS[arch]["dim"])


def summarize(jobs: list[dict], scenario: str) -> dict:
    """Rows per (stage, arch), the total, the longest job and the target check."""
    rows = []
    for stage in STAGES:
        for arch in dict.fromkeys(job["arch"] for job in jobs):
            part = [job for job in jobs if job["stage"] == stage and job["arch"] == arch]
            if not part:
                continue
            lo, hi = min(job["rate"] for job in part), max(job["rate"] for job in part)
            rates = [lo] if hi - lo <= 1e-9 * hi else [lo, hi]
            bounds = sorted({job["bound"] for job in part})
            rows.append(
                {
                    "stage": stage,
                    "arch": arch,
                    "models": len({job["model"] for job in part}),
                    "jobs": len(part),
                    "precision": part[0]["precision"],
                    "rate": rates[0] if len(rates) == 1 else (rates[0], rates[-1]),
                    "unit": part[0]["unit"],
                    "bound": "/".join(bounds),
                    "basis": "measured"
                    if all(j["basis"] == "measured" for j in part)
                    else "assumed",
                    "hours": sum(job["hours"] for job in part),
                }
            )
    total = sum(job["hours"] for job in jobs)
    longest = longest_job(jobs)
    return {
        "scenario": scenario,
        "rows": rows,
        "total_h": total,
        "models": len({job["model"] for job in jobs}),
        "jobs": len(jobs),
        "total_basis": "measured" if all(j["basis"] == "measured" for j in jobs) else "assumed",
        "longest": longest,
        "meets_targets": meets_targets(scenario, total, longest["hours"]),
    }


# ------------------------------------------------------------------------------------------------
# rates: the JSON of gpu_throughput.py, the assumed table, measurements here


def rates_from_json(path: str | Path) -> Rates:
    """Rates measured by benchmarks/gpu_throughput.py (missing entries fall back to ASSUMED)."""
    data = json.loads(Path(path).read_text())
    meta = data.get("meta", {})
    where = f"{meta.get('gpu') or meta.get('device')} ({Path(path).name})"
    rates = assumed_rates()
    rates.device_name = (
        str(meta.get("gpu") or meta.get("device"))
        + (" (a --smoke run: tiny sizes, not representative)" if meta.get("smoke") else "")
        + f", measured by gpu_throughput ({Path(path).name})"
    )
    for kind in ("forward", "train"):
        for arch, rows in data.get(kind, {}).items():
            if not isinstance(rows, dict):
                continue
            for prec, row in rows.items():
                if isinstance(row, dict) and row.get("img_s"):
                    fig = Figure(
                        float(row["img_s"]),
                        "measured",
                        f"gpu_throughput {kind} {arch} {prec} on {where}",
                    )
                    rates_kind = getattr(rates, kind)
                    rates_kind.setdefault(arch, {})[prec] = fig
                    if arch == "vit_base_patch16_224":  # BEiT-v2: the ViT-B rate x 0.907
                        rates_kind["beitv2_base_patch16_224"][prec] = Figure(
                            fig.value * BEIT_OVER_VIT,
                            "assumed",
                            _cite(
                                f"{fig.source} x {BEIT_OVER_VIT:.3f} (BEiT-v2 / ViT-B)",
                                ("timm_infer",),
                            ),
                        )
    comp = data.get("compile", {})
    for arch in ("resnet50", "vit_base_patch16_224"):
        row = comp.get(arch, {}) if isinstance(comp.get(arch), dict) else {}
        for kind, key in (
            ("train", "train_speedup_vs_eager"),
            ("forward", "forward_speedup_vs_eager"),
        ):
            if row.get(key):
                rates.compile[kind][arch] = Figure(
                    float(row[key]), "measured", f"gpu_throughput compile {arch} on {where}"
                )
    per_worker = data.get("loader", {}).get("per_worker_img_s", {})
    for name in ("eval", "train"):
        if per_worker.get(name):
            rates.decode[name] = Figure(
                float(per_worker[name]),
                "measured",
                f"gpu_throughput loader, 1 worker, on {where}'s CPU",
            )
    knn = data.get("knn", {})
    if knn.get("effective_tflops") and meta.get("device") == "cuda":
        rates.knn_tflops["cuda"] = Figure(
            float(knn["effective_tflops"]),
            "measured",
            f"gpu_throughput knn ({knn.get('method')}) on {where}",
        )
    lin = data.get("linear", {})
    if lin.get("epoch_s") and meta.get("device") == "cuda":
        flops = linear_flops(
            lin["n_train"], lin["n_test"], lin["dim"], lin["classes"], lin["heads"], 1
        )
        rates.linear_tflops["cuda"] = Figure(
            flops / lin["epoch_s"] / 1e12, "measured", f"gpu_throughput linear epoch on {where}"
        )
    return rates


def assumed_rates() -> Rates:
    def copy(table):
        return {k: (copy(v) if isinstance(v, dict) else v) for k, v in table.items()}

    return Rates(
        forward=copy(ASSUMED["forward"]),
        train=copy(ASSUMED["train"]),
        compile=copy(ASSUMED["compile"]),
        decode={},
        knn_tflops=copy(ASSUMED["knn_tflops"]),
        linear_tflops=copy(ASSUMED["linear_tflops"]),
    )


def _photo_like_jpeg():
    """benchmarks/gpu_throughput.py's photo-like JPEG generator (one definition)."""
    path = Path(__file__).with_name("gpu_throughput.py")
    spec = importlib.util.spec_from_file_location("_gpu_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.photo_like_jpeg


def measure_decode(spec: dict, n: int = 16, repeats: int = 3) -> dict:
    """Per-worker images/s of the loader's eval and train transforms on photo-like 500x375 JPEGs
    (decode + transform in this process with one torch thread, as in a DataLoader worker; the
    best of ``repeats`` passes, this machine being shared)."""
    import inspect
    import io

    import torch
    from PIL import Image

    from workflow_scripts.datasets.transforms import eval_transform, train_transform

    make = _photo_like_jpeg()
    blobs = [
        make(i, size)
        for i, size in zip(
            range(n), [(500, 375), (500, 333), (375, 500), (400, 300)] * n, strict=False
        )
    ]
    kwargs = (
        {"normalize": False} if "normalize" in inspect.signature(eval_transform).parameters else {}
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for name, tf in (
            ("eval", eval_transform(spec, "none", **kwargs)),
            ("train", train_transform(spec, "none", **kwargs)),
        ):
            best = math.inf
            for _ in range(repeats):
                start = time.perf_counter()
                for blob in blobs:
                    with Image.open(io.BytesIO(blob)) as img:
                        img.load()
                        tf(img.convert("RGB"))
                best = min(best, (time.perf_counter() - start) / len(blobs))
            out[name] = Figure(
                1.0 / best,
                "measured",
                f"this machine ({_cpu_name()}), decode + {name} transform "
                f"{kwargs or ''}, 1 thread, {n} photo-like JPEGs of "
                f"{np.mean([len(b) for b in blobs]) / 1024:.0f} KB, best of {repeats}",
            )
    finally:
        torch.set_num_threads(threads)
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def measure_cpu_probes(config: dict) -> tuple[Figure, Figure]:
    """kNN (the project's faiss search) and linear-probe (train_heads) FLOP rates of this CPU
    with one thread, scaled linearly to threads.knn_probe / threads.linear_probe."""
    import torch

    from workflow_scripts.knn import knn_scores
    from workflow_scripts.linear_heads import HeadSpec, Recipe, train_heads

    threads = config.get("threads", {})
    t_knn, t_lin = int(threads.get("knn_probe", 8)), int(threads.get("linear_probe", 4))
    rng = np.random.default_rng(0)
    train = rng.standard_normal((20000, 2048), dtype=np.float32)
    test = rng.standard_normal((1000, 2048), dtype=np.float32)
    labels = rng.integers(0, 100, 20000)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        knn_scores(train, labels, test, k=20, num_classes=100, threads=1)
        knn_rate = knn_flops(20000, 1000, 2048, 1) / (time.perf_counter() - start) / 1e12
        x = rng.standard_normal((4096, 2048), dtype=np.float32)
        y = rng.integers(0, 1000, 4096)
        heads = [HeadSpec("raw", 0.1, 42), HeadSpec("bn", 0.1, 42)]
        start = time.perf_counter()
        train_heads(
            x, y, x[:512], y[:512], 1000, heads, Recipe(epochs=1, batch_size=1024, warmup_epochs=0)
        )
        lin_rate = linear_flops(4096, 512, 2048, 1000, 2, 1) / (time.perf_counter() - start) / 1e12
    finally:
        torch.set_num_threads(prev)
    where = f"this machine ({_cpu_name()}), 1 thread"
    return (
        Figure(
            knn_rate * t_knn,
            "measured",
            f"knn_scores (faiss) 20,000 x 1,000 x 2048 on {where}, x {t_knn} threads "
            "(linear scaling assumed)",
        ),
        Figure(
            lin_rate * t_lin,
            "measured",
            f"train_heads 4,096 x 2048 -> 1000, 2 heads on {where}, x {t_lin} threads "
            "(linear scaling assumed)",
        ),
    )


def measure_device_rates(
    device: str, batch: int, repeats: int, train: bool, archs: list[str]
) -> tuple[dict, dict]:
    """Forward and fine-tuning-step img/s measured here per arch and precision (--device)."""
    import torch
    import torch.nn.functional as F

    from workflow_scripts import precision as P
    from workflow_scripts.backbones import build_backbone
    from workflow_scripts.finetune import (
        Classifier,
        FinetuneRecipe,
        is_vit,
        param_groups,
    )

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({_cpu_name()})"

    def timed(fn):
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats

    forward, training = {}, {}
    for arch in archs:
        forward[arch], training[arch] = {}, {}
        cl = dev.type == "cuda" and arch.startswith("resnet")
        x = torch.randn(batch, 3, 224, 224, device=dev)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(0)
        drop = 0.0 if arch.startswith("resnet") else 0.2
        model = Classifier(build_backbone(arch, EMBEDDING[arch], drop), 1000, "raw").to(dev)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        for prec in ("fp32", "tf32", "bf16"):
            P.configure(prec, dev, benchmark=cl)
            src = f"measured here: {name}, batch {batch}, {repeats} repeats"
            model.eval()

            def fwd(prec=prec, model=model, x=x):
                with torch.inference_mode(), P.autocast(prec, dev):
                    model.backbone(x)

            forward[arch][prec] = Figure(batch / timed(fwd), "measured", src)
            if not train:
                continue
            groups = param_groups(model, FinetuneRecipe(epochs=100, batch_size=max(2, batch)))
            opt = torch.optim.SGD(
                [{"params": g["params"], "lr": g["lr"]} for g in groups],
                lr=groups[0]["lr"],
                momentum=0.9,
            )
            y = torch.randint(0, 1000, (batch,), device=dev)
            smoothing = 0.1 if is_vit(model.backbone) else 0.0
            model.train()

            def step(prec=prec, model=model, opt=opt, x=x, y=y, smoothing=smoothing):
                with P.autocast(prec, dev):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                opt.step()

            training[arch][prec] = Figure(batch / timed(step), "measured", src)
    return forward, training


# ------------------------------------------------------------------------------------------------
# output


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def _rate_cell(row: dict) -> str:
    rate = row["rate"]
    text = f"{_num(rate[0])}-{_num(rate[1])}" if isinstance(rate, tuple) else _num(rate)
    return f"{text} {row['unit']}"


def _mark(basis: str) -> str:
    return "M" if basis == "measured" else "A"


def markdown_table(summaries: dict[str, dict]) -> str:
    names = list(summaries)
    head = ["stage", "arch", "models", "jobs"]
    for name in names:
        head += [f"{name}: precision", f"{name}: rate", f"{name}: bound", f"{name}: GPU-h"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = summaries[names[0]]["rows"]
    for i, row in enumerate(first):
        cells = [row["stage"], row["arch"], str(row["models"]), str(row["jobs"])]
        for name in names:
            r = summaries[name]["rows"][i]
            cells += [
                r["precision"],
                f"{_rate_cell(r)} ({_mark(r['basis'])})",
                r["bound"],
                f"{r['hours']:,.1f} ({_mark(r['basis'])})",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    total = ["**total**", "", str(summaries[names[0]]["models"]), str(summaries[names[0]]["jobs"])]
    longest = ["**longest job**", "", "", ""]
    target = ["**meets target**", "", "", ""]
    for name in names:
        s = summaries[name]
        job = s["longest"]
        total += ["", "", "", f"**{s['total_h']:,.1f}** ({_mark(s['total_basis'])})"]
        longest += [
            "",
            f"{job['stage']} {job['arch']} ({job['job']})",
            job["bound"],
            f"{job['hours']:,.1f} ({_mark(job['basis'])})",
        ]
        t = TARGETS[name]
        rule = f"<= {t['total_h']:,.0f} GPU-h" + (
            f", no job > {t['job_h']:.0f} h" if t["job_h"] else ""
        )
        target += ["", rule, "", "**yes**" if s["meets_targets"] else "**no**"]
    for cells in (total, longest, target):
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rates_table(
    rates: Rates,
    used_archs: list[str],
    scenarios: dict,
    compile_: bool,
    knn_device: str,
    linear_device: str,
) -> str:
    lines = ["| rate | value | basis | source |", "|---|---|---|---|"]

    def add(label, fig, unit):
        lines.append(f"| {label} | {_num(fig.value)} {unit} | {fig.basis} | {fig.source} |")

    precs = sorted({p for s in scenarios.values() for k, p in s.items() if k != "compile"})
    for kind, label in (("forward", "extraction forward"), ("train", "fine-tuning step")):
        for arch in used_archs:
            for prec in precs:
                add(f"{label} {arch} {prec}", getattr(rates, kind)[arch][prec], "img/s")
    if compile_:
        for kind in ("forward", "train"):
            for arch in used_archs:
                add(f"torch.compile factor {kind} {arch}", rates.compile[kind][arch], "x")
    for name in ("eval", "train"):
        add(f"loader decode + {name} transform, per worker", rates.decode[name], "img/s")
    add(f"kNN search ({knn_device})", rates.knn_tflops[knn_device], "TFLOP/s")
    add(f"linear probe ({linear_device})", rates.linear_tflops[linear_device], "TFLOP/s")
    used = {
        key.strip()
        for line in lines[2:]
        for group in re.findall(r"\[([a-z0-9_, ]+)\]", line)
        for key in group.split(",")
    }
    cited = [key for key in SRC if key in used]
    if cited:
        lines += ["", "Sources of the assumed rates:", ""]
        lines += [f"- [{key}] {SRC[key]}" for key in cited]
    return "\n".join(lines)


def disk_line(datasets: pd.DataFrame, models: dict[str, str]) -> str:
    n_img = int((datasets["n_train"] + datasets["n_test"]).sum())
    feats = sum(n_img * (DIMS.get(arch) or _dim(arch)) * 4 for arch in models.values()) / 1e9
    params = {"resnet50": 23.5e6, "vit_base_patch16_224": 85.8e6, "beitv2_base_patch16_224": 85.8e6}
    ckpt = sum(params.get(arch, 0) * 4 for arch in models.values()) / 1e9
    return (
        f"Disk: float32 feature cache {feats:,.0f} GB ({n_img:,} images per model); backbone "
        f"checkpoints ~{ckpt:,.1f} GB (backbone parameters x 4 bytes)."
    )


def load_study(config_path: str | Path) -> tuple[dict, pd.DataFrame, dict[str, str], str]:
    config = yaml.safe_load(Path(config_path).read_text())
    datasets = pd.read_csv(ROOT / config["datasets_table"], sep="\t")
    models_path = ROOT / config["models_table"]
    if models_path.is_file():
        table = pd.read_csv(models_path, sep="\t")
        models = dict(zip(table["key"], table["arch"], strict=True))
        where = str(models_path.relative_to(ROOT))
    else:
        models = {f"{arch}_{i}": arch for arch, n in PAPER_ARCH_COUNTS.items() for i in range(n)}
        where = "the paper's 17/8/1 split (no model table)"
    return config, datasets, models, where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "config" / "paper.yaml"))
    parser.add_argument("--rates", help="gpu_throughput.json of a GPU run (measured rates)")
    parser.add_argument(
        "--compile", action="store_true", help="fast scenario with the torch.compile factor"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="loader workers per extraction/fine-tuning job (default: the "
        "config's features.workers / finetune.workers, else 8)",
    )
    parser.add_argument(
        "--knn-device",
        choices=["cuda", "cpu"],
        help="default: the config's knn.device (auto = cuda)",
    )
    parser.add_argument(
        "--linear-device",
        choices=["cuda", "cpu"],
        help="default: the config's linear.device (auto = cuda)",
    )
    parser.add_argument(
        "--decode",
        default="",
        help="eval=IMG_S,train=IMG_S: per-worker decode rates by hand (assumed) "
        "instead of measuring them here",
    )
    parser.add_argument(
        "--device",
        default="",
        help="measure forward/train rates here on this device (cpu or cuda) "
        "instead of the assumed H100 table",
    )
    parser.add_argument("--batch", type=int, default=8, help="batch of the --device measurement")
    parser.add_argument(
        "--repeats", type=int, default=3, help="repeats of the --device measurement"
    )
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="--device: do not measure the fine-tuning step (keep those rates)",
    )
    parser.add_argument(
        "--throughput",
        default="",
        help="arch=img/s,...: extraction rates by hand (all precisions; assumed)",
    )
    parser.add_argument("--out", help="write the rates, jobs and totals as JSON")
    args = parser.parse_args(argv)

    config, datasets, models, models_where = load_study(args.config)
    for key in ("knn", "linear"):
        if getattr(args, f"{key}_device") is None:
            configured = str(config.get(key, {}).get("device", "auto"))
            setattr(args, f"{key}_device", "cpu" if configured == "cpu" else "cuda")
    archs = list(dict.fromkeys(models.values()))
    rates = rates_from_json(args.rates) if args.rates else assumed_rates()
    if args.device:
        fwd, trn = measure_device_rates(
            args.device, args.batch, args.repeats, not args.no_train, archs
        )
        for arch in archs:
            rates.forward[arch].update(fwd[arch])
            rates.train[arch].update(trn[arch])
        rates.device_name = f"{args.device} (measured here)"
    for item in filter(None, args.throughput.split(",")):
        arch, value = item.split("=")
        for prec in ("fp32", "tf32", "bf16"):
            rates.forward[arch][prec] = Figure(float(value), "assumed", "--throughput (given)")
    given = dict(item.split("=") for item in filter(None, args.decode.split(",")))
    for name, value in given.items():
        rates.decode[name] = Figure(float(value), "assumed", "--decode (given)")
    if not all(name in rates.decode for name in ("eval", "train")):
        measured = measure_decode(config["transform"])
        for name, fig in measured.items():
            rates.decode.setdefault(name, fig)
    if "cpu" in (args.knn_device, args.linear_device):
        knn_cpu, lin_cpu = measure_cpu_probes(config)
        rates.knn_tflops["cpu"], rates.linear_tflops["cpu"] = knn_cpu, lin_cpu
    workers = {"features": args.workers, "finetune": args.workers} if args.workers else {}
    summaries = {}
    jobs_by = {}
    for scenario in SCENARIOS:
        jobs = plan(
            config,
            datasets,
            models,
            rates,
            scenario,
            compile_=args.compile,
            workers=workers,
            knn_device=args.knn_device,
            linear_device=args.linear_device,
        )
        jobs_by[scenario] = jobs
        summaries[scenario] = summarize(jobs, scenario)

    w_feat = args.workers or config.get("features", {}).get("workers") or DEFAULT_WORKERS
    w_ft = args.workers or config.get("finetune", {}).get("workers") or DEFAULT_WORKERS
    print("## GPU-hours of the paper study\n")
    print(
        f"Device rates: {rates.device_name}; models from {models_where} "
        f"({', '.join(f'{sum(a == arch for a in models.values())} {arch}' for arch in archs)}); "
        f"{len(datasets)} data sets; loader workers per job: extraction {w_feat}, fine-tuning "
        f"{w_ft}; kNN on {args.knn_device}, linear probe on {args.linear_device}; fast scenario "
        f"{'with' if args.compile else 'without'} torch.compile. Marks: M = measured, "
        "A = assumed (any assumed input). One GPU per job.\n"
    )
    print(markdown_table(summaries))
    print("\nRates used:\n")
    print(rates_table(rates, archs, SCENARIOS, args.compile, args.knn_device, args.linear_device))
    print("\n" + disk_line(datasets, models))
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "device": rates.device_name,
                    "rates": dataclasses.asdict(rates),
                    "summaries": summaries,
                    "jobs": jobs_by,
                    "targets": TARGETS,
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
