"""Batched, per-sample random augmentations for small images, in torch.

torchvision's transforms draw one set of random parameters per call, so augmenting a batch
per sample means a Python loop per image; for 32x32 images that loop costs more than the
training step. These functions draw parameters per sample and apply them with one
``affine_grid``/``grid_sample`` or one broadcast op for the whole batch. Images are float
tensors in [0, 1], shape [B, 3, H, W]; every function takes an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def random_resized_crop(
    x: torch.Tensor,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> torch.Tensor:
    """Per-sample RandomResizedCrop (+ horizontal flip) back to the input size (bilinear)."""
    b = x.shape[0]
    area = _uniform(b, *scale, gen)
    log_ratio = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), gen)
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - h)
    sign = torch.ones(b)
    if flip:
        sign = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def color_jitter(
    x: torch.Tensor,
    gen: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 0.8,
) -> torch.Tensor:
    """Per-sample brightness, contrast, saturation and hue jitter, applied with probability p."""
    b = x.shape[0]
    apply = (torch.rand(b, generator=gen) < p).view(b, 1, 1, 1)
    out = x * _uniform(b, 1 - brightness, 1 + brightness, gen).view(b, 1, 1, 1)
    mean = _gray(out).mean(dim=(2, 3), keepdim=True)
    out = (out - mean) * _uniform(b, 1 - contrast, 1 + contrast, gen).view(b, 1, 1, 1) + mean
    gray = _gray(out)
    out = (out - gray) * _uniform(b, 1 - saturation, 1 + saturation, gen).view(b, 1, 1, 1) + gray
    # Hue: rotate the chroma vector around the grey axis (YIQ rotation).
    angle = _uniform(b, -hue, hue, gen) * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=x.dtype
    )
    from_yiq = torch.linalg.inv(to_yiq)
    rot = torch.zeros(b, 3, 3, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    mat = from_yiq @ rot @ to_yiq  # [b, 3, 3]
    out = torch.einsum("bij,bjhw->bihw", mat, out)
    return torch.where(apply, out.clamp(0, 1), x)


def random_grayscale(x: torch.Tensor, gen: torch.Generator, p: float = 0.2) -> torch.Tensor:
    b = x.shape[0]
    apply = (torch.rand(b, generator=gen) < p).view(b, 1, 1, 1)
    return torch.where(apply, _gray(x).expand_as(x), x)


def ssl_view(x: torch.Tensor, gen: torch.Generator, scale=(0.3, 1.0)) -> torch.Tensor:
    """The SimCLR-style view: crop + flip, colour jitter, random grayscale."""
    return random_grayscale(color_jitter(random_resized_crop(x, gen, scale=scale), gen), gen)


def weak_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild crop + flip (supervised training, rotation prediction, masked modelling)."""
    return random_resized_crop(x, gen, scale=(0.6, 1.0))


def to_float_images(images) -> torch.Tensor:
    """uint8 [N, H, W, 3] (numpy) -> float [N, 3, H, W] in [0, 1]."""
    import numpy as np

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s
