"""The smoke configuration through a real SLURM scheduler (profiles/slurm), equal to the local run.

Needs a reachable SLURM cluster (`.ci/slurm.sh start` makes this machine a one-node cluster).
Without `sbatch` the test is skipped, unless SSLBENCH_REQUIRE_SLURM=1 (set by .ci/run): then
it fails, so CI can never pass without the SLURM run.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from snakerun import ROOT, copy_workdir, planned_jobs, smoke_config, snakemake

pytestmark = pytest.mark.integration

REQUIRED = os.environ.get("SSLBENCH_REQUIRE_SLURM") == "1"
PROFILE = ROOT / "profiles" / "slurm"
# snakemake gets SIGINT after this long (a hung status poll must not hang CI), SIGKILL 30 s later
TIMEOUT = int(os.environ.get("SSLBENCH_SLURM_TIMEOUT", "1800"))
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.")


def unavailable(reason):
    if REQUIRED:
        pytest.fail(f"SSLBENCH_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(f"{reason} (.ci/slurm.sh start sets up a one-node cluster)")


@pytest.fixture(scope="module")
def cluster() -> int:
    """Checks that a SLURM cluster answers; returns the CPU count of its largest node."""
    if shutil.which("sbatch") is None:
        unavailable("sbatch is not on PATH")
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    states = proc.stdout.split()
    if proc.returncode != 0 or not {"idle", "mixed", "allocated"} & set(states):
        unavailable(f"no SLURM node is up (sinfo: {proc.stdout.strip()} {proc.stderr.strip()})")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.fail(
            "snakemake-executor-plugin-slurm is missing: pip install -r requirements-dev.txt"
        )
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, check=True)
    return max(int(c.rstrip("+")) for c in cpus.stdout.split())


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory, request):
    # the local reference run only once a cluster is known to answer (a skip costs nothing)
    smoke_run = request.getfixturevalue("smoke_run")
    workdir = tmp_path_factory.mktemp("slurm")
    start = time.monotonic()
    # --cores: no group job asks for more CPUs than a node has (the profile's comment)
    proc = snakemake(
        workdir,
        "--workflow-profile",
        str(PROFILE),
        "--cores",
        str(cluster),
        check=False,
        timeout=TIMEOUT + 60,
        prefix=("timeout", "-s", "INT", "-k", "30", str(TIMEOUT)),
    )
    wall = time.monotonic() - start
    local = float((smoke_run / "wall_seconds.txt").read_text())
    print(f"\nsmoke run wall time: SLURM {wall:.0f} s, local {local:.0f} s")
    return workdir, proc, smoke_run


def test_the_slurm_run_finishes(slurm_run):
    workdir, proc, _ = slurm_run
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode} (124 = timed out):\n{out[-6000:]}"
    assert re.search(r"\d+ of \d+ steps \(100%\) done", out)
    # the same run asked again: nothing left to do
    assert planned_jobs(snakemake(workdir, "-n", "--workflow-profile", str(PROFILE))) == {}


def test_jobs_went_through_sbatch(slurm_run):
    workdir, proc, _ = slurm_run
    out = proc.stdout + proc.stderr
    submissions = SUBMITTED.findall(out)
    jobids = [int(jobid) for _, jobid, _ in submissions]
    assert len(set(jobids)) == len(jobids) > 0
    # every job that was not a local rule was submitted (and run) as one SLURM job; the kNN
    # probes (grouped in the profile) together as one group job
    single = re.findall(r"^rule (\w+):$", out, re.M)
    members = re.findall(r"^\s+rule (\w+):$", out, re.M)
    assert members == ["knn_probe"] * 4 and "knn_probe" not in single
    assert out.count("Group job knn ") == 1
    assert len(jobids) == len(single) + 1
    assert sum("/group_knn" in log for _, _, log in submissions) == 1
    for _, jobid, log in submissions:
        # the job's own log (the plugin names it after the SLURM job id) says it ran to the end
        log = Path(log)
        assert log.stem == jobid and log.is_relative_to(workdir / "logs" / "slurm"), log
        assert "steps (100%) done" in log.read_text(), log
    # the scheduler knows those jobs (MinJobAge keeps finished ones) as completed, run here
    known = 0
    for jobid in jobids:
        info = subprocess.run(
            ["scontrol", "show", "job", "-o", str(jobid)], capture_output=True, text=True
        )
        if info.returncode != 0:
            continue  # purged already (MinJobAge below this run's length)
        known += 1
        fields = dict(f.split("=", 1) for f in info.stdout.split() if "=" in f)
        assert fields["JobState"] == "COMPLETED", info.stdout
        assert fields["ExitCode"] == "0:0"
        assert os.path.samefile(fields["WorkDir"], workdir)
    assert known > 0
    # the status of jobs came from squeue: sacct (no slurmdbd here) was never fallen back to
    assert "Falling back to 'sacct'" not in out


def test_results_equal_the_local_run(slurm_run):
    workdir, _, smoke_run = slurm_run
    for table in ("accuracy", "correlations"):
        pd.testing.assert_frame_equal(
            pd.read_csv(workdir / f"results/tables/{table}.csv"),
            pd.read_csv(smoke_run / f"results/tables/{table}.csv"),
            check_exact=True,
        )
    acc = pd.read_csv(workdir / "results/tables/accuracy.csv")
    assert len(acc) > 0 and acc["top1"].between(0, 100).all()
    # cached features bit for bit
    for features in sorted((smoke_run / "results/features").rglob("*.npy")):
        rel = features.relative_to(smoke_run)
        np.testing.assert_array_equal(np.load(workdir / rel), np.load(features), err_msg=str(rel))


def test_the_time_limit_signal_saves_the_state_and_the_retry_resumes(slurm_run, tmp_path):
    """profiles/slurm's preemption path on the real scheduler: SLURM sends SIGUSR1 before a
    fine-tuning job's time limit (--signal), the job saves its state mid-run and stops, the
    retry (a new SLURM job) resumes from exactly that step. Here with a 2-minute limit and the
    signal 80 s before it; the run is too long to finish, so the retry is signalled too."""
    import torch
    import yaml

    workdir = copy_workdir(slurm_run[0], tmp_path / "work")  # data and checkpoints exist
    config = smoke_config()
    config.update(models=["mae_vit"], protocols=["finetune"], arms=["raw"], batch_runs=False)
    config["analysis"]["min_models"] = 1
    config["finetune"].update(epochs=1000, batch_size=100, save_minutes=60)
    configfile = tmp_path / "preempt.yaml"
    configfile.write_text(yaml.safe_dump(config))
    profile = tmp_path / "profile"
    profile.mkdir()
    text = (PROFILE / "profile.yaml").read_text()
    edited = text.replace("retries: 3", "retries: 1").replace(
        "runtime: 1440\n    slurm_extra: \"'--signal=USR1@600'\"",
        "runtime: 2\n    slurm_extra: \"'--signal=USR1@80'\"",
    )
    assert edited.count("USR1@80") == 1 and "retries: 1" in edited
    (profile / "profile.yaml").write_text(edited)
    target = "results/trained/mae_vit/finetune/raw.csv"
    proc = snakemake(
        workdir,
        target,
        "--workflow-profile",
        str(profile),
        "--cores",
        "2",
        "--configfile",
        str(configfile),
        check=False,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, "a 1000-epoch run cannot finish within 2 minutes"
    attempts = [Path(log) for _, _, log in SUBMITTED.findall(out) if "/rule_finetune/" in log]
    assert len(attempts) == 2, out[-4000:]
    saved = re.compile(
        r"Preempted: signal 10 received: training state saved at epoch (\d+), "
        r"step (\d+)"
    )
    first = saved.findall(attempts[0].read_text())
    assert first, attempts[0].read_text()[-3000:]
    epoch, step = map(int, first[-1])
    log = (workdir / "logs/finetune/mae_vit/finetune/raw.log").read_text()  # the retry's
    assert f"at epoch {epoch}, step {step}" in log, log[-3000:]  # resumed exactly there
    second = [tuple(map(int, m)) for m in saved.findall(log)]
    assert second and second[-1] > (epoch, step)  # and went on before its own signal
    state = torch.load(
        workdir / "results/state/finetune/mae_vit/finetune_raw.pt", weights_only=True
    )
    assert (state["epoch"] + 1, state["step"]) == second[-1]
