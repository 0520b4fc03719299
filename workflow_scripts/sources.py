"""Image sources of the trained protocols (fine-tuning, few-shot): mini-batches of normalised
images and labels, from the demo's uint8 arrays or from a real data set's files.

* :class:`ArraySource` (synthetic sets): the whole split as a float tensor; train batches are
  drawn with ``torch.randperm`` and augmented in batch (``augment.weak_view``), all from the
  caller's generator.
* :class:`FileSource` (real sets): the integrity rule's file list read through the data set's
  adapter and the paper's train / eval transform in a ``DataLoader`` (``workers`` processes).
  Each epoch's shuffling and the workers' augmentation seeds derive from one number drawn from
  the caller's generator (with ``workers = 0`` the augmentation draws from the global torch
  RNG instead); a resumed run restores both, so it sees exactly the batches of an
  uninterrupted one.

Both drop a final batch of one image (BatchNorm cannot train on it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from workflow_scripts.augment import normalize, to_float_images, weak_view


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

    def train_batches(self, batch_size: int, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._float is None:
            self._float = to_float_images(self.images)
        labels = torch.from_numpy(self.labels)
        order = torch.randperm(len(self), generator=gen)
        for idx in torch.split(order, batch_size):
            if len(idx) > 1:
                yield normalize(weak_view(self._float[idx], gen), self.mean, self.std), labels[idx]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            x = to_float_images(self.images[start:start + batch_size])
            yield normalize(x, self.mean, self.std), torch.from_numpy(self.labels[start:start + batch_size])


class FileSource:
    def __init__(self, kind: str, root: str | Path, items: list[str], labels: np.ndarray,
                 spec: dict, preprocessing: str | None = None, workers: int = 0) -> None:
        if len(items) != len(labels):
            raise ValueError(f"{len(items)} files but {len(labels)} labels")
        self.kind, self.root, self.items = kind, Path(root), list(items)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.spec, self.preprocessing, self.workers = spec, preprocessing, workers

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> FileSource:
        return FileSource(self.kind, self.root, [self.items[i] for i in index], self.labels[index],
                          self.spec, self.preprocessing, self.workers)

    def _loader(self, transform, batch_size: int, seed: int | None):
        from workflow_scripts.datasets.loader import ImageList, make_loader

        data = ImageList(self.kind, self.root, self.items, transform, self.labels)
        return make_loader(data, batch_size, self.workers, shuffle=seed is not None, seed=seed,
                           pin_memory=torch.cuda.is_available())

    def train_batches(self, batch_size: int, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from workflow_scripts.datasets.transforms import train_transform

        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        for x, y in self._loader(train_transform(self.spec, self.preprocessing), batch_size, seed):
            if len(y) > 1:
                yield x, y

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from workflow_scripts.datasets.transforms import eval_transform

        yield from self._loader(eval_transform(self.spec, self.preprocessing), batch_size, None)


def open_split(source: dict, images_path: str | Path, labels_path: str | Path, spec: dict,
               data_root: str | Path, workers: int = 0) -> ArraySource | FileSource:
    """The source of one split: ``source`` is the data set's {kind, root, preprocessing};
    ``images_path`` the uint8 array (synthetic) or the integrity rule's file list."""
    from workflow_scripts.io import load_npy

    where = f"data set '{source['key']}'" if source.get("key") else "the data set"
    labels = load_npy(labels_path, f"the labels of {where}")
    if source["kind"] == "synthetic":
        images = load_npy(images_path, f"the images of {where}")
        if len(images) != len(labels):
            raise ValueError(f"{where}: the images '{images_path}' hold {len(images)} images but "
                             f"the labels '{labels_path}' {len(labels)}")
        return ArraySource(images, labels, spec["mean"], spec["std"])
    from workflow_scripts.datasets import resolve_root
    from workflow_scripts.datasets.loader import read_file_list

    return FileSource(source["kind"], resolve_root(source, data_root), read_file_list(images_path),
                      labels, spec, source.get("preprocessing"), workers)
