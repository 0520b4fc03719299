"""The pre-training driver shared by every method: AdamW, linear warm-up then cosine decay per
step, a fixed step budget (never a wall-clock budget: fixed seed + fixed steps on one thread
gives bit-identical weights)."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from workflow_scripts.augment import to_float_images
from workflow_scripts.backbones import build_backbone
from workflow_scripts.pretrain import get_method
from workflow_scripts.schema import schema_defaults

log = logging.getLogger(__name__)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine from 1 to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain(
    *,
    arch: str,
    embedding: str,
    method: str,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    steps: int,
    seed: int,
    hp: dict,
    log_every: int = 50,
) -> tuple[torch.nn.Module, list[dict]]:
    """Train ``method`` on ``images`` for ``steps`` steps; return (backbone, loss history).

    ``hp`` holds batch_size, lr, weight_decay, warmup_fraction, mean, std and the method's own
    hyper-parameters (one left out: its schema default, config ``pretrain.methods.<method>``).
    ``method == "random"`` returns the seeded initialisation untouched.
    """
    torch.manual_seed(seed)
    backbone = build_backbone(arch, embedding)
    cls = get_method(method)
    if cls is None or steps == 0:
        return backbone.eval(), []
    model = cls(backbone, schema_defaults(f"pretrain.methods.{method}") | hp, num_classes)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    warmup = int(round(hp["warmup_fraction"] * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, steps, warmup)
    )
    data = to_float_images(images)
    targets = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    gen = torch.Generator().manual_seed(seed)
    batch = hp["batch_size"]
    if batch > len(data):
        raise ValueError(f"pre-training batch size {batch} exceeds the {len(data)} training images")
    order = torch.randperm(len(data), generator=gen)
    cursor = 0
    history = []
    started = time.perf_counter()
    for step in range(steps):
        if cursor + batch > len(order):
            order, cursor = torch.randperm(len(data), generator=gen), 0
        idx = order[cursor : cursor + batch]
        cursor += batch
        loss = model.loss(data[idx], targets[idx], gen)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{method}: loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        model.after_step((step + 1) / steps)
        if step % log_every == 0 or step == steps - 1:
            record = {
                "step": step,
                "loss": loss.item(),
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(time.perf_counter() - started, 2),
            }
            history.append(record)
            log.info("step %(step)d loss %(loss).4f lr %(lr).2e (%(seconds).1f s)", record)
    return backbone.eval(), history
