"""demo.seeds end to end: a second seed added to the finished smoke run reruns nothing of it,
and its run (a Snakemake module of the workflow under results/seeds/1/) gives the same bytes as
the smoke study run plainly with every training seed shifted by one, written out by hand here."""

import pandas as pd
import pytest
import yaml
from snakerun import copy_workdir, planned_jobs, smoke_config, snakemake

from workflow_scripts.seed_spread import KEY_COLUMNS

pytestmark = pytest.mark.integration

TABLES = ("accuracy.csv", "proxies.csv", "correlations.csv")
TWO_SEEDS = ("--config", "demo={seeds: 2}")


def test_a_second_seed_equals_the_study_under_hand_shifted_seeds(smoke_run, tmp_path):
    work = copy_workdir(smoke_run, tmp_path / "seeds")
    planned = planned_jobs(snakemake(work, "-n", *TWO_SEEDS))
    # the finished run 0 stays: only the new run's jobs and the spread table
    assert planned.pop("seed_spread") == 1 and planned.pop("all") == 1
    assert planned and all(rule.startswith("seed1_") for rule in planned)
    snakemake(work, "--cores", "2", *TWO_SEEDS)

    config = smoke_config()
    config["pretrain"]["seed_offset"] = 1  # the models table's seeds 0 -> 1
    config["linear"]["seeds"] = [43]
    config["linear_online"] = {**config.get("linear_online", {}), "seed": 43}
    config["finetune"]["seed"] = 43
    config["fewshot"]["seed"] = 43
    config["proxies"] = {**config.get("proxies", {}), "seed": 1}
    path = tmp_path / "shifted.yaml"
    path.write_text(yaml.safe_dump(config))
    plain = tmp_path / "plain"
    snakemake(plain, "--cores", "2", "--configfile", str(path))

    run1 = work / "results/seeds/1/results/tables"
    for name in TABLES:
        assert (run1 / name).read_bytes() == (plain / "results/tables" / name).read_bytes(), name
    ours = (work / "results/tables/accuracy.csv").read_bytes()
    assert ours == (smoke_run / "results/tables/accuracy.csv").read_bytes()
    assert ours != (run1 / "accuracy.csv").read_bytes()  # another seed, other accuracies

    spread = pd.read_csv(work / "results/tables/seed_spread.csv", keep_default_na=False)
    keys = list(KEY_COLUMNS)
    for run, folder in ((0, smoke_run / "results/tables"), (1, run1)):
        table = pd.read_csv(folder / "correlations.csv", keep_default_na=False)
        merged = spread.merge(table, on=keys, suffixes=("", "_run"))
        assert len(merged) == len(spread)
        both = pd.to_numeric(merged["value_run"], errors="coerce")
        mine = pd.to_numeric(merged[f"value_seed{run}"], errors="coerce")
        assert ((both == mine) | (both.isna() & mine.isna())).all()
