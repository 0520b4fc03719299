"""MAE: masked autoencoder with a light decoder, normalised-pixel loss (He et al., 2022).

The encoder sees only the visible patches (a random ``mask_ratio`` of them is dropped per
image); a one-block decoder reconstructs the masked patches.
"""

from __future__ import annotations

import torch
from torch import nn

from workflow_scripts.augment import normalize, weak_view
from workflow_scripts.pretrain.common import Base, patchify, require_vit, vit_encode, vit_tokens


class Method(Base):
    def __init__(self, backbone: nn.Module, hp: dict, num_classes: int) -> None:
        super().__init__(backbone, hp, num_classes)
        require_vit(backbone, "mae")
        from timm.models.vision_transformer import Block

        dim = backbone.embed_dim
        dec = hp["decoder_dim"]
        self.patch = backbone.patch_embed.patch_size[0]
        self.num_patches = backbone.patch_embed.num_patches
        self.mask_ratio = hp["mask_ratio"]
        self.decoder_embed = nn.Linear(dim, dec)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec))
        self.decoder_pos = nn.Parameter(torch.randn(1, self.num_patches + 1, dec) * 0.02)
        self.decoder = nn.Sequential(
            *[Block(dec, num_heads=2, mlp_ratio=2.0) for _ in range(hp["decoder_depth"])]
        )
        self.decoder_norm = nn.LayerNorm(dec)
        self.decoder_pred = nn.Linear(dec, self.patch * self.patch * 3)
        nn.init.normal_(self.mask_token, std=0.02)

    def loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = weak_view(x, gen)
        vit = self.backbone
        tokens = vit_tokens(vit, normalize(x, self.mean, self.std))
        b, length, d = tokens.shape
        keep = max(1, int(round(length * (1 - self.mask_ratio))))
        order = torch.argsort(torch.rand(b, length, generator=gen), dim=1)
        restore = torch.argsort(order, dim=1)
        kept = torch.gather(tokens, 1, order[:, :keep, None].expand(-1, -1, d))
        latent = self.decoder_embed(vit_encode(vit, kept))
        masks = self.mask_token.expand(b, length - keep, -1)
        full = torch.cat([latent[:, 1:], masks], dim=1)
        full = torch.gather(full, 1, restore[:, :, None].expand(-1, -1, full.shape[2]))
        full = torch.cat([latent[:, :1], full], dim=1) + self.decoder_pos
        pred = self.decoder_pred(self.decoder_norm(self.decoder(full)))[:, 1:]
        target = patchify(x, self.patch)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
        masked = torch.ones(b, length)
        masked[:, :keep] = 0
        masked = torch.gather(masked, 1, restore)
        per_patch = ((pred - target) ** 2).mean(-1)
        return (per_patch * masked).sum() / masked.sum()
