"""The faithful linear probe: augmented images through the frozen backbone every epoch.

The authors ran their linear probe online, on train-augmented images, instead of on cached
features; ``linear_online`` reproduces that (the cached-feature probe stays the default). The
heads, recipe and batching are those of :mod:`workflow_scripts.linear`; only the feature
source differs: each mini-batch is augmented (RandomResizedCrop with torchvision's default
scale (0.08, 1) and a horizontal flip) and embedded by the frozen backbone.

The backbone stays in eval mode, so its BatchNorm running statistics never change (tested).
``authors_drift=True`` reproduces the authors' quirk: their framework switched the backbone
back to train mode, so ResNet BatchNorm statistics drifted on the augmented probe data (still
without gradients).
"""

from __future__ import annotations

import numpy as np
import torch

from workflow_scripts.augment import normalize, random_resized_crop, to_float_images
from workflow_scripts.linear import HeadSpec, Recipe, fit_heads


def train_online(
    backbone: torch.nn.Module,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    heads: list[HeadSpec],
    recipe: Recipe,
    mean,
    std,
    seed: int = 42,
    augment: bool = True,
    authors_drift: bool = False,
    batch_size_eval: int = 512,
) -> tuple[list[dict], torch.nn.Module]:
    """Train the heads on online features; return (results per head, heads).

    ``augment=False`` feeds the un-augmented images, which must reproduce the cached-feature
    probe exactly (tested).
    """
    backbone.requires_grad_(False)
    backbone.eval()
    x_train, x_test = to_float_images(train_images), to_float_images(test_images)
    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def embed(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            backbone(normalize(x[i:i + batch_size_eval], mean, std))
            for i in range(0, len(x), batch_size_eval)
        ]).float()

    def train_batch(idx: torch.Tensor) -> torch.Tensor:
        backbone.train(authors_drift)
        x = x_train[idx]
        if augment:
            x = random_resized_crop(x, gen, scale=(0.08, 1.0))
        return embed(x)

    cached_test: list[torch.Tensor] = []

    def test_features() -> torch.Tensor:
        backbone.eval()
        if authors_drift or not cached_test:  # drifting statistics change the test features
            cached_test[:] = [embed(x_test)]
        return cached_test[0]

    with torch.no_grad():
        dim = backbone(normalize(x_train[:2], mean, std)).shape[1]
    ytr = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    yte = torch.as_tensor(np.asarray(test_labels), dtype=torch.long)
    results, model = fit_heads(train_batch, test_features, ytr, yte, dim, num_classes, heads, recipe)
    backbone.eval()
    for row in results:
        row["authors_drift"] = authors_drift
    return results, model
