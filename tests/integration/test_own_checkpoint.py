"""The README's recipe "Use your own checkpoint", run end to end: the README's generated example
row (workflow_scripts.docs.own_row_example, the paper table's columns) on the smoke
architecture, its file fabricated in the row's real format (deepcluster) and served on
127.0.0.1, evaluated in its own run folder (`snakemake -d`) beside a finished study's accuracy
table given as a result table. Only this model's jobs run; the finished study's folder is left
byte for byte as it was; the correlations over both equal scipy's on the merged table.
"""

import hashlib
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats
from snakerun import jobs, planned_jobs, snakemake

from workflow_scripts.docs import own_row_example

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from checkpoint_layouts import LoopbackServer, random_reference, write  # noqa: E402

pytestmark = pytest.mark.integration


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _row_table(path: Path, **changes) -> dict:
    """The README's example row with ``changes``, written as a one-row model table."""
    block = own_row_example()
    assert block[0] == block[-1] == "```" and len(block) == 4
    header = block[1].split("\t")
    row = dict(zip(header, block[2].split("\t"), strict=True))
    row.update(changes)
    path.write_text("\t".join(header) + "\n" + "\t".join(row[c] for c in header) + "\n")
    return row


@pytest.fixture(scope="module")
def recipe(smoke_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("own")
    www = base / "www"
    www.mkdir()
    write(www / "my_swav.pth.tar", "deepcluster", random_reference("resnet10_tiny", seed=11))
    finished = smoke_run / "results" / "tables" / "accuracy.csv"
    before = _digests(smoke_run / "results")
    run = base / "runs" / "my_swav"
    with LoopbackServer(www) as server:
        row = _row_table(
            base / "my_models.tsv", arch="resnet10_tiny", url=f"{server.url}/my_swav.pth.tar"
        )
        args = (
            "--config",
            f"models_table={base / 'my_models.tsv'}",
            f"results_tables=[{finished}]",
        )
        plan = snakemake(run, "-n", *args)
        proc = snakemake(run, "--cores", "2", *args)
        again = snakemake(run, "-n", *args)
    return dict(
        run=run,
        row=row,
        plan=plan,
        proc=proc,
        again=again,
        finished=finished,
        before=before,
        after=_digests(smoke_run / "results"),
    )


def test_only_the_new_model_runs(recipe):
    assert recipe["row"]["key"] == "my_swav" and recipe["row"]["format"] == "deepcluster"
    planned = planned_jobs(recipe["plan"])
    assert "pretrain" not in planned
    assert planned["download_checkpoint"] == planned["convert_checkpoint"] == 1
    models = {j["wildcards"]["model"] for j in jobs(recipe["plan"]) if "model" in j["wildcards"]}
    assert models == {"my_swav"}
    assert planned_jobs(recipe["again"]) == {}


def test_the_finished_study_is_untouched(recipe):
    assert recipe["after"] == recipe["before"]
    figures = sorted(p.name for p in (recipe["run"] / "results" / "figures").glob("*.png"))
    assert "f1_id_protocols.png" in figures


def test_correlations_span_both_and_equal_scipy(recipe):
    run = recipe["run"]
    finished = pd.read_csv(recipe["finished"])
    merged = pd.read_csv(run / "results/tables/accuracy_merged.csv")
    mine = merged[merged["source"] == "computed"]
    assert set(mine["model"]) == {"my_swav"}
    assert (merged["source"] == "accuracy.csv").sum() == len(finished)
    assert set(merged["model"]) == set(finished["model"]) | {"my_swav"}
    ids = merged.query("domain == 'id' and arm == 'raw'").pivot(
        index="model", columns="protocol", values="top1"
    )
    corr = pd.read_csv(run / "results/tables/correlations.csv")
    row = corr.query(
        "method == 'kendall' and subset == 'all' and y_kind == 'pair' and x_protocol == 'knn' "
        "and x_arm == 'raw' and y_protocol == 'linear' and y_arm == 'raw'"
    ).iloc[0]
    assert row["n"] == len(ids) == finished["model"].nunique() + 1
    assert row["value"] == pytest.approx(stats.kendalltau(ids["knn"], ids["linear"])[0])


def test_the_summary_names_the_model_and_the_run_folder(recipe):
    text = (recipe["run"] / "results/summary.md").read_text()
    assert "| my_swav |" in text
    assert "`results/tables/accuracy_merged.csv`" in text
    out = recipe["proc"].stdout
    assert out.rstrip().endswith(f"(paths relative to the run folder {recipe['run']})")
    assert "| my_swav |" in out
