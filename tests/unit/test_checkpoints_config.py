"""The paper's model table and the validation of checkpoint rows (format, url, trusted)."""

import copy
from pathlib import Path

import pytest
import yaml

from workflow_scripts.checkpoints import FORMATS, url_kind
from workflow_scripts.config import ConfigError, load_study, read_table, schema_defaults

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "config" / "models_paper.tsv"

# the paper's 26 models (key, arch family)
RESNETS = [
    "jigsaw",
    "rotnet",
    "npid",
    "sela_v2",
    "npid_plusplus",
    "pirl",
    "clusterfit",
    "deepcluster_v2",
    "swav",
    "simclr",
    "moco_v2",
    "simsiam",
    "byol",
    "dino_r50",
    "barlowtwins",
    "densecl",
    "moco_v3_r50",
]
VITS = [
    "dino_vitb16",
    "ibot",
    "moco_v3_vitb16",
    "mae",
    "maskfeat",
    "beit_v2",
    "milan",
    "eva",
    "pixmim",
]
GENERATIVE = {"mae", "maskfeat", "beit_v2", "milan", "eva", "pixmim"}


@pytest.fixture
def config():
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["models_table"] = str(PAPER)
    return cfg


def test_paper_table_has_the_26_models(config):
    study = load_study(config, ROOT)
    models = study.models
    assert list(models.index) == RESNETS + VITS
    assert (models.loc[RESNETS, "arch"] == "resnet50").all()
    assert (models.loc[RESNETS, "embedding"] == "avgpool").all()
    assert (models.loc[VITS[:5] + VITS[6:], "arch"] == "vit_base_patch16_224").all()
    assert (models.loc[VITS[:5] + VITS[6:], "embedding"] == "cls").all()
    assert models.loc["beit_v2", "arch"] == "beitv2_base_patch16_224"
    assert models.loc["beit_v2", "embedding"] == "mean_patch"
    assert set(models.index[models.paradigm == "generative"]) == GENERATIVE
    assert (models["source"] == "checkpoint").all()
    assert set(models["format"]) <= set(FORMATS)
    assert all(url.startswith("https://") for url in models["url"])
    kinds = {key: url_kind(url) for key, url in models["url"].items()}
    assert {k for k, v in kinds.items() if v == "gdrive"} == {"byol", "beit_v2", "milan"}
    # layouts as the sources write them
    expected = {
        "jigsaw": "vissl_trunk",
        "npid": "npid_numpy",
        "swav": "deepcluster",
        "moco_v2": "moco_v2",
        "simsiam": "mmselfsup_resnet",
        "byol": "byol_online",
        "dino_r50": "torchvision",
        "densecl": "extracted_backbone",
        "moco_v3_r50": "moco_v3",
        "dino_vitb16": "timm_vit",
        "ibot": "ibot",
        "moco_v3_vitb16": "moco_v3",
        "mae": "mae",
        "milan": "mae",
        "maskfeat": "mmselfsup_vit",
        "eva": "mmselfsup_vit",
        "beit_v2": "beit_v2",
    }
    assert {k: models.loc[k, "format"] for k in expected} == expected
    # every paper file is read without running code from it: no row needs trust
    assert not models["trusted"].any()
    # DenseCL: the authors' own file, re-published by the DenseCL author
    assert models.loc["densecl", "url"] == (
        "https://huggingface.co/xinlongwang/DenseCL/resolve/main/densecl_r50_imagenet_200ep.pth"
        "?download=true"
    )
    assert "SUBSTITUTE" not in models.loc["densecl", "note"]
    # BEiT-v2: the authors' copy; the official release named beside it, not claimed equal
    assert models.loc["beit_v2", "url"].endswith("1v9MzCK4GVTKiwNA0tdICAmVPZFgV8OVx")
    assert (
        "https://github.com/addf400/files/releases/download/BEiT-v2/"
        "beitv2_base_patch16_224_pt1k.pth"
    ) in models.loc["beit_v2", "note"]
    assert "not yet shown to be the same file" in models.loc["beit_v2", "note"]
    assert models["sha256"].isna().all()  # none published; pinned after a first download


def test_checkpoint_defaults_are_filled(config):
    load_study(config, ROOT)
    defaults = schema_defaults("checkpoints")
    assert (
        config["checkpoints"]
        == defaults
        == {"retries": 3, "backoff": 5.0, "timeout": 60.0, "moco_v3_encoder": "base"}
    )
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["checkpoints"] = {"moco_v3_encoder": "momentum"}
    load_study(config, ROOT)
    assert config["checkpoints"] == {**defaults, "moco_v3_encoder": "momentum"}


def test_bad_checkpoint_setting_names_the_key(config):
    config["checkpoints"] = {"moco_v3_encoder": "target"}
    with pytest.raises(
        ConfigError,
        match=r"config key 'checkpoints.moco_v3_encoder': 'target' "
        r"is not one of \['base', 'momentum'\]",
    ):
        load_study(config, ROOT)


def _edit(tmp_path, key, column, value):
    lines = PAPER.read_text().splitlines()
    header = lines[0].split("\t")
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split("\t")
        if cells[0] == key:
            cells[header.index(column)] = value
        out.append("\t".join(cells))
    path = tmp_path / "models.tsv"
    path.write_text("\n".join(out) + "\n")
    return str(path)


@pytest.mark.parametrize(
    ("key", "column", "value", "message"),
    [
        (
            "swav",
            "format",
            "swav_pickle",
            r"key 'swav': column 'format': unknown checkpoint format 'swav_pickle' \(known: vissl_trunk",
        ),
        ("swav", "format", "", r"key 'swav': column 'format' is required for source 'checkpoint'"),
        (
            "swav",
            "format",
            "mae",
            r"key 'swav': column 'format': format 'mae' holds a vit backbone, not a resnet one",
        ),
        ("mae", "url", "", r"key 'mae': column 'url' is required for source 'checkpoint'"),
        (
            "mae",
            "url",
            "s3://bucket/mae.pth",
            r"key 'mae': column 'url': unsupported URL scheme 's3'",
        ),
        (
            "mae",
            "trusted",
            "maybe",
            r"line 22 \(key 'mae'\): column 'trusted': 'maybe' is not of type",
        ),
        ("mae", "sha256", "abc", r"line 22 \(key 'mae'\): column 'sha256': 'abc' does not match"),
    ],
)
def test_bad_checkpoint_row_names_table_row_and_column(
    config, tmp_path, key, column, value, message
):
    config["models_table"] = _edit(tmp_path, key, column, value)
    with pytest.raises(ConfigError, match=rf"models table '.*models.tsv'.*{message}"):
        load_study(copy.deepcopy(config), ROOT)


def test_demo_tables_need_no_new_columns():
    table = read_table(ROOT / "config" / "models_demo.tsv", "models", "models")
    assert "trusted" not in table.columns and (table["source"] == "demo").all()
