"""BYOL: an online network predicts an EMA target network's projection (Grill et al., 2020)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from workflow_scripts.augment import ssl_view
from workflow_scripts.pretrain.common import Base, mlp, negative_cosine


class Method(Base):
    def __init__(self, backbone: nn.Module, hp: dict, num_classes: int) -> None:
        super().__init__(backbone, hp, num_classes)
        hidden, dim = hp["proj_hidden"], hp["proj_dim"]
        self.projector = mlp(backbone.embed_dim, hidden, dim)
        self.predictor = mlp(dim, hidden, dim)
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.base_momentum = hp["momentum"]

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        from workflow_scripts.augment import normalize

        with torch.no_grad():
            return self.target_projector(self.target_backbone(normalize(x, self.mean, self.std)))

    def loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        v1, v2 = ssl_view(x, gen), ssl_view(x, gen)
        p1 = self.predictor(self.projector(self.embed(v1)))
        p2 = self.predictor(self.projector(self.embed(v2)))
        return negative_cosine(p1, self._target(v2)) + negative_cosine(p2, self._target(v1))

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """EMA update; the momentum rises from its base value to 1 on a cosine."""
        m = 1 - (1 - self.base_momentum) * (math.cos(math.pi * progress) + 1) / 2
        for online, target in (
            (self.backbone, self.target_backbone),
            (self.projector, self.target_projector),
        ):
            for p_o, p_t in zip(online.parameters(), target.parameters(), strict=True):
                p_t.mul_(m).add_(p_o.detach(), alpha=1 - m)
            for b_o, b_t in zip(online.buffers(), target.buffers(), strict=True):
                b_t.copy_(b_o)
