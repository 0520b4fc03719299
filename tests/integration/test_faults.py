"""Faults on the smoke configuration: kills at random moments, a killed rerun, a deleted stage.

The oracle is always an uninterrupted run (the session's smoke run, or a copy of it rerun
without interruption): after any fault, ``--unlock`` and a plain rerun must give the same bytes
-- tables and cached features -- and a dry run afterwards must plan nothing.
"""

import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from snakerun import (
    ROOT,
    SMOKE_FILES,
    SNAKEMAKE,
    copy_workdir,
    jobs,
    planned_jobs,
    snakemake,
)

pytestmark = pytest.mark.integration

TABLES = ["accuracy", "correlations", "models", "datasets"]
FEATURES = "results/features/mae_vit/shapes/train.npy"
IMAGES = "results/data/shapes_sketch/train_images.npy"


def _results(workdir: Path) -> dict[str, bytes]:
    """The bytes of the tables and of every cached feature array."""
    files = [workdir / f"results/tables/{t}.csv" for t in TABLES]
    files += sorted((workdir / "results/features").rglob("*.npy"))
    return {str(p.relative_to(workdir)): p.read_bytes() for p in files}


def _start(workdir, *args):
    cmd = [
        *SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
        "--configfile",
        *SMOKE_FILES,
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _kill(job):
    """SIGKILL snakemake and its jobs at once (the whole process group), as on node loss."""
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.wait()


def test_kills_at_random_moments_recover_to_the_uninterrupted_bytes(smoke_run, tmp_path):
    reference = _results(smoke_run)
    workdir = tmp_path / "work"
    rng = random.Random(12)
    wall = float((smoke_run / "wall_seconds.txt").read_text())
    kills = 0
    for _ in range(3):
        job = _start(workdir)
        time.sleep(rng.uniform(3.0, 0.7 * wall))
        if job.poll() is None:
            _kill(job)
            kills += 1
        else:
            job.wait()
        snakemake(workdir, "--unlock")
    assert kills >= 2  # the run was really interrupted
    snakemake(workdir, "--cores", "2")
    assert _results(workdir) == reference
    assert planned_jobs(snakemake(workdir, "-n")) == {}


def test_failed_rerun_after_a_config_change_is_not_forgotten(smoke_run, tmp_path):
    """A change that reruns one model's chain (mae's mask ratio) whose feature extraction fails
    (an image array is unreadable): Snakemake deletes the job's outputs and forgets it. Nothing
    downstream has new params, so before the fix the next run -- the data repaired -- kept the
    old results in the tables. It must equal an uninterrupted run."""
    change = "pretrain={methods: {mae: {mask_ratio: 0.6}}}"
    oracle = copy_workdir(smoke_run, tmp_path / "oracle")
    snakemake(oracle, "--cores", "2", "--config", change)
    assert _results(oracle) != _results(smoke_run)  # the change does change results

    workdir = copy_workdir(smoke_run, tmp_path / "work")
    images = workdir / IMAGES
    backup = tmp_path / "images_backup.npy"
    shutil.copy2(images, backup)
    images.write_bytes(images.read_bytes()[:1000])  # a truncated copy
    failed = snakemake(workdir, "--cores", "2", "--config", change, check=False)
    assert failed.returncode != 0
    assert "cannot read the images of data set 'shapes_sketch'" in failed.stdout + failed.stderr
    assert not (workdir / FEATURES).exists()  # the failed job's outputs are gone
    shutil.copy2(backup, images)  # repaired, with its old mtime: nothing marks it changed
    proc = snakemake(workdir, "--cores", "2", "--config", change)
    assert "Nothing to be done" not in proc.stdout + proc.stderr
    assert _results(workdir) == _results(oracle)
    assert planned_jobs(snakemake(workdir, "-n", "--config", change)) == {}


def test_deleted_intermediate_results_are_rebuilt(smoke_run, tmp_path):
    workdir = copy_workdir(smoke_run, tmp_path / "work")
    reference = _results(smoke_run)
    deleted = sorted((workdir / "results/probes/knn").rglob("*.csv"))
    for path in deleted:
        path.unlink()
    (workdir / "results/features/simclr_resnet/shapes/test.npy").unlink()
    plan = planned_jobs(snakemake(workdir, "-n"))
    assert plan.get("knn_probe") == 4 and plan.get("extract_features") == 1, plan
    snakemake(workdir, "--cores", "2")
    assert all(path.exists() for path in deleted)
    assert _results(workdir) == reference


def test_a_failed_figure_job_leaves_the_previous_figure(smoke_run, tmp_path):
    """Snakemake deletes a job's outputs before it starts and after it fails: a figure job that
        fails (here on a correlation table it cannot draw) took the previous figure away. Now the
        previous figure is put back, dated 1970 (1 s), and the next run draws it again, even with the
    table back to the bytes the kept figure was drawn from (issue 28)."""
    workdir = copy_workdir(smoke_run, tmp_path / "work")
    folder = workdir / "results/figures"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    correlations = workdir / "results/tables/correlations.csv"
    good = correlations.read_bytes()
    correlations.write_text("not,a\ncorrelation,table\n")
    names = sorted({p.stem for p in folder.iterdir()})
    # the figures alone (nothing upstream may redraw the table first)
    figures = ("--allowed-rules", *names, "--keep-going")
    failed = snakemake(workdir, *names, "--cores", "2", *figures, check=False)
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0
    failed_rules = set(re.findall(r"Error in rule (\w+):", out))
    restored = sorted(re.findall(r"kept the previous results/figures/(\S+):", out))
    assert failed_rules and failed_rules <= {job["rule"] for job in jobs(failed)}, out[-3000:]
    # both files of every failed figure are back, byte for byte, dated 1970; a figure whose
    # job succeeded on the table (it does not need the broken columns) is its new drawing
    assert restored == sorted(f"{rule}.{ext}" for rule in failed_rules for ext in ("pdf", "png"))
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(after) == set(before)  # every figure is there
    for name in restored:
        assert after[name] == before[name] and (folder / name).stat().st_mtime == 1
    # the table repaired (newer than the restored figures): those figures are drawn again
    correlations.write_bytes(good)
    plan = planned_jobs(snakemake(workdir, *names, "-n", "--allowed-rules", *names))
    assert {name.split(".")[0] for name in restored} <= set(plan)
