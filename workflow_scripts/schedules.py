"""Learning-rate schedules of the probes, built from torch's own schedulers."""

from __future__ import annotations

import torch


def warmup_cosine_epochs(
    optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The paper's linear-probe schedule, stepped once per epoch.

    Epoch e < W trains at (e + 1) / (W + 1) of the base lr (W = 5: 1/6 ... 5/6), then a cosine
    from the base lr towards 0 over the remaining E - W epochs:
    0.5 * (1 + cos(pi * (e - W) / (E - W))). With W = 0 it is a plain cosine.
    """
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup_epochs)
    if warmup_epochs == 0:
        return cosine
    warm = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1 / (warmup_epochs + 1), end_factor=1.0, total_iters=warmup_epochs
    )
    return torch.optim.lr_scheduler.SequentialLR(
        optimizer, [warm, cosine], milestones=[warmup_epochs]
    )


def lr_factor(epoch: int, epochs: int, warmup_epochs: int) -> float:
    """Closed form of :func:`warmup_cosine_epochs` (documentation and test oracle)."""
    import math

    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))
