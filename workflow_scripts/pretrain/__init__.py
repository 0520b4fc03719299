"""Pre-training methods of the demo zoo: one module per method.

Each module defines ``Method(backbone, hp, num_classes)``, an ``nn.Module`` with
``loss(images, labels, gen)`` (images: float [B, 3, H, W] in [0, 1], un-augmented) and
``after_step(progress)``; :func:`workflow_scripts.pretrain.loop.pretrain` drives any of them
with the same optimiser, schedule and step budget. Method modules import torch, so they are
imported lazily by name.
"""

from __future__ import annotations

import importlib

from workflow_scripts import registry


def get_method(name: str):
    """The ``Method`` class of the named pre-training method."""
    if name not in registry.METHODS:
        raise ValueError(
            f"unknown pre-training method '{name}' (known: {', '.join(registry.METHODS)})"
        )
    if name == "random":
        return None
    return importlib.import_module(f"workflow_scripts.pretrain.{name}").Method
