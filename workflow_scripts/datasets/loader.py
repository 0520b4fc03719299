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
    """``items`` of a data set (kind, root) -> transformed tensors (and labels if given)."""

    def __init__(self, kind: str, root: str | Path, items: list[str], transform, labels=None):
        self.load = adapter(kind).load
        self.root = Path(root)
        self.items = items
        self.transform = transform
        self.labels = labels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        image = self.transform(self.load(self.root, self.items[index]))
        if self.labels is None:
            return image
        return image, int(self.labels[index])


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int, workers: int = 0,
                shuffle: bool = False, pin_memory: bool = False, seed: int | None = None):
    """A DataLoader in order (or shuffled with a seeded generator) with ``workers`` processes."""
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        pin_memory=pin_memory, persistent_workers=False, generator=generator,
        prefetch_factor=4 if workers > 0 else None,
    )
