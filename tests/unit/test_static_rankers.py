"""The static rankers' values (config analysis.static_rankers): each against where it comes
from, counted or read independently; a ranker without any value is a config error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from workflow_scripts import registry
from workflow_scripts.config import ConfigError, load_study

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "config" / "published_imagenet.csv"


def config(name="config", **analysis):
    cfg = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    cfg["analysis"].update(analysis)
    return cfg


def test_arch_params_are_the_built_backbones():
    """registry.ARCH_PARAMS against the backbones backbones.py builds (every embedding)."""
    import torch

    from workflow_scripts.backbones import build_backbone

    assert set(registry.ARCH_PARAMS) == set(registry.ARCHS)
    for arch, entry in registry.ARCHS.items():
        for embedding in entry["embeddings"]:
            with torch.device("meta"):
                net = build_backbone(arch, embedding)
            assert sum(p.numel() for p in net.parameters()) == registry.ARCH_PARAMS[arch], arch
            assert not any("head" in n or n.startswith("fc.") for n, _ in net.named_parameters())


def test_demo_values():
    study = load_study(config(), ROOT)
    values = study.ranker_values
    assert list(values) == ["params", "pretrain_epochs"]  # random has no values
    table = pd.read_csv(ROOT / "config" / "models_demo.tsv", sep="\t").set_index("key")
    n_train = (
        pd.read_csv(ROOT / "config" / "datasets_demo.tsv", sep="\t")
        .set_index("key")
        .loc["shapes", "n_train"]
    )
    for key, row in table.iterrows():
        assert values["params"][key] == registry.ARCH_PARAMS[row["arch"]]
        # steps x batch 128 over the 5,000 train images: 150 steps = 3.84 epochs
        assert values["pretrain_epochs"][key] == pytest.approx(row["steps"] * 128 / n_train)
    assert values["pretrain_epochs"]["simclr_resnet"] == pytest.approx(3.84)
    assert values["pretrain_epochs"]["random_vit"] == 0.0
    # a method's own batch size counts
    cfg = config()
    cfg["pretrain"]["methods"]["simclr"]["batch_size"] = 64
    again = load_study(cfg, ROOT).ranker_values["pretrain_epochs"]
    assert again["simclr_resnet"] == pytest.approx(1.92) and again["byol_resnet"] == 3.84


def test_paper_values_from_the_model_table():
    study = load_study(config("paper"), ROOT)
    table = pd.read_csv(ROOT / "config" / "models_paper.tsv", sep="\t").set_index("key")
    values = study.ranker_values
    assert values["published_linear"] == table["published_linear"].dropna().to_dict()
    assert values["pretrain_epochs"] == table["epochs"].dropna().astype(float).to_dict()
    assert values["params"]["swav"] == 23_508_032 and values["params"]["mae"] == 85_798_656
    assert values["params"]["beit_v2"] == 85_761_984
    assert len(values["params"]) == len(table) == 26


def test_published_and_table_rankers_from_a_results_table():
    rows = pd.read_csv(PUBLISHED)
    linear = rows[(rows.protocol == "linear") & (rows.arm == "published")]
    cfg = config(static_rankers=["published_linear", "table:linear:published", "random"])
    cfg.update(models=[], results_tables=[str(PUBLISHED)])
    values = load_study(cfg, ROOT).ranker_values
    expected = dict(zip(linear.model, linear.top1.astype(float)))
    assert values == {"published_linear": expected, "table:linear:published": expected}
    knn = rows[rows.protocol == "knn"]
    cfg["analysis"]["static_rankers"] = ["table:knn:published"]
    assert load_study(cfg, ROOT).ranker_values == {
        "table:knn:published": dict(zip(knn.model, knn.top1.astype(float)))
    }
    # the demo's default rankers come from model rows: none here, left out and named
    cfg["analysis"]["static_rankers"] = ["params", "pretrain_epochs", "random"]
    study = load_study(cfg, ROOT)
    assert study.ranker_values == {"params": {}, "pretrain_epochs": {}}
    assert [note.split(" ")[0] for note in study.ranker_notes] == ["params", "pretrain_epochs"]


def test_the_model_table_wins_over_a_results_table(tmp_path):
    rows = pd.read_csv(PUBLISHED)
    rows.loc[rows.model == "swav", "top1"] = 1.0  # the model table says 75.3
    path = tmp_path / "mine.csv"
    rows[rows.model == "swav"].to_csv(path, index=False)
    cfg = config("paper", static_rankers=["published_linear"])
    cfg["results_tables"] = [str(path)]
    cfg["models"] = ["swav", "simclr", "byol", "mae"]
    values = load_study(cfg, ROOT).ranker_values["published_linear"]
    assert values == {"byol": 72.29, "mae": 68.0, "simclr": 68.8, "swav": 75.3}


@pytest.mark.parametrize(
    ("rankers", "message"),
    [
        (
            ["table:knn:published"],
            r"config key 'analysis.static_rankers.0': 'table:knn:published' has no value for "
            r"any analysed model \(no results table has an in-domain knn \(published\) row\)",
        ),
        (["flops"], r"config key 'analysis.static_rankers.0': 'flops' does not match"),
        (["table:knn"], r"config key 'analysis.static_rankers.0': 'table:knn' does not match"),
        (["random", "random"], r"analysis.static_rankers"),
    ],
)
def test_errors_name_the_ranker(rankers, message):
    with pytest.raises(ConfigError, match=message):
        load_study(config(static_rankers=rankers), ROOT)


def test_a_ranker_without_values_is_left_out_and_named():
    study = load_study(config(static_rankers=["params", "published_linear", "random"]), ROOT)
    assert study.ranker_values["published_linear"] == {}
    assert study.ranker_notes == [
        "published_linear has no value for any analysed model (the published ImageNet linear "
        "top-1: the model table's column `published_linear`, else a results table's "
        "in-domain `linear` (`published`) row)"
    ]
    assert load_study(config(), ROOT).ranker_notes == []


def test_a_timm_rows_parameter_count_is_timms():
    """timm's own count of the model without its head, built here independently."""
    import timm
    import torch

    from workflow_scripts.model_sources import timm as source

    arch = "vit_tiny_patch16_224.augreg_in21k"
    with torch.device("meta"):
        net = timm.create_model(arch, pretrained=False, num_classes=0)
    facts = source.ranker_facts({"arch": arch, "epochs": 300}, {}, None)
    assert facts == {"params": sum(p.numel() for p in net.parameters()), "pretrain_epochs": 300}
    assert 5_000_000 < facts["params"] < 6_000_000  # ViT-Ti: 5.5 M without the head
