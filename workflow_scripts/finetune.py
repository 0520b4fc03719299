"""Full and few-shot fine-tuning (the paper's recipe), resumable from a per-epoch state file.

Recipe (README "Protocols"): SGD momentum 0.9, weight decay 0, the same lr for backbone and
head (few-shot: its own head lr), warm-up epochs then cosine stepped per epoch (few-shot: no
warm-up), gradient-norm clip 0.5, cross-entropy on the train augmentation. ViTs only: layer-wise
lr decay 0.65 applied to the real block structure (``layer_decay_scales``), label smoothing 0.1
and drop-path 0.2 -- all three actually applied, unlike the authors' code for some models. The
BN arm puts ``BatchNorm1d`` before the linear head (init N(0, 0.01), bias 0).

``authors_quirks: true`` restores the authors' fine-tuning behaviour (README "Deviations from the authors' code",
quirk 3; ``with_authors_quirks``): no drop-path for MAE and MaskFeat, no layer decay for MaskFeat
(its parameter names did not match the decay rule), and the final norm at ``layer_decay`` x lr
(the last block's rate) instead of the full lr.

Resume: the whole training state (model, optimiser, scheduler, epoch, step, every random
generator) is written atomically to ``state_path`` at epoch ends, every ``save_minutes`` and on
SIGUSR1/SIGTERM; it lives outside the rule's declared outputs (Snakemake deletes those when a
job fails). A rerun continues from the saved step and ends with exactly the weights of an
uninterrupted run (tested).

Speed (:class:`Speed`, recorded in every result row): precision ``fp32`` / ``tf32`` (the
authors' setting and the default) / ``bf16`` autocast (``workflow_scripts.precision``);
ResNets on CUDA run channels-last with cuDNN autotuning; ``compile`` is opt-in; ``run`` starts N
data-parallel processes (one per GPU).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts import precision as precisions
from workflow_scripts import registry
from workflow_scripts.schedules import warmup_cosine_epochs
from workflow_scripts.schema import FROM_SCHEMA, fill_from_schema

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FinetuneRecipe:
    """A fine-tuning recipe; a field left out takes config key finetune.<field>'s default."""

    epochs: int
    batch_size: int
    lr: float = FROM_SCHEMA
    head_lr: float | None = FROM_SCHEMA  # None: the backbone lr
    warmup_epochs: int = FROM_SCHEMA
    momentum: float = FROM_SCHEMA
    weight_decay: float = FROM_SCHEMA
    grad_clip: float | None = FROM_SCHEMA
    # ViT-only extras (ignored for ResNets)
    layer_decay: float = FROM_SCHEMA
    label_smoothing: float = FROM_SCHEMA
    drop_path: float = FROM_SCHEMA
    seed: int = FROM_SCHEMA
    # True: the authors' quirks (see ``with_authors_quirks``); False: the paper's recipe as written
    authors_quirks: bool = FROM_SCHEMA

    def __post_init__(self) -> None:
        fill_from_schema(self, "finetune")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(
                f"epochs ({self.epochs}) must be >= 1 and batch_size ({self.batch_size}) >= 2"
            )
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be in [0, epochs={self.epochs})"
            )


class Classifier(nn.Module):
    """backbone -> (BatchNorm1d ->) Linear, the BN arm as for the linear probe."""

    def __init__(self, backbone: nn.Module, num_classes: int, arm: str, init_std: float = 0.01):
        super().__init__()
        if arm not in registry.ARMS:
            raise ValueError(f"unknown arm '{arm}' (expected one of {list(registry.ARMS)})")
        self.backbone = backbone
        dim = backbone.embed_dim
        self.bn = nn.BatchNorm1d(dim) if arm == "bn" else nn.Identity()
        self.head = nn.Linear(dim, num_classes)
        nn.init.normal_(self.head.weight, std=init_std)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.backbone(x)))


