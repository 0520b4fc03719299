"""The real data set layouts through snakemake: integrity jobs and feature extraction on tiny
copies of each layout (tests/dataset_layouts.py), checked against truth known by construction
and an independent classic-torchvision re-implementation of the paper transform; the error
paths; and the paper configuration's full DAG planned with an empty data root."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from snakerun import smoke_config
from tests import dataset_layouts as layouts

ROOT = Path(__file__).resolve().parents[2]
REAL = ["imagenet", "inaturalist", "cub", "pascal", "cifar100", "domainnet_sketch"]
PAPER_TRANSFORM = {
    "resize": 256,
    "crop": 224,
    "interpolation": "bilinear",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}

pytestmark = pytest.mark.integration


def snakemake(workdir, configfile, *args, check=True):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
        "--configfile",
        str(configfile),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def write_setup(base: Path, truth: dict, edit_rows=None) -> Path:
    """Tables and a config for the fixtures: a small synthetic in-domain set (it pre-trains the
    random model) plus one row per real layout; returns the config file."""
    rows = [
        {
            "key": "shapes",
            "kind": "synthetic",
            "role": "id",
            "shift_group": "in_domain",
            "num_classes": 10,
            "generator": "shapes",
            "variant": "standard",
            "n_train": 100,
            "n_test": 20,
            "seed": 0,
            "preprocessing": "",
            "root": "",
        }
    ]
    for row in layouts.table_rows(truth):
        rows.append({**row, "generator": "", "seed": ""})
    if edit_rows:
        edit_rows(rows)
    pd.DataFrame(rows).to_csv(base / "datasets.tsv", sep="\t", index=False)
    models = (ROOT / "tests" / "integration" / "models_smoke.tsv").read_text().splitlines()
    (base / "models.tsv").write_text(
        "\n".join([models[0], next(line for line in models if line.startswith("random_resnet\t"))])
        + "\n"
    )
    config = smoke_config()
    config.update(
        models_table=str(base / "models.tsv"),
        datasets_table=str(base / "datasets.tsv"),
        data_root=str(base / "data"),
        allow_subsets=["pascal", "cifar100"],
        protocols=["knn"],
        batch_datasets=True,
        transform=PAPER_TRANSFORM,
    )
    config["fewshot"]["percents"] = [10]
    config["analysis"]["min_models"] = 1  # one model on purpose: extraction only
    config["knn"]["k"] = 3  # the fixtures' splits hold a few images
    config["features"].update(batch_size=4, workers=2)
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def targets(datasets=REAL, model="random_resnet"):
    return [
        f"results/features/{model}/{d}/{s}.npy" for d in datasets for s in ("train", "test")
    ] + [f"results/data/{d}/{s}_manifest.json" for d in datasets for s in ("train", "test")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("real_layouts")
    truth = layouts.build_all(base / "data")
    configfile = write_setup(base, truth)
    workdir = base / "work"
    snakemake(workdir, configfile, *targets())
    return base, workdir, truth, configfile


def _key(kind):
    return "domainnet_sketch" if kind == "domainnet" else kind


def test_labels_file_lists_and_manifests(run):
    base, workdir, truth, _ = run
    for kind, t in truth.items():
        key = _key(kind)
        for split in ("train", "test"):
            items, labels = t["splits"][split]
            got = np.load(workdir / f"results/labels/{key}/{split}.npy")
            assert got.dtype == np.int64 and got.tolist() == list(labels), (key, split)
            files = workdir / f"results/data/{key}/{split}_files.txt"
            assert files.read_text().splitlines() == items
            manifest = json.loads(
                (workdir / f"results/data/{key}/{split}_manifest.json").read_text()
            )
            assert manifest["n"] == len(items) and manifest["num_classes"] == t["num_classes"]
            assert (
                manifest["count_per_class"]
                == np.bincount(labels, minlength=t["num_classes"]).tolist()
            )
            assert manifest["files_sha256"] == hashlib.sha256(files.read_bytes()).hexdigest()
    # Pascal: the majority class of the mask, not the class seen first
    assert np.load(workdir / "results/labels/pascal/train.npy").tolist() == [0, 11, 6]


def _classic_features(backbone, image: Image.Image, preprocessing: str) -> torch.Tensor:
    """Independent re-implementation: classic torchvision transforms, padding computed here."""
    from torchvision import transforms as T

    w, h = image.size
    steps = []
    if preprocessing == "pad_square":
        s = max(w, h)
        left, top = (s - w) // 2, (s - h) // 2
        steps.append(T.Pad([left, top, s - w - left, s - h - top], fill=0))
    elif preprocessing == "crop_square":
        steps.append(T.CenterCrop(min(w, h)))
    steps += [
        T.Resize(256),
        T.CenterCrop(224),
        T.ToTensor(),
        T.Normalize(PAPER_TRANSFORM["mean"], PAPER_TRANSFORM["std"]),
    ]
    with torch.inference_mode():
        return backbone(T.Compose(steps)(image)[None])[0]


def test_features_equal_an_independent_pipeline(run):
    from workflow_scripts.backbones import load_backbone

    base, workdir, truth, _ = run
    backbone = load_backbone(
        workdir / "results/checkpoints/random_resnet.safetensors", "resnet10_tiny", "avgpool"
    ).eval()
    for kind, t in truth.items():
        key = _key(kind)
        for split in ("train", "test"):
            items = t["splits"][split][0]
            feats = np.load(workdir / f"results/features/random_resnet/{key}/{split}.npy")
            assert feats.shape == (len(items), 128) and feats.dtype == np.float32
            meta = json.loads(
                (workdir / f"results/features/random_resnet/{key}/{split}.json").read_text()
            )
            assert (
                meta["n"] == len(items)
                and meta["transform"]["preprocessing"] == layouts.PREPROCESSING[kind]
            )
            for i, item in enumerate(items):
                if kind == "cifar100":
                    image = Image.fromarray(t["pixels"][split][i])
                else:
                    image = Image.open(t["root"] / item).convert("RGB")
                expected = _classic_features(backbone, image, layouts.PREPROCESSING[kind])
                np.testing.assert_allclose(
                    feats[i],
                    expected.numpy(),
                    rtol=1e-4,
                    atol=1e-4,
                    err_msg=f"{key} {split} {item}",
                )


def test_extraction_log_reports_progress_and_throughput(run):
    base, workdir, truth, _ = run
    log = (workdir / "logs/extract_features/random_resnet/all.log").read_text()
    assert "random_resnet / pascal / train: extracted 3 x 128 features" in log and "img/s" in log


def test_missing_root_names_the_data_set_and_the_expected_path(tmp_path):
    truth = layouts.build_all(tmp_path / "elsewhere")
    configfile = write_setup(tmp_path, truth)  # data_root = tmp_path/data, which is empty
    proc = snakemake(tmp_path / "work", configfile, "results/labels/cub/train.npy", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        f"data set 'cub': root folder '{tmp_path / 'data' / 'CUB_200_2011'}' does not exist" in out
    )
    assert not (tmp_path / "work/results/labels/cub/train.npy").exists()


def test_wrong_count_is_an_integrity_error(tmp_path):
    truth = layouts.build_all(tmp_path / "data")

    def edit(rows):
        next(r for r in rows if r["key"] == "cub")["n_train"] = 7

    configfile = write_setup(tmp_path, truth, edit)
    proc = snakemake(tmp_path / "work", configfile, "results/labels/cub/train.npy", check=False)
    assert proc.returncode != 0
    assert (
        "data set 'cub', split 'train': expected 7 images (table column 'n_train'), found 6"
        in proc.stdout + proc.stderr
    )


def test_corrupt_image_fails_extraction_naming_the_file(run, tmp_path):
    base, workdir, truth, configfile = run
    data = tmp_path / "data"
    shutil.copytree(base / "data", data)
    work = tmp_path / "work"
    shutil.copytree(workdir, work, symlinks=True)
    bad = data / "domainnet" / truth["domainnet"]["splits"]["test"][0][1]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    config = yaml.safe_load(configfile.read_text()) | {"data_root": str(data)}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(
        work,
        tmp_path / "config.yaml",
        "--forcerun",
        "extract_features",
        *targets(["domainnet_sketch"])[:2],
        check=False,
    )
    assert proc.returncode != 0
    assert f"cannot read image '{bad}'" in proc.stdout + proc.stderr


def planned_jobs(output: str) -> dict[str, int]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    counts = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def _finetune_jobs(text):
    """wildcards, threads and resources of each planned finetune job of a dry run's output."""
    jobs = []
    for block in text.split("rule finetune:")[1:]:
        block = block.split("\n\n")[0]
        job = dict(re.findall(r"(model|run|arm)=(\w+)", block))
        threads = re.search(r"threads: (\d+)", block)
        job["threads"] = int(threads.group(1)) if threads else 1
        job["gpu"] = int(re.search(r"gpu=(\d+)", block).group(1))
        job["mem_mb"] = int(re.search(r"mem_mb=(\d+)", block).group(1))
        jobs.append(job)
    return jobs


