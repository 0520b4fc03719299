"""Supervised reference: cross-entropy on the labels with crop/flip augmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.augment import weak_view
from workflow_scripts.pretrain.common import Base


class Method(Base):
    def __init__(self, backbone: nn.Module, hp: dict, num_classes: int) -> None:
        super().__init__(backbone, hp, num_classes)
        self.head = nn.Linear(backbone.embed_dim, num_classes)

    def loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return F.cross_entropy(self.head(self.embed(weak_view(x, gen))), y)
