"""The configuration schema is the one place of every key, its default and its meaning:
config/README.md's key table is generated from it, the loader fills its defaults, and code
outside the workflow falls back on them (workflow_scripts.schema.schema_defaults)."""

from pathlib import Path

import pytest
import yaml

from workflow_scripts import config as cfg
from workflow_scripts.schema import schema_defaults, schema_node

ROOT = Path(__file__).resolve().parents[2]


def _keys():
    return {".".join(path): (node, required) for path, node, required in cfg.schema_keys()}


def test_readme_key_table_is_the_one_generated_from_the_schema():
    text = (ROOT / "config" / "README.md").read_text()
    assert text.count(cfg.TABLE_BEGIN) == 1 and text.count(cfg.TABLE_END) == 1
    assert text == cfg.readme_with_table(text), (
        "config/README.md's key table is out of date: run `python -m workflow_scripts.config`"
    )


def test_the_table_documents_every_schema_key_once_with_its_default():
    keys = _keys()
    assert len(keys) > 120
    seen = []
    for cell, _, default, meaning in cfg.key_rows():
        assert meaning, cell
        names = [name.strip("`") for name in cell.split(", ")]
        for name in names:
            if "*" in name:  # every entry of the section before the star
                parent, rest = name.split(".*", 1)
                names_here = [f"{parent}.{k}{rest}" for k in schema_node(parent)["properties"]]
            else:
                names_here = [name]
            for key in names_here:
                node, required = keys[key]
                expected = "required" if required else "--"
                if "default" in node:
                    expected = f"`{yaml.safe_dump(node['default'], default_flow_style=True)}`"
                    expected = expected.replace("\n...\n", "").replace("\n", "")
                assert default == expected, key
                seen.append(key)
    assert sorted(seen) == sorted(keys)  # each once, none the schema lacks


def test_every_key_has_a_meaning_and_a_default_or_says_why_not():
    for key, (node, required) in _keys().items():
        assert node.get("description", "").strip(), f"{key}: no description"
        if "default" not in node:
            assert required or "no default" in node["description"], (
                f"{key}: optional without a default; give one, or say in its description what "
                "applies instead ('no default: ...')"
            )
        else:
            assert not required, f"{key}: required and with a default"


def test_the_two_tables_alone_are_a_complete_and_valid_configuration():
    config = {
        "models_table": "config/models_demo.tsv",
        "datasets_table": "config/datasets_demo.tsv",
    }
    study = cfg.load_study(config, ROOT)
    assert study.config == {**schema_defaults(), **config}
    cfg.validate_config(study.config)  # every default is a valid value
    assert study.config["figures"]["f4"]["cmap"] == "PuOr_r"
    assert study.config["pretrain"]["methods"]["mae"] == {
        "mask_ratio": 0.75,
        "decoder_dim": 64,
        "decoder_depth": 1,
    }
    assert study.config["finetune"]["epochs"] == 100 and study.config["fewshot"]["epochs"] == 30


def test_schema_defaults_of_one_section():
    f3 = schema_defaults("figures.f3")
    assert f3["x_protocol"] == "linear" and f3["col_wrap"] == 4 and f3["dpi"] == 150
    assert "x_arm" not in f3  # no default: the rule passes the last entry of `arms`
    assert schema_defaults("pretrain.methods.random") == {}
    assert schema_defaults("pretrain.methods.simmim") == {"mask_ratio": 0.5}
    assert schema_defaults("features")["device"] == "auto"
    schema_defaults("checkpoints")["retries"] = 99  # a fresh dict each call
    assert schema_defaults("checkpoints")["retries"] == 3
    with pytest.raises(KeyError, match="'figures.f10' is no configuration key"):
        schema_defaults("figures.f10")
    with pytest.raises(KeyError, match="a single key"):
        schema_defaults("knn.k")


def test_smoke_configuration_is_an_overlay_holding_only_what_differs_from_the_demo():
    demo = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    smoke = yaml.safe_load((ROOT / "tests" / "integration" / "smoke.yaml").read_text())

    def same(overlay, base, path=""):
        for key, value in overlay.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                yield from same(value, base[key], f"{path}{key}.")
            elif key in base and base[key] == value:
                yield f"{path}{key}"

    assert list(same(smoke, demo)) == []


def test_dataclass_fields_left_out_take_the_schema_default(monkeypatch):
    """The recipes keep no defaults of their own: a field left out is the schema's, and a
    changed schema default reaches them."""
    import dataclasses

    from workflow_scripts import finetune, linear_heads
    from workflow_scripts import schema as schema_module

    for cls, section in (
        (finetune.FinetuneRecipe, "finetune"),
        (linear_heads.Recipe, "linear"),
        (finetune.Speed, "finetune"),
    ):
        required = {"epochs": 50, "batch_size": 8} if cls is not finetune.Speed else {}
        obj = cls(**required)
        defaults = schema_defaults(section)
        for field in dataclasses.fields(cls):
            if field.default is schema_module.FROM_SCHEMA:
                assert getattr(obj, field.name) == defaults[field.name], (cls, field.name)
    schema = schema_module._schema()
    changed = {**schema}
    changed["properties"] = {
        **schema["properties"],
        "linear": {
            **schema["properties"]["linear"],
            "properties": {
                **schema["properties"]["linear"]["properties"],
                "momentum": {
                    **schema["properties"]["linear"]["properties"]["momentum"],
                    "default": 0.5,
                },
            },
        },
    }
    monkeypatch.setattr(schema_module, "_schema", lambda: changed)
    assert linear_heads.Recipe(epochs=50, batch_size=8).momentum == 0.5
    assert linear_heads.Recipe(epochs=50, batch_size=8, momentum=0.7).momentum == 0.7
