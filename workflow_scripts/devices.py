"""Where a job's torch work runs: the one place a configured device name becomes a
``torch.device`` (extraction, the probes, fine-tuning), so a probe needs neither the feature
extraction module nor another probe to resolve it."""

from __future__ import annotations

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
