"""Rotation prediction: classify which of 0/90/180/270 degrees was applied (Gidaris et al., 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.augment import weak_view
from workflow_scripts.pretrain.common import Base


class Method(Base):
    def __init__(self, backbone: nn.Module, hp: dict, num_classes: int) -> None:
        super().__init__(backbone, hp, num_classes)
        self.head = nn.Linear(backbone.embed_dim, 4)

    def loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = weak_view(x, gen)
        turns = torch.randint(0, 4, (x.shape[0],), generator=gen)
        rotated = torch.empty_like(x)
        for k in range(4):
            idx = turns == k
            rotated[idx] = torch.rot90(x[idx], k, dims=(2, 3))
        return F.cross_entropy(self.head(self.embed(rotated)), turns)
