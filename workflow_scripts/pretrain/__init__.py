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


def method_module(name: str) -> str | None:
    """The package module (relative to ``workflow_scripts``) of a pre-training method; None
    for ``random`` (the seeded initialisation, no training)."""
    if name not in registry.METHODS:
        raise ValueError(
            f"unknown pre-training method '{name}' (known: {', '.join(registry.METHODS)})"
        )
    return None if name == "random" else f"pretrain.{name}"


def get_method(name: str):
    """The ``Method`` class of the named pre-training method (None for ``random``)."""
    module = method_module(name)
    if module is None:
        return None
    return importlib.import_module(f"workflow_scripts.{module}").Method
