"""Linear probe on cached features (protocol ``linear``): every head of
:func:`~workflow_scripts.linear_heads.head_grid` trained in one pass per data set of the job
(:func:`~workflow_scripts.linear_heads.train_heads`, the paper's recipe), rows written with the
job's provenance columns."""

from __future__ import annotations

import logging

import torch

from workflow_scripts.linear_heads import Recipe, head_grid, train_heads
from workflow_scripts.probing import job_datasets, write_rows


def run_job(
    data,
    outputs,
    *,
    model: str,
    num_classes,
    arms,
    settings: dict,
    threads: int,
    code: str,
    log: logging.Logger,
) -> None:
    """One linear_probe job: for each (data set, train x, train y, test x, test y) of ``data``
    (``feature_cache.labelled_splits``) all heads of ``head_grid(arms, settings)`` trained on
    ``settings["device"]`` (config section ``linear``; ``auto`` = CUDA when visible) with
    ``threads`` torch threads, their rows written to the matching ``outputs`` file with the
    job's provenance columns."""
    from workflow_scripts.devices import resolve_device

    torch.set_num_threads(max(1, int(threads)))
    cfg = settings
    device = resolve_device(settings["device"], "linear.device")
    log.info("linear heads train on %s", device)
    heads, recipe = head_grid(arms, cfg), Recipe.from_config(cfg)
    for (dataset, xtr, ytr, xte, yte), classes, out in job_datasets(data, num_classes, outputs):
        results, _ = train_heads(xtr, ytr, xte, yte, classes, heads, recipe, device=device)
        frame = write_rows(
            out,
            results,
            model=model,
            dataset=dataset,
            protocol="linear",
            code_version=code,
            device=device.type,
        )
        log.info(
            "%s / %s: %s",
            model,
            dataset,
            frame[["arm", "base_lr", "seed", "top1"]].to_dict("records"),
        )
