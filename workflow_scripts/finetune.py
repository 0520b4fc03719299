"""Full and few-shot fine-tuning (the paper's recipe), resumable from a per-epoch state file.

Recipe (shared/spec/paper.md): SGD momentum 0.9, weight decay 0, the same lr for backbone and
head (few-shot: its own head lr), warm-up epochs then cosine stepped per epoch (few-shot: no
warm-up), gradient-norm clip 0.5, cross-entropy on the train augmentation. ViTs only: layer-wise
lr decay 0.65 applied to the real block structure (``layer_decay_scales``), label smoothing 0.1
and drop-path 0.2 -- all three actually applied, unlike the authors' code for some models. The
BN arm puts ``BatchNorm1d`` before the linear head (init N(0, 0.01), bias 0).

``authors_quirks: true`` restores the authors' fine-tuning behaviour (shared/spec/paper.md,
quirk 3; ``with_authors_quirks``): no drop-path for MAE and MaskFeat, no layer decay for MaskFeat
(its parameter names did not match the decay rule), and the final norm at ``layer_decay`` x lr
(the last block's rate) instead of the full lr.

Resume: after every epoch the whole training state (model, optimiser, scheduler, epoch, every
random generator) is written atomically to ``state_path``, which lives outside the rule's
declared outputs (Snakemake deletes those when a job fails). A rerun continues from the last
completed epoch and ends with exactly the weights of an uninterrupted run (tested).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.schedules import warmup_cosine_epochs

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FinetuneRecipe:
    epochs: int
    batch_size: int
    lr: float = 0.1
    head_lr: float | None = None  # None: the backbone lr
    warmup_epochs: int = 5
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float | None = 0.5
    # ViT-only extras (ignored for ResNets)
    layer_decay: float = 0.65
    label_smoothing: float = 0.1
    drop_path: float = 0.2
    seed: int = 42
    # True: the authors' quirks (see ``with_authors_quirks``); False: the paper's recipe as written
    authors_quirks: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"epochs ({self.epochs}) must be >= 1 and batch_size ({self.batch_size}) >= 2")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be in [0, epochs={self.epochs})"
            )


class Classifier(nn.Module):
    """backbone -> (BatchNorm1d ->) Linear, the BN arm as for the linear probe."""

    def __init__(self, backbone: nn.Module, num_classes: int, arm: str, init_std: float = 0.01):
        super().__init__()
        if arm not in ("raw", "bn"):
            raise ValueError(f"unknown arm '{arm}' (expected 'raw' or 'bn')")
        self.backbone = backbone
        dim = backbone.embed_dim
        self.bn = nn.BatchNorm1d(dim) if arm == "bn" else nn.Identity()
        self.head = nn.Linear(dim, num_classes)
        nn.init.normal_(self.head.weight, std=init_std)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.backbone(x)))


def is_vit(backbone: nn.Module) -> bool:
    return hasattr(backbone, "blocks") and hasattr(backbone, "patch_embed")


# Methods whose fine-tuning the authors' code ran without drop-path / without layer decay.
AUTHORS_NO_DROP_PATH = frozenset({"mae", "maskfeat"})
AUTHORS_NO_LAYER_DECAY = frozenset({"maskfeat"})


def with_authors_quirks(recipe: FinetuneRecipe, method: str) -> FinetuneRecipe:
    """The recipe the authors' code actually ran for ``method`` (when ``authors_quirks``)."""
    if not recipe.authors_quirks:
        return recipe
    changes = {}
    if method in AUTHORS_NO_DROP_PATH:
        changes["drop_path"] = 0.0
    if method in AUTHORS_NO_LAYER_DECAY:
        changes["layer_decay"] = 1.0
    return dataclasses.replace(recipe, **changes)


