"""workflow_scripts.seed_spread and what demo.seeds changes in the configuration and the plan:
the shifted seeds against hand-written values, every seed key of the schema covered, the
params of a further run naming its own files, and the spread table against numpy."""

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from workflow_scripts import seed_spread
from workflow_scripts.config import ConfigError, load_schema, load_study
from workflow_scripts.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
# seeds that are not training randomness: the analysis' resampling; the data set table's
# generator seeds are not config keys (every run sees the same data)
NOT_TRAINING = {("analysis", "bootstrap_seed"), ("demo", "seeds")}


def _config(name="config") -> dict:
    config = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    load_study(config, ROOT)  # validated, defaults filled
    return config


def _seed_keys(node, path=()):
    for key, sub in node.get("properties", {}).items():
        if "seed" in key:
            yield (*path, key)
        yield from _seed_keys(sub, (*path, key))


def test_every_seed_key_of_the_schema_is_shifted_or_named_as_no_training_seed():
    found = set(_seed_keys(load_schema("config")))
    assert found == set(seed_spread.SEED_KEYS) | NOT_TRAINING


def test_shifted_config_against_hand_written_values():
    config = _config()
    config["fewshot"]["extra_seeds"] = [0, 7]
    before = copy.deepcopy(config)
    run = seed_spread.shifted_config(config, 3)
    assert config == before  # the caller's configuration is left alone
    assert run["pretrain"]["seed_offset"] == 3
    assert run["linear"]["seeds"] == [45]
    assert run["linear_online"]["seed"] == 45
    assert run["finetune"]["seed"] == 45
    assert run["fewshot"]["seed"] == 45
    assert run["fewshot"]["extra_seeds"] == [3, 10]
    assert run["proxies"]["seed"] == 3
    assert run["demo"] == {"seeds": 1, "run": 3}
    assert run["analysis"]["bootstrap_seed"] == config["analysis"]["bootstrap_seed"]
    changed = {
        (section, key)
        for section, values in config.items()
        if isinstance(values, dict)
        for key in values
        if run[section][key] != values[key]
    }
    assert changed == set(seed_spread.SEED_KEYS) | {("demo", "run")} - {("demo", "seeds")}


def test_offsets_and_paths():
    config = _config()
    assert seed_spread.offsets(config) == []
    config["demo"]["seeds"] = 4
    assert seed_spread.offsets(config) == [1, 2, 3]
    assert seed_spread.run_path(0, "results/tables/x.csv") == "results/tables/x.csv"
    assert seed_spread.run_path(2, "results/tables/x.csv") == "results/seeds/2/results/tables/x.csv"


def test_seed_offset_shifts_the_pretrained_models_seeds_not_their_weights_params():
    base = _config()
    plan0 = Plan(base, load_study(copy.deepcopy(base), ROOT))
    shifted = seed_spread.shifted_config(base, 2)
    plan2 = Plan(shifted, load_study(shifted, ROOT))
    table = pd.read_csv(ROOT / "config/models_demo.tsv", sep="\t", index_col="key")
    wc = SimpleNamespace(model="simclr_resnet")
    assert plan0.model_row("pretrain")(wc)["seed"] == table.loc["simclr_resnet", "seed"]
    assert plan2.model_row("pretrain")(wc)["seed"] == table.loc["simclr_resnet", "seed"] + 2
    # the offset reaches a job through the row's seed only: run 0's params are what they were
    assert "seed_offset" not in plan0.weights_spec(wc)
    assert plan0.weights_spec(wc) == plan2.weights_spec(wc)


def test_a_further_runs_params_name_its_own_files_its_inputs_are_left_to_snakemake():
    base = _config()
    plan0 = Plan(base, load_study(copy.deepcopy(base), ROOT))
    shifted = seed_spread.shifted_config(base, 2)
    plan2 = Plan(shifted, load_study(shifted, ROOT))
    wc = SimpleNamespace(model="mae_vit")
    split0 = list(dict.fromkeys(unit["split"] for unit in plan0.job_runs(wc) if unit["split"]))
    split2 = list(dict.fromkeys(unit["split"] for unit in plan2.job_runs(wc) if unit["split"]))
    assert split0 == ["results/splits/shapes/fewshot_10.npy", "results/splits/shapes/fewshot_1.npy"]
    assert split2 == [f"results/seeds/2/{path}" for path in split0]
    assert plan2.job_splits(wc) == plan0.job_splits(wc) == split0  # prefixed by Snakemake
    assert plan0.state_dir(wc) == "results/state/finetune/mae_vit"
    assert plan2.state_dir(wc) == "results/seeds/2/results/state/finetune/mae_vit"
    gathered0, gathered2 = plan0.gathered_inputs("mae_vit"), plan2.gathered_inputs("mae_vit")
    assert gathered2 == [[f"results/seeds/2/{p}" for p in files] for files in gathered0]
    assert gathered0[0] == [
        "results/trained/mae_vit/finetune/raw.csv",
        "results/trained/mae_vit/finetune/bn.csv",
    ]


