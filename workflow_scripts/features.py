"""Cached feature extraction: backbone in eval mode, eval transform, one .npy per split.

``results/features/{model}/{dataset}/{split}.npy`` holds float32 (or float16) [N, D] with row i
belonging to ``results/labels/{dataset}/{split}.npy``[i]; a JSON sidecar records the weights'
sha256, the transform, N, D and dtype. Reading the cache back is
:mod:`workflow_scripts.feature_cache` (the probes' entry point, which needs no data set adapter).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workflow_scripts.devices import resolve_device
from workflow_scripts.feature_cache import check_finite
from workflow_scripts.io import save_json
from workflow_scripts.schema import schema_defaults

# torch is imported inside the functions that need it (nothing runs at import time).
if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def eval_crop(images: torch.Tensor, spec: dict) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> uint8 crops: Resize(shorter side) -> CenterCrop.

    ``spec``: resize (int or None), crop (int or None), interpolation."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    x = images
    if spec.get("resize"):
        mode = InterpolationMode(spec["interpolation"])
        x = TF.resize(x, [spec["resize"]], interpolation=mode, antialias=True)
    if spec.get("crop"):
        x = TF.center_crop(x, [spec["crop"], spec["crop"]])
    return x


def eval_transform(images: torch.Tensor, spec: dict) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> normalised float: Resize(shorter side) -> CenterCrop -> Normalize
    (``spec`` also gives mean and std)."""
    from workflow_scripts.datasets.transforms import normalize_batch

    return normalize_batch(eval_crop(images, spec), spec)


def array_batches(images: np.ndarray, spec: dict, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of uint8 eval crops from a uint8 [N, H, W, 3] array (the synthetic sets);
    normalise them with ``normalize_batch`` (``extract(..., spec=spec)`` does, on the device)."""
    import torch

    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.array(images[start : start + batch_size]))  # a writable copy
        yield eval_crop(chunk.permute(0, 3, 1, 2), spec)


def image_batches(
    files_path: str | Path,
    kind: str,
    root: str | Path,
    preprocessing: str | None,
    spec: dict,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
):
    """(DataLoader, N) over a real data set's split: adapter -> PIL RGB -> the paper's eval
    crop as uint8 (normalised on the device by ``extract``).

    ``files_path`` is the ``{split}_files.txt`` list the integrity rule wrote (its order is the
    order of the labels file)."""
    from workflow_scripts.datasets.loader import ImageList, make_loader, read_file_list
    from workflow_scripts.datasets.transforms import eval_transform as pil_eval_transform

    items = read_file_list(files_path)
    dataset = ImageList(kind, root, items, pil_eval_transform(spec, preprocessing, normalize=False))
    return make_loader(dataset, batch_size, workers, pin_memory=pin_memory), len(items)


def extract(
    backbone: torch.nn.Module,
    batches: Iterator[torch.Tensor],
    total: int,
    *,
    spec: dict,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    log_every: float = 60.0,
    label: str = "",
    out: np.ndarray | None = None,
    dtype: str = "float32",
    where: tuple[str, str, str] | None = None,
) -> np.ndarray:
    """Run ``backbone`` in eval mode over ``batches``; [total, D] features.

    ``batches``: uint8 crops, normalised on the device with ``spec``'s mean and std. GPU-ready: ``device`` (the backbone is
    moved there), ``precision`` (``workflow_scripts.precision``) and channels-last; progress
    (images, img/s, ETA) is logged every ``log_every`` seconds.

    Rows are written batch by batch into ``out`` (e.g. a memory-mapped ``.npy``; created as
    float32 in memory when None) in ``dtype``, each batch checked for NaN/inf (and float16
    overflow) first: the job never holds more than the array plus a few batches. ``where`` =
    (model, data set, split) names the culprit in that error."""
    import torch

    from workflow_scripts import precision as precisions

    device = torch.device(device)
    precisions.configure(precision, device, benchmark=channels_last)
    with torch.inference_mode():
        return _extract(
            backbone,
            batches,
            total,
            spec=spec,
            device=device,
            precision=precision,
            channels_last=channels_last,
            log_every=log_every,
            label=label,
            out=out,
            dtype=dtype,
            where=where or ("?", "?", "?"),
        )


def _extract(
    backbone,
    batches,
    total,
    *,
    spec,
    device,
    precision,
    channels_last,
    log_every,
    label,
    out,
    dtype,
    where,
):
    import torch

    from workflow_scripts import precision as precisions
    from workflow_scripts.datasets.transforms import normalize_batch

    backbone.eval().to(device)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    filled = 0
    started = last = time.perf_counter()
    for batch in batches:
        x = normalize_batch(batch.to(device, non_blocking=True), spec)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with precisions.autocast(precision, device):
            emb = backbone(x)
        emb = emb.float().cpu().numpy()
        if out is None:
            out = np.empty((total, emb.shape[1]), dtype=np.float32)
        if filled + len(emb) > total:
            raise RuntimeError(f"extracted more than the expected {total} embeddings")
        if emb.shape[1] != out.shape[1]:
            raise RuntimeError(
                f"the backbone gives {emb.shape[1]}-d features, the output holds {out.shape[1]}"
            )
        chunk = emb if dtype == "float32" else emb.astype(dtype)
        check_finite(emb, *where, offset=filled)
        if chunk is not emb and not np.isfinite(chunk).all():
            raise ValueError(
                f"features of model '{where[0]}' on data set '{where[1]}' split "
                f"'{where[2]}' overflow {dtype}"
            )
        out[filled : filled + len(emb)] = chunk
        filled += len(emb)
        now = time.perf_counter()
        if now - last >= log_every:
            last = now
            rate = filled / (now - started)
            log.info(
                "%s%d / %d images (%.0f%%), %.1f img/s, about %.0f s left",
                label,
                filled,
                total,
                100 * filled / total,
                rate,
                (total - filled) / max(rate, 1e-9),
            )
    if out is None or filled != total:
        raise RuntimeError(f"extracted {filled} embeddings, expected {total}")
    seconds = time.perf_counter() - started
    log.info(
        "%sextracted %d x %d features in %.1f s (%.1f img/s) on %s, %s%s",
        label,
        total,
        out.shape[1],
        seconds,
        total / max(seconds, 1e-9),
        device,
        precisions.effective(precision, device),
        " channels_last" if channels_last else "",
    )
    return out


def split_batches(
    images_path: str | Path, source: dict, spec: dict, options: dict, device: torch.device
):
    """(uint8 batches, N) of one split: ``source`` is {kind, root, preprocessing} of the data
    set (kind ``synthetic``: ``images_path`` is the uint8 array; otherwise the file list)."""
    batch_size = options["batch_size"]
    if source["kind"] == "synthetic":
        images = np.load(images_path, allow_pickle=False, mmap_mode="r")
        return array_batches(images, spec, batch_size), len(images)
    return image_batches(
        images_path,
        source["kind"],
        source["root"],
        source.get("preprocessing"),
        spec,
        batch_size,
        options["workers"],
        pin_memory=device.type == "cuda",
    )


def extract_split_to(
    path: str | Path,
    backbone: torch.nn.Module,
    images_path: str | Path,
    source: dict,
    spec: dict,
    options: dict,
    where: tuple[str, str, str],
    label: str = "",
) -> tuple[int, int]:
    """Features of one split written to the ``.npy`` at ``path``: into a memory-mapped
    temporary file next to it, renamed onto ``path`` once complete (``io.atomic_path``);
    ``options`` is the configuration's ``features`` section (a key left out: its schema
    default). Returns (N, D)."""
    from workflow_scripts.io import atomic_path

    options = schema_defaults("features") | options
    device = resolve_device(options["device"])
    batches, total = split_batches(images_path, source, spec, options, device)
    dim = backbone.embed_dim
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=options["dtype"], shape=(total, dim))
        try:
            extract(
                backbone,
                batches,
                total,
                spec=spec,
                device=device,
                precision=options["precision"],
                channels_last=options["channels_last"],
                log_every=options["log_every"],
                label=label,
                out=out,
                dtype=options["dtype"],
                where=where,
            )
            out.flush()
        finally:
            del out
    return total, dim


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
            raise ValueError(
                f"{where}: '{images_path}' lists {n_images} images but the labels "
                f"'{labels_path}' have shape {labels.shape}"
            )


def write_sidecar(
    sidecar: str | Path,
    *,
    n: int,
    d: int,
    model: str,
    dataset: str,
    split: str,
    dtype: str,
    weights_sha256: str,
    transform: dict,
    labels_path: str,
    precision: str,
    device: str,
) -> None:
    """The JSON sidecar of one split's features (what made them)."""
    save_json(
        sidecar,
        {
            "model": model,
            "dataset": dataset,
            "split": split,
            "n": int(n),
            "d": int(d),
            "dtype": dtype,
            "weights_sha256": weights_sha256,
            "transform": transform,
            "labels": str(labels_path),
            "backbone_mode": "eval",
            "precision": precision,
            "device": device,
        },
    )


