"""The attentive probe: efficient probing (EP) on the frozen tokens of a backbone.

EP (Psomas et al., "Attention, Please! Revisiting Attentive Probing for Masked Image Modeling",
arXiv 2506.10178; the authors' code, billpsomas/efficient-probing, ``poolings/ep.py`` and
``main_linprobe.py``) pools a model's tokens with Q learned queries and no query, key or output
projection:

* queries ``q`` [Q, D], drawn N(0, 0.02^2); a value projection ``W_v`` [D, D] without bias;
* attention ``A = softmax_n(q x_n^T / sqrt(D))`` [Q, N] over the N tokens ``x`` [N, D]
  themselves (the keys are the tokens);
* the values ``x W_v^T`` are split along the channels into Q chunks of D / Q; query m pools
  chunk m, ``z_m = sum_n A[m, n] (x_n W_v^T)[chunk m]``, and the chunks are concatenated
  into ``z`` [D] (not averaged);
* a linear classifier on ``z``.

The arms are those of every protocol here: ``raw`` as above, and ``bn``: a BatchNorm over the
channels of the tokens, without affine (batch statistics over the batch's tokens in training,
running statistics in evaluation), before the pooling. EP's own head has a BatchNorm without
affine after the pooling instead; the ``bn`` arm follows this study's convention (normalised
inputs to the probe), and the ``raw`` arm has none.

Tokens (:func:`tokens`): the output of the last block, before the backbone's final norm, patch
tokens only (EP's default, ``cls_features=ep``): timm models through their
``forward_intermediates``; a ResNet's last feature map, its H x W positions as tokens.

Recipe (:class:`Recipe`; EP's ImageNet command for MAE ViT-B): LARS (momentum 0.9, trust
coefficient 0.001, weight decay 0, parameters of one dimension -- biases -- neither adapted nor
decayed: timm's ``Lars`` with ``always_adapt`` on the others and ``eps`` 0, which is MAE's LARS
that EP uses), learning rate ``base_lr x batch / 256`` with ``base_lr`` 0.1, a linear warm-up of
10 epochs then a half cosine to 0, set at every iteration from the fractional epoch, 90 epochs,
batch 4096, plain cross-entropy, no gradient clipping. EP trains on augmented images
(RandomResizedCrop and flip); here the tokens are computed once without augmentation, as the
linear probe's features are. Every epoch is evaluated; the caller reports the last and the best.

Seeded: the head's initial parameters come from ``torch.Generator().manual_seed(seed)`` and the
epoch permutations from a second generator with the same seed, so a run is a function of its
inputs and seed. No work at import time.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts import registry


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The attentive probe's recipe (EP's ImageNet defaults)."""

    epochs: int = 90
    batch_size: int = 4096
    base_lr: float = 0.1
    warmup_epochs: int = 10
    weight_decay: float = 0.0
    momentum: float = 0.9
    trust_coeff: float = 0.001
    queries: int = 32
    query_init_std: float = 0.02
    bn_eps: float = 1e-6

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256


def learning_rate(recipe: Recipe, epoch: float) -> float:
    """EP's schedule at a fractional epoch (iteration / iterations per epoch + epoch): linear
    warm-up from 0, then a half cosine to 0 at ``recipe.epochs``."""
    if epoch < recipe.warmup_epochs:
        return recipe.lr * epoch / recipe.warmup_epochs
    span = recipe.epochs - recipe.warmup_epochs
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - recipe.warmup_epochs) / span))


