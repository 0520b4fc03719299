"""Numeric precision and speed switches of the GPU stages (extraction, fine-tuning).

``precision`` is one of

* ``fp32`` -- strict IEEE float32: TF32 off for matmuls *and* cuDNN convolutions (PyTorch
  leaves cuDNN's TF32 on by default, so "plain" float32 is not strict on an Ampere+ GPU);
* ``tf32`` -- float32 storage, TF32 tensor cores for matmuls and convolutions: the authors'
  setting (``torch.set_float32_matmul_precision("high")``), the fine-tuning default;
* ``bf16`` -- ``torch.autocast`` to bfloat16 on top of ``tf32`` (weights, optimiser state and
  the loss stay float32).

On a CPU nothing changes for ``fp32`` and ``tf32`` (TF32 is a CUDA feature): the demo's numbers
are bit-identical whatever the setting. ``bf16`` autocasts on the CPU as well. The flags are
process-wide backend settings, so :func:`configure` is called once per job, before any model
runs; :func:`effective` is what a result row records.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "tf32", "bf16")


def check(precision: str, key: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(
            f"config key '{key}': unknown precision '{precision}' "
            f"(expected one of {', '.join(PRECISIONS)})"
        )
    return precision


def configure(precision: str, device: torch.device, *, benchmark: bool = False) -> None:
    """Set the process-wide CUDA backend flags for ``precision`` (no-op on a CPU).

    ``benchmark``: let cuDNN time its convolution algorithms (faster ResNets at a fixed input
    size; the chosen algorithm can differ between runs, so two runs need not be bitwise
    equal)."""
    import torch

    check(precision, "precision")
    if device.type != "cuda":
        return
    mode = "ieee" if precision == "fp32" else "tf32"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode
    torch.backends.cudnn.benchmark = benchmark


def autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` (bfloat16 for ``bf16``, else nothing)."""
    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def effective(precision: str, device: torch.device) -> str:
    """What actually ran: ``tf32`` on a CPU is float32."""
    if device.type != "cuda" and precision == "tf32":
        return "fp32"
    return precision
