"""The job functions behind the thin rule scripts: each writes what the rule declares, in the
rule's order, with the values of the lower-level functions it orchestrates and the provenance
columns of its rows (a script only hands them Snakemake's inputs, outputs, params, config)."""

from __future__ import annotations

import hashlib
import json
import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from workflow_scripts import (
    feature_cache,
    features,
    finetune,
    knn,
    linear,
    linear_heads,
    online_probe,
    runtime,
    synthetic,
)
from workflow_scripts import tables as T
from workflow_scripts.backbones import build_backbone, save_weights
from workflow_scripts.checkpoints import download as dl
from workflow_scripts.datasets.integrity import file_list_text, save_file_list

LOG = logging.getLogger("sslbench.test_jobs")
SPEC = {
    "resize": None,
    "crop": None,
    "interpolation": "bilinear",
    "mean": [0.5] * 3,
    "std": [0.25] * 3,
}
OPTIONS = {
    "batch_size": 8,
    "dtype": "float32",
    "precision": "fp32",
    "device": "cpu",
    "threads": 1,
    "workers": 0,
    "channels_last": False,
    "log_every": 60.0,
}


def _features(tmp_path, name, n, d, classes, seed):
    """Features and labels of one split saved as the extraction writes them."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, d)).astype(np.float32), np.arange(n) % classes
    np.save(tmp_path / f"{name}.npy", x)
    np.save(tmp_path / f"{name}_labels.npy", y)
    return str(tmp_path / f"{name}.npy"), str(tmp_path / f"{name}_labels.npy"), x, y


def _probe_data(tmp_path, datasets=("a", "b"), classes=(4, 6)):
    """labelled_splits over two data sets of different sizes and class counts."""
    paths = {"train": [], "train_labels": [], "test": [], "test_labels": []}
    arrays = {}
    for i, (dataset, c) in enumerate(zip(datasets, classes, strict=True)):
        tr, trl, xtr, ytr = _features(tmp_path, f"{dataset}_train", 40 + 8 * i, 16, c, 2 * i)
        te, tel, xte, yte = _features(tmp_path, f"{dataset}_test", 20 + 4 * i, 16, c, 2 * i + 1)
        paths["train"].append(tr)
        paths["train_labels"].append(trl)
        paths["test"].append(te)
        paths["test_labels"].append(tel)
        arrays[dataset] = (xtr, ytr, xte, yte)
    return paths, arrays


def test_labelled_splits_load_each_data_set_in_order_and_check_the_labels(tmp_path):
    paths, arrays = _probe_data(tmp_path)
    loaded = list(
        feature_cache.labelled_splits(
            "m",
            ["a", "b"],
            paths["train"],
            paths["train_labels"],
            paths["test"],
            paths["test_labels"],
        )
    )
    assert [item[0] for item in loaded] == ["a", "b"]
    for dataset, *got in loaded:
        for array, expected in zip(got, arrays[dataset], strict=True):
            np.testing.assert_array_equal(array, expected)
    with pytest.raises(ValueError, match="model 'm', data set 'a', split 'test': the features"):
        list(
            feature_cache.labelled_splits(
                "m",
                ["a"],
                paths["train"][:1],
                paths["train_labels"][:1],
                paths["test"][:1],
                paths["train_labels"][:1],
            )
        )


def test_extraction_job_writes_each_pair_and_its_sidecar(tmp_path):
    torch.manual_seed(0)
    backbone = build_backbone("resnet10_tiny", "avgpool").eval()
    weights = tmp_path / "w.safetensors"
    save_weights(backbone, weights)
    rng = np.random.default_rng(0)
    pairs = [("a", "train", 10), ("a", "test", 6), ("b", "train", 12)]
    images, labels = [], []
    for dataset, split, n in pairs:
        np.save(tmp_path / f"{dataset}_{split}.npy", rng.integers(0, 256, (n, 32, 32, 3), np.uint8))
        np.save(tmp_path / f"{dataset}_{split}_labels.npy", np.arange(n) % 3)
        images.append(str(tmp_path / f"{dataset}_{split}.npy"))
        labels.append(str(tmp_path / f"{dataset}_{split}_labels.npy"))
    outs = [str(tmp_path / f"f_{d}_{s}.npy") for d, s, _ in pairs]
    sidecars = [str(tmp_path / f"f_{d}_{s}.json") for d, s, _ in pairs]
    sources = {"a": {"kind": "synthetic"}, "b": {"kind": "synthetic"}}
    shapes = features.run_job(
        backbone,
        weights=weights,
        model="m",
        datasets=[d for d, _, _ in pairs],
        splits=[s for _, s, _ in pairs],
        images=images,
        labels=labels,
        features=outs,
        sidecars=sidecars,
        sources=sources,
        transform=SPEC,
        options=OPTIONS,
        data_root=tmp_path,
        log=LOG,
    )
    assert shapes == [(10, 128), (6, 128), (12, 128)]
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    for (dataset, split, n), image_path, label_path, out, sidecar in zip(
        pairs, images, labels, outs, sidecars, strict=True
    ):
        array = np.load(image_path)
        direct = features.extract(backbone, features.array_batches(array, SPEC, 8), n, spec=SPEC)
        assert np.array_equal(np.load(out), direct)
        assert json.loads(open(sidecar).read()) == {
            "model": "m",
            "dataset": dataset,
            "split": split,
            "n": n,
            "d": 128,
            "dtype": "float32",
            "weights_sha256": sha,
            "transform": SPEC,
            "labels": label_path,
            "backbone_mode": "eval",
            "precision": "fp32",
            "device": "cpu",
        }


def test_extraction_job_checks_every_split_before_the_first(tmp_path):
    np.save(tmp_path / "ok.npy", np.zeros((4, 32, 32, 3), np.uint8))
    np.save(tmp_path / "ok_labels.npy", np.zeros(4, np.int64))
    np.save(tmp_path / "bad.npy", np.zeros((5, 32, 32, 3), np.uint8))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ValueError, match="data set 'b', split 'test': .* lists 5 images"):
        features.run_job(
            None,
            weights=weights,
            model="m",
            datasets=["a", "b"],
            splits=["train", "test"],
            images=[str(tmp_path / "ok.npy"), str(tmp_path / "bad.npy")],
            labels=[str(tmp_path / "ok_labels.npy")] * 2,
            features=[str(tmp_path / "fa.npy"), str(tmp_path / "fb.npy")],
            sidecars=[str(tmp_path / "fa.json"), str(tmp_path / "fb.json")],
            sources={"a": {"kind": "synthetic"}, "b": {"kind": "synthetic"}},
            transform=SPEC,
            options=OPTIONS,
            data_root=tmp_path,
            log=LOG,
        )
    assert not list(tmp_path.glob("f*"))


def test_knn_job_writes_each_data_set_with_its_provenance(tmp_path):
    paths, arrays = _probe_data(tmp_path)
    data = feature_cache.labelled_splits(
        "m", ["a", "b"], paths["train"], paths["train_labels"], paths["test"], paths["test_labels"]
    )
    outs = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    knn.run_job(
        data,
        outs,
        model="m",
        num_classes=[4, 6],
        arms=["raw", "bn"],
        settings={"k": 5, "device": "cpu"},
        threads=1,
        code="c0de",
        log=LOG,
    )
    for dataset, classes, out in zip(["a", "b"], [4, 6], outs, strict=True):
        xtr, ytr, xte, yte = arrays[dataset]
        expected = pd.DataFrame(
            knn.evaluate_knn(xtr, ytr, xte, yte, k=5, num_classes=classes, arms=("raw", "bn"))
        ).assign(model="m", dataset=dataset, protocol="knn", code_version="c0de", device="cpu")
        pd.testing.assert_frame_equal(pd.read_csv(out), expected, check_dtype=False)
    with pytest.raises(ValueError):  # one output file per data set
        knn.run_job(
            iter([("a", *arrays["a"])]),
            [],
            model="m",
            num_classes=[4],
            arms=["raw"],
            settings={"k": 5, "device": "cpu"},
            threads=1,
            code="c",
            log=LOG,
        )


def test_linear_job_trains_the_head_grid_per_data_set(tmp_path):
    cfg = {
        "epochs": 3,
        "batch_size": 16,
        "base_lrs": [0.1, 0.05],
        "seeds": [1, 2],
        "warmup_epochs": 1,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "grad_clip": 0.5,
        "init_std": 0.01,
    }
    heads = linear_heads.head_grid(["raw", "bn"], cfg)
    assert [(h.arm, h.base_lr, h.seed) for h in heads] == [
        ("raw", 0.1, 1),
        ("raw", 0.1, 2),
        ("raw", 0.05, 1),
        ("raw", 0.05, 2),
        ("bn", 0.1, 1),
        ("bn", 0.1, 2),
        ("bn", 0.05, 1),
        ("bn", 0.05, 2),
    ]
    paths, arrays = _probe_data(tmp_path)
    data = feature_cache.labelled_splits(
        "m", ["a", "b"], paths["train"], paths["train_labels"], paths["test"], paths["test_labels"]
    )
    outs = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    linear.run_job(
        data,
        outs,
        model="m",
        num_classes=[4, 6],
        arms=["raw", "bn"],
        settings={**cfg, "device": "cpu"},
        threads=1,
        code="c0de",
        log=LOG,
    )
    for dataset, classes, out in zip(["a", "b"], [4, 6], outs, strict=True):
        results, _ = linear_heads.train_heads(
            *arrays[dataset], classes, heads, linear_heads.Recipe.from_config(cfg)
        )
        expected = pd.DataFrame(results).assign(
            model="m", dataset=dataset, protocol="linear", code_version="c0de", device="cpu"
        )
        pd.testing.assert_frame_equal(pd.read_csv(out), expected, check_dtype=False)


def test_online_probe_job_loads_a_fresh_backbone_per_data_set(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_weights(build_backbone("resnet10_tiny", "avgpool"), weights)
    cfg = {"epochs": 2, "batch_size": 8, "base_lrs": [0.1], "seeds": [3], "warmup_epochs": 1}
    online = {"seed": 5, "authors_drift": True}  # drift: a reused backbone would differ
    rng = np.random.default_rng(1)
    inputs = {}
    for dataset in ("a", "b"):
        for split, n in (("train", 16), ("test", 8)):
            np.save(
                tmp_path / f"{dataset}_{split}.npy", rng.integers(0, 256, (n, 32, 32, 3), np.uint8)
            )
            np.save(tmp_path / f"{dataset}_{split}_labels.npy", np.arange(n) % 3)
            inputs.setdefault(f"{split}_images", []).append(
                str(tmp_path / f"{dataset}_{split}.npy")
            )
            inputs.setdefault(f"{split}_labels", []).append(
                str(tmp_path / f"{dataset}_{split}_labels.npy")
            )
    model = {
        "key": "m",
        "method": "simclr",
        "arch": "resnet10_tiny",
        "embedding": "avgpool",
        "source": "demo",
    }
    outs = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    online_probe.run_job(
        str(weights),
        outs,
        model=model,
        datasets=["a", "b"],
        num_classes=[3, 3],
        arms=["raw", "bn"],
        cfg=cfg,
        online=online,
        mean=SPEC["mean"],
        std=SPEC["std"],
        code="c0de",
        log=LOG,
        **inputs,
    )
    from workflow_scripts.backbones import load_backbone

    for i, (dataset, out) in enumerate(zip(["a", "b"], outs, strict=True)):
        arrays = [
            np.load(inputs[key][i])
            for key in ("train_images", "train_labels", "test_images", "test_labels")
        ]
        results, _ = online_probe.train_online(
            load_backbone(weights, "resnet10_tiny", "avgpool"),
            *arrays,
            num_classes=3,
            heads=linear_heads.head_grid(["raw", "bn"], cfg),
            recipe=linear_heads.Recipe.from_config(cfg),
            mean=SPEC["mean"],
            std=SPEC["std"],
            seed=5,
            authors_drift=True,
        )
        expected = pd.DataFrame(results).assign(
            model="m", dataset=dataset, protocol="linear_online", code_version="c0de", device="cpu"
        )
        pd.testing.assert_frame_equal(pd.read_csv(out), expected, check_dtype=False)


FINETUNE_RECIPES = {
    "finetune": {
        "epochs": 2,
        "batch_size": 8,
        "lr": 0.1,
        "warmup_epochs": 0,
        "authors_quirks": True,
        "precision": "fp32",
        "compile": False,
    },
    "fewshot10": {
        "epochs": 3,
        "batch_size": 4,
        "lr": 0.2,
        "head_lr": 0.3,
        "warmup_epochs": 0,
        "precision": "bf16",
        "compile": True,
    },
}


def _finetune_specs(tmp_path, log_files=("logs/finetune/mae_vit.log",)):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    np.save(tmp_path / "fewshot_10_seed1.npy", np.array([3, 1, 4]))
    runs = [
        {
            "run": "finetune",
            "arm": "raw",
            "protocol": "finetune",
            "subset_seed": None,
            "split": None,
        },
        {
            "run": "fewshot10_seed1",
            "arm": "bn",
            "protocol": "fewshot10",
            "subset_seed": 1,
            "split": str(tmp_path / "fewshot_10_seed1.npy"),
        },
    ]
    model = {
        "key": "mae_vit",
        "method": "mae",
        "arch": "vit_tiny_p8",
        "embedding": "cls",
        "source": "demo",
    }
    return finetune.job_specs(
        weights=str(weights),
        model=model,
        runs=runs,
        recipes=FINETUNE_RECIPES,
        train={"images_path": "train"},
        test={"images_path": "test"},
        num_classes=10,
        state_dir="results/state/finetune/mae_vit",
        run_time={"device": "cpu", "workers": 0, "gpus": 1, "save_minutes": 7.5},
        threads=2,
        log_files=list(log_files),
    )


def test_finetune_job_specs_plan_each_unit(tmp_path):
    full, few = _finetune_specs(tmp_path)
    sha = hashlib.sha256(b"weights").hexdigest()
    assert (full.protocol, full.arm, full.subset_seed, full.index) == (
        "finetune",
        "raw",
        None,
        None,
    )
    assert (few.protocol, few.arm, few.subset_seed) == ("fewshot10", "bn", 1)
    np.testing.assert_array_equal(few.index, [3, 1, 4])
    assert [s.state_path for s in (full, few)] == [
        "results/state/finetune/mae_vit/finetune_raw.pt",
        "results/state/finetune/mae_vit/fewshot10_seed1_bn.pt",
    ]
    # each protocol's recipe, the authors' quirks of the model's method applied (MAE: no drop-path)
    assert full.recipe == finetune.FinetuneRecipe(
        epochs=2, batch_size=8, lr=0.1, warmup_epochs=0, authors_quirks=True, drop_path=0.0
    )
    assert few.recipe == finetune.FinetuneRecipe(
        epochs=3, batch_size=4, lr=0.2, head_lr=0.3, warmup_epochs=0
    )
    assert full.speed == finetune.Speed(
        device="cpu", precision="fp32", compile=False, save_minutes=7.5
    )
    assert few.speed == finetune.Speed(
        device="cpu", precision="bf16", compile=True, save_minutes=7.5
    )
    for spec in (full, few):
        assert (spec.weights_sha256, spec.num_classes, spec.threads) == (sha, 10, 2)
        assert (spec.train, spec.test) == ({"images_path": "train"}, {"images_path": "test"})
        assert spec.log_path == "logs/finetune/mae_vit.log"
    assert _finetune_specs(tmp_path, log_files=())[0].log_path is None


def test_finetune_job_writes_each_row_then_gathers(tmp_path, monkeypatch):
    specs = _finetune_specs(tmp_path)
    calls = []

    def fake_run(spec, processes):
        calls.append((spec.protocol, spec.arm, processes))
        return {"arm": spec.arm, "top1": 10.0 * len(calls), "protocol": spec.protocol}

    monkeypatch.setattr(finetune, "run", fake_run)
    outs = [str(tmp_path / "finetune_raw.csv"), str(tmp_path / "fewshot10_bn.csv")]
    gathered = [str(tmp_path / "g_finetune.csv"), str(tmp_path / "g_fewshot10.csv")]
    finetune.run_job(
        specs,
        outs,
        processes=2,
        dataset="shapes",
        code="c0de",
        gathered_outputs=gathered,
        gathered_inputs=[[outs[0]], outs],
    )
    assert calls == [("finetune", "raw", 2), ("fewshot10", "bn", 2)]
    rows = [pd.read_csv(out).to_dict("records") for out in outs]
    assert rows == [
        [
            {
                "arm": "raw",
                "top1": 10.0,
                "protocol": "finetune",
                "model": "mae_vit",
                "dataset": "shapes",
                "code_version": "c0de",
            }
        ],
        [
            {
                "arm": "bn",
                "top1": 20.0,
                "protocol": "fewshot10",
                "model": "mae_vit",
                "dataset": "shapes",
                "code_version": "c0de",
            }
        ],
    ]
    assert open(gathered[0]).read() == open(outs[0]).read()
    assert pd.read_csv(gathered[1]).to_dict("records") == rows[0] + rows[1]
    with pytest.raises(ValueError):  # one output per unit
        finetune.run_job(specs, outs[:1], processes=1, dataset="shapes", code="c")


def test_named_files_is_a_list_whatever_snakemake_stores():
    files = SimpleNamespace(one="a.csv", many=["a.csv", "b.csv"])
    assert runtime.named_files(files, "one") == ["a.csv"]
    assert runtime.named_files(files, "many") == ["a.csv", "b.csv"]
    assert runtime.named_files(files, "absent") == []


def _dataset_rows():
    return [
        {
            "key": "shapes",
            "kind": "synthetic",
            "role": "id",
            "shift_group": "",
            "num_classes": 3,
            "n_train": 6,
            "n_test": 3,
        },
        {
            "key": "count",
            "kind": "synthetic",
            "role": "ood",
            "shift_group": "new_labels",
            "num_classes": 4,
            "n_train": 8,
            "n_test": 4,
        },
    ]


def test_table_rules_write_their_csv_and_html(tmp_path):
    model_rows = [
        {
            "key": "m",
            "method": "simclr",
            "arch": "resnet10_tiny",
            "family": "resnet",
            "paradigm": "discriminative",
            "embedding": "avgpool",
            "source": "demo",
            "seed": 1,
            "steps": 10,
            "epochs": "",
            "format": "",
            "url": "",
            "sha256": "",
        }
    ]
    out = {"csv": str(tmp_path / "models.csv"), "html": str(tmp_path / "models.html")}
    t1 = T.make(
        {"table": "models", "title": "T1: models", "rows": model_rows, "code": "c"}, {}, out
    )
    pd.testing.assert_frame_equal(t1, T.models_table(model_rows))
    assert list(pd.read_csv(out["csv"])["key"]) == ["m"]
    assert "T1: models" in open(out["html"]).read()

    inputs = {"train": [], "test": []}
    for row in _dataset_rows():
        for split in ("train", "test"):
            path = tmp_path / f"{row['key']}_{split}.npy"
            np.save(path, np.arange(row[f"n_{split}"]) % row["num_classes"])
            inputs[split].append(str(path))
    out = {"csv": str(tmp_path / "datasets.csv"), "html": str(tmp_path / "datasets.html")}
    t2 = T.make(
        {
            "table": "datasets",
            "title": "T2",
            "rows": _dataset_rows(),
            "dataset_keys": ["shapes", "count"],
        },
        inputs,
        out,
    )
    expected = T.datasets_table(
        _dataset_rows(),
        {
            "shapes": (inputs["train"][0], inputs["test"][0]),
            "count": (inputs["train"][1], inputs["test"][1]),
        },
    )
    pd.testing.assert_frame_equal(t2, expected)
    assert list(t2["measured_train"]) == [6, 8] and list(t2["classes_in_train"]) == [3, 4]
    assert list(pd.read_csv(out["csv"])["measured_test"]) == [3, 4]

    accuracy = pd.DataFrame({"model": ["m"], "top1": [12.5]})
    accuracy.to_csv(tmp_path / "accuracy.csv", index=False)
    html = str(tmp_path / "accuracy.html")
    t3 = T.make(
        {"table": "accuracy", "title": "T3"},
        {"csv": str(tmp_path / "accuracy.csv")},
        {"html": html},
    )
    pd.testing.assert_frame_equal(t3, accuracy)
    assert "12.5" in open(html).read()
    assert sorted(p.name for p in tmp_path.glob("accuracy.*")) == ["accuracy.csv", "accuracy.html"]
    with pytest.raises(ValueError, match="unknown table 'x'"):
        T.make({"table": "x", "title": "x"}, {}, {"html": html})


def test_download_job_records_the_digest_and_asks_to_pin_an_unpinned_row(tmp_path, caplog):
    payload = b"checkpoint bytes"
    digest = hashlib.sha256(payload).hexdigest()
    (tmp_path / "src.ckpt").write_bytes(payload)
    table = tmp_path / "models.tsv"
    table.write_text("key\tformat\tsha256\nm\ttorchvision\t\n")
    raw, sha_file = tmp_path / "m.ckpt", tmp_path / "m.ckpt.sha256"
    settings = {"retries": 0, "backoff": 0.0, "timeout": 5.0}
    with caplog.at_level(logging.WARNING):
        got = dl.run_job(
            str(tmp_path / "src.ckpt"),
            raw,
            sha_file,
            model="m",
            sha256=None,
            table=table,
            log=LOG,
            **settings,
        )
    assert got == digest and raw.read_bytes() == payload
    assert sha_file.read_text() == f"{digest}  m.ckpt\n"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [dl.pin_message(table, "m", digest)]
    assert warnings[0].endswith(f"m\ttorchvision\t{digest}")
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # pinned: nothing to ask
        dl.run_job(
            str(tmp_path / "src.ckpt"),
            raw,
            sha_file,
            model="m",
            sha256=digest.upper(),
            table=table,
            log=LOG,
            **settings,
        )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(dl.DownloadError, match="sha256 mismatch"):
        dl.run_job(
            str(tmp_path / "src.ckpt"),
            tmp_path / "x.ckpt",
            tmp_path / "x.sha256",
            model="m",
            sha256="0" * 64,
            table=table,
            log=LOG,
            **settings,
        )
    assert not (tmp_path / "x.sha256").exists()


def test_generate_job_writes_both_splits(tmp_path):
    row = {
        "key": "shapes",
        "generator": "shapes",
        "variant": "standard",
        "n_train": 20,
        "n_test": 10,
        "seed": 3,
    }
    outputs = {
        f"{s}_{what}": str(tmp_path / f"{s}_{what}.npy")
        for s in ("train", "test")
        for what in ("images", "labels")
    }
    synthetic.run_job(row, outputs, LOG)
    for split in ("train", "test"):
        images, labels = synthetic.generate("shapes", "standard", row[f"n_{split}"], 3, split)
        assert np.array_equal(np.load(outputs[f"{split}_images"]), images)
        assert np.array_equal(np.load(outputs[f"{split}_labels"]), labels)
    assert len(np.load(outputs["test_labels"])) == 10


def test_file_list_is_written_as_listed(tmp_path):
    items = ["n01/a.JPEG", "n02/b c.JPEG"]
    save_file_list(tmp_path / "files.txt", items)
    assert (
        (tmp_path / "files.txt").read_text()
        == file_list_text(items)
        == "n01/a.JPEG\nn02/b c.JPEG\n"
    )
