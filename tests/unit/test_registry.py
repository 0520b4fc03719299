"""The registry of protocols, arms, correlation methods and figures: everything that names them
derives from it or is tested to agree with it."""

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from workflow_scripts.plan import FigureContext
from workflow_scripts import correlations, docs, knn, provenance, registry, results
from workflow_scripts.figures import common as figures_common

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((ROOT / "config" / "schemas" / "config.schema.yaml").read_text())


def _enum(*path):
    node = SCHEMA
    for key in path:
        node = node[key]
    return node["enum"]


def test_schema_enums_agree_with_the_registry():
    assert _enum("properties", "protocols", "items") == list(registry.PROTOCOLS)
    assert _enum("properties", "arms", "items") == list(registry.ARMS)
    figure_keys = [key for key in SCHEMA["properties"]["figures"]["properties"]]
    assert figure_keys == [entry["key"] for entry in registry.FIGURES.values()]
    common = SCHEMA["definitions"]["figure_common"]["method"]
    assert common["enum"] == list(registry.CORRELATION_METHODS)


def test_protocol_names_and_order():
    assert registry.protocol_entry("knn") == ("knn", None)
    assert registry.protocol_entry("fewshot10") == ("fewshot", 10.0)
    assert registry.protocol_entry("fewshot0.5") == ("fewshot", 0.5)
    assert registry.protocol_entry("fewshot") == (None, None)  # needs a percent
    assert registry.protocol_entry("rankme") == (None, None)
    names = registry.protocol_names(["fewshot", "knn", "finetune", "linear"], [1, 10, 0.5])
    assert registry.protocol_names(["proxies", "knn"], []) == ["knn", "proxies"]
    assert names == ["knn", "linear", "finetune", "fewshot10", "fewshot1", "fewshot0.5"]
    # the table order: registry order, few-shot subsets largest first, unknown names last
    mixed = ["zzz", "fewshot1", "finetune", "linear_online", "fewshot10", "knn", "aaa", "linear"]
    assert sorted(mixed, key=correlations.protocol_sort_key) == [
        "knn",
        "linear",
        "linear_online",
        "finetune",
        "fewshot10",
        "fewshot1",
        "aaa",
        "zzz",
    ]
    assert [registry.protocol_label(p) for p in ("knn", "fewshot10", "fewshot0.5", "x")] == [
        "kNN",
        "few-shot 10%",
        "few-shot 0.5%",
        "x",
    ]
    assert figures_common.protocol_arm_label("linear", "bn") == "linear (BN)"
    assert figures_common.protocol_arm_label("knn", "raw") == "kNN"


@pytest.fixture(scope="module")
def workflow_rules():
    """The rules the workflow defines for the paper configuration (every protocol's, every
    figure's, every model source's), as ``snakemake --list-rules`` names them."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules", "--configfile", "config/paper.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return set(proc.stdout.split())


def _readme_rows(name):
    """The rows of README.md's generated table ``name``."""
    text = (ROOT / "README.md").read_text()
    start = text.index(docs.begin_marker(name))
    return text[start : text.index(docs.end_marker(name), start)].splitlines()


def test_readme_tables_are_the_ones_generated_from_the_registry():
    text = (ROOT / "README.md").read_text()
    assert text == docs.with_tables(text), (
        "README.md's generated tables are out of date: run `python -m workflow_scripts.docs`"
    )


def _has_row(table, key):
    return any(row.startswith(f"| `{key}` |") for row in _readme_rows(table))


def test_every_protocol_has_its_module_rules_schema_and_readme_row(workflow_rules):
    threads = SCHEMA["properties"]["threads"]["properties"]
    probe_keywords = ["model", "num_classes", "arms", "settings", "threads", "code", "log"]
    for name, entry in registry.PROTOCOLS.items():
        assert entry["kind"] in ("frozen", "trained", "proxy"), name
        if entry["kind"] != "proxy":  # proxies are no accuracies: they have their own table
            assert entry["rows"] in results.REDUCERS, name
        module = importlib.import_module(f"workflow_scripts.{entry['module']}")
        assert set(entry["rules"]) <= workflow_rules, name
        assert name in _enum("properties", "protocols", "items"), name
        assert name in SCHEMA["properties"], name  # its config section
        assert _has_row("protocols", name), name
        if "probe" in entry:  # a probe on cached features: one generated rule, one interface
            run_job = inspect.signature(module.run_job).parameters.values()
            assert [p.name for p in run_job if p.kind is p.KEYWORD_ONLY] == probe_keywords
            assert entry["rules"][0] in threads, name
            copies, base_mb = entry["probe"]["mem_mb"]
            assert copies >= 1 and base_mb > 0, name