def vit_layer_id(name: str, depth: int, final_norm_in_last_block: bool = False) -> int:
    """Layer index of a ViT backbone parameter for layer-wise lr decay (BEiT/MAE convention):
    embeddings 0, block i -> i + 1, everything after the blocks (final norms) depth + 1 -- or
    depth, the last block's index, with ``final_norm_in_last_block`` (the authors' code)."""
    if name.split(".")[0] in {"cls_token", "pos_embed", "patch_embed", "reg_token", "mask_token"}:
        return 0
    match = re.match(r"blocks\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return depth if final_norm_in_last_block else depth + 1


def layer_decay_scales(
    backbone: nn.Module, decay: float, final_norm_in_last_block: bool = False
) -> dict[str, float]:
    """lr multiplier per backbone parameter: decay ** (depth + 1 - layer id)."""
    depth = len(backbone.blocks)
    return {
        name: decay ** (depth + 1 - vit_layer_id(name, depth, final_norm_in_last_block))
        for name, _ in backbone.named_parameters()
    }


def param_groups(model: Classifier, recipe: FinetuneRecipe) -> list[dict]:
    """One optimiser group per distinct lr; the head (and BN arm) at the head lr."""
    head_lr = recipe.head_lr if recipe.head_lr is not None else recipe.lr
    scales = (
        layer_decay_scales(model.backbone, recipe.layer_decay, recipe.authors_quirks)
        if is_vit(model.backbone) else {}
    )
    by_lr: dict[float, list[nn.Parameter]] = {}
    names: dict[float, list[str]] = {}
    for name, param in model.backbone.named_parameters():
        lr = recipe.lr * scales.get(name, 1.0)
        by_lr.setdefault(lr, []).append(param)
        names.setdefault(lr, []).append(f"backbone.{name}")
    for prefix, module in (("bn", model.bn), ("head", model.head)):
        for name, param in module.named_parameters():
            by_lr.setdefault(head_lr, []).append(param)
            names.setdefault(head_lr, []).append(f"{prefix}.{name}")
    return [{"params": by_lr[lr], "lr": lr, "names": names[lr]} for lr in sorted(by_lr)]


@torch.no_grad()
def evaluate(model: nn.Module, source, num_classes: int, batch_size: int = 512,
             device: torch.device | None = None) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (percent; top-5 NaN with <= 5 classes) on an image source."""
    model.eval()
    hits1 = hits5 = n = 0
    for x, y in source.eval_batches(batch_size):
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        hits1 += int((logits.argmax(1) == y).sum())
        if num_classes > 5:
            hits5 += int((logits.topk(5, 1).indices == y[:, None]).any(1).sum())
        n += len(y)
    return hits1 * 100 / n, (hits5 * 100 / n if num_classes > 5 else float("nan"))


def _save_state(path: Path, state: dict) -> None:
    from workflow_scripts.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def finetune(
    backbone: nn.Module,
    train,
    test,
    *,
    num_classes: int,
    arm: str,
    recipe: FinetuneRecipe,
    seed: int,
    state_path: str | Path | None = None,
    fingerprint: str = "",
    on_epoch_end: Callable[[int], None] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[dict, Classifier]:
    """Fine-tune ``backbone`` + head on the image source ``train``, score on ``test``
    (:mod:`workflow_scripts.sources`); return (result dict, model).

    ``backbone`` must already carry the drop-path rate for ViTs (``build_backbone(...,
    drop_path=recipe.drop_path)``). ``on_epoch_end(epoch)`` runs after the state is saved
    (tests use it to simulate a killed job). A state file whose ``fingerprint`` (the run's
    settings and inputs) differs from this run's is ignored, never resumed from; the file is
    deleted once the run completes.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    model = Classifier(backbone, num_classes, arm).to(device)
    vit = is_vit(backbone)
    smoothing = recipe.label_smoothing if vit else 0.0
    groups = param_groups(model, recipe)
    optimizer = torch.optim.SGD(
        [{"params": g["params"], "lr": g["lr"]} for g in groups], lr=groups[0]["lr"],
        momentum=recipe.momentum, weight_decay=recipe.weight_decay,
    )
    scheduler = warmup_cosine_epochs(optimizer, recipe.epochs, recipe.warmup_epochs)
    gen = torch.Generator().manual_seed(seed)
    start_epoch = 0
    state_path = Path(state_path) if state_path else None
    state = (torch.load(state_path, weights_only=True, map_location=device)
             if state_path and state_path.exists() else None)
    if state is not None and state.get("fingerprint") != fingerprint:
        log.info("ignoring %s: it belongs to a run with other settings", state_path)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        start_epoch = int(state["epoch"]) + 1
        log.info("resuming from %s after epoch %d", state_path, start_epoch)
    for epoch in range(start_epoch, recipe.epochs):
        model.train()
        for x, y in train.train_batches(recipe.batch_size, gen):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fine-tuning loss became {loss.item()} in epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
        scheduler.step()
        if state_path:
            _save_state(state_path, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(), "fingerprint": fingerprint,
            })
        log.info("epoch %d/%d: loss %.4f", epoch + 1, recipe.epochs, loss.item())
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    top1, top5 = evaluate(model, test, num_classes, device=device)
    if state_path and state_path.exists():
        state_path.unlink()
    result = {
        "arm": arm, "top1": top1, "top5": top5, "epochs": recipe.epochs,
        "n_train": len(train), "n_test": len(test), "seed": seed,
        "label_smoothing": smoothing,
        "drop_path": recipe.drop_path if vit else 0.0,
        "layer_decay": recipe.layer_decay if vit else 1.0,
    }
    return result, model