def test_paper_config_plans_the_whole_study_with_an_empty_data_root(tmp_path):
    """26 models x 11 data sets. batch_datasets false: one integrity job per (data set, split),
    one extraction job per (model, data set) covering both splits, one kNN and one linear job
    per (model, data set), one fine-tuning job per (model, run, arm): full and both few-shot
    sizes x raw and BN, each with its GPU, its CPUs (threads + loader workers) and memory."""
    (tmp_path / "empty").mkdir()
    started = time.perf_counter()
    proc = snakemake(
        tmp_path / "work",
        ROOT / "config" / "paper.yaml",
        "-n",
        "--cores",
        "64",
        "--config",
        f"data_root={tmp_path / 'empty'}",
    )
    seconds = time.perf_counter() - started
    counts = planned_jobs(proc.stdout + proc.stderr)
    print(f"paper dry run: {seconds:.1f} s, {counts.get('total')} jobs")
    assert counts["check_dataset"] == 11 * 2
    assert counts["extract_features"] == 26 * 11
    assert counts["knn_probe"] == counts["linear_probe"] == counts["attentive_probe"] == 26 * 11
    assert counts["finetune"] == 26 * 3 * 2 and counts["collect_trained"] == 26 * 3
    jobs = _finetune_jobs(proc.stdout + proc.stderr)
    assert {(j["model"], j["run"], j["arm"]) for j in jobs} == {
        (m, r, a)
        for m in {j["model"] for j in jobs}
        for r in ("finetune", "fewshot10", "fewshot1")
        for a in ("raw", "bn")
    }
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    cpus = paper["threads"]["finetune"] + paper["finetune"]["workers"]
    for job in jobs:  # paper.yaml: one GPU, threads + loader workers, process + workers memory
        assert (job["gpu"], job["threads"]) == (1, cpus), job
        assert job["mem_mb"] == 6000 + 300 * paper["finetune"]["workers"], job
    assert counts["fewshot_split"] == 2
    assert "generate_dataset" not in counts and "pretrain" not in counts
    assert_readme_counts(counts)
    assert not list((tmp_path / "work").glob("results/**/*.npy"))


