"""Where a job's torch work runs: the one place a configured device name becomes a
``torch.device`` (extraction, the probes, fine-tuning), so a probe needs neither the feature
extraction module nor another probe to resolve it."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(name: str, key: str = "features.device") -> torch.device:
    """``auto`` = the first CUDA device if there is one, else the CPU; ``key`` names the config
    key in the error."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"config key '{key}' is '{name}' but no CUDA device is visible")
    return torch.device(name)


#: Variables a batch scheduler sets inside a job: a GPU it granted must be visible there.
SCHEDULER_JOB_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")


def check_requested_gpus(snakemake, log: logging.Logger, cuda_available=None) -> None:
    """A job that requested GPUs (``resources: gpu``) and sees no CUDA device: under a batch
    scheduler (which granted them) an error at once, naming the job and what it saw; in a local
    run, where ``gpu`` only limits how many such jobs run at once, a warning (``auto`` devices
    then run on the CPU). ``cuda_available``: for tests, instead of asking torch."""
    resources = getattr(snakemake, "resources", None)
    requested = int(getattr(resources, "gpu", 0) or 0) if resources is not None else 0
    if requested < 1:
        return
    if cuda_available is None:
        import torch

        cuda_available, build = torch.cuda.is_available(), torch.version.cuda
        version = torch.__version__
    else:
        build, version = "?", "?"
    if cuda_available:
        return
    scheduler = next((v for v in SCHEDULER_JOB_VARIABLES if os.environ.get(v)), None)
    seen = (
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}, torch "
        f"{version} built for CUDA {build or 'none (a CPU-only build)'}"
    )
    job = f"rule {snakemake.rule}, wildcards {dict(snakemake.wildcards)}"
    if scheduler:
        raise RuntimeError(
            f"{job}: the job requested {requested} GPU(s) and runs under a batch scheduler "
            f"({scheduler}={os.environ[scheduler]}), but no CUDA device is visible ({seen}). "
            "Check the partition and the GPU request of the cluster profile, the node's NVIDIA "
            "driver against the torch build (README 'Set-up'), or set the device to cpu"
        )
    log.warning(
        "%s: requested %d GPU(s) but no CUDA device is visible (%s): 'auto' devices run on the CPU",
        job,
        requested,
        seen,
    )