def recipe_from_config(cfg: dict) -> FinetuneRecipe:
    fields = {f.name for f in dataclasses.fields(FinetuneRecipe)}
    return FinetuneRecipe(**{k: v for k, v in cfg.items() if k in fields})


def run_protocols(
    *, weights: str, model: dict, protocols: list[str], arms: list[str], train, test,
    subsets: dict[str, dict[int, np.ndarray]], recipes: dict[str, FinetuneRecipe],
    num_classes: int, state_dir: str | Path, weights_sha256: str, device: str = "cpu",
) -> dict[str, list[dict]]:
    """Every trained protocol (``finetune``, ``fewshot<pct>``) x arm of one model, on the image
    sources ``train`` and ``test`` (:mod:`workflow_scripts.sources`).

    ``subsets[protocol]`` maps each few-shot subset seed to its indices into the train split
    (no entry for ``finetune``: the whole split); ``recipes[protocol]`` is the protocol's recipe,
    adjusted per method by ``with_authors_quirks``. Returns result rows per protocol: one per
    (subset seed, arm), with the subset seed in ``subset_seed`` (empty for ``finetune``).
    """
    import json

    from workflow_scripts.backbones import load_backbone

    rows: dict[str, list[dict]] = {}
    for protocol in protocols:
        recipe = with_authors_quirks(recipes[protocol], model["method"])
        rows[protocol] = []
        runs = subsets.get(protocol) or {None: None}
        for subset_seed, index in runs.items():
            images = train if index is None else train.subset(index)
            run_name = protocol if subset_seed is None or len(runs) == 1 else f"{protocol}_s{subset_seed}"
            for arm in arms:
                backbone = load_backbone(weights, model["arch"], model["embedding"], recipe.drop_path)
                fingerprint = json.dumps(
                    [dataclasses.asdict(recipe), arm, protocol, subset_seed, weights_sha256,
                     len(images)],
                    sort_keys=True,
                )
                result, _ = finetune(
                    backbone, images, test, num_classes=num_classes, arm=arm, recipe=recipe,
                    seed=recipe.seed, state_path=Path(state_dir) / f"{run_name}_{arm}.pt",
                    fingerprint=fingerprint, device=device,
                )
                log.info("%s %s %s: top1 %.2f", model["key"], run_name, arm, result["top1"])
                rows[protocol].append({
                    **result, "protocol": protocol,
                    "subset_seed": "" if subset_seed is None else subset_seed,
                })
    return rows