def assert_readme_counts(counts: dict[str, int]) -> None:
    """README "Run on a cluster" states the paper DAG's job counts: they are this dry run's."""
    import re

    text = " ".join((ROOT / "README.md").read_text().split())
    said = re.search(
        r"The paper DAG \(`snakemake -n --configfile config/paper.yaml`\) has "
        r"\*\*([\d,]+) jobs\*\*: (.*?)\(a test checks",
        text,
    )
    assert said, "README lost its sentence on the paper DAG's job counts"
    assert int(said.group(1).replace(",", "")) == counts["total"]
    stated = {
        name: int(n)
        for n, name in re.findall(r"(\d+) ([A-Za-z][A-Za-z -]+?)(?= \(|,| and)", said.group(2))
    }
    figures = sum(v for k, v in counts.items() if re.fullmatch(r"f\d+_\w+", k))
    expected = {
        "integrity checks": counts["check_dataset"],
        "downloads": counts["download_checkpoint"],
        "conversions": counts["convert_checkpoint"],
        "extractions": counts["extract_features"],
        "kNN probes": counts["knn_probe"],
        "linear probes": counts["linear_probe"],
        "attentive probes": counts["attentive_probe"],
        "proxy jobs": counts["proxies"],
        "fine-tuning jobs": counts["finetune"],
        "local gathering jobs": counts["collect_trained"],
        "few-shot index files": counts["fewshot_split"],
        "tables": counts["accuracy_table"] + counts["proxies_table"] + counts["correlations"],
        "table views": counts["t1_models"] + counts["t2_datasets"] + counts["t3_accuracy"],
        "figures": figures,
        "run summary": counts["summary"],
    }
    assert stated == expected