def run_job(
    backbone: torch.nn.Module,
    *,
    weights: str | Path,
    model: str,
    datasets: list[str],
    splits: list[str],
    images: list[str],
    labels: list[str],
    features: list[str],
    sidecars: list[str],
    sources: dict,
    transform: dict,
    options: dict,
    data_root: str | Path,
    log: logging.Logger,
) -> list[tuple[int, int]]:
    """One extract_features job: the features of each (data set, split) pair -- ``datasets``,
    ``splits``, their ``images`` (array or file list), ``labels`` and the ``features`` and
    ``sidecars`` to write, all in the same order -- through ``backbone`` (loaded from
    ``weights``, whose sha256 the sidecars record). ``sources``: data set -> {kind, ...} (a real
    set's root is resolved under ``data_root`` here: it is not a param, so moving the data
    reruns nothing); ``options``: the ``features`` section. Every split's size is checked
    before the first extraction. Returns (N, D) per pair."""
    from workflow_scripts.datasets import resolve_root
    from workflow_scripts.io import sha256_file
    from workflow_scripts.precision import effective

    weights_sha = sha256_file(weights)
    device = resolve_device(options["device"])
    jobs = list(zip(datasets, splits, images, labels, features, sidecars, strict=True))
    check_split_sizes(
        [
            (d, s, sources[d]["kind"], images_path, labels_path)
            for d, s, images_path, labels_path, _, _ in jobs
        ]
    )
    shapes = []
    for dataset, split, images_path, labels_path, out, sidecar in jobs:
        source = sources[dataset]
        recorded = transform  # the transform the sidecar records
        if source["kind"] != "synthetic":
            source = source | {"root": str(resolve_root(source, data_root))}
            recorded = transform | {"preprocessing": source["preprocessing"]}
        n, d = extract_split_to(
            out,
            backbone,
            images_path,
            source,
            transform,
            options,
            where=(model, dataset, split),
            label=f"{model} / {dataset} / {split}: ",
        )
        write_sidecar(
            sidecar,
            n=n,
            d=d,
            model=model,
            dataset=dataset,
            split=split,
            dtype=options["dtype"],
            weights_sha256=weights_sha,
            transform=recorded,
            labels_path=labels_path,
            precision=effective(options["precision"], device),
            device=device.type,
        )
        log.info("%s / %s / %s: %d x %d", model, dataset, split, n, d)
        shapes.append((n, d))
    return shapes
