"""Pieces shared by several pre-training methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.augment import normalize


def mlp(in_dim: int, hidden: int, out_dim: int, last_bn: bool = False) -> nn.Sequential:
    """Projector/predictor MLP: Linear-BN-ReLU-Linear(-BN)."""
    layers: list[nn.Module] = [
        nn.Linear(in_dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim, bias=not last_bn),
    ]
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


class Base(nn.Module):
    """Holds the backbone and the normalisation; subclasses implement ``loss``."""

    def __init__(self, backbone: nn.Module, hp: dict, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.hp = hp
        self.num_classes = num_classes
        self.mean = hp["mean"]
        self.std = hp["std"]

    def embed(self, x01: torch.Tensor) -> torch.Tensor:
        return self.backbone(normalize(x01, self.mean, self.std))

    def after_step(self, progress: float) -> None:  # noqa: B027 - optional hook
        """Called after every optimiser step with progress in [0, 1]."""

    def loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam/BYOL regression loss with a stop-gradient on the target z."""
    return -(F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(dim=1).mean()


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, L, patch*patch*C] in row-major patch order (timm's order)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def vit_tokens(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm ViT patch tokens with their position embedding, without the class token."""
    tokens = vit.patch_embed(x)
    return tokens + vit.pos_embed[:, vit.num_prefix_tokens :, :]


def vit_encode(vit: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Prepend the class token (with its position embedding), run blocks and final norm."""
    cls = (vit.cls_token + vit.pos_embed[:, :1, :]).expand(tokens.shape[0], -1, -1)
    x = torch.cat([cls, tokens], dim=1)
    x = vit.norm_pre(x)
    x = vit.blocks(x)
    return vit.norm(x)


def require_vit(backbone: nn.Module, method: str) -> None:
    if not hasattr(backbone, "patch_embed"):
        raise ValueError(f"method '{method}' needs a ViT backbone")
