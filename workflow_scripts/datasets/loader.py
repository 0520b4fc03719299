"""Images of one split through the paper transform, as a torch DataLoader (extraction,
fine-tuning). Items come from the ``{split}_files.txt`` list the integrity rule wrote, so what
was checked is what is read."""

from __future__ import annotations

from pathlib import Path

import torch

from workflow_scripts.datasets import adapter


def read_file_list(path: str | Path) -> list[str]:
    return Path(path).read_text().splitlines()


class ImageList(torch.utils.data.Dataset):
    """``items`` of a data set (kind, root) -> transformed tensors (and labels if given).

    A key is an item index, or ``(index, seed)``: the random transform of that item then draws
    from a torch RNG seeded with ``seed`` (the caller's global RNG is left as it was), so an
    image's augmentation depends on neither the worker that decodes it nor the items before
    it -- a resumed epoch can skip items without decoding them."""

    def __init__(self, kind: str, root: str | Path, items: list[str], transform, labels=None):
        self.load = adapter(kind).load
        self.root = Path(root)
        self.items = items
        self.transform = transform
        self.labels = labels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, seed = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                image = self.transform(self.load(self.root, self.items[index]))
        else:
            index = key
            image = self.transform(self.load(self.root, self.items[index]))
        if self.labels is None:
            return image
        return image, int(self.labels[index])


# Batches each loader worker prepares ahead (torch's default): with uint8 batches of 256
# 224-pixel images that is 2 x 38 MB per worker.
PREFETCH = 2


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
    batch_sampler=None,
):
    """A DataLoader with ``workers`` processes: in order, or over ``batch_sampler`` (an
    iterable of lists of keys, see :class:`ImageList`)."""
    if batch_sampler is not None:
        kwargs = {"batch_sampler": batch_sampler}
    else:
        kwargs = {"batch_size": batch_size, "shuffle": False}
    return torch.utils.data.DataLoader(
        dataset,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=PREFETCH if workers > 0 else None,
        **kwargs,
    )
