"""SimCLR: NT-Xent between two augmented views (Chen et al., 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.augment import ssl_view
from workflow_scripts.pretrain.common import Base, mlp


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross-entropy over the 2B views; positives are the pairs."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    n = z1.shape[0]
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, targets)


class Method(Base):
    def __init__(self, backbone: nn.Module, hp: dict, num_classes: int) -> None:
        super().__init__(backbone, hp, num_classes)
        self.projector = mlp(backbone.embed_dim, hp["proj_hidden"], hp["proj_dim"])

    def loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z1 = self.projector(self.embed(ssl_view(x, gen)))
        z2 = self.projector(self.embed(ssl_view(x, gen)))
        return nt_xent(z1, z2, self.hp["temperature"])
