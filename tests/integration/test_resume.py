"""A fine-tuning job killed mid-way (SIGKILL to snakemake and its job) resumes from its last
saved state when the workflow is re-run, and ends with the result of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from snakerun import smoke_config

ROOT = Path(__file__).resolve().parents[2]
MODEL = "mae_vit"  # a ViT: drop-path and the augmentation draw random numbers every step
TARGET = f"results/probes/finetune/{MODEL}/shapes.csv"
STATE = f"results/state/finetune/{MODEL}/finetune_raw.pt"

pytestmark = pytest.mark.integration


def _command(workdir, configfile, *args):
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        *args,
        "--cores",
        "1",
        "--configfile",
        str(configfile),
    ]


def _run(workdir, configfile, *args):
    proc = subprocess.run(
        _command(workdir, configfile, *args), capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def test_killed_finetune_job_resumes_and_equals_an_uninterrupted_run(tmp_path):
    config = smoke_config()
    config.update(
        models=[MODEL], datasets=["shapes", "count"], protocols=["finetune"], arms=["raw"]
    )
    config["analysis"]["min_models"] = 1  # one model on purpose
    config["finetune"].update(epochs=6, batch_size=100)
    configfile = tmp_path / "resume.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "work"

    _run(workdir, configfile, TARGET)  # the uninterrupted reference (and the upstream steps)
    reference = pd.read_csv(workdir / TARGET)
    assert not (workdir / STATE).exists()  # a finished run leaves no state behind

    job = subprocess.Popen(
        _command(workdir, configfile, TARGET, "--forcerun", "finetune"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (workdir / STATE).exists():  # written atomically after each epoch
            assert job.poll() is None, "the fine-tuning job ended before it could be killed"
            assert time.monotonic() < deadline, "no fine-tuning state appeared"
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGKILL)  # snakemake and its job die at once, as on node loss
    finally:
        job.wait()
    assert not (workdir / TARGET).exists()  # snakemake removed the output it had forced
    state = torch.load(workdir / STATE, weights_only=True)
    saved_epoch, saved_step = state["epoch"], state["step"]  # the next epoch to run, its step
    assert 1 <= saved_epoch <= 6 and saved_step == 0  # saved at an epoch end

    _run(workdir, configfile, "--unlock")
    _run(workdir, configfile, TARGET)
    log = (workdir / f"logs/finetune/{MODEL}.log").read_text()
    assert f"at epoch {saved_epoch + 1}, step 0" in log  # it continued, it did not start over
    resumed = pd.read_csv(workdir / TARGET)
    pd.testing.assert_frame_equal(resumed, reference)
    assert not (workdir / STATE).exists()
