"""Linear heads, the paper's linear-probe recipe, many heads in one pass: the training that the
linear probe on cached features (:mod:`workflow_scripts.linear`) and the faithful online probe
(:mod:`workflow_scripts.online_probe`) share.

All heads of one (model, data set) -- arms (raw / BatchNorm1d before the Linear) x base learning
rates x seeds -- train together: heads with the same seed share their mini-batches, so each
step gathers one batch per seed, computes the BN batch statistics once (BatchNorm1d: momentum
0.1, eps 1e-5, affine) and gets all logits from one matmul per group (see LinearHeads).
Each head has its own parameters (stacked), learning rate (base_lr x batch / 256, applied to its
gradient before one SGD-with-momentum step, which is exact because momentum is linear),
gradient-norm clip and data order, so the result equals training each head on its own with
``nn.BatchNorm1d`` + ``nn.Linear`` and ``torch.optim.SGD`` (tested), while the features are read
and the kernels launched once for all heads.

Recipe (README "Protocols"): SGD momentum 0.9, weight decay 0, head init N(0, 0.01) with bias
0, W warm-up epochs at (e+1)/(W+1) then cosine to 0 stepped per epoch, gradient-norm clip 0.5,
cross-entropy. Head h's initial weights are drawn from ``torch.Generator().manual_seed(seed_h)``
as a [C, D] normal (nn.Linear's layout) and its epoch permutations from a second generator with
the same seed; a last mini-batch of a single sample is dropped (BatchNorm cannot train on one).

``device``: the features, labels, heads, optimiser state and every per-step tensor live there
(the cached features are resident on it and each batch is gathered there by index); the
initial weights and the permutations still come from CPU generators, so every device sees the
same data order. Only the per-epoch accuracies come back to the CPU (the returned module stays
on the device). On the CPU the numbers are those of the code without this option, bit for bit
(tested); a GPU sums in other orders, so its numbers are close to, not equal to, the CPU's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from workflow_scripts import registry
from workflow_scripts.probing import topk_hits
from workflow_scripts.schedules import warmup_cosine_epochs
from workflow_scripts.schema import FROM_SCHEMA, fill_from_schema

log = logging.getLogger(__name__)

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    arm: str  # "raw" or "bn"
    base_lr: float
    seed: int

    def __post_init__(self) -> None:
        if self.arm not in registry.ARMS:
            raise ValueError(f"unknown arm '{self.arm}' (expected one of {list(registry.ARMS)})")


@dataclasses.dataclass
class Recipe:
    """The linear probe's recipe; a field left out takes config key linear.<field>'s default."""

    epochs: int
    batch_size: int
    warmup_epochs: int = FROM_SCHEMA
    momentum: float = FROM_SCHEMA
    weight_decay: float = FROM_SCHEMA
    grad_clip: float | None = FROM_SCHEMA
    init_std: float = FROM_SCHEMA

    def __post_init__(self) -> None:
        fill_from_schema(self, "linear")

    @classmethod
    def from_config(cls, cfg: dict) -> Recipe:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in fields})


def epoch_batches(
    n: int, batch_size: int, gen: torch.Generator, device: str | torch.device | None = None
) -> list[torch.Tensor]:
    """One epoch of shuffled mini-batch indices; a trailing batch of one sample is dropped.

    The permutation is drawn from ``gen`` (a CPU generator) and moved to ``device`` in one copy.
    """
    order = torch.randperm(n, generator=gen)
    if device is not None:
        order = order.to(device)  # no copy if it is already there
    batches = list(torch.split(order, batch_size))
    if len(batches[-1]) < 2:
        batches.pop()
    return batches


def _index(positions: list[int]) -> slice | torch.Tensor:
    """A contiguous run of positions as a slice (indexing returns a view, not a copy)."""
    if positions and positions == list(range(positions[0], positions[-1] + 1)):
        return slice(positions[0], positions[-1] + 1)
    return torch.tensor(positions, dtype=torch.long)


def _count(index: slice | torch.Tensor) -> int:
    return index.stop - index.start if isinstance(index, slice) else len(index)


class LinearHeads(torch.nn.Module):
    """H independent (BatchNorm1d?) + Linear heads, stored stacked, run as a few large matmuls.

    Parameters are stacked over heads (weight [H, D, C], bias [H, C], gamma/beta [H_bn, D]), so
    the optimiser step and the per-head gradient clipping are a handful of tensor ops whatever H
    is. Heads that share a seed see the same mini-batches and form a group: the group's batch
    is gathered once, its BatchNorm batch statistics are computed once (identical for every BN
    head of the group), and the logits of all its heads, raw and BN, come from one matmul: the
    normalisation and affine of a BN head are folded into its weights (see _group_logits),
    which autograd differentiates exactly like the unfolded form.

    Index tensors (head groups, BN heads, head order) are non-persistent buffers, so
    ``.to(device)`` moves them with the parameters.
    """

    def __init__(self, dim: int, num_classes: int, heads: list[HeadSpec], init_std: float) -> None:
        super().__init__()
        self.heads = heads
        self.num_classes = num_classes
        weights = []
        for spec in heads:
            gen = torch.Generator().manual_seed(spec.seed)
            weights.append((torch.randn(num_classes, dim, generator=gen) * init_std).T)
        self.bn_index = [i for i, s in enumerate(heads) if s.arm == "bn"]
        n_bn = len(self.bn_index)
        self.weight = torch.nn.Parameter(torch.stack(weights).contiguous())  # [H, D, C]
        self.bias = torch.nn.Parameter(torch.zeros(len(heads), num_classes))
        self.gamma = torch.nn.Parameter(torch.ones(n_bn, dim))
        self.beta = torch.nn.Parameter(torch.zeros(n_bn, dim))
        self.register_buffer("running_mean", torch.zeros(n_bn, dim))
        self.register_buffer("running_var", torch.ones(n_bn, dim))
        self.register_buffer(
            "bn_heads", torch.tensor(self.bn_index, dtype=torch.long), persistent=False
        )
        self.seeds = sorted({spec.seed for spec in heads})
        # per seed group: raw head indices, bn head indices, bn rows (into gamma/beta/running),
        # each a slice or the name of an index buffer
        self._groups = []
        order = []
        for g, seed in enumerate(self.seeds):
            raw = [h for h, s in enumerate(heads) if s.seed == seed and s.arm == "raw"]
            bn = [h for h, s in enumerate(heads) if s.seed == seed and s.arm == "bn"]
            rows = [self.bn_index.index(h) for h in bn]
            group = []
            for kind, positions in (("raw", raw), ("bn", bn), ("rows", rows)):
                index = _index(positions)
                if isinstance(index, torch.Tensor):
                    self.register_buffer(f"group{g}_{kind}", index, persistent=False)
                    index = f"group{g}_{kind}"
                group.append(index)
            self._groups.append(tuple(group))
            order += raw + bn
        # logits are produced group by group; this puts them back in head order
        self.register_buffer("restore", torch.argsort(torch.tensor(order)), persistent=False)
        self.in_order = order == list(range(len(heads)))

    @property
    def groups(self) -> list[tuple[slice | torch.Tensor, ...]]:
        """Per seed group: (raw head indices, BN head indices, BN rows), slices or tensors."""
        return [
            tuple(getattr(self, i) if isinstance(i, str) else i for i in group)
            for group in self._groups
        ]

    def _group_logits(self, x: torch.Tensor, raw, bn, rows) -> torch.Tensor:
        """Logits [B, R + G, C] of one seed group (raw heads, then BN heads) from ONE matmul.

        BatchNorm (batch statistics in training, running statistics in eval) and the BN
        affine are folded into the weights: for a BN head
        ``((x - mu) * s * gamma + beta) @ W + b = x @ (s * gamma)[:, None] * W
        + ((beta - mu * s * gamma) @ W + b)`` with s = 1 / sqrt(var + eps); a raw head has
        scale 1 and shift 0."""
        n_raw, n_bn = _count(raw), _count(bn)
        dim = x.shape[1]
        scales, shifts, weights, biases = [], [], [], []
        if n_raw:
            scales.append(x.new_ones(n_raw, dim))
            shifts.append(x.new_zeros(n_raw, dim))
            weights.append(self.weight[raw])
            biases.append(self.bias[raw])
        if n_bn:
            if self.training:
                var, mean = torch.var_mean(x, dim=0, unbiased=False)
                with torch.no_grad():
                    n = x.shape[0]
                    self.running_mean[rows] = (
                        self.running_mean[rows] * (1 - BN_MOMENTUM) + BN_MOMENTUM * mean
                    )
                    self.running_var[rows] = self.running_var[rows] * (
                        1 - BN_MOMENTUM
                    ) + BN_MOMENTUM * var * n / (n - 1)
                inv = torch.rsqrt(var + BN_EPS).expand(n_bn, dim)
                mean = mean.expand(n_bn, dim)
            else:
                inv = torch.rsqrt(self.running_var[rows] + BN_EPS)
                mean = self.running_mean[rows]
            scale = self.gamma[rows] * inv
            scales.append(scale)
            shifts.append(self.beta[rows] - mean * scale)
            weights.append(self.weight[bn])
            biases.append(self.bias[bn])
        scale = torch.cat(scales) if len(scales) > 1 else scales[0]  # [G, D]
        shift = torch.cat(shifts) if len(shifts) > 1 else shifts[0]
        weight = torch.cat(weights) if len(weights) > 1 else weights[0]  # [G, D, C]
        bias = torch.cat(biases) if len(biases) > 1 else biases[0]  # [G, C]
        folded_w = (scale[:, :, None] * weight).permute(1, 0, 2).reshape(dim, -1)
        folded_b = torch.einsum("gd,gdc->gc", shift, weight) + bias
        return torch.addmm(folded_b.reshape(-1), x, folded_w).view(len(x), n_raw + n_bn, -1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """xs: one [B, D] batch per seed group -> logits [H, B, C] in head order."""
        blocks = [self._group_logits(x, *group) for group, x in zip(self.groups, xs, strict=True)]
        logits = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
        if not self.in_order:
            logits = logits[:, self.restore]
        return logits.permute(1, 0, 2)

    @torch.no_grad()
    def clip_and_scale_(
        self, max_norm: float | None, lrs: torch.Tensor, weight_decay: float
    ) -> None:
        """Per head: clip the gradient norm (as ``clip_grad_norm_`` on that head's parameters),
        add weight decay, multiply by the head's lr.

        With an optimiser at lr 1 x schedule factor, SGD with momentum then applies exactly
        each head's own learning rate (momentum is linear in the gradient)."""
        gw, gb = self.weight.grad, self.bias.grad
        sq = gw.pow(2).sum((1, 2)) + gb.pow(2).sum(1)
        bn = self.bn_heads
        if len(bn):
            sq = sq.index_add(0, bn, self.gamma.grad.pow(2).sum(1) + self.beta.grad.pow(2).sum(1))
        coef = torch.ones_like(sq)
        if max_norm is not None:
            coef = torch.clamp(max_norm / (sq.sqrt() + 1e-6), max=1.0)
        for param, factor in (
            (self.weight, coef),
            (self.bias, coef),
            (self.gamma, coef[bn]),
            (self.beta, coef[bn]),
        ):
            if param.numel() == 0:
                continue
            shape = (-1,) + (1,) * (param.dim() - 1)
            param.grad.mul_(factor.view(shape))
            if weight_decay:
                param.grad.add_(param, alpha=weight_decay)
            head_lr = lrs if param is self.weight or param is self.bias else lrs[bn]
            param.grad.mul_(head_lr.view(shape))


def _as_tensor(array: np.ndarray, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(array), dtype=torch.float32)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return tensor


@torch.no_grad()
def evaluate(
    model: LinearHeads, x: torch.Tensor, y: torch.Tensor, num_classes: int, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 and top-5 accuracy (percent) per head; top-5 is NaN with <= 5 classes."""
    model.eval()
    hits1 = torch.zeros(len(model.heads), dtype=torch.long, device=x.device)
    hits5 = torch.zeros(len(model.heads), dtype=torch.long, device=x.device)
    for start in range(0, len(x), chunk):
        xb = x[start : start + chunk]
        logits = model([xb] * len(model.groups))
        yb = y[start : start + chunk]
        hits1 += topk_hits(logits, yb, 1)
        if num_classes > 5:
            hits5 += topk_hits(logits, yb, 5)
    top1 = hits1.cpu().double().numpy() * 100 / len(x)
    top5 = (
        hits5.cpu().double().numpy() * 100 / len(x)
        if num_classes > 5
        else np.full(len(model.heads), np.nan)
    )
    return top1, top5


def train_heads(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
    heads: list[HeadSpec],
    recipe: Recipe,
    *,
    device: str | torch.device = "cpu",
) -> tuple[list[dict], LinearHeads]:
    """Train every head; return one result dict per head (last- and best-epoch accuracy).

    The features and labels are checked on the CPU, then moved to ``device`` (resident there).
    """
    if not heads:
        raise ValueError("no heads to train")
    if recipe.warmup_epochs >= recipe.epochs:
        raise ValueError(
            f"warmup_epochs ({recipe.warmup_epochs}) must be smaller than epochs ({recipe.epochs})"
        )
    xtr = _as_tensor(train_x, "train features")
    xte = _as_tensor(test_x, "test features")
    ytr = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    yte = torch.as_tensor(np.asarray(test_y), dtype=torch.long)
    for name, y in (("train", ytr), ("test", yte)):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} labels outside [0, {num_classes})")
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train/test feature dimensions differ: {xtr.shape[1]} vs {xte.shape[1]}")
    device = torch.device(device)
    xtr, xte, ytr, yte = (t.to(device) for t in (xtr, xte, ytr, yte))  # no copy on the CPU
    return fit_heads(
        lambda idx: xtr[idx],
        lambda: xte,
        ytr,
        yte,
        xtr.shape[1],
        num_classes,
        heads,
        recipe,
        device=device,
    )


def fit_heads(
    train_batch: Callable[[torch.Tensor], torch.Tensor],
    test_features: Callable[[], torch.Tensor],
    ytr: torch.Tensor,
    yte: torch.Tensor,
    dim: int,
    num_classes: int,
    heads: list[HeadSpec],
    recipe: Recipe,
    *,
    device: str | torch.device = "cpu",
) -> tuple[list[dict], LinearHeads]:
    """The training loop behind :func:`train_heads`, over any feature source.

    ``train_batch(indices)`` returns the [B, D] features of those training samples (cached
    rows, or the frozen backbone on freshly augmented images for the online probe);
    ``test_features()`` returns the [N_test, D] test features, called once per epoch. On
    ``device``: the heads, the optimiser state and the index batches passed to
    ``train_batch``; ``ytr``/``yte`` are moved there and the features returned must be there.
    """
    device = torch.device(device)
    ytr, yte = ytr.to(device), yte.to(device)
    model = LinearHeads(dim, num_classes, heads, recipe.init_std).to(device)
    head_lrs = [spec.base_lr * recipe.batch_size / 256 for spec in heads]
    lrs = torch.tensor(head_lrs, device=device)
    # lr 1: each head's own lr (and weight decay) is applied to its gradient by clip_and_scale_.
    optimizer = torch.optim.SGD(
        [model.weight, model.bias, model.gamma, model.beta],
        lr=1.0,
        momentum=recipe.momentum,
        weight_decay=0.0,
    )
    scheduler = warmup_cosine_epochs(optimizer, recipe.epochs, recipe.warmup_epochs)
    seeds = model.seeds
    data_gens = {s: torch.Generator().manual_seed(s) for s in seeds}
    head_seed_pos = torch.tensor([seeds.index(spec.seed) for spec in heads], device=device)
    best1 = np.full(len(heads), -1.0)
    best5 = np.full(len(heads), np.nan)
    best_epoch = np.zeros(len(heads), dtype=int)
    started = time.perf_counter()
    for epoch in range(recipe.epochs):
        model.train()
        per_seed = [epoch_batches(len(ytr), recipe.batch_size, data_gens[s], device) for s in seeds]
        for step in range(len(per_seed[0])):
            batch_idx = [per_seed[i][step] for i in range(len(seeds))]
            xs = [train_batch(idx) for idx in batch_idx]  # one batch per seed group
            yb = torch.stack([ytr[idx] for idx in batch_idx])[head_seed_pos]  # [H, B]
            logits = model(xs)
            # Sum of per-head mean losses: each head's gradient is its own loss's gradient.
            loss = (
                F.cross_entropy(logits.reshape(-1, num_classes), yb.reshape(-1), reduction="none")
                .view(len(heads), -1)
                .mean(1)
                .sum()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            model.clip_and_scale_(recipe.grad_clip, lrs, recipe.weight_decay)
            optimizer.step()
        scheduler.step()
        top1, top5 = evaluate(model, test_features(), yte, num_classes)
        improved = top1 > best1
        best1 = np.where(improved, top1, best1)
        best5 = np.where(improved, top5, best5)
        best_epoch = np.where(improved, epoch, best_epoch)
        if epoch % 10 == 0 or epoch == recipe.epochs - 1:
            log.info(
                "epoch %d/%d: top1 %s (%.1f s)",
                epoch + 1,
                recipe.epochs,
                " ".join(f"{v:.1f}" for v in top1),
                time.perf_counter() - started,
            )
    results = []
    for h, spec in enumerate(heads):
        results.append(
            {
                "arm": spec.arm,
                "base_lr": spec.base_lr,
                "lr": head_lrs[h],
                "seed": spec.seed,
                "top1": float(top1[h]),
                "top5": float(top5[h]),
                "top1_best": float(best1[h]),
                "top5_best": float(best5[h]),
                "best_epoch": int(best_epoch[h]) + 1,
                "epochs": recipe.epochs,
                "batch_size": recipe.batch_size,
                "n_train": len(ytr),
                "n_test": len(yte),
            }
        )
    return results, model


def head_grid(arms, cfg: dict) -> list[HeadSpec]:
    """The heads of a probe job: every arm x base lr x seed of the ``linear`` section, in
    that order (the order of the result rows)."""
    return [
        HeadSpec(arm, lr, seed) for arm in arms for lr in cfg["base_lrs"] for seed in cfg["seeds"]
    ]
