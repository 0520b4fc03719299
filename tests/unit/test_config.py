"""Configuration and table validation: bad input fails before any job, naming the culprit."""

import copy
import re
import shutil
from pathlib import Path

import pytest
import yaml

from workflow_scripts import registry
from workflow_scripts.config import ConfigError, load_study, schema_defaults

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_default_config_is_valid(config):
    study = load_study(config, ROOT)
    assert study.id_dataset == "shapes"
    assert len(study.model_keys) >= 12
    assert set(study.models["family"]) == {"resnet", "vit"}
    assert set(study.models["paradigm"]) >= {"discriminative", "generative"}
    # at least one method runs on both backbones
    by_method = study.models.groupby("method")["family"].nunique()
    assert (by_method[by_method.index != "random"] == 2).any()
    roles = study.datasets["role"].value_counts()
    assert roles["id"] == 1 and roles["ood"] >= 5


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["linear"].update(epochs=-1),
            r"config key 'linear.epochs': -1 is less than the minimum",
        ),
        (
            lambda c: c.update(protocols=["knn", "svm"]),
            r"config key 'protocols.1': 'svm' is not one of",
        ),
        (
            lambda c: c.update(protocols=["proxies"]),
            r"config key 'protocols': \['proxies'\] holds no accuracy protocol",
        ),
        (
            lambda c: c.update(models=["simclr_resnet", "dino_vit"]),
            r"config key 'models': unknown model key\(s\) 'dino_vit'",
        ),
        (
            lambda c: c.update(datasets=["shapes", "imagenet"]),
            r"config key 'datasets': unknown data set key\(s\) 'imagenet'",
        ),
        (
            lambda c: c.update(datasets=["count", "texture"]),
            r"exactly one selected data set must have role 'id', found 0",
        ),
        (lambda c: c["knn"].update(k=0), r"config key 'knn.k': 0 is less than the minimum"),
        (
            lambda c: c.update(knn_k=3),
            r"config key '<top level>': Additional properties are not allowed \('knn_k'",
        ),
        (
            lambda c: c["linear"].update(report_lr=0.3),
            r"config key 'linear.report_lr': 0.3 is not one of linear.base_lrs",
        ),
        (lambda c: c["linear"].update(warmup_epochs=30), r"config key 'linear.warmup_epochs'"),
        (
            lambda c: c["pretrain"]["methods"].update(dino={}),
            r"config key 'pretrain.methods': Additional properties are not allowed \('dino' was unexpected\)",
        ),
        (lambda c: c.update(models_table="nope.tsv"), r"models table '.*nope.tsv' does not exist"),
        (
            lambda c: c["fewshot"].update(extra_seeds=[0, 42]),
            r"config key 'fewshot.extra_seeds': \[0, 42\] repeats fewshot.seed",
        ),
        (
            lambda c: c["finetune"].update(authors_quirks=3),
            r"config key 'finetune.authors_quirks': 3 is not of type 'boolean'",
        ),
    ],
)
def test_bad_config_names_the_key(config, edit, message):
    bad = copy.deepcopy(config)
    edit(bad)
    with pytest.raises(ConfigError, match=message):
        load_study(bad, ROOT)


def _edited_table(tmp_path, name, transform):
    src = ROOT / "config" / name
    lines = src.read_text().splitlines()
    out = tmp_path / name
    out.write_text("\n".join(transform(lines)) + "\n")
    return str(out)


def _drop_column(lines, column):
    header = lines[0].split("\t")
    i = header.index(column)
    return ["\t".join(c for j, c in enumerate(line.split("\t")) if j != i) for line in lines]


def _set_cell(lines, key, column, value):
    header = lines[0].split("\t")
    i = header.index(column)
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split("\t")
        if cells[0] == key:
            cells[i] = value
        out.append("\t".join(cells))
    return out


