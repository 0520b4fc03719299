"""SimMIM: masked tokens replaced by a learned mask token inside the encoder; a linear head
regresses the raw pixels of the masked patches with an L1 loss (Xie et al., 2022)."""

from __future__ import annotations

import torch
from torch import nn

from workflow_scripts.augment import normalize, weak_view
from workflow_scripts.pretrain.common import Base, patchify, require_vit, vit_encode


class Method(Base):
    def __init__(self, backbone: nn.Module, hp: dict, num_classes: int) -> None:
        super().__init__(backbone, hp, num_classes)
        require_vit(backbone, "simmim")
        dim = backbone.embed_dim
        self.patch = backbone.patch_embed.patch_size[0]
        self.mask_ratio = hp["mask_ratio"]
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pred = nn.Linear(dim, self.patch * self.patch * 3)
        nn.init.normal_(self.mask_token, std=0.02)

    def loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = weak_view(x, gen)
        vit = self.backbone
        xn = normalize(x, self.mean, self.std)
        tokens = vit.patch_embed(xn)
        b, length, _ = tokens.shape
        n_mask = max(1, int(round(length * self.mask_ratio)))
        order = torch.argsort(torch.rand(b, length, generator=gen), dim=1)
        masked = torch.zeros(b, length, dtype=torch.bool)
        masked.scatter_(1, order[:, :n_mask], True)
        tokens = torch.where(masked[..., None], self.mask_token.to(tokens.dtype), tokens)
        tokens = tokens + vit.pos_embed[:, vit.num_prefix_tokens :, :]
        out = vit_encode(vit, tokens)[:, 1:]
        pred = self.pred(out)
        target = patchify(xn, self.patch)
        per_patch = (pred - target).abs().mean(-1)
        return (per_patch * masked).sum() / masked.sum()
