"""Accuracy table assembly and the helper-source hashes behind partial reruns."""

import numpy as np
import pandas as pd
import pytest

from workflow_scripts import manifest as manifest_module
from workflow_scripts import provenance
from workflow_scripts.results import COLUMNS, accuracy_table

MODELS = [
    {
        "key": "a",
        "method": "simclr",
        "family": "resnet",
        "arch": "resnet10_tiny",
        "paradigm": "discriminative",
    },
    {"key": "b", "method": "mae", "family": "vit", "arch": "vit_tiny_p8", "paradigm": "generative"},
]
DATASETS = [
    {"key": "id", "role": "id", "shift_group": "in_domain"},
    {"key": "ood", "role": "ood", "shift_group": "style"},
]


def _linear(model, dataset):
    rows = []
    for arm in ("raw", "bn"):
        for lr in (0.1, 0.3):
            for seed, top1 in ((1, 50.0), (2, 60.0)):
                rows.append(
                    {
                        "model": model,
                        "dataset": dataset,
                        "protocol": "linear",
                        "arm": arm,
                        "base_lr": lr,
                        "lr": lr,
                        "seed": seed,
                        "top1": top1 + lr * 10,
                        "top5": 90.0,
                        "top1_best": top1 + 5,
                        "top5_best": 95.0,
                        "best_epoch": 3,
                        "epochs": 10,
                        "batch_size": 256,
                        "n_train": 100,
                        "n_test": 50,
                        "code_version": "v1",
                    }
                )
    return pd.DataFrame(rows)


def _knn(model, dataset):
    return pd.DataFrame(
        [
            {
                "model": model,
                "dataset": dataset,
                "protocol": "knn",
                "arm": arm,
                "top1": 40.0 + i,
                "top5": np.nan,
                "k": 20,
                "n_train": 100,
                "n_test": 50,
                "code_version": "v1",
            }
            for i, arm in enumerate(("raw", "bn"))
        ]
    )


def test_accuracy_table_joins_and_averages_seeds():
    frames = [f(m["key"], d["key"]) for m in MODELS for d in DATASETS for f in (_linear, _knn)]
    table = accuracy_table(frames, MODELS, DATASETS, report="last", report_lr=0.3)
    assert list(table.columns) == COLUMNS
    assert len(table) == 2 * 2 * 2 * 2
    row = table.query(
        "model == 'b' and dataset == 'ood' and protocol == 'linear' and arm == 'bn'"
    ).iloc[0]
    assert row["top1"] == pytest.approx(58.0)  # mean of 53 and 63 at lr 0.3
    assert row["top1_sd"] == pytest.approx(np.std([53.0, 63.0], ddof=1))
    assert row["seed"] == "1;2" and row["backbone"] == "vit" and row["domain"] == "ood"
    assert row["shift_group"] == "style" and row["code_version"] == "v1"
    best = accuracy_table(frames, MODELS, DATASETS, report="best", report_lr=0.1)
    assert best.query("protocol == 'linear'")["top1"].eq(60.0).all()  # mean of 55 and 65
    # order: model, dataset, protocol (knn first), arm (raw first)
    assert list(table["protocol"][:4]) == ["knn", "knn", "linear", "linear"]
    assert list(table["arm"][:2]) == ["raw", "bn"]


def test_attentive_rows_average_seeds_at_any_base_lr():
    """The attentive probe's rows (one per arm and seed, its own base lr) reduce like the
    linear heads but without the linear report_lr filter; ordered after linear."""
    attentive = (
        _linear("a", "id")
        .query("base_lr == 0.3")
        .assign(protocol="attentive", base_lr=1.0, tokens=16, dim=64, queries=32)
    )
    frames = [_linear("a", "id"), attentive]
    table = accuracy_table(frames, MODELS[:1], DATASETS[:1], report="last", report_lr=0.1)
    row = table.query("protocol == 'attentive' and arm == 'raw'").iloc[0]
    assert row["top1"] == pytest.approx(58.0) and row["n_seeds"] == 2 and row["seed"] == "1;2"
    best = accuracy_table(frames, MODELS[:1], DATASETS[:1], report="best", report_lr=0.1)
    assert best.query("protocol == 'attentive'")["top1"].eq(60.0).all()
    assert list(table["protocol"]) == ["linear", "linear", "attentive", "attentive"]