@pytest.mark.parametrize(
    ("table", "transform", "message"),
    [
        (
            "models_demo.tsv",
            lambda text: _drop_column(text, "paradigm"),
            r"is missing column\(s\): paradigm",
        ),
        (
            "models_demo.tsv",
            lambda text: _set_cell(text, "simclr_vit", "steps", "-5"),
            r"line \d+ \(key 'simclr_vit'\): column 'steps': -5 is less than the minimum",
        ),
        (
            "models_demo.tsv",
            lambda text: _set_cell(text, "mae_vit", "method", "dino"),
            r"key 'mae_vit': method 'dino' cannot be trained",
        ),
        (
            "models_demo.tsv",
            lambda text: _set_cell(text, "mae_vit", "family", "resnet"),
            r"key 'mae_vit': family 'resnet' does not match arch 'vit_tiny_p8'",
        ),
        (
            "models_demo.tsv",
            lambda text: _set_cell(text, "mae_vit", "arch", "vit_huge"),
            r"key 'mae_vit': unknown arch 'vit_huge'",
        ),
        (
            "models_demo.tsv",
            lambda text: _set_cell(text, "simclr_resnet", "embedding", "cls"),
            r"key 'simclr_resnet': embedding 'cls' is not available",
        ),
        (
            "models_demo.tsv",
            lambda text: _set_cell(text, "simclr_resnet", "sha256", "abc"),
            r"column 'sha256': 'abc' does not match",
        ),
        ("models_demo.tsv", lambda text: text + [text[3]], r"repeats key\(s\): simclr_resnet"),
        (
            "datasets_demo.tsv",
            lambda text: _drop_column(text, "num_classes"),
            r"missing column\(s\): num_classes",
        ),
        (
            "datasets_demo.tsv",
            lambda text: _set_cell(text, "count", "num_classes", "5"),
            r"key 'count': num_classes is 5 but generator 'count' makes 4",
        ),
        (
            "datasets_demo.tsv",
            lambda text: _set_cell(text, "count", "variant", "blurred"),
            r"key 'count': unknown variant 'blurred'",
        ),
        (
            "datasets_demo.tsv",
            lambda text: _set_cell(text, "texture", "role", "test"),
            r"key 'texture'\): column 'role': 'test' is not one of",
        ),
        (
            "datasets_demo.tsv",
            lambda text: _set_cell(text, "texture", "n_train", "abc"),
            r"column 'n_train': 'abc' is not of type",
        ),
    ],
)
def test_bad_table_names_row_and_column(config, tmp_path, table, transform, message):
    key = "models_table" if table.startswith("models") else "datasets_table"
    config[key] = _edited_table(tmp_path, table, transform)
    with pytest.raises(ConfigError, match=message):
        load_study(config, ROOT)


def test_registry_agrees_with_the_schema():
    schema = yaml.safe_load((ROOT / "config" / "schemas" / "models.schema.yaml").read_text())
    # family: any lower-case name (timm rows bring new ones, e.g. convnext); the registry's fit
    pattern = re.compile(schema["properties"]["family"]["pattern"])
    assert all(pattern.fullmatch(a["family"]) for a in registry.ARCHS.values())
    assert not pattern.fullmatch("ViT") and not pattern.fullmatch("")
    assert set(schema["properties"]["embedding"]["enum"]) == {
        e for a in registry.ARCHS.values() for e in a["embeddings"]
    } | {"pooled"}  # pooled: timm rows (workflow_scripts.timm_models.EMBEDDINGS)
    assert set(schema["properties"]["paradigm"]["enum"]) == {
        m["paradigm"] for m in registry.METHODS.values()
    }
    config_schema = yaml.safe_load((ROOT / "config" / "schemas" / "config.schema.yaml").read_text())
    methods = config_schema["properties"]["pretrain"]["properties"]["methods"]["properties"]
    assert set(methods) == set(registry.METHODS)


