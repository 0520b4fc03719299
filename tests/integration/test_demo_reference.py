"""The demo, run from scratch, against its committed accuracy table (tests/reference/
demo_accuracy.csv): with the pinned numerics (config numerics) every cell is the same on any
x86-64 machine with AVX2, so a difference is a change of numbers, named row by row."""

import pandas as pd
import pytest
from snakerun import DEMO, ROOT, snakemake

pytestmark = pytest.mark.integration

REFERENCE = ROOT / "tests" / "reference" / "demo_accuracy.csv"
KEY = ["model", "dataset", "protocol", "arm"]
#: Columns that describe the code, not the numbers: left out of the reference.
NOT_NUMBERS = ("code_version",)


def differences(expected: pd.DataFrame, got: pd.DataFrame) -> list[str]:
    """Each differing cell as 'model/dataset/protocol/arm column: expected -> got', plus the
    rows only one side has and the column sets, compared as written (text: bit for bit)."""
    out = []
    columns = [c for c in got.columns if c not in NOT_NUMBERS]
    if columns != list(expected.columns):
        out.append(f"columns: expected {list(expected.columns)}, got {columns}")
    got, expected = got.set_index(KEY), expected.set_index(KEY)
    for key in expected.index.difference(got.index):
        out.append(f"{'/'.join(key)}: missing")
    for key in got.index.difference(expected.index):
        out.append(f"{'/'.join(key)}: not in the reference")
    common = expected.index.intersection(got.index)
    shared = [c for c in expected.columns if c in got.columns and c not in KEY]
    a, b = expected.loc[common, shared], got.loc[common, shared]
    for key, row in (a != b).iterrows():
        for column in row.index[row.to_numpy()]:
            out.append(f"{'/'.join(key)} {column}: {a.at[key, column]} -> {b.at[key, column]}")
    return out


def read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_differences_name_the_cells():
    expected = pd.DataFrame(
        {"model": ["a", "b"], "dataset": ["d"] * 2, "protocol": ["knn"] * 2, "arm": ["raw"] * 2}
    ).assign(top1=["50.1", "60.0"])
    got = expected.assign(top1=["50.1", "60.1"], code_version="x")
    assert differences(expected, got) == ["b/d/knn/raw top1: 60.0 -> 60.1"]
    assert differences(expected, got.iloc[:1]) == ["b/d/knn/raw: missing"]


def test_the_demo_reproduces_its_reference(tmp_path):
    snakemake(tmp_path, "--cores", "2", "results/tables/accuracy.csv", "--configfile", str(DEMO))
    found = differences(read(REFERENCE), read(tmp_path / "results/tables/accuracy.csv"))
    assert not found, f"{len(found)} cells differ from {REFERENCE.name}:\n" + "\n".join(found[:50])


def test_readme_states_the_demo_job_count(tmp_path):
    """README "Demo results" gives the demo's job count of its measured run: a dry run of
    the README's first command (the Snakefile's own configuration) plans that many."""
    import re

    from snakerun import planned_jobs

    text = " ".join((ROOT / "README.md").read_text().split())
    said = re.search(r"workflow \*\*\d+ min \d+ s\*\* \((\d+) jobs", text)
    assert said, "README lost the demo's measured job count"
    plan = planned_jobs(snakemake(tmp_path, "-n", configfiles=()))
    assert sum(plan.values()) == int(said.group(1))
