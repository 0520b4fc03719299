"""workflow_scripts.devices.check_requested_gpus: a job that requested GPUs and sees no CUDA
device fails at once under a batch scheduler (naming the job, CUDA_VISIBLE_DEVICES and the
torch build) and warns in a local run, where 'auto' then runs on the CPU."""

import logging
from types import SimpleNamespace

import pytest
import torch

from workflow_scripts import devices

LOG = logging.getLogger("test_devices")


def _job(gpu):
    return SimpleNamespace(
        rule="extract_features",
        wildcards={"model": "mae_vitb16", "dataset": "imagenet"},
        resources=SimpleNamespace(gpu=gpu),
    )


@pytest.fixture
def no_scheduler(monkeypatch):
    for name in devices.SCHEDULER_JOB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def test_a_granted_gpu_that_is_not_there_fails_under_slurm(no_scheduler, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the job would run on it")
    with pytest.raises(RuntimeError) as error:
        devices.check_requested_gpus(_job(1), LOG)  # asks the installed torch
    text = str(error.value)
    build = torch.version.cuda or "none (a CPU-only build)"
    assert text.startswith(
        "rule extract_features, wildcards {'model': 'mae_vitb16', 'dataset': 'imagenet'}: the "
        "job requested 1 GPU(s) and runs under a batch scheduler (SLURM_JOB_ID=4711)"
    )
    assert f"CUDA_VISIBLE_DEVICES='', torch {torch.__version__} built for CUDA {build}" in text


def test_local_runs_warn_and_jobs_without_gpus_or_with_cuda_pass(no_scheduler, caplog):
    with caplog.at_level(logging.WARNING):
        devices.check_requested_gpus(_job(1), LOG, cuda_available=False)
    assert "requested 1 GPU(s) but no CUDA device is visible" in caplog.text
    assert "'auto' devices run on the CPU" in caplog.text
    caplog.clear()
    devices.check_requested_gpus(_job(0), LOG, cuda_available=False)
    devices.check_requested_gpus(SimpleNamespace(rule="x", wildcards={}), LOG, False)
    devices.check_requested_gpus(_job(2), LOG, cuda_available=True)
    assert caplog.text == ""


@pytest.mark.parametrize("variable", ["PBS_JOBID", "LSB_JOBID", "JOB_ID"])
def test_other_schedulers_fail_too(no_scheduler, monkeypatch, variable):
    monkeypatch.setenv(variable, "17")
    with pytest.raises(RuntimeError, match=f"batch scheduler \\({variable}=17\\)"):
        devices.check_requested_gpus(_job(1), LOG, cuda_available=False)
