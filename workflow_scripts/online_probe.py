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
from workflow_scripts.linear_heads import HeadSpec, Recipe, fit_heads


def check_lengths(images, labels, split: str, where: str = "") -> None:
    """One label per image of ``split``, else a ValueError naming ``where`` (model and data
    set), the split and both lengths."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        got = f"{len(labels)} labels" if labels.ndim == 1 else f"labels of shape {labels.shape}"
        raise ValueError(
            f"{where + ', ' if where else ''}split '{split}': {len(images)} images but {got}"
        )


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
    where: str = "",
) -> tuple[list[dict], torch.nn.Module]:
    """Train the heads on online features; return (results per head, heads).

    ``augment=False`` feeds the un-augmented images, which must reproduce the cached-feature
    probe exactly (tested). A split whose labels are not one per image is a ValueError
    (naming ``where``, the split and both lengths) before anything runs.
    """
    check_lengths(train_images, train_labels, "train", where)
    check_lengths(test_images, test_labels, "test", where)
    backbone.requires_grad_(False)
    backbone.eval()
    x_train, x_test = to_float_images(train_images), to_float_images(test_images)
    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def embed(x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                backbone(normalize(x[i : i + batch_size_eval], mean, std))
                for i in range(0, len(x), batch_size_eval)
            ]
        ).float()

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
    results, model = fit_heads(
        train_batch, test_features, ytr, yte, dim, num_classes, heads, recipe
    )
    backbone.eval()
    for row in results:
        row["authors_drift"] = authors_drift
    return results, model


def run_job(
    weights: str,
    outputs,
    *,
    model: dict,
    datasets,
    train_images,
    train_labels,
    test_images,
    test_labels,
    num_classes,
    arms,
    cfg: dict,
    online: dict,
    mean,
    std,
    code: str,
    log,
) -> None:
    """One linear_online job: for each data set (in order, with its image and label arrays and
    output file at the same position) the heads of ``linear_heads.head_grid(arms, cfg)`` trained on
    online features of a freshly loaded backbone (``model``: the row's backbone columns),
    written with the job's provenance columns. Every split's labels are checked against its
    images before the first data set is trained."""
    import pandas as pd

    from workflow_scripts.backbones import load_job_backbone
    from workflow_scripts.features import check_split_sizes
    from workflow_scripts.io import save_csv
    from workflow_scripts.linear_heads import head_grid

    try:  # the job's images are arrays (np.load below): the "synthetic" layout's check
        check_split_sizes(
            [
                (dataset, split, "synthetic", images, labels)
                for dataset, *files in zip(
                    datasets, train_images, train_labels, test_images, test_labels, strict=True
                )
                for split, images, labels in (("train", *files[:2]), ("test", *files[2:]))
            ]
        )
    except ValueError as error:
        raise ValueError(f"model '{model['key']}': {error}") from None
    heads, recipe = head_grid(arms, cfg), Recipe.from_config(cfg)
    for dataset, *paths, classes, out in zip(
        datasets,
        train_images,
        train_labels,
        test_images,
        test_labels,
        num_classes,
        outputs,
        strict=True,
    ):
        backbone = load_job_backbone(weights, model)
        results, _ = train_online(
            backbone,
            *(np.load(path) for path in paths),
            num_classes=classes,
            heads=heads,
            recipe=recipe,
            mean=mean,
            std=std,
            seed=online["seed"],
            authors_drift=online["authors_drift"],
            where=f"model '{model['key']}', data set '{dataset}'",
        )
        frame = pd.DataFrame(results).assign(
            model=model["key"],
            dataset=dataset,
            protocol="linear_online",
            code_version=code,
            device="cpu",
        )  # train_online runs on the CPU
        save_csv(out, frame)
        log.info("%s / %s: %s", model["key"], dataset, frame[["arm", "top1"]].to_dict("records"))