def test_every_arm_and_correlation_method_has_its_schema_entry_and_readme_row():
    assert _enum("properties", "arms", "items") == list(registry.ARMS)
    assert knn.ARMS == tuple(registry.ARMS) == correlations.ARM_ORDER
    for name, entry in registry.ARMS.items():
        assert isinstance(entry["label"], str) and _has_row("arms", name), name
    common = SCHEMA["definitions"]["figure_common"]["method"]
    assert common["enum"] == list(registry.CORRELATION_METHODS)
    for name in registry.CORRELATION_METHODS:
        assert _has_row("correlation methods", name), name


def test_every_proxy_is_computed_has_a_direction_and_a_readme_row():
    import numpy as np

    from workflow_scripts import proxies

    rng = np.random.default_rng(0)
    rows, _ = proxies.compute(
        rng.normal(size=(60, 5)), np.arange(60) % 3, max_samples=60, seed=0, arms=("raw",)
    )
    assert [row["proxy"] for row in rows] == list(registry.PROXIES)
    for name, entry in registry.PROXIES.items():
        assert entry["direction"] in (-1, 1) and entry["label"], name
        assert _has_row("proxies", name), name


def test_every_figure_has_its_module_rule_caption_schema_and_readme_row(workflow_rules):
    figure_keys = list(SCHEMA["properties"]["figures"]["properties"])
    assert figure_keys == [entry["key"] for entry in registry.FIGURES.values()]
    for name, entry in registry.FIGURES.items():
        figure = importlib.import_module(f"workflow_scripts.figures.{name}")
        assert callable(figure.plot), name
        assert name in workflow_rules, name
        assert docs.caption_title(name), name  # report/<name>.rst opens with a bold title
        assert set(entry["inputs"]) <= {"accuracy", "correlations", "models"}, name
        assert inspect.getdoc(entry["requires"]).startswith("Drawn "), name
        assert any(f"(`{name}`)" in row for row in _readme_rows("figures")), name


def test_every_model_source_has_its_modules_rules_schema_and_readme_row(workflow_rules):
    from workflow_scripts import model_sources

    schema = yaml.safe_load((ROOT / "config" / "schemas" / "models.schema.yaml").read_text())
    assert schema["properties"]["source"]["enum"] == list(registry.SOURCES)
    interface = ("check_row", "arch_spec", "backbone_fields", "table_fields", "transform_spec")
    for name, entry in registry.SOURCES.items():
        module = model_sources.load(name)
        for function in (*interface, "weights_spec"):
            assert callable(getattr(module, function)), (name, function)
        loader = importlib.import_module(f"workflow_scripts.{entry['backbone']}")
        assert callable(loader.build_job_backbone), name
        assert set(entry["rules"]) <= workflow_rules, name
        assert _has_row("model sources", name), name


def _measures(models, arms=("raw", "bn"), ood=True, group="generic"):
    """One row per (model, data set, protocol, arm), as config.analysis_measures gives it."""
    rows = []
    for m in models.itertuples():
        for dataset, domain in [("in", "id"), *([("out", "ood")] if ood else [])]:
            for protocol in ("knn", "linear"):
                for arm in arms:
                    rows.append(
                        {
                            "model": m.Index,
                            "method": m.method,
                            "backbone": m.family,
                            "paradigm": m.paradigm,
                            "dataset": dataset,
                            "domain": domain,
                            "shift_group": "in_domain" if domain == "id" else group,
                            "protocol": protocol,
                            "arm": arm,
                            "source": "computed",
                        }
                    )
    return pd.DataFrame(rows)