def test_relative_tables_resolve_from_the_workflow_dir(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_study(config, ROOT).id_dataset == "shapes"
    shutil.copy(ROOT / "config" / "models_demo.tsv", tmp_path / "mine.tsv")
    config["models_table"] = "mine.tsv"
    assert len(load_study(config, ROOT).model_keys) >= 12


def test_command_line_strings_are_coerced(config):
    # `snakemake --config batch_datasets=false 'figures={f2: {dpi: 300}}' knn='{k: 5}'`
    config.update(batch_datasets="false", knn={"k": "5"})
    config["figures"]["f2"] = {"dpi": "300", "method": "spearman"}
    config["transform"]["resize"] = "null"
    study = load_study(config, ROOT)
    assert study.config["batch_datasets"] is False and study.config["knn"]["k"] == 5
    assert study.config["figures"]["f2"] == {
        **schema_defaults("figures.f2"),
        "dpi": 300,
        "method": "spearman",
    }
    assert study.config["transform"]["resize"] is None
    config["knn"]["k"] = "five"
    with pytest.raises(ConfigError, match="config key 'knn.k': 'five' is not of type 'integer'"):
        load_study(config, ROOT)


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        (
            "pretrain",
            {"methods": {"simclr": {"temprature": 0.5}}},
            r"config key 'pretrain.methods.simclr': Additional properties are not allowed "
            r"\('temprature' was unexpected\)",
        ),
        (
            "figures",
            {"f2": {"metod": "spearman"}},
            r"config key 'figures.f2': Additional properties are not allowed \('metod' was unexpected\)",
        ),
        (
            "pretrain",
            {"methods": {"mae": {"mask_ratio": 1.5}}},
            r"config key 'pretrain.methods.mae.mask_ratio': 1.5 is greater than or equal to the maximum of 1",
        ),
        (
            "pretrain",
            {"methods": {"simmim": {"mask_ratio": 0}}},
            r"config key 'pretrain.methods.simmim.mask_ratio': 0 is less than or equal to the minimum of 0",
        ),
        (
            "pretrain",
            {"methods": {"simclr": {"temperature": 0}}},
            r"config key 'pretrain.methods.simclr.temperature': 0 is less than or equal to the minimum of 0",
        ),
        (
            "pretrain",
            {"methods": {"byol": {"momentum": 1.0}}},
            r"config key 'pretrain.methods.byol.momentum': 1.0 is greater than or equal to the maximum of 1",
        ),
        (
            "pretrain",
            {"methods": {"dino": {}}},
            r"config key 'pretrain.methods': Additional properties are not allowed \('dino' was unexpected\)",
        ),
        (
            "linear",
            {"momentum": 1.0},
            r"config key 'linear.momentum': 1.0 is greater than or equal to the maximum of 1",
        ),
        (
            "figures",
            {"f3": {"x_arm": "both"}},
            r"config key 'figures.f3.x_arm': 'both' is not an arm of the analysis \(raw, bn\)",
        ),
        (
            "figures",
            {"f4": {"vmin": 0}},
            r"config key 'figures.f4': Additional properties are not allowed \('vmin' was unexpected\)",
        ),
    ],
)
def test_typos_and_out_of_range_values_name_the_key(config, section, value, message):
    """Every mapping is closed (one schema per pre-training method and per figure), with
    ranges; ``--config`` merges like this (nested mappings update, not replace)."""

    def merge(base, extra):
        for key, item in extra.items():
            if isinstance(item, dict) and isinstance(base.get(key), dict):
                merge(base[key], item)
            else:
                base[key] = item

    merge(config[section], value)
    with pytest.raises(ConfigError, match=message):
        load_study(config, ROOT)


def test_nested_command_line_values_are_coerced(config):
    """`--config 'pretrain={methods: {mae: {mask_ratio: 0.6}}}'` arrives as a string."""
    config["pretrain"]["methods"]["mae"]["mask_ratio"] = "0.6"
    config["figures"]["f5"] = {"col_wrap": "2", "y_arms": ["bn"]}
    study = load_study(config, ROOT)
    assert study.config["pretrain"]["methods"]["mae"]["mask_ratio"] == 0.6
    assert study.config["figures"]["f5"] == {
        **schema_defaults("figures.f5"),
        "col_wrap": 2,
        "y_arms": ["bn"],
    }


def _mappings(node, path=()):
    """Every schema node that describes a mapping, with its path in the schema."""
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, child in node.items():
            if key in ("properties", "definitions"):
                for name, sub in child.items():
                    yield from _mappings(sub, (*path, name))
            elif isinstance(child, dict) and key not in ("properties", "definitions"):
                yield from _mappings(child, (*path, key))


def test_every_config_mapping_is_closed():
    schema = yaml.safe_load((ROOT / "config" / "schemas" / "config.schema.yaml").read_text())
    nodes = [(p, n) for p, n in _mappings(schema) if n.get("type") == "object"]
    assert len(nodes) > 25
    open_ = [".".join(p) or "<top>" for p, n in nodes if n.get("additionalProperties") is not False]
    assert open_ == []


