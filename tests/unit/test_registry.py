"""The registry of protocols, arms, correlation methods and figures: everything that names them
derives from it or is tested to agree with it."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from workflow_scripts.plan import FigureContext
from workflow_scripts import correlations, figures, knn, provenance, registry, results

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
    assert figures.protocol_arm_label("linear", "bn") == "linear (BN)"
    assert figures.protocol_arm_label("knn", "raw") == "kNN"


def test_arms_and_methods_derive_from_the_registry():
    assert knn.ARMS == tuple(registry.ARMS) == correlations.ARM_ORDER
    assert correlations.METHODS == tuple(registry.CORRELATION_METHODS)
    assert set(figures.METHOD_LABELS) == set(registry.CORRELATION_METHODS)


def test_every_protocol_has_a_reducer_and_every_figure_a_plot_and_caption():
    for name, entry in registry.PROTOCOLS.items():
        assert entry["kind"] in ("frozen", "trained", "proxy"), name
        if entry["kind"] != "proxy":  # proxies are no accuracies: they have their own table
            assert entry["rows"] in results.REDUCERS, name
    for name, entry in registry.FIGURES.items():
        assert callable(getattr(figures, entry["plot"])), name
        assert (ROOT / "report" / f"{name}.rst").is_file(), name
        assert set(entry["inputs"]) <= {"accuracy", "correlations", "models"}, name


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
    config = {"arms": ["raw", "bn"], "protocols": ["knn"]}
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
    assert why(f6, arm="published") == "no accuracy in arm 'published' (figures.f6.arm)"
    assert why("f7_proxies") == "protocol proxies is not run"
    assert why("f7_proxies", config={**config, "protocols": ["knn", "proxies"]}) is None
    assert why("f7_proxies", models=models.iloc[:0], measures=_measures(models)) is not None
    assert why("f8_published") is not None
    assert why("f8_published", models=models.assign(published_linear=None)) is not None
    assert why("f8_published", models=models.assign(published_linear=[None, 70.1, None])) is None


def test_render_dispatches_to_the_registered_plot(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(figures, "plot_f4", lambda *args: calls.append(args))
    tables = {"accuracy": "A", "correlations": "C"}
    figures.render("f4_bn_effect", tables, {"dpi": 1}, "x.png", "x.pdf")
    assert calls == [("A", "C", {"dpi": 1}, "x.png", "x.pdf")]
    with pytest.raises(ValueError, match="unknown figure 'f9'"):
        figures.render("f9", tables, {}, "x.png", "x.pdf")


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


def test_feature_probes_share_one_interface():
    """A registered feature probe is a module with run_job(data, outputs, *, model,
    num_classes, arms, settings, threads, code, log), a config section and a threads key."""
    import importlib
    import inspect

    probes = {n: e["probe"] for n, e in registry.PROTOCOLS.items() if "probe" in e}
    assert set(probes) == {"knn", "linear", "proxies"}
    for name, probe in probes.items():
        run_job = importlib.import_module(f"workflow_scripts.{probe['module']}").run_job
        keywords = [
            p.name
            for p in inspect.signature(run_job).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        assert keywords == ["model", "num_classes", "arms", "settings", "threads", "code", "log"]
        assert name in SCHEMA["properties"], name
        assert probe["rule"] in SCHEMA["properties"]["threads"]["properties"], name
        copies, base_mb = probe["mem_mb"]
        assert copies >= 1 and base_mb > 0


def test_proxies_are_registered_with_a_direction():
    from workflow_scripts import proxies

    assert set(registry.PROXIES) == {"rankme", "rankme_d", "alpha_req", "logme", "nc1"}
    assert all(entry["direction"] in (-1, 1) for entry in registry.PROXIES.values())
    assert callable(proxies.run_job)