def test_figure_requirements():
    models = pd.DataFrame(
        {
            "method": ["a", "b", "a"],
            "family": ["vit", "vit", "resnet"],
            "paradigm": ["discriminative", "generative", "discriminative"],
        },
        index=["m1", "m2", "m3"],
    )
    requires = {n: e["requires"] for n, e in registry.FIGURES.items() if "requires" in e}
    config = {
        "arms": ["raw", "bn"],
        "protocols": ["knn"],
        "analysis": {"static_rankers": ["random"]},
    }
    options = {"x_protocol": "linear", "x_arm": "bn", "y_protocol": "linear", "y_arm": "bn"}
    options["arm"] = "bn"

    def why(name, models=models, measures=None, config=config, **opts):
        measures = _measures(models) if measures is None else measures
        context = FigureContext(measures, models, config, options | opts)
        return requires[name](context)

    assert set(requires) == set(registry.FIGURES)  # each says when it has nothing to show
    for name in requires:
        if name not in ("f7_proxies", "f8_published"):
            assert why(name) is None, name
    one_arm = _measures(models, arms=("bn",))
    assert why("f4_bn_effect", measures=one_arm) == "needs both feature arms, raw and bn"
    no_ood = _measures(models, ood=False)
    for name in ("f2_id_vs_ood", "f3_scatter", "f5_shift_groups"):
        assert "out-of-domain" in why(name, measures=no_ood)
    assert "shift group" in why("f5_shift_groups", measures=_measures(models, group=None))
    assert why("f3_scatter", x_protocol="finetune") == (
        "no in-domain finetune (bn) accuracy (figures.f3.x_protocol, x_arm)"
    )
    knn_only = _measures(models).query("protocol == 'knn'")
    assert why("f1_id_protocols", measures=knn_only) is None  # knn raw and knn bn: a pair
    single = _measures(models, arms=("raw",)).query("protocol == 'knn'")
    assert "fewer than two" in why("f1_id_protocols", measures=single)
    f6 = "f6_paradigm_backbone"
    assert why(f6) is None  # two paradigms on ViT and method a on two backbones
    assert why(f6, models=models.iloc[:2]) is None  # two ViT paradigms
    assert why(f6, models=models.iloc[[0, 2]]) is None  # method a on two backbones
    assert why(f6, models=models.iloc[[0]]).startswith("neither two paradigms")
    no_rankers = {**config, "analysis": {"static_rankers": []}}
    assert why("f9_baselines", config=no_rankers) == (
        "no static rankers (analysis.static_rankers is empty)"
    )
    assert why(f6, arm="published") == "no accuracy in arm 'published' (figures.f6.arm)"
    assert why("f7_proxies") == "protocol proxies is not run"
    assert why("f7_proxies", config={**config, "protocols": ["knn", "proxies"]}) is None
    assert why("f7_proxies", models=models.iloc[:0], measures=_measures(models)) is not None
    assert why("f8_published") is not None
    assert why("f8_published", models=models.assign(published_linear=None)) is not None
    assert why("f8_published", models=models.assign(published_linear=[None, 70.1, None])) is None


