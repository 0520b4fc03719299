"""Partial reruns after a real smoke run: a change reruns exactly what it makes stale.

Each test compares the dry-run plan after a change of configuration or data with an
independent oracle: the plan of `--forcerun <rules>` (Snakemake's own "these jobs and everything
downstream of them"). Code changes: tests/integration/test_code_identity.py. Tests that change
files work on copies of the run; the real repository is never edited.
"""

import re
from pathlib import Path

import pytest

from snakerun import ROOT, copy_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.integration


def triggered(proc, reason: str) -> set[str]:
    """Rules of a dry run's jobs whose 'reason:' line contains ``reason``."""
    rules, current = set(), None
    for line in (proc.stdout + proc.stderr).splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line)
        if match:
            current = match.group(1)
        elif line.strip().startswith("reason:") and current and reason in line:
            rules.add(current)
    return rules


def forced(workdir, *rules, **kwargs) -> dict[str, int]:
    """The oracle: the plan that reruns ``rules`` and everything downstream of them."""
    return planned_jobs(snakemake(workdir, "-n", "--forcerun", *rules, **kwargs))


def test_complete_run_plans_nothing(smoke_run):
    assert planned_jobs(snakemake(smoke_run, "-n")) == {}


@pytest.mark.parametrize(
    "change, rule",
    [
        ("figures={f2: {method: spearman, dpi: 60}}", "f2_id_vs_ood"),
        ("figures={f1: {method: kendall, dpi: 61}}", "f1_id_protocols"),
        ("figures={f3: {method: pearson, dpi: 60}}", "f3_scatter"),
    ],
)
def test_a_figure_option_reruns_that_figure_alone(smoke_run, change, rule):
    proc = snakemake(smoke_run, "-n", "--config", change)
    assert planned_jobs(proc) == {rule: 1, "all": 1}
    assert triggered(proc, "Params have changed") == {rule}


def test_knn_k_reruns_knn_and_what_depends_on_it(smoke_run):
    proc = snakemake(smoke_run, "-n", "--config", "knn={k: 5}")
    plan = planned_jobs(proc)
    assert plan == forced(smoke_run, "knn_probe")
    assert triggered(proc, "Params have changed") == {"knn_probe"}
    assert plan["knn_probe"] == 4  # one job per model (batch_datasets: true)
    # nothing upstream of the kNN probe or beside it
    for rule in (
        "pretrain",
        "extract_features",
        "linear_probe",
        "linear_online",
        "finetune",
        "generate_dataset",
        "fewshot_split",
    ):
        assert rule not in plan
    assert {"accuracy_table", "correlations", "f1_id_protocols", "f3_scatter"} <= set(plan)


def rewrite(path: Path, data: bytes):
    """What a re-download does: new file (new inode, new mtime) moved into place."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


# mae_vit's checkpoint is under 1 MB (Snakemake compares such inputs by checksum), the ResNets'
# are over it (compared by modification time unless the edge says otherwise).
@pytest.mark.parametrize("model", ["mae_vit", "simclr_resnet"])
def test_a_byte_identical_checkpoint_rewrite_reruns_nothing(smoke_run, tmp_path, model):
    work = copy_workdir(smoke_run, tmp_path / "work")
    weights = work / f"results/checkpoints/{model}.safetensors"
    assert (weights.stat().st_size > 1_000_000) == (model != "mae_vit")
    before = weights.stat().st_mtime_ns
    rewrite(weights, weights.read_bytes())
    assert weights.stat().st_mtime_ns > before
    plan = planned_jobs(snakemake(work, "-n"))
    # a checkpoint over 1 MB is compared by mtime unless the consuming rules take it as
    # ancient(...) plus its sidecar (which carries the weights' sha256) as an input
    assert plan == {}, f"a byte-identical rewrite of {weights.name} plans {plan}"


def test_a_changed_checkpoint_reruns_its_model_downstream(smoke_run, tmp_path):
    """The control of the test above: different bytes (and the sidecar the producing job
    writes with them) rerun that model's feature extraction, probes and what follows."""
    import hashlib
    import json

    work = copy_workdir(smoke_run, tmp_path / "work")
    from safetensors.numpy import load_file, save_file

    weights = work / "results/checkpoints/simclr_resnet.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1
    save_file(tensors, weights.with_name("changed.safetensors"))
    rewrite(weights, weights.with_name("changed.safetensors").read_bytes())
    weights.with_name("changed.safetensors").unlink()
    sidecar = weights.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    rewrite(sidecar, json.dumps(meta, indent=2, sort_keys=True).encode())
    plan = planned_jobs(snakemake(work, "-n"))
    assert plan["extract_features"] == 1 and plan["knn_probe"] == 1
    assert "pretrain" not in plan and "generate_dataset" not in plan


def test_descriptions_notes_and_extra_columns_rerun_only_the_t1_t2_tables(smoke_run, tmp_path):
    """An added empty 'note' column, an unknown extra column and an edited description change no
    result: only the two tables that print them are rebuilt."""
    models = (ROOT / "tests/integration/models_smoke.tsv").read_text().splitlines()
    models = [models[0] + "\tnote\tmy_column"] + [line + "\t\tx" for line in models[1:]]
    datasets = (
        (ROOT / "tests/integration/datasets_smoke.tsv")
        .read_text()
        .replace("same labels, sketch style", "same labels, drawn as sketches")
    )
    (tmp_path / "models.tsv").write_text("\n".join(models) + "\n")
    (tmp_path / "datasets.tsv").write_text(datasets)
    proc = snakemake(
        smoke_run,
        "-n",
        "--config",
        f"models_table={tmp_path / 'models.tsv'}",
        f"datasets_table={tmp_path / 'datasets.tsv'}",
    )
    assert planned_jobs(proc) == {"t1_models": 1, "t2_datasets": 1, "all": 1}
    assert triggered(proc, "Params have changed") == {"t1_models", "t2_datasets"}
