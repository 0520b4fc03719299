"""Image sources of the trained protocols (fine-tuning, few-shot): mini-batches of images and
labels, from the demo's uint8 arrays or from a real data set's files.

An epoch is a *plan* drawn from the caller's generator (:meth:`plan_epoch`: the sample order,
and for files one augmentation seed); :meth:`train_batches` walks the plan's global batches from
any step ``start`` and, for data-parallel training, yields only this rank's shard of each
global batch (``shard = (rank, world)``: ``torch.tensor_split`` of the batch, so the global
batch and sample order do not depend on the number of processes). :meth:`prepare` moves a
batch to the device and finishes it there.

* :class:`ArraySource` (synthetic sets): the whole split as a float tensor; the order comes
  from ``torch.randperm`` and each global batch is augmented in one go (``augment.weak_view``)
  from the caller's generator, so a resumed epoch restores that generator's state (the
  training state holds it) and skips the consumed batches without drawing for them.
* :class:`FileSource` (real sets): the integrity rule's file list read through the data set's
  adapter and the paper's train / eval transform in a ``DataLoader`` (``workers`` processes)
  that ships uint8 crops; normalisation runs on the device (:func:`normalize_batch`). Sample
  ``p`` of an epoch is augmented from its own seed (plan seed + p), so its crop depends neither
  on the worker count nor on the samples before it: a resumed epoch decodes only the samples
  it has not consumed, and 1 or N processes see the same augmented images.

Both drop a final batch of one image (BatchNorm cannot train on it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from workflow_scripts.augment import normalize, to_float_images, weak_view

Shard = tuple[int, int]  # (rank, world size)


def global_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """The epoch's global batches of sample indices; a final batch of one is dropped."""
    batches = list(torch.split(order, batch_size))
    if batches and len(batches[-1]) < 2:
        batches.pop()
    return batches


def shard_positions(size: int, shard: Shard) -> torch.Tensor:
    """Positions within a global batch of ``size`` that rank ``shard[0]`` of ``shard[1]`` takes."""
    rank, world = shard
    return torch.tensor_split(torch.arange(size), world)[rank]


class ArraySource:
    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.mean, self.std = mean, std
        self._float: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ArraySource:
        return ArraySource(self.images[index], self.labels[index], self.mean, self.std)

    def plan_epoch(self, gen: torch.Generator) -> dict:
        return {"order": torch.randperm(len(self), generator=gen)}

    def train_batches(
        self,
        batch_size: int,
        gen: torch.Generator,
        plan: dict,
        start: int = 0,
        shard: Shard = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Global batches ``start``, ``start + 1``, ... of ``plan``; ``gen`` must be in the state
        it had after batch ``start - 1`` (each batch's augmentation draws from it)."""
        if self._float is None:
            self._float = to_float_images(self.images)
        labels = torch.from_numpy(self.labels)
        for idx in global_batches(plan["order"], batch_size)[start:]:
            x = normalize(weak_view(self._float[idx], gen), self.mean, self.std)
            y = labels[idx]
            if shard[1] > 1:  # every rank augments the global batch: one generator stream
                part = shard_positions(len(idx), shard)
                x, y = x[part], y[part]
            yield x, y

    @staticmethod
    def prepare(x: torch.Tensor, device: torch.device) -> torch.Tensor:
        return x.to(device, non_blocking=True)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            x = to_float_images(self.images[start : start + batch_size])
            yield (
                normalize(x, self.mean, self.std),
                torch.from_numpy(self.labels[start : start + batch_size]),
            )


class FileSource:
    def __init__(
        self,
        kind: str,
        root: str | Path,
        items: list[str],
        labels: np.ndarray,
        spec: dict,
        preprocessing: str | None = None,
        workers: int = 0,
    ) -> None:
        if len(items) != len(labels):
            raise ValueError(f"{len(items)} files but {len(labels)} labels")
        self.kind, self.root, self.items = kind, Path(root), list(items)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.spec, self.preprocessing, self.workers = spec, preprocessing, workers

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> FileSource:
        return FileSource(
            self.kind,
            self.root,
            [self.items[i] for i in index],
            self.labels[index],
            self.spec,
            self.preprocessing,
            self.workers,
        )

    def _loader(self, transform, batch_size: int, batch_sampler=None):
        from workflow_scripts.datasets.loader import ImageList, make_loader

        data = ImageList(self.kind, self.root, self.items, transform, self.labels)
        return make_loader(
            data,
            batch_size,
            self.workers,
            pin_memory=torch.cuda.is_available(),
            batch_sampler=batch_sampler,
        )

    def plan_epoch(self, gen: torch.Generator) -> dict:
        order = torch.randperm(len(self), generator=gen)
        return {"order": order, "seed": int(torch.randint(0, 2**62, (1,), generator=gen))}

    def train_batches(
        self,
        batch_size: int,
        gen: torch.Generator,
        plan: dict,
        start: int = 0,
        shard: Shard = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """uint8 batches of this rank's samples of global batches ``start``, ... of ``plan``
        (``gen`` is not used within an epoch)."""
        from workflow_scripts.datasets.transforms import train_transform

        keys = _PlanKeys(plan, batch_size, start, shard)
        transform = train_transform(self.spec, self.preprocessing, normalize=False)
        yield from self._loader(transform, batch_size, keys)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from workflow_scripts.datasets.transforms import eval_transform

        yield from self._loader(
            eval_transform(self.spec, self.preprocessing, normalize=False), batch_size
        )

    def prepare(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        from workflow_scripts.datasets.transforms import normalize_batch

        return normalize_batch(x.to(device, non_blocking=True), self.spec)


class _PlanKeys:
    """Batch sampler of a plan: per global batch from ``start``, the ``(index, seed)`` keys of
    this rank's samples (seed = plan seed + position in the epoch). Lazy: ImageNet's 1.28 M
    keys are never held at once."""

    def __init__(self, plan: dict, batch_size: int, start: int, shard: Shard) -> None:
        self.batches = global_batches(plan["order"], batch_size)[start:]
        self.first = start * batch_size
        self.batch_size, self.seed, self.shard = batch_size, plan["seed"], shard

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for step, idx in enumerate(self.batches):
            base = self.seed + self.first + step * self.batch_size
            part = shard_positions(len(idx), self.shard).tolist()
            yield [(int(idx[j]), (base + j) % 2**63) for j in part]


def open_split(
    source: dict,
    images_path: str | Path,
    labels_path: str | Path,
    spec: dict,
    data_root: str | Path,
    workers: int = 0,
) -> ArraySource | FileSource:
    """The source of one split: ``source`` is the data set's {kind, root, preprocessing};
    ``images_path`` the uint8 array (synthetic) or the integrity rule's file list."""
    from workflow_scripts.io import load_npy

    where = f"data set '{source['key']}'" if source.get("key") else "the data set"
    labels = load_npy(labels_path, f"the labels of {where}")
    if source["kind"] == "synthetic":
        images = load_npy(images_path, f"the images of {where}")
        if len(images) != len(labels):
            raise ValueError(
                f"{where}: the images '{images_path}' hold {len(images)} images but "
                f"the labels '{labels_path}' {len(labels)}"
            )
        return ArraySource(images, labels, spec["mean"], spec["std"])
    from workflow_scripts.datasets import resolve_root
    from workflow_scripts.datasets.loader import read_file_list

    return FileSource(
        source["kind"],
        resolve_root(source, data_root),
        read_file_list(images_path),
        labels,
        spec,
        source.get("preprocessing"),
        workers,
    )