def is_vit(backbone: nn.Module) -> bool:
    """The recipe's ViT extras apply: a ViT, or a timm row's ViT-like or ConvNeXt backbone
    (``timm_models``: layer decay along timm's block grouping)."""
    if getattr(backbone, "vit_recipe", False):
        return True
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
    """lr multiplier per backbone parameter: decay ** (depth + 1 - layer id). A timm row's
    backbone brings its own (timm's grouping of its blocks)."""
    if hasattr(backbone, "layer_decay_scales"):
        return backbone.layer_decay_scales(decay, final_norm_in_last_block)
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
        if is_vit(model.backbone)
        else {}
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
def evaluate(
    model: nn.Module,
    source,
    num_classes: int,
    batch_size: int = 512,
    device: torch.device | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (percent; top-5 NaN with <= 5 classes) on an image source."""
    device = device or torch.device("cpu")
    model.eval()
    hits1 = hits5 = n = 0
    for x, y in source.eval_batches(batch_size):
        x, y = source.prepare(x, device), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with precisions.autocast(precision, device):
            logits = model(x)
        hits1 += int((logits.argmax(1) == y).sum())
        if num_classes > 5:
            hits5 += int((logits.topk(5, 1).indices == y[:, None]).any(1).sum())
        n += len(y)
    return hits1 * 100 / n, (hits5 * 100 / n if num_classes > 5 else float("nan"))


# Version of the training-state layout; a state file of another version is never resumed.
STATE_FORMAT = 2


@dataclasses.dataclass(frozen=True)
class Speed:
    """How a run executes, not what it computes (up to float rounding): recorded per row."""

    device: str = "cpu"  # a direct caller's; jobs pass finetune.device resolved
    precision: str = FROM_SCHEMA  # see workflow_scripts.precision
    compile: bool = FROM_SCHEMA  # torch.compile the forward/backward
    save_minutes: float = FROM_SCHEMA  # state written at least this often (and at epoch ends)

    def __post_init__(self) -> None:
        fill_from_schema(self, "finetune")


class Preempted(RuntimeError):
    """The job was asked to stop (SIGUSR1 / SIGTERM); its state is saved, a rerun resumes."""


class _StopSignals:
    """SIGUSR1 and SIGTERM set a flag (checked after every step) instead of killing the job.

    Installed only in the main thread (Python's rule); the previous handlers come back on exit."""

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _shard() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless torch.distributed is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _rng_states(device: torch.device) -> dict:
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["cpu"].cpu())
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of a CPU (gloo) process group.

    ``nn.SyncBatchNorm`` refuses CPU tensors, so CPU data-parallel runs (the tests) use this:
    per-channel sum, sum of squares and count are all-reduced with autograd
    (``torch.distributed.nn.functional.all_reduce``), so gradients flow through the global
    statistics as in SyncBatchNorm. Same parameters, buffers and state-dict keys as
    BatchNorm; eval mode uses the running statistics. CUDA runs use ``nn.SyncBatchNorm``."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [d for d in range(x.dim()) if d != 1]
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=x.dtype)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count.view(1)])
        stats = all_reduce(stats)
        c = x.shape[1]
        n = stats[2 * c]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean
        shape = [1, c] + [1] * (x.dim() - 2)
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * n / (n - 1))
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer computes its statistics over the global batch (data parallel)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(module: nn.Module) -> nn.Module:
        out = module
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            out = CpuSyncBatchNorm(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
            )
            if module.affine:
                out.weight, out.bias = module.weight, module.bias
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        for name, child in module.named_children():
            out.add_module(name, convert(child))
        return out

    return convert(model)


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
    on_step_end: Callable[[int, int], None] | None = None,
    device: str | torch.device = "cpu",
    speed: Speed | None = None,
) -> tuple[dict | None, Classifier]:
    """Fine-tune ``backbone`` + head on the image source ``train``, score on ``test``
    (:mod:`workflow_scripts.sources`); return (result dict, model).

    ``backbone`` must already carry the drop-path rate for ViTs (``build_backbone(...,
    drop_path=recipe.drop_path)``). ``speed`` (:class:`Speed`) sets precision, compile and how
    often the state is saved; ``device`` overrides ``speed.device``.

    State and resume: the training state (model, optimiser, scheduler, epoch, step within the
    epoch, the epoch's sample plan, every random generator) is written atomically to
    ``state_path`` at every epoch end, at least every ``speed.save_minutes`` and when the job
    receives SIGUSR1 or SIGTERM (it then raises :class:`Preempted`). A rerun continues from the
    saved step -- skipping the consumed samples without reading them -- and ends with exactly
    the weights of an uninterrupted run (tested). A state whose ``fingerprint`` (the run's
    settings and inputs) or format differs is ignored; the file is deleted once the run
    completes. ``on_epoch_end(epoch)`` / ``on_step_end(epoch, step)`` run after any save (tests
    use them to simulate a killed job).

    Data parallel: inside an initialised ``torch.distributed`` group of N processes each rank
    trains on its shard of every global batch (BatchNorm synchronised, gradients averaged, the
    loss scaled so the update equals one process's on the global batch); rank 0 saves, scores
    and returns the result, the other ranks return None.
    """
    speed = speed or Speed(device=str(device))
    state_path = Path(state_path) if state_path else None
    training = _start_training(
        backbone, num_classes, arm, recipe, seed, torch.device(device), speed
    )
    training.state_path, training.fingerprint = state_path, fingerprint
    training.restore(_load_state(state_path, fingerprint))
    training.net = _parallel_net(training.model, training.device, training.world, speed.compile)
    training.train(train, on_step_end, on_epoch_end)
    if training.rank != 0:
        return None, training.model
    top1, top5 = training.score(test, num_classes)
    training.discard_state()
    return training.result(arm, seed, top1, top5, len(train), len(test)), training.model