def test_seed_spread_targets_and_inputs():
    config = _config()
    config["demo"]["seeds"] = 3
    plan = Plan(config, load_study(config, ROOT))
    assert plan.seed_runs == [0, 1, 2]
    assert plan.seed_run_correlations() == [
        "results/tables/correlations.csv",
        "results/seeds/1/results/tables/correlations.csv",
        "results/seeds/2/results/tables/correlations.csv",
    ]
    assert "results/tables/seed_spread.csv" in plan.all_targets()
    single = _config()
    assert (
        "results/tables/seed_spread.csv" not in Plan(single, load_study(single, ROOT)).all_targets()
    )


def test_downloaded_checkpoints_have_no_seed_to_spread():
    config = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    config["demo"] = {"seeds": 2}
    with pytest.raises(ConfigError, match=r"'demo.seeds'.*source 'checkpoint'"):
        load_study(config, ROOT)


# ------------------------------------------------------------------------------------------
# the spread table


def _runs(n_runs=3, seed=0):
    """Correlation tables of ``n_runs`` runs: the headline rows and a few others."""
    rng = np.random.default_rng(seed)
    keys = seed_spread.headline_rows("shapes").drop(columns="headline")
    extra = keys.iloc[:3].assign(subset="vit")
    keys = pd.concat([extra, keys], ignore_index=True)  # headline rows not first on purpose
    runs = {}
    for run in range(n_runs):
        frame = keys.copy()
        frame["n"] = 12
        frame["value"] = rng.uniform(-1, 1, len(frame)).round(3)
        frame["p_value"] = rng.uniform(0, 0.2, len(frame))
        frame["ci_low"] = frame["value"] - rng.uniform(0, 1, len(frame))
        frame["ci_high"] = frame["value"] + rng.uniform(0, 1, len(frame))
        frame["beats_baseline"] = rng.choice(["True", "False", ""], len(frame))
        frame["single_best"] = rng.choice([True, False], len(frame))
        runs[run * 2] = frame  # offsets 0, 2, 4: any run numbers
    return runs


def test_spread_table_against_numpy_row_by_row():
    runs = _runs()
    runs[2].loc[1, "value"] = np.nan  # a run without a value for one row
    runs[4] = runs[4].drop(index=2)  # a run without the row at all
    runs[0].loc[3, "value"] = 0.0  # a zero has no sign
    table = seed_spread.spread_table(runs, "shapes")
    keys = list(seed_spread.KEY_COLUMNS)
    assert len(table) == len(runs[0])
    assert list(table["headline"][: len(seed_spread.HEADLINES)]) == [
        label for label, _, _ in seed_spread.HEADLINES
    ]
    assert (table["headline"][len(seed_spread.HEADLINES) :] == "").all()
    for _, row in table.iterrows():
        per_run = []
        for offset in (0, 2, 4):
            match = runs[offset]
            for key in keys:
                match = match[match[key] == row[key]]
            per_run.append(match.iloc[0] if len(match) else None)
        values = np.array([np.nan if r is None else r["value"] for r in per_run], dtype=float)
        assert row["n_runs"] == np.count_nonzero(~np.isnan(values))
        for offset, value in zip((0, 2, 4), values):
            assert row[f"value_seed{offset}"] == pytest.approx(value, nan_ok=True)
        present = values[~np.isnan(values)]
        assert row["mean"] == pytest.approx(present.mean())
        assert row["sd"] == pytest.approx(np.std(present, ddof=1))
        assert row["min"] == present.min() and row["max"] == present.max()
        signs = np.sign(values)
        assert row["sign_agrees"] == bool(
            len(present) == 3 and (signs != 0).all() and (signs == signs[0]).all()
        )
        found = [r for r in per_run if r is not None]
        assert row["ci_excludes_0_runs"] == sum(r["ci_low"] > 0 or r["ci_high"] < 0 for r in found)
        assert row["significant_runs"] == sum(r["p_value"] < 0.05 for r in found)
        assert row["beats_baseline_runs"] == sum(r["beats_baseline"] == "True" for r in found)
        assert row["single_best_runs"] == sum(bool(r["single_best"]) for r in found)


def test_spread_table_reads_its_own_csv_the_same_and_view_has_the_headlines(tmp_path):
    runs = _runs(2)
    paths = []
    for offset, frame in runs.items():
        paths.append(tmp_path / f"c{offset}.csv")
        frame.to_csv(paths[-1], index=False)
    log = SimpleNamespace(info=lambda *args: None)
    csv, html = tmp_path / "spread.csv", tmp_path / "spread.html"
    table = seed_spread.run_job(
        [str(p) for p in paths], list(runs), "shapes", str(csv), str(html), log
    )
    again = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    assert list(again.columns) == list(table.columns)
    assert np.allclose(again["value_seed2"], table["value_seed2"])
    view = seed_spread.headline_view(table)
    assert list(view["headline"]) == [label for label, _, _ in seed_spread.HEADLINES]
    assert "kNN vs linear (BN)" in html.read_text()


def test_spread_table_needs_run_0_and_unique_rows():
    runs = _runs(2)
    with pytest.raises(ValueError, match="run 0"):
        seed_spread.spread_table({2: runs[2]}, "shapes")
    runs[2] = pd.concat([runs[2], runs[2].iloc[:1]])
    with pytest.raises(ValueError, match="run 2.*repeats"):
        seed_spread.spread_table(runs, "shapes")