def test_every_figure_module_plots_its_registered_inputs():
    """workflow_scripts/figures/<name>.py draws figure <name>: plot() takes the entry's input
    tables in the registry's order (the rule passes them so), then opts, png and pdf."""
    argument = {"accuracy": "acc", "correlations": "corr", "models": "models"}
    for name, entry in registry.FIGURES.items():
        figure = importlib.import_module(f"workflow_scripts.figures.{name}")
        positional = [
            p.name
            for p in inspect.signature(figure.plot).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        want = [argument[table] for table in entry["inputs"]] + ["opts", "png", "pdf"]
        assert positional == want, name


def test_registry_entries_are_hashed_per_use(tmp_path, monkeypatch):
    """A job's code hash covers the registry entries its modules use: registering a figure
    reruns no probe, changing the arms does."""
    pkg = tmp_path / "workflow_scripts"
    (pkg / "scripts").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    registry_source = (
        "ARMS = {'raw': {}, 'bn': {}}\n"
        "def _always(arms):\n    return True\n"
        "FIGURES = {'f1': {'requires': _always}}\n"
        "def arm_names():\n    return list(ARMS)\n"
    )
    (pkg / "registry.py").write_text(registry_source)
    (pkg / "probe.py").write_text("from workflow_scripts import registry\nA = registry.ARMS\n")
    (pkg / "plot.py").write_text("from workflow_scripts import registry\nF = registry.FIGURES\n")
    (pkg / "loose.py").write_text("from workflow_scripts import registry\nR = registry\n")
    scripts = {}
    for name, module in (("probe", "probe"), ("plot", "plot"), ("loose", "loose")):
        scripts[name] = pkg / "scripts" / f"{name}.py"
        scripts[name].write_text(f"from workflow_scripts import {module}\n")
    monkeypatch.setattr(provenance, "ROOT", tmp_path)

    def hashes():
        provenance.code_hash.cache_clear()
        provenance.module_closure.cache_clear()
        return {name: provenance.code_hash(str(path)) for name, path in scripts.items()}

    before = hashes()
    # a new figure (and the function it needs): the plot and the loose user rerun, not the probe
    (pkg / "registry.py").write_text(
        registry_source.replace(
            "FIGURES = {",
            "def _never(arms):\n    return False\nFIGURES = {'f2': {'requires': _never}, ",
        )
    )
    after = hashes()
    assert after["probe"] == before["probe"]
    assert after["plot"] != before["plot"] and after["loose"] != before["loose"]
    # the function a figure refers to counts for it
    (pkg / "registry.py").write_text(registry_source.replace("return True", "return False"))
    assert hashes()["plot"] != before["plot"]
    # a changed arm reruns the probe; a docstring reruns nothing
    (pkg / "registry.py").write_text(registry_source.replace("'bn': {}", "'bn': {'x': 1}"))
    assert hashes()["probe"] != before["probe"]
    (pkg / "registry.py").write_text('"""Names."""\n' + registry_source)
    assert hashes() == before
    provenance.code_hash.cache_clear()
    provenance.module_closure.cache_clear()


def test_readme_contents_link_every_section_by_githubs_anchor():
    """A hand-written case of GitHub's heading anchors (lower case, punctuation dropped, spaces
    to hyphens, repeats numbered), headings in code blocks ignored; README's list links each of
    its ## and ### headings once."""
    text = (
        "# Title\n## Set-up (fresh machine, Python 3.11)\n```bash\n## not a heading\n```\n"
        "### The paper's checkpoints: notes\n## Notes\n## Notes\n"
    )
    assert docs.contents_rows(text) == [
        "- [Set-up (fresh machine, Python 3.11)](#set-up-fresh-machine-python-311)",
        "  - [The paper's checkpoints: notes](#the-papers-checkpoints-notes)",
        "- [Notes](#notes)",
        "- [Notes](#notes-1)",
    ]
    readme = (ROOT / "README.md").read_text()
    headings = [
        line.split(" ", 1)[1]
        for line in readme.split("<!-- end of generated: contents -->")[1].splitlines()
        if line.startswith(("## ", "### "))
    ]
    rows = [row.strip() for row in docs.contents_rows(readme)]
    listed = [row[3 : row.index("](")] for row in rows]
    assert listed == [h for h in headings if h != "Contents"] and len(listed) > 20


def test_the_own_checkpoint_recipe_plans_only_that_model(tmp_path):
    """README "Use your own checkpoint": its generated row, saved as a table, with the paper
    configuration and the published numbers as a result table, plans the new model's jobs
    only; without the result table min_models stops it with the hint."""
    import copy

    from workflow_scripts.config import ConfigError, load_study
    from workflow_scripts.plan import Plan

    rows = _readme_rows("own checkpoint row")
    block = rows[rows.index("```") + 1 : rows.index("```", rows.index("```") + 1)]
    (tmp_path / "my_models.tsv").write_text("\n".join(block) + "\n")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config.update(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    config["models_table"] = str(tmp_path / "my_models.tsv")
    alone = copy.deepcopy(config)
    with pytest.raises(ConfigError, match="Reach it by selecting more models"):
        load_study(alone, ROOT)
    config["results_tables"] = ["config/published_imagenet.csv"]
    study = load_study(config, ROOT)
    plan = Plan(config, study)
    assert plan.models == ["my_swav"] and study.model("my_swav")["format"] == "deepcluster"
    assert len(plan.datasets) == 11
    assert set(study.results_tables) == {"published_imagenet.csv"}