def test_fewer_models_than_the_correlations_need_is_refused(config):
    config["models"] = ["simclr_resnet"]
    with pytest.raises(
        ConfigError,
        match=r"config key 'models': 1 model\(s\) selected "
        r"\(simclr_resnet\); the correlations across models "
        r"need at least analysis.min_models = 4. Reach it by selecting more models .*"
        r"\(config key 'results_tables': another study's results/tables/accuracy.csv, or "
        r"config/published_imagenet.csv",
    ):
        load_study(config, ROOT)
    config["analysis"]["min_models"] = 1  # on purpose
    assert load_study(config, ROOT).model_keys == ["simclr_resnet"]


def test_knn_k_larger_than_a_train_split_is_refused_at_planning(config):
    table = load_study(copy.deepcopy(config), ROOT).datasets
    smallest = min(table["n_train"])
    name = table.index[list(table["n_train"]).index(smallest)]
    config["knn"]["k"] = smallest + 1
    with pytest.raises(
        ConfigError,
        match=rf"config key 'knn.k': k = {smallest + 1} is larger "
        rf"than the train split of data set '{name}' "
        rf"\({smallest} images\)",
    ):
        load_study(config, ROOT)
    config["knn"]["k"] = smallest
    load_study(config, ROOT)


@pytest.mark.parametrize(
    ("percents", "message"),
    [
        (
            [10, 10.0000001, 1],
            r"config key 'fewshot.percents': 10 and 10.0000001 both give the "
            r"protocol name 'fewshot10'",
        ),
        ([], r"config key 'fewshot.percents': empty while protocol 'fewshot' is selected"),
    ],
)
def test_fewshot_percents_that_collide_or_are_missing(config, percents, message):
    config["fewshot"]["percents"] = percents
    with pytest.raises(ConfigError, match=message):
        load_study(config, ROOT)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"models table '.*bad.tsv' is empty \(no header line\)"),
        ("SHORT", r"models table '.*bad.tsv', line 3: 12 tab-separated cells, the header has 13"),
        ("LONG", r"models table '.*bad.tsv', line 3: 14 tab-separated cells, the header has 13"),
    ],
)
def test_ragged_or_empty_tables_name_file_and_line(config, tmp_path, text, message):
    lines = (ROOT / "config" / "models_demo.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert len(header) == 13
    if text == "SHORT":
        lines[2] = "\t".join(lines[2].split("\t")[:-1])
    elif text == "LONG":
        lines[2] = lines[2] + "\textra"
    path = tmp_path / "bad.tsv"
    path.write_text("" if text == "" else "\n".join(lines) + "\n")
    config["models_table"] = str(path)
    with pytest.raises(ConfigError, match=message):
        load_study(config, ROOT)


def test_zero_size_fewshot_subset_fails_at_validation(config):
    config["fewshot"]["percents"] = [10, 0.1]
    with pytest.raises(
        ConfigError,
        match=r"config key 'fewshot.percents': a 0.1% subset of data set 'shapes' \(5000 train images, 10 classes\) has 0 images per class",
    ):
        load_study(config, ROOT)


def test_demo_models_need_a_synthetic_in_domain_set(config):
    config.update(
        models_table="config/models_demo.tsv",
        datasets_table="config/datasets_paper.tsv",
        datasets=["imagenet", "cub"],
        protocols=["knn"],
    )
    with pytest.raises(ConfigError, match=r"have source 'demo' .* 'imagenet' is a real data set"):
        load_study(config, ROOT)


def test_the_online_probe_is_refused_on_real_data_sets(config):
    config.update(
        models_table="config/models_paper.tsv",
        datasets_table="config/datasets_paper.tsv",
        datasets=["imagenet", "cub"],
        protocols=["knn", "linear_online"],
    )
    with pytest.raises(ConfigError, match=r"'linear_online' runs on the array .* imagenet, cub"):
        load_study(config, ROOT)


def test_optional_keys_get_their_schema_default_and_given_values_stay():
    """Defaults live in config/schemas/config.schema.yaml only: a config without the optional
    keys gets exactly the schema's values (read here from the file itself)."""
    schema = yaml.safe_load((ROOT / "config" / "schemas" / "config.schema.yaml").read_text())
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for key in ("batch_runs", "data_root", "allow_subsets"):
        config.pop(key, None)
    config["knn"].pop("device", None)
    config["finetune"]["precision"] = "bf16"  # given: kept
    load_study(config, basedir=ROOT)
    props = schema["properties"]
    assert config["batch_runs"] is props["batch_runs"]["default"] is False
    assert config["data_root"] == props["data_root"]["default"] == "data"
    assert config["allow_subsets"] == props["allow_subsets"]["default"] == []
    assert config["knn"]["device"] == schema["definitions"]["device"]["default"] == "auto"
    assert config["features"]["precision"] == "fp32"  # extraction's own default
    assert config["features"]["workers"] == props["features"]["properties"]["workers"]["default"]
    assert config["fewshot"]["precision"] == props["fewshot"]["properties"]["precision"]["default"]
    assert config["finetune"]["precision"] == "bf16"
    assert config["finetune"]["save_minutes"] == 15.0 and config["finetune"]["gpus"] == 1


@pytest.mark.parametrize(
    "protocol, edit, message",
    [
        ("fewshot", lambda c: c["fewshot"].update(percents=[0.1]), "a 0.1% subset"),
        ("fewshot", lambda c: c["fewshot"].update(extra_seeds=[42]), "repeats fewshot.seed"),
        ("linear", lambda c: c["linear"].update(report_lr=0.3), "linear.report_lr"),
        ("linear", lambda c: c["linear"].update(warmup_epochs=30), "linear.warmup_epochs"),
        ("attentive", lambda c: c["attentive"].update(warmup_epochs=10), "attentive.warmup_"),
        (
            "attentive",
            lambda c: c["attentive"].update(queries=48),
            r"'attentive.queries': 48 queries do not divide the 128 channels of model "
            r"'random_resnet' \(resnet10_tiny\) tokens",
        ),
    ],
)
def test_a_protocols_settings_are_checked_only_when_it_is_selected(config, protocol, edit, message):
    edit(config)
    selected = copy.deepcopy(config)
    with pytest.raises(ConfigError, match=message):
        load_study(selected, ROOT)
    config["protocols"] = [p for p in config["protocols"] if p != protocol]
    assert protocol not in load_study(config, ROOT).config["protocols"]


@pytest.mark.parametrize("figure", ["f2", "f5"])
@pytest.mark.parametrize(
    ("value", "bad"),
    [
        (["knn", "lineer"], "lineer"),  # a typo
        (["finetune"], "finetune"),  # trained on the in-domain set only: no OOD accuracy
        (["logme"], "logme"),  # a proxy is never y on an OOD data set
    ],
)
def test_figure_y_protocols_are_checked_at_load(config, figure, value, bad):
    """Issue 28: an unknown protocol in figures.<f2|f5>.y_protocols surfaced only when the
    figure was drawn, after the whole run. Its panels are the out-of-domain accuracies'
    (protocol, arm): valid are the protocols measured on an out-of-domain data set."""
    config["figures"][figure]["y_protocols"] = value
    index = value.index(bad)
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"config key 'figures.{figure}.y_protocols.{index}': {bad!r} is not a protocol "
            "measured on an out-of-domain data set (knn, linear, attentive)"
        ),
    ):
        load_study(config, ROOT)


def test_figure_y_protocols_of_the_analysis_pass(config, tmp_path):
    config["figures"]["f2"]["y_protocols"] = ["linear", "knn"]
    config["figures"]["f5"]["y_protocols"] = ["attentive"]
    assert load_study(config, ROOT).config["figures"]["f2"]["y_protocols"] == ["linear", "knn"]
    # a results table's out-of-domain protocol is one too
    table = tmp_path / "t.csv"
    table.write_text("model,dataset,domain,protocol,arm,top1\nm,shapes_sketch,ood,zeroshot,raw,5\n")
    config["results_tables"] = [str(table)]
    config["figures"]["f2"]["y_protocols"] = ["zeroshot"]
    assert load_study(config, ROOT).config["figures"]["f2"]["y_protocols"] == ["zeroshot"]
