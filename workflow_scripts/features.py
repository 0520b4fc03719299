"""Cached feature extraction: backbone in eval mode, eval transform, one .npy per split.

``results/features/{model}/{dataset}/{split}.npy`` holds float32 (or float16) [N, D] with row i
belonging to ``results/labels/{dataset}/{split}.npy``[i]; a JSON sidecar records the weights'
sha256, the transform, N, D and dtype.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from workflow_scripts.io import save_json, save_npy

log = logging.getLogger(__name__)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def eval_transform(images: torch.Tensor, spec: dict) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> normalised float: Resize(shorter side) -> CenterCrop -> Normalize.

    ``spec``: resize (int or None), crop (int or None), interpolation, mean, std.
    """
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    x = images
    if spec.get("resize"):
        mode = InterpolationMode(spec.get("interpolation", "bilinear"))
        x = TF.resize(x, [spec["resize"]], interpolation=mode, antialias=True)
    if spec.get("crop"):
        x = TF.center_crop(x, [spec["crop"], spec["crop"]])
    x = TF.to_dtype(x, torch.float32, scale=True)
    return TF.normalize(x, mean=list(spec["mean"]), std=list(spec["std"]))


def array_batches(images: np.ndarray, spec: dict, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of transformed images from a uint8 [N, H, W, 3] array (the synthetic sets)."""
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
        yield eval_transform(chunk.permute(0, 3, 1, 2), spec)


@torch.inference_mode()
def extract(backbone: torch.nn.Module, batches: Iterator[torch.Tensor], total: int) -> np.ndarray:
    """Run ``backbone`` in eval mode over ``batches``; float32 [total, D]."""
    backbone.eval()
    out = None
    filled = 0
    started = time.perf_counter()
    for batch in batches:
        emb = backbone(batch).float()
        if out is None:
            out = np.empty((total, emb.shape[1]), dtype=np.float32)
        out[filled:filled + len(emb)] = emb.numpy()
        filled += len(emb)
    if out is None or filled != total:
        raise RuntimeError(f"extracted {filled} embeddings, expected {total}")
    seconds = time.perf_counter() - started
    log.info("extracted %d x %d features in %.1f s (%.0f img/s)", total, out.shape[1], seconds,
             total / max(seconds, 1e-9))
    return out


def check_finite(features: np.ndarray, model: str, dataset: str, split: str) -> None:
    """NaN or infinite features are an error naming model, data set and split."""
    bad = ~np.isfinite(features)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"features of model '{model}' on data set '{dataset}' split '{split}' contain "
            f"{int(bad.sum())} NaN/infinite values in {len(rows)} of {len(features)} rows "
            f"(first rows: {rows[:5].tolist()})"
        )


def write_features(
    path: str | Path, sidecar: str | Path, features: np.ndarray, *, model: str, dataset: str,
    split: str, dtype: str, weights_sha256: str, transform: dict, labels_path: str,
) -> None:
    check_finite(features, model, dataset, split)
    stored = features.astype(dtype)
    if not np.isfinite(stored).all():
        raise ValueError(
            f"features of model '{model}' on data set '{dataset}' split '{split}' overflow {dtype}"
        )
    save_npy(path, stored)
    save_json(sidecar, {
        "model": model, "dataset": dataset, "split": split, "n": int(stored.shape[0]),
        "d": int(stored.shape[1]), "dtype": dtype, "weights_sha256": weights_sha256,
        "transform": transform, "labels": str(labels_path), "backbone_mode": "eval",
    })


def load_features(path: str | Path, model: str, dataset: str, split: str) -> np.ndarray:
    """Load cached features as float32 and check them (the probes' entry point)."""
    features = np.load(path).astype(np.float32, copy=False)
    if features.ndim != 2:
        raise ValueError(f"features '{path}' have shape {features.shape}, expected [N, D]")
    check_finite(features, model, dataset, split)
    return features