class AttentiveProbe(nn.Module):
    """EP pooling (optionally after a BatchNorm of the tokens, arm ``bn``) and a linear
    classifier; ``forward`` takes tokens [B, N, D] and returns logits [B, C]."""

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        arm: str = "raw",
        queries: int = 32,
        seed: int = 0,
        query_init_std: float = 0.02,
        bn_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if arm not in registry.ARMS:
            raise ValueError(f"unknown arm '{arm}' (expected one of {list(registry.ARMS)})")
        if queries < 1 or dim % queries:
            raise ValueError(
                f"attentive probe: {queries} queries do not divide the token width {dim} "
                "(each query pools dim / queries channels)"
            )
        self.dim, self.num_queries, self.arm = dim, queries, arm
        gen = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(dim)  # nn.Linear's default init, drawn from the seeded generator
        self.queries = nn.Parameter(torch.randn(1, queries, dim, generator=gen) * query_init_std)
        self.value = nn.Linear(dim, dim, bias=False)
        self.classifier = nn.Linear(dim, num_classes)
        with torch.no_grad():
            self.value.weight.uniform_(-bound, bound, generator=gen)
            self.classifier.weight.uniform_(-bound, bound, generator=gen)
            self.classifier.bias.uniform_(-bound, bound, generator=gen)
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=bn_eps) if arm == "bn" else None

    def normalized(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tokens the pooling sees: as given (``raw``) or batch-normalised over their
        channels (``bn``)."""
        if self.norm is None:
            return tokens
        b, n, d = tokens.shape
        return self.norm(tokens.reshape(b * n, d)).reshape(b, n, d)

    def attention(self, tokens: torch.Tensor) -> torch.Tensor:
        """A [B, Q, N]: each query's softmax over the (normalised) tokens."""
        scores = (self.queries * self.dim**-0.5) @ tokens.transpose(1, 2)
        return scores.softmax(dim=-1)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """The pooled representation z [B, D] the classifier sees."""
        x = self.normalized(tokens)
        weights = self.attention(x)
        b, n, d = x.shape
        values = self.value(x).reshape(b, n, self.num_queries, d // self.num_queries)
        return torch.einsum("bqn,bnqc->bqc", weights, values).reshape(b, d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(tokens))


def optimizer(probe: AttentiveProbe, recipe: Recipe):
    """timm's LARS as MAE's (EP's) LARS: tensors of two or more dimensions adapted by the
    trust ratio (and decayed), one-dimensional ones (biases) plain SGD with momentum."""
    from timm.optim import Lars

    adapted = [p for p in probe.parameters() if p.ndim > 1]
    plain = [p for p in probe.parameters() if p.ndim <= 1]
    return Lars(
        [
            {"params": adapted, "weight_decay": recipe.weight_decay, "always_adapt": True},
            {"params": plain, "weight_decay": 0.0, "always_adapt": False},
        ],
        lr=recipe.lr,
        momentum=recipe.momentum,
        trust_coeff=recipe.trust_coeff,
        eps=0.0,
    )


def epoch_batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """One epoch of shuffled mini-batch indices; a last batch of one sample is dropped (the
    ``bn`` arm cannot train on it)."""
    batches = list(torch.split(torch.randperm(n, generator=gen), batch_size))
    if len(batches[-1]) < 2:
        batches.pop()
    return batches


@torch.no_grad()
def evaluate(
    probe: AttentiveProbe, tokens: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024
) -> dict:
    """Top-1 and top-5 accuracy (percent; top-5 NaN with five classes or fewer)."""
    probe.eval()
    logits = torch.cat(
        [probe(tokens[i : i + batch_size].float()) for i in range(0, len(tokens), batch_size)]
    )
    ranked = logits.argsort(dim=1, descending=True)
    top1 = (ranked[:, 0] == labels).double().mean().item() * 100
    top5 = (
        (ranked[:, :5] == labels[:, None]).any(dim=1).double().mean().item() * 100
        if logits.shape[1] > 5
        else float("nan")
    )
    return {"top1": top1, "top5": top5}


def train(
    train_tokens: torch.Tensor,
    train_labels: torch.Tensor,
    test_tokens: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int,
    arm: str,
    recipe: Recipe,
    seed: int = 0,
) -> tuple[list[dict], AttentiveProbe]:
    """Train one attentive probe on tokens [N, T, D] (any float dtype; batches are computed
    in float32) and evaluate it after every epoch; return (one record per epoch: epoch,
    train_loss, top1, top5; the trained probe)."""
    if len(train_tokens) != len(train_labels) or len(test_tokens) != len(test_labels):
        raise ValueError(
            f"attentive probe: {len(train_tokens)} train tokens for {len(train_labels)} labels, "
            f"{len(test_tokens)} test tokens for {len(test_labels)} labels"
        )
    probe = AttentiveProbe(
        train_tokens.shape[-1],
        num_classes,
        arm=arm,
        queries=recipe.queries,
        seed=seed,
        query_init_std=recipe.query_init_std,
        bn_eps=recipe.bn_eps,
    )
    opt = optimizer(probe, recipe)
    gen = torch.Generator().manual_seed(seed)
    records = []
    for epoch in range(recipe.epochs):
        probe.train()
        batches = epoch_batches(len(train_tokens), recipe.batch_size, gen)
        losses = []
        for step, index in enumerate(batches):
            for group in opt.param_groups:
                group["lr"] = learning_rate(recipe, epoch + step / len(batches))
            loss = F.cross_entropy(probe(train_tokens[index].float()), train_labels[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        scores = evaluate(probe, test_tokens, test_labels)
        records.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **scores})
    return records, probe


@torch.no_grad()
def tokens(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The tokens [B, N, D] an attentive probe reads: a timm model's last block output before
    its final norm, patch tokens only (``forward_intermediates``); a ResNet's last feature map
    [B, C, H, W] as H x W tokens of C channels."""
    if hasattr(backbone, "forward_intermediates"):
        maps = backbone.forward_intermediates(
            images, indices=1, norm=False, output_fmt="NCHW", intermediates_only=True
        )[-1]
    elif hasattr(backbone, "forward_maps"):  # the demo ResNet
        maps = backbone.forward_maps(images)
    elif hasattr(backbone, "net") and hasattr(backbone.net, "layer4"):  # torchvision ResNet-50
        n = backbone.net
        maps = n.layer4(n.layer3(n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(images))))))))
    else:
        raise ValueError(
            f"attentive probe: no tokens for a {type(backbone).__name__} backbone (a timm "
            "model with forward_intermediates or a ResNet is needed)"
        )
    return maps.flatten(2).transpose(1, 2)
