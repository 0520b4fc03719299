"""Cached feature extraction: backbone in eval mode, eval transform, one .npy per split.

``results/features/{model}/{dataset}/{split}.npy`` holds float32 (or float16) [N, D] with row i
belonging to ``results/labels/{dataset}/{split}.npy``[i]; a JSON sidecar records the weights'
sha256, the transform, N, D and dtype.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workflow_scripts.io import save_json, save_npy

# torch is imported inside the functions that need it: the probes on cached features import
# this module for load_features, and a kNN job should not pay torch's import (seconds).
if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def eval_transform(images: torch.Tensor, spec: dict) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> normalised float: Resize(shorter side) -> CenterCrop -> Normalize.

    ``spec``: resize (int or None), crop (int or None), interpolation, mean, std.
    """
    import torch
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
    import torch

    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
        yield eval_transform(chunk.permute(0, 3, 1, 2), spec)


def resolve_device(name: str, key: str = "features.device") -> torch.device:
    """``auto`` = the first CUDA device if there is one, else the CPU; ``key`` names the config
    key in the error."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"config key '{key}' is '{name}' but no CUDA device is visible")
    return torch.device(name)


def image_batches(files_path: str | Path, kind: str, root: str | Path, preprocessing: str | None,
                  spec: dict, batch_size: int, workers: int = 0, pin_memory: bool = False):
    """(DataLoader, N) over a real data set's split: adapter -> PIL RGB -> paper eval transform.

    ``files_path`` is the ``{split}_files.txt`` list the integrity rule wrote (its order is the
    order of the labels file)."""
    from workflow_scripts.datasets.loader import ImageList, make_loader, read_file_list
    from workflow_scripts.datasets.transforms import eval_transform as pil_eval_transform

    items = read_file_list(files_path)
    dataset = ImageList(kind, root, items, pil_eval_transform(spec, preprocessing))
    return make_loader(dataset, batch_size, workers, pin_memory=pin_memory), len(items)


def extract(backbone: torch.nn.Module, batches: Iterator[torch.Tensor], total: int, *,
            device: str | torch.device = "cpu", bf16: bool = False, channels_last: bool = False,
            log_every: float = 60.0, label: str = "") -> np.ndarray:
    """Run ``backbone`` in eval mode over ``batches``; float32 [total, D].

    GPU-ready: ``device`` (the backbone is moved there), optional bfloat16 autocast and
    channels-last memory format; progress (images, img/s, ETA) is logged every ``log_every``
    seconds."""
    import torch

    with torch.inference_mode():
        return _extract(backbone, batches, total, device=torch.device(device), bf16=bf16,
                        channels_last=channels_last, log_every=log_every, label=label)


def _extract(backbone, batches, total, *, device, bf16, channels_last, log_every, label):
    import torch

    backbone.eval().to(device)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    out = None
    filled = 0
    started = last = time.perf_counter()
    for batch in batches:
        x = batch.to(device, non_blocking=True)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            emb = backbone(x)
        emb = emb.float().cpu()
        if out is None:
            out = np.empty((total, emb.shape[1]), dtype=np.float32)
        if filled + len(emb) > total:
            raise RuntimeError(f"extracted more than the expected {total} embeddings")
        out[filled:filled + len(emb)] = emb.numpy()
        filled += len(emb)
        now = time.perf_counter()
        if now - last >= log_every:
            last = now
            rate = filled / (now - started)
            log.info("%s%d / %d images (%.0f%%), %.1f img/s, about %.0f s left", label, filled,
                     total, 100 * filled / total, rate, (total - filled) / max(rate, 1e-9))
    if out is None or filled != total:
        raise RuntimeError(f"extracted {filled} embeddings, expected {total}")
    seconds = time.perf_counter() - started
    log.info("%sextracted %d x %d features in %.1f s (%.1f img/s) on %s%s%s", label, total,
             out.shape[1], seconds, total / max(seconds, 1e-9), device, " bf16" if bf16 else "",
             " channels_last" if channels_last else "")
    return out


def extract_split(backbone: torch.nn.Module, images_path: str | Path, source: dict, spec: dict,
                  options: dict, label: str = "") -> np.ndarray:
    """Features of one split: ``source`` is {kind, root, preprocessing} of the data set (kind
    ``synthetic``: ``images_path`` is the uint8 array; otherwise the file list); ``options`` is
    the configuration's ``features`` section."""
    device = resolve_device(options.get("device", "cpu"))
    batch_size = options["batch_size"]
    if source["kind"] == "synthetic":
        images = np.load(images_path, allow_pickle=False)
        batches, total = array_batches(images, spec, batch_size), len(images)
    else:
        batches, total = image_batches(
            images_path, source["kind"], source["root"], source.get("preprocessing"), spec,
            batch_size, options.get("workers", 0), pin_memory=device.type == "cuda")
    return extract(backbone, batches, total, device=device, bf16=options.get("bf16", False),
                   channels_last=options.get("channels_last", False),
                   log_every=options.get("log_every", 60.0), label=label)


def check_split_sizes(splits: list[tuple[str, str, str, str, str]]) -> None:
    """Before any extraction: each (dataset, split, kind, images, labels) has as many labels as
    images, and every file reads (an error names data set, split and file)."""
    from workflow_scripts.io import load_npy

    for dataset, split, kind, images_path, labels_path in splits:
        where = f"data set '{dataset}', split '{split}'"
        labels = load_npy(labels_path, f"the labels of {where}", mmap_mode="r")
        if kind == "synthetic":
            n_images = len(load_npy(images_path, f"the images of {where}", mmap_mode="r"))
        else:
            n_images = len(Path(images_path).read_text().splitlines())
        if labels.ndim != 1 or len(labels) != n_images:
            raise ValueError(f"{where}: '{images_path}' lists {n_images} images but the labels "
                             f"'{labels_path}' have shape {labels.shape}")


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
    from workflow_scripts.io import load_npy

    where = f"model '{model}', data set '{dataset}', split '{split}'"
    features = load_npy(path, f"the features of {where}").astype(np.float32, copy=False)
    if features.ndim != 2:
        raise ValueError(f"features '{path}' ({where}) have shape {features.shape}, expected [N, D]")
    check_finite(features, model, dataset, split)
    return features


def load_labelled(features_path: str | Path, labels_path: str | Path, model: str, dataset: str,
                  split: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of one split, checked to describe the same N images."""
    from workflow_scripts.io import load_npy

    features = load_features(features_path, model, dataset, split)
    labels = load_npy(labels_path, f"the labels of data set '{dataset}', split '{split}'")
    if labels.ndim != 1 or len(labels) != len(features):
        raise ValueError(
            f"model '{model}', data set '{dataset}', split '{split}': the features "
            f"'{features_path}' have {len(features)} rows but the labels '{labels_path}' have "
            f"shape {labels.shape}"
        )
    return features, labels