def test_a_timm_row_brings_the_transform_column():
    """A timm row's model fields carry its transform (plan.model_fields through
    model_sources.timm.table_fields): the table records it before code_version, 'paper' for the
    other rows; without timm rows the columns stay."""
    timm_row = {"key": "c", "method": "dinov2", "family": "vit", "arch": "vit_base_patch14_dinov2"}
    models = [*MODELS, timm_row | {"paradigm": "discriminative", "transform": "model"}]
    frames = [_knn(m["key"], d["key"]) for m in models for d in DATASETS]
    table = accuracy_table(frames, models, DATASETS, report="last", report_lr=0.1)
    assert list(table.columns) == [*COLUMNS[:-1], "transform", "code_version"]
    assert dict(zip(table["model"], table["transform"])) == {
        "a": "paper",
        "b": "paper",
        "c": "model",
    }


def test_accuracy_table_rejects_unknown_and_duplicates():
    with pytest.raises(ValueError, match="unknown model"):
        accuracy_table([_knn("zzz", "id")], MODELS, DATASETS, report="last", report_lr=0.1)
    with pytest.raises(ValueError, match="duplicate accuracy rows"):
        accuracy_table(
            [_knn("a", "id"), _knn("a", "id")], MODELS, DATASETS, report="last", report_lr=0.1
        )
    with pytest.raises(ValueError, match="no linear-probe head was trained at base lr 0.5"):
        accuracy_table([_linear("a", "id")], MODELS, DATASETS, report="last", report_lr=0.5)


def test_code_hash_follows_package_imports(tmp_path, monkeypatch):
    scripts = provenance.ROOT / "workflow_scripts" / "scripts"
    # the feature-probe script loads its module by name (rule param 'module')
    closure = provenance.module_closure(str(scripts / "feature_probe.py"), ("linear",))
    assert "workflow_scripts/linear.py" in closure and "workflow_scripts/schedules.py" in closure
    assert "workflow_scripts/knn.py" not in closure
    knn = provenance.module_closure(str(scripts / "feature_probe.py"), ("knn",))
    assert "workflow_scripts/knn.py" in knn and "workflow_scripts/linear.py" not in knn
    with pytest.raises(ValueError, match="no package module 'workflow_scripts.svm'"):
        provenance.module_closure(str(scripts / "feature_probe.py"), ("svm",))
    # a pre-training job runs its own method's module only (loaded by name)
    pre = provenance.module_closure(str(scripts / "pretrain.py"), ("pretrain.mae",))
    assert {"workflow_scripts/pretrain/mae.py", "workflow_scripts/augment.py"} <= set(pre)
    assert "workflow_scripts/pretrain/simclr.py" not in pre
    # the script itself, its _bootstrap and the __init__ of every package on the way count
    assert {
        "workflow_scripts/scripts/pretrain.py",
        "workflow_scripts/scripts/_bootstrap.py",
        "workflow_scripts/__init__.py",
        "workflow_scripts/pretrain/__init__.py",
    } <= set(pre)


def test_code_hash_changes_with_a_helper(tmp_path, monkeypatch):
    pkg = tmp_path / "workflow_scripts"
    (pkg / "scripts").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("X = 1\n")
    (pkg / "other.py").write_text("Y = 1\n")
    script = pkg / "scripts" / "rule.py"
    script.write_text("from workflow_scripts import helper\n")
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    provenance.code_hash.cache_clear()
    provenance.module_closure.cache_clear()
    before = provenance.code_hash(str(script))
    (pkg / "other.py").write_text("Y = 2\n")
    provenance.code_hash.cache_clear()
    assert provenance.code_hash(str(script)) == before  # not imported: no rerun
    # comments, docstrings and layout change no behaviour: no rerun
    (pkg / "helper.py").write_text('"""A helper."""\n\n# the one constant\nX = (1)  # one\n')
    provenance.code_hash.cache_clear()
    assert provenance.code_hash(str(script)) == before
    (pkg / "helper.py").write_text("X = 2\n")
    provenance.code_hash.cache_clear()
    assert provenance.code_hash(str(script)) != before
    provenance.code_hash.cache_clear()
    provenance.module_closure.cache_clear()