def _start_training(
    backbone: nn.Module,
    num_classes: int,
    arm: str,
    recipe: FinetuneRecipe,
    seed: int,
    device: torch.device,
    speed: Speed,
) -> _Training:
    """A fresh run at epoch 0, step 0 (no state file yet): the process's precision flags set,
    the classifier, its optimiser and schedule built and the random generators seeded (in this
    order: the head's initialisation is the first draw from the global RNG seeded with
    ``seed``)."""
    rank, world = _shard()
    vit = is_vit(backbone)
    channels_last = device.type == "cuda" and not vit
    precisions.configure(speed.precision, device, benchmark=channels_last)
    model = _build_classifier(backbone, num_classes, arm, seed, device, world, channels_last)
    optimizer, scheduler = _build_optimizer(model, recipe)
    gen = _seed_generators(seed, rank, world)
    return _Training(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        gen=gen,
        recipe=recipe,
        speed=speed,
        device=device,
        vit=vit,
        rank=rank,
        world=world,
        loss_sum=torch.zeros((), device=device),
    )


def _build_classifier(
    backbone: nn.Module,
    num_classes: int,
    arm: str,
    seed: int,
    device: torch.device,
    world: int,
    channels_last: bool,
) -> Classifier:
    """``Classifier(backbone, num_classes, arm)`` on ``device``, its head drawn right after
    ``torch.manual_seed(seed)``; BatchNorm synchronised across ranks when data parallel
    (``world`` > 1), channels-last memory with ``channels_last``."""
    torch.manual_seed(seed)
    model = Classifier(backbone, num_classes, arm)
    if world > 1:
        model = sync_batchnorm(model, device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _build_optimizer(model: Classifier, recipe: FinetuneRecipe):
    """(optimiser, scheduler): SGD over the recipe's lr groups (:func:`param_groups`) with its
    momentum and weight decay; warm-up then cosine, stepped per epoch."""
    groups = param_groups(model, recipe)
    optimizer = torch.optim.SGD(
        [{"params": g["params"], "lr": g["lr"]} for g in groups],
        lr=groups[0]["lr"],
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )
    scheduler = warmup_cosine_epochs(optimizer, recipe.epochs, recipe.warmup_epochs)
    return optimizer, scheduler


def _seed_generators(seed: int, rank: int, world: int) -> torch.Generator:
    """The generator of sample plans and augmentation, seeded with ``seed`` on every rank. Data
    parallel: the global RNG is reseeded with ``seed + rank``, so the drop-path draws differ
    between ranks (each rank sees other samples)."""
    gen = torch.Generator().manual_seed(seed)
    if world > 1:
        torch.manual_seed(seed + rank)
    return gen


def _parallel_net(model: nn.Module, device: torch.device, world: int, compile: bool) -> nn.Module:
    """``model`` as the training steps call it: wrapped in DistributedDataParallel when data
    parallel (``world`` > 1), then in ``torch.compile`` with ``compile``; the wrappers share
    the model's parameters."""
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if compile:
        net = torch.compile(net)
    return net


@dataclasses.dataclass
class _Training:
    """One fine-tuning run in progress (:func:`finetune`): the training state that a save writes
    and a resume restores, and the steps that advance it (an epoch, a step, a save)."""

    model: Classifier
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator  # sample plans and augmentation
    recipe: FinetuneRecipe
    speed: Speed
    device: torch.device
    vit: bool  # the recipe's ViT extras apply (is_vit)
    rank: int = 0
    world: int = 1
    state_path: Path | None = None  # None: no saves (and no preemption stop)
    fingerprint: str = ""
    net: nn.Module | None = None  # the model as the steps call it (_parallel_net)
    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # its steps done so far
    plan: dict | None = None  # its sample plan (None: not drawn yet)
    loss_sum: torch.Tensor | None = None  # its (scaled) losses so far, for train_loss
    train_loss: float = float("nan")  # mean loss of the last epoch finished in this call
    last_save: float = 0.0  # time.monotonic() of the last save

    @property
    def smoothing(self) -> float:
        """Label smoothing: the recipe's for ViTs, none for ResNets."""
        return self.recipe.label_smoothing if self.vit else 0.0

    @property
    def channels_last(self) -> bool:
        """ResNets on CUDA run channels-last."""
        return self.device.type == "cuda" and not self.vit

    def restore(self, state: dict | None) -> None:
        """Continue from a saved ``state`` (:func:`_load_state`; None: start afresh): model,
        optimiser, scheduler, generator, this rank's global RNG states, epoch, step, plan."""
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        rngs = state["rng"]
        if len(rngs) != self.world:
            log.warning(
                "%s was saved by %d processes, resuming with %d: the random streams "
                "differ from an uninterrupted run",
                self.state_path,
                len(rngs),
                self.world,
            )
        _set_rng_states(rngs[self.rank % len(rngs)], self.device)
        self.epoch, self.step, self.plan = int(state["epoch"]), int(state["step"]), state["plan"]
        self.loss_sum = state["loss_sum"].to(self.device)
        log.info(
            "resuming from %s at epoch %d, step %d", self.state_path, self.epoch + 1, self.step
        )

    def train(self, train, on_step_end, on_epoch_end) -> None:
        """The remaining epochs on the image source ``train``, with SIGUSR1 / SIGTERM caught
        (they stop the run at the next step, after a save: :meth:`save_if_due`)."""
        with _StopSignals() as signals:
            self.last_save = time.monotonic()
            while self.epoch < self.recipe.epochs:
                self.train_epoch(train, signals, on_step_end)
                self.end_epoch(on_epoch_end)

    def train_epoch(self, train, signals: _StopSignals, on_step_end) -> None:
        """The epoch's remaining steps: its sample plan drawn from the generator (unless
        resumed with it), then one step per batch from ``self.step`` on, each followed by a
        save if one is due (with a ``state_path``) and ``on_step_end(epoch, step)``."""
        if self.plan is None:
            self.plan = train.plan_epoch(self.gen)
        self.model.train()
        shard = (self.rank, self.world)
        for x, y in train.train_batches(
            self.recipe.batch_size, self.gen, self.plan, self.step, shard
        ):
            self.train_step(train.prepare(x, self.device), y.to(self.device, non_blocking=True))
            self.step += 1
            if self.state_path:
                self.save_if_due(signals)
            if on_step_end is not None:
                on_step_end(self.epoch, self.step)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimiser step on the batch ``x``, ``y`` (on the device): forward under the
        precision's autocast, the loss, its gradients clipped to the recipe's norm, the update;
        the loss is added to ``loss_sum``."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with precisions.autocast(self.speed.precision, self.device):
            logits = self.net(x)
        loss = self.loss(logits, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"fine-tuning loss became {loss.item()} in epoch {self.epoch + 1}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        self.optimizer.step()
        self.loss_sum += loss.detach()

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the current step's batch (label smoothing: :attr:`smoothing`).
        Data parallel: the shard's sum x world / the global batch size, so that DDP's mean over
        the ranks is the mean over the global batch."""
        if self.world == 1:
            return F.cross_entropy(logits.float(), y, label_smoothing=self.smoothing)
        size = self.recipe.batch_size
        global_n = len(self.plan["order"][self.step * size :][:size])
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.smoothing, reduction="sum")
        return loss * (self.world / global_n)

    def end_epoch(self, on_epoch_end) -> None:
        """Close the epoch: the scheduler steps, ``train_loss`` is its mean loss (over the ranks
        too), the next epoch starts at step 0 with no plan and the state is saved (with a
        ``state_path``); logged, then ``on_epoch_end(epoch)``."""
        epoch = self.epoch
        self.scheduler.step()
        if self.world > 1:  # the mean over ranks of the scaled shard losses: the global loss
            torch.distributed.all_reduce(self.loss_sum)
            self.loss_sum /= self.world
        self.train_loss = self.loss_sum.item() / max(self.step, 1)
        self.epoch, self.step, self.plan = epoch + 1, 0, None
        self.loss_sum = torch.zeros((), device=self.device)
        if self.state_path:
            self.save()
        log.info("epoch %d/%d: mean loss %.4f", epoch + 1, self.recipe.epochs, self.train_loss)
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    def stop_reason(self, signals: _StopSignals) -> int:
        """0: go on, 1: periodic save due, 2: signalled (the same on every rank)."""
        if signals.received:
            due = 2
        else:
            due = int(time.monotonic() - self.last_save >= self.speed.save_minutes * 60)
        if self.world > 1:
            flag = torch.tensor([due], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            due = int(flag)
        return due

    def save_if_due(self, signals: _StopSignals) -> None:
        """After a step: save if ``save_minutes`` have passed since the last save or a stop
        signal came; after a signal raise :class:`Preempted`."""
        reason = self.stop_reason(signals)
        if reason:
            self.save()
        if reason == 2:
            raise Preempted(
                f"signal {signals.received} received: training state saved at epoch "
                f"{self.epoch + 1}, step {self.step} to {self.state_path}; a rerun resumes "
                "from there"
            )

    def save(self) -> None:
        """Write the training state atomically to ``state_path`` (rank 0, with every rank's RNG
        states); data parallel: all ranks wait for it. Restarts the save clock."""
        rngs = _rng_states(self.device)
        gathered = [rngs]
        if self.world > 1:
            import torch.distributed as dist

            gathered = [None] * self.world
            dist.all_gather_object(gathered, rngs)
        if self.rank == 0 and self.state_path:
            _save_state(self.state_path, self.state_dict(gathered))
        if self.world > 1:
            torch.distributed.barrier()
        self.last_save = time.monotonic()

    def state_dict(self, rngs: list[dict]) -> dict:
        """What a save writes (layout ``STATE_FORMAT``); ``rngs``: every rank's RNG states."""
        return {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "step": self.step,
            "plan": self.plan,
            "loss_sum": self.loss_sum,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.gen.get_state(),
            "rng": rngs,
        }

    def score(self, test, num_classes: int) -> tuple[float, float]:
        """Top-1 and top-5 accuracy of the trained model on ``test`` (:func:`evaluate`)."""
        return evaluate(
            self.model,
            test,
            num_classes,
            device=self.device,
            precision=self.speed.precision,
            channels_last=self.channels_last,
        )

    def discard_state(self) -> None:
        """Delete the state file: the run is complete."""
        if self.state_path and self.state_path.exists():
            self.state_path.unlink()

    def result(
        self, arm: str, seed: int, top1: float, top5: float, n_train: int, n_test: int
    ) -> dict:
        """The run's result row (before the job's provenance columns)."""
        return {
            "arm": arm,
            "top1": top1,
            "top5": top5,
            "epochs": self.recipe.epochs,
            "n_train": n_train,
            "n_test": n_test,
            "seed": seed,
            "label_smoothing": self.smoothing,
            "drop_path": self.recipe.drop_path if self.vit else 0.0,
            "layer_decay": self.recipe.layer_decay if self.vit else 1.0,
            "precision": precisions.effective(self.speed.precision, self.device),
            "device": self.device.type,
            "processes": self.world,
            "compile": self.speed.compile,
            "train_loss": self.train_loss,
        }


def _save_state(path: Path, state: dict) -> None:
    from workflow_scripts.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path | None, fingerprint: str) -> dict | None:
    if not path or not path.exists():
        return None
    state = torch.load(path, weights_only=True, map_location="cpu")
    if state.get("format") != STATE_FORMAT or state.get("fingerprint") != fingerprint:
        log.info("ignoring %s: it belongs to a run with other settings", path)
        return None
    return state


def recipe_from_config(cfg: dict) -> FinetuneRecipe:
    fields = {f.name for f in dataclasses.fields(FinetuneRecipe)}
    return FinetuneRecipe(**{k: v for k, v in cfg.items() if k in fields})


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything one fine-tuning run (protocol, subset seed, arm of one model) needs; plain
    data, so data-parallel worker processes can rebuild the run from it."""

    weights: str
    weights_sha256: str
    model: dict  # the model row's backbone columns (key, method, arch, embedding)
    protocol: str  # finetune | fewshot<pct>
    subset_seed: int | None  # few-shot subset seed (None: the whole train split)
    arm: str
    recipe: FinetuneRecipe  # the protocol's recipe (authors' quirks applied by the caller)
    index: np.ndarray | None  # few-shot subset: indices into the train split
    train: dict  # keyword arguments of sources.open_split
    test: dict
    num_classes: int
    state_path: str
    speed: Speed = dataclasses.field(default_factory=Speed)
    threads: int = 1
    log_path: str | None = None  # where data-parallel workers log (rank 0)

    def fingerprint(self, n_train: int) -> str:
        """What a resumable state must match: settings that change the result and the inputs."""
        import json

        return json.dumps(
            [
                dataclasses.asdict(self.recipe),
                self.arm,
                self.protocol,
                self.subset_seed,
                self.weights_sha256,
                n_train,
                self.speed.precision,
                self.speed.compile,
            ],
            sort_keys=True,
        )


def train_run(spec: RunSpec, with_weights: bool = False):
    """Run ``spec`` in this process (or as one rank of a data-parallel group); the result row
    (None on ranks other than 0), with ``with_weights`` also the trained model's state dict."""
    from workflow_scripts.backbones import load_job_backbone
    from workflow_scripts.sources import open_split

    train, test = open_split(**spec.train), open_split(**spec.test)
    images = train if spec.index is None else train.subset(spec.index)
    backbone = load_job_backbone(spec.weights, spec.model, spec.recipe.drop_path)
    result, model = finetune(
        backbone,
        images,
        test,
        num_classes=spec.num_classes,
        arm=spec.arm,
        recipe=spec.recipe,
        seed=spec.recipe.seed,
        state_path=spec.state_path,
        fingerprint=spec.fingerprint(len(images)),
        device=spec.speed.device,
        speed=spec.speed,
    )
    if result is None:
        return None
    log.info(
        "%s %s (subset seed %s) %s: top1 %.2f",
        spec.model["key"],
        spec.protocol,
        spec.subset_seed,
        spec.arm,
        result["top1"],
    )
    row = {
        **result,
        "protocol": spec.protocol,
        "subset_seed": "" if spec.subset_seed is None else spec.subset_seed,
    }
    if with_weights:
        return row, {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return row


def run(spec: RunSpec, processes: int = 1, with_weights: bool = False):
    """The run's result row (see :func:`train_run` for ``with_weights``): in this process, or
    with ``processes`` data-parallel processes
    started by torchrun's launcher (``torch.distributed.launcher``; one per GPU, NCCL on CUDA,
    gloo on the CPU). The global batch, learning rate and sample order are those of one
    process."""
    if processes < 1:
        raise ValueError(f"finetune.gpus must be >= 1, got {processes}")
    if processes == 1:
        return train_run(spec, with_weights)
    import uuid

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # torchrun --standalone
        max_restarts=0,
        monitor_interval=1.0,
        start_method="spawn",
        signals_to_handle="SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
    )
    results = elastic_launch(config, _data_parallel_worker)(spec, with_weights)
    return results[0]


def _data_parallel_worker(spec: RunSpec, with_weights: bool = False):
    """One rank of :func:`run` (a fresh process started by the launcher)."""
    import os

    import torch.distributed as dist

    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device(spec.speed.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    torch.set_num_threads(max(1, spec.threads))
    if spec.log_path and local_rank == 0:
        logging.basicConfig(
            level=logging.INFO,
            filename=spec.log_path,
            force=True,
            format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        )
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        speed = dataclasses.replace(spec.speed, device=str(device))
        return train_run(dataclasses.replace(spec, speed=speed), with_weights)
    finally:
        dist.destroy_process_group()


def job_specs(
    *,
    weights: str,
    model: dict,
    runs: list[dict],
    recipes: dict[str, dict],
    train: dict,
    test: dict,
    num_classes: int,
    state_dir: str,
    run_time: dict,
    threads: int,
    log_files=(),
) -> list[RunSpec]:
    """The RunSpecs of one finetune job, in ``runs`` order. ``runs``: the job's (run, arm)
    units ({run, arm, protocol, subset_seed, split}: split is the few-shot subset file or
    None); ``recipes``: protocol -> its config section without the run-time keys (the authors'
    quirks of the model's method applied here); ``train``/``test``: keyword arguments of
    ``sources.open_split``; ``run_time``: the config's ``finetune`` section (device,
    save_minutes: read at run time, not params). Each unit keeps its resume state at
    ``{state_dir}/{run}_{arm}.pt``; data-parallel workers log to the first of ``log_files``."""
    from workflow_scripts.devices import resolve_device
    from workflow_scripts.io import load_npy, sha256_file

    device = resolve_device(run_time["device"], "finetune.device")
    weights_sha = sha256_file(weights)
    specs = []
    for unit in runs:
        cfg = recipes[unit["protocol"]]
        index = None
        if unit["split"] is not None:
            index = load_npy(unit["split"], f"the subset '{unit['split']}'")
        specs.append(
            RunSpec(
                weights=weights,
                weights_sha256=weights_sha,
                model=model,
                protocol=unit["protocol"],
                subset_seed=unit["subset_seed"],
                arm=unit["arm"],
                recipe=with_authors_quirks(recipe_from_config(cfg), model["method"]),
                index=index,
                train=train,
                test=test,
                num_classes=num_classes,
                state_path=f"{state_dir}/{unit['run']}_{unit['arm']}.pt",
                speed=Speed(
                    device=str(device),
                    precision=cfg["precision"],
                    compile=cfg["compile"],
                    save_minutes=run_time["save_minutes"],
                ),
                threads=threads,
                log_path=log_files[0] if log_files else None,
            )
        )
    return specs


def run_job(
    specs: list[RunSpec],
    outputs: list[str],
    *,
    processes: int,
    dataset: str,
    code: str,
    gathered_outputs: list[str] = (),
    gathered_inputs: list[list[str]] = (),
) -> None:
    """Run each spec (``processes`` data-parallel processes each) and write its result row to
    the matching ``outputs`` file with the job's provenance columns; then (batch_runs) each
    ``gathered_outputs`` file concatenates its list of ``gathered_inputs``."""
    import pandas as pd

    from workflow_scripts.io import concat_csv, save_csv

    for spec, out in zip(specs, outputs, strict=True):
        row = run(spec, processes=processes)
        frame = pd.DataFrame([row]).assign(
            model=spec.model["key"], dataset=dataset, code_version=code
        )
        save_csv(out, frame)
    for out, parts in zip(gathered_outputs, gathered_inputs, strict=True):
        concat_csv(parts, out)
