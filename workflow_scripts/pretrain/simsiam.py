"""SimSiam: symmetric negative cosine with a predictor and stop-gradient (Chen & He, 2021)."""

from __future__ import annotations

import torch
from torch import nn

from workflow_scripts.augment import ssl_view
from workflow_scripts.pretrain.common import Base, mlp, negative_cosine


class Method(Base):
    def __init__(self, backbone: nn.Module, hp: dict, num_classes: int) -> None:
        super().__init__(backbone, hp, num_classes)
        hidden, dim = hp["proj_hidden"], hp["proj_dim"]
        self.projector = mlp(backbone.embed_dim, hidden, dim, last_bn=True)
        self.predictor = mlp(dim, hidden // 4, dim)

    def loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z1 = self.projector(self.embed(ssl_view(x, gen)))
        z2 = self.projector(self.embed(ssl_view(x, gen)))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2