def test_behaviour_drops_docstrings_and_comments_but_not_code():
    base = "def f(x):\n    y = x\n    return y + 1\n\n\nclass A:\n    y = 'text'\n"
    same = (
        '"""Module."""\n# comment\ndef f(x):\n    """Add one."""\n    y = x\n'
        '    return (y + 1)  # +1\n\n\nclass A:\n    """A class."""\n\n    y = "text"\n'
    )
    assert provenance.behaviour(same) == provenance.behaviour(base)
    changed = (
        base.replace("y + 1", "y + 2"),
        base.replace("'text'", "'other'"),
        base + "Z = 0\n",  # a string statement that is not a docstring is code
        base.replace("    y = x\n", "    y = x\n    'kept'\n"),
    )
    for source in changed:
        assert provenance.behaviour(source) != provenance.behaviour(base), source
    # a body that was only a docstring keeps a statement (the tree stays valid)
    assert "Pass" in provenance.behaviour('def g():\n    """Only a docstring."""\n')


def test_trained_rows_give_mean_and_sd_over_subset_seeds():
    rows = []
    for protocol, seeds in (("finetune", [""]), ("fewshot10", [42, 0, 1])):
        for i, seed in enumerate(seeds):
            for arm, offset in (("raw", 0.0), ("bn", 1.5)):
                rows.append(
                    {
                        "model": "a",
                        "dataset": "id",
                        "protocol": protocol,
                        "arm": arm,
                        "top1": 30.0 + 7 * i + offset,
                        "top5": 80.0 + i,
                        "seed": 42,
                        "subset_seed": seed,
                        "epochs": 5,
                        "n_train": 100,
                        "n_test": 50,
                        "code_version": "v",
                    }
                )
    frame = pd.DataFrame(rows)
    table = accuracy_table(
        [frame[frame.protocol == p] for p in ("finetune", "fewshot10")],
        MODELS[:1],
        DATASETS[:1],
        report="last",
        report_lr=0.1,
    )
    few = table.query("protocol == 'fewshot10' and arm == 'bn'").iloc[0]
    values = np.array([31.5, 38.5, 45.5])
    assert few["top1"] == pytest.approx(values.mean())
    assert few["top1_sd"] == pytest.approx(values.std(ddof=1))
    assert few["n_seeds"] == 3 and few["seed"] == "0;1;42"
    assert few["top5"] == pytest.approx(81.0)
    full = table.query("protocol == 'finetune' and arm == 'raw'").iloc[0]
    assert full["top1"] == 30.0 and full["top1_sd"] == 0 and full["n_seeds"] == 1
    assert full["seed"] == "42"


def test_run_manifest_records_code_packages_config_tables_and_devices(tmp_path):
    """Against independent computations: hashlib over the table files and the sorted config
    JSON, importlib.metadata for the installed versions, git for the commit."""
    import hashlib
    import importlib.metadata
    import json
    import subprocess

    models, datasets = tmp_path / "m.tsv", tmp_path / "d.tsv"
    models.write_text("key\ta\n")
    datasets.write_text("key\tb\n")
    config = {"knn": {"k": 20}, "arms": ["raw", "bn"]}
    devices = provenance_devices()
    manifest = manifest_module.run_manifest(
        config, {"models": models, "datasets": datasets}, devices
    )
    assert manifest["tables"]["models"]["sha256"] == hashlib.sha256(b"key\ta\n").hexdigest()
    assert manifest["tables"]["datasets"]["sha256"] == hashlib.sha256(b"key\tb\n").hexdigest()
    canonical = json.dumps({"arms": ["raw", "bn"], "knn": {"k": 20}}, separators=(",", ":"))
    assert manifest["config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert manifest["packages"]["numpy"] == {
        "pinned": manifest["packages"]["numpy"]["pinned"],
        "installed": importlib.metadata.version("numpy"),
    }
    assert manifest["snakemake"] == importlib.metadata.version("snakemake")
    assert manifest["devices"] == {"finetune": ["cuda"], "knn": ["cpu", "unrecorded"]}
    head = subprocess.run(
        ["git", "-C", str(manifest_module.ROOT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
    )
    if head.returncode == 0:  # a git checkout (CI clones one)
        assert manifest["git"]["commit"] == head.stdout.strip()
    assert manifest_module._git_commit(tmp_path) is None  # outside a checkout: None, no error
    json.dumps(manifest)  # serialisable as is


def provenance_devices():
    from workflow_scripts.results import devices_by_protocol

    return devices_by_protocol(
        [
            pd.DataFrame({"protocol": ["knn", "knn"], "device": ["cpu", None]}),
            pd.DataFrame({"protocol": ["finetune"], "device": ["cuda"]}),
        ]
    )
