"""The attentive probe: efficient probing (EP) on the frozen tokens of a backbone.

EP (Psomas et al., "Attention, Please! Revisiting Attentive Probing for Masked Image Modeling",
arXiv 2506.10178; the authors' code, billpsomas/efficient-probing, ``poolings/ep.py`` and
``main_linprobe.py``) pools a model's tokens with Q learned queries and no query, key or output
projection:

* queries ``q`` [Q, D], drawn N(0, 0.02^2); a value projection ``W_v`` [D, D] without bias;
* attention ``A = softmax_n(q x_n^T / sqrt(D))`` [Q, N] over the N tokens ``x`` [N, D]
  themselves (the keys are the tokens);
* the values ``x W_v^T`` are split along the channels into Q chunks of D / Q; query m pools
  chunk m, ``z_m = sum_n A[m, n] (x_n W_v^T)[chunk m]``, and the chunks are concatenated
  into ``z`` [D] (not averaged);
* a linear classifier on ``z``.

The arms are those of every protocol here: ``raw`` as above, and ``bn``: a BatchNorm over the
channels of the tokens, without affine (batch statistics over the batch's tokens in training,
running statistics in evaluation), before the pooling. EP's own head has a BatchNorm without
affine after the pooling instead; the ``bn`` arm follows this study's convention (normalised
inputs to the probe), and the ``raw`` arm has none.

Tokens (:func:`tokens`): the output of the last block, before the backbone's final norm, patch
tokens only (EP's default, ``cls_features=ep``): timm models through their
``forward_intermediates``; a ResNet's last feature map, its H x W positions as tokens.

Recipe (:class:`Recipe`; EP's ImageNet command for MAE ViT-B): LARS (momentum 0.9, trust
coefficient 0.001, weight decay 0, parameters of one dimension -- biases -- neither adapted nor
decayed: timm's ``Lars`` with ``always_adapt`` on the others and ``eps`` 0, which is MAE's LARS
that EP uses), learning rate ``base_lr x batch / 256`` with ``base_lr`` 0.1, a linear warm-up of
10 epochs then a half cosine to 0, set at every iteration from the fractional epoch, 90 epochs,
batch 4096, plain cross-entropy, no gradient clipping. EP trains on augmented images
(RandomResizedCrop and flip); here the tokens are computed once without augmentation, as the
linear probe's features are. Every epoch is evaluated; the caller reports the last and the best.

Seeded: the head's initial parameters come from ``torch.Generator().manual_seed(seed)`` and the
epoch permutations from a second generator with the same seed, so a run is a function of its
inputs and seed. No work at import time.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts import registry
from workflow_scripts.probing import topk_hits


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The attentive probe's recipe (EP's ImageNet defaults)."""

    epochs: int = 90
    batch_size: int = 4096
    base_lr: float = 0.1
    warmup_epochs: int = 10
    weight_decay: float = 0.0
    momentum: float = 0.9
    trust_coeff: float = 0.001
    queries: int = 32
    query_init_std: float = 0.02
    bn_eps: float = 1e-6

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256


def learning_rate(recipe: Recipe, epoch: float) -> float:
    """EP's schedule at a fractional epoch (iteration / iterations per epoch + epoch): linear
    warm-up from 0, then a half cosine to 0 at ``recipe.epochs``."""
    if epoch < recipe.warmup_epochs:
        return recipe.lr * epoch / recipe.warmup_epochs
    span = recipe.epochs - recipe.warmup_epochs
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - recipe.warmup_epochs) / span))


class AttentiveProbe(nn.Module):
    """EP pooling (optionally after a BatchNorm of the tokens, arm ``bn``) and a linear
    classifier; ``forward`` takes tokens [B, N, D] and returns logits [B, C]."""

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        arm: str = "raw",
        queries: int = 32,
        seed: int = 0,
        query_init_std: float = 0.02,
        bn_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if arm not in registry.ARMS:
            raise ValueError(f"unknown arm '{arm}' (expected one of {list(registry.ARMS)})")
        if queries < 1 or dim % queries:
            raise ValueError(
                f"attentive probe: {queries} queries do not divide the token width {dim} "
                "(each query pools dim / queries channels)"
            )
        self.dim, self.num_queries, self.arm = dim, queries, arm
        gen = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(dim)  # nn.Linear's default init, drawn from the seeded generator
        self.queries = nn.Parameter(torch.randn(1, queries, dim, generator=gen) * query_init_std)
        self.value = nn.Linear(dim, dim, bias=False)
        self.classifier = nn.Linear(dim, num_classes)
        with torch.no_grad():
            self.value.weight.uniform_(-bound, bound, generator=gen)
            self.classifier.weight.uniform_(-bound, bound, generator=gen)
            self.classifier.bias.uniform_(-bound, bound, generator=gen)
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=bn_eps) if arm == "bn" else None

    def normalized(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tokens the pooling sees: as given (``raw``) or batch-normalised over their
        channels (``bn``)."""
        if self.norm is None:
            return tokens
        b, n, d = tokens.shape
        return self.norm(tokens.reshape(b * n, d)).reshape(b, n, d)

    def attention(self, tokens: torch.Tensor) -> torch.Tensor:
        """A [B, Q, N]: each query's softmax over the (normalised) tokens."""
        scores = (self.queries * self.dim**-0.5) @ tokens.transpose(1, 2)
        return scores.softmax(dim=-1)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """The pooled representation z [B, D] the classifier sees."""
        x = self.normalized(tokens)
        weights = self.attention(x)
        b, n, d = x.shape
        values = self.value(x).reshape(b, n, self.num_queries, d // self.num_queries)
        return torch.einsum("bqn,bnqc->bqc", weights, values).reshape(b, d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(tokens))


def optimizer(probe: AttentiveProbe, recipe: Recipe):
    """timm's LARS as MAE's (EP's) LARS: tensors of two or more dimensions adapted by the
    trust ratio (and decayed), one-dimensional ones (biases) plain SGD with momentum."""
    from timm.optim import Lars

    adapted = [p for p in probe.parameters() if p.ndim > 1]
    plain = [p for p in probe.parameters() if p.ndim <= 1]
    return Lars(
        [
            {"params": adapted, "weight_decay": recipe.weight_decay, "always_adapt": True},
            {"params": plain, "weight_decay": 0.0, "always_adapt": False},
        ],
        lr=recipe.lr,
        momentum=recipe.momentum,
        trust_coeff=recipe.trust_coeff,
        eps=0.0,
    )


def epoch_batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """One epoch of shuffled mini-batch indices; a last batch of one sample is dropped (the
    ``bn`` arm cannot train on it)."""
    batches = list(torch.split(torch.randperm(n, generator=gen), batch_size))
    if len(batches[-1]) < 2:
        batches.pop()
    return batches


@torch.no_grad()
def evaluate(
    probe: AttentiveProbe, tokens: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024
) -> dict:
    """Top-1 and top-5 accuracy (percent; top-5 NaN with five classes or fewer)."""
    probe.eval()
    logits = torch.cat(
        [probe(tokens[i : i + batch_size].float()) for i in range(0, len(tokens), batch_size)]
    )
    # hits x 100 / N, as the linear probe computes it
    hits1 = topk_hits(logits[None], labels, 1).item()
    top1 = hits1 * 100 / len(labels)
    top5 = (
        topk_hits(logits[None], labels, 5).item() * 100 / len(labels)
        if logits.shape[1] > 5
        else float("nan")
    )
    return {"top1": top1, "top5": top5}


def train(
    train_tokens: torch.Tensor,
    train_labels: torch.Tensor,
    test_tokens: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int,
    arm: str,
    recipe: Recipe,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[list[dict], AttentiveProbe]:
    """Train one attentive probe on tokens [N, T, D] (any float dtype; batches are computed
    in float32) and evaluate it after every epoch; return (one record per epoch: epoch,
    train_loss, top1, top5; the trained probe).

    ``device``: where the tokens, labels and probe live; the initial parameters and the
    epoch permutations still come from CPU generators, so every device sees the same data
    order and starting point."""
    if len(train_tokens) != len(train_labels) or len(test_tokens) != len(test_labels):
        raise ValueError(
            f"attentive probe: {len(train_tokens)} train tokens for {len(train_labels)} labels, "
            f"{len(test_tokens)} test tokens for {len(test_labels)} labels"
        )
    probe = AttentiveProbe(
        train_tokens.shape[-1],
        num_classes,
        arm=arm,
        queries=recipe.queries,
        seed=seed,
        query_init_std=recipe.query_init_std,
        bn_eps=recipe.bn_eps,
    )
    device = torch.device(device)
    probe.to(device)
    train_tokens, train_labels = train_tokens.to(device), train_labels.to(device)
    test_tokens, test_labels = test_tokens.to(device), test_labels.to(device)
    opt = optimizer(probe, recipe)
    gen = torch.Generator().manual_seed(seed)
    records = []
    for epoch in range(recipe.epochs):
        probe.train()
        batches = epoch_batches(len(train_tokens), recipe.batch_size, gen)
        losses = []
        for step, index in enumerate(batches):
            index = index.to(device)
            for group in opt.param_groups:
                group["lr"] = learning_rate(recipe, epoch + step / len(batches))
            loss = F.cross_entropy(probe(train_tokens[index].float()), train_labels[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        scores = evaluate(probe, test_tokens, test_labels)
        records.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **scores})
    return records, probe


@torch.no_grad()
def tokens(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The tokens [B, N, D] an attentive probe reads: a timm model's last block output before
    its final norm, patch tokens only (``forward_intermediates``); a ResNet's last feature map
    [B, C, H, W] as H x W tokens of C channels."""
    if hasattr(backbone, "forward_intermediates"):
        maps = backbone.forward_intermediates(
            images, indices=1, norm=False, output_fmt="NCHW", intermediates_only=True
        )[-1]
    elif hasattr(backbone, "forward_maps"):  # the demo ResNet
        maps = backbone.forward_maps(images)
    elif hasattr(backbone, "net") and hasattr(backbone.net, "layer4"):  # torchvision ResNet-50
        n = backbone.net
        maps = n.layer4(n.layer3(n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(images))))))))
    else:
        raise ValueError(
            f"attentive probe: no tokens for a {type(backbone).__name__} backbone (a timm "
            "model with forward_intermediates or a ResNet is needed)"
        )
    return maps.flatten(2).transpose(1, 2)


class TokenBackbone(nn.Module):
    """A backbone whose ``forward`` returns its tokens flattened, [B, N x D], so that the
    feature extraction (:func:`workflow_scripts.features.extract`: batches, precision,
    progress, NaN checks) fills a [N_images, N x D] array; ``tokens`` and ``dim`` give the
    shape back. ``img_size``: the input side that fixes the token count."""

    def __init__(self, backbone: nn.Module, img_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        with torch.no_grad():
            probe = tokens(backbone.eval(), torch.zeros(1, 3, img_size, img_size))
        self.tokens, self.dim = probe.shape[1], probe.shape[2]
        self.embed_dim = self.tokens * self.dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return tokens(self.backbone, images).flatten(1)


#: The tokens are held in float16 whatever config features.dtype says (half the memory; the
#: extraction fails naming the model, data set and split if a value overflows it); every
#: batch is computed in float32.
TOKEN_DTYPE = "float16"

#: (tokens, width) of the registry's backbones at their input size, for the memory a job
#: requests (tests check them against TokenBackbone); a timm row: (img / 16)^2 x its width.
TOKEN_SHAPES = {
    "resnet10_tiny": (4, 128),
    "vit_tiny_p8": (16, 64),
    "resnet50": (49, 2048),
    "vit_base_patch16_224": (196, 768),
    "beitv2_base_patch16_224": (196, 768),
}


def token_shape(arch: str, spec: dict) -> tuple[int, int]:
    """(tokens, width) of an arch (``spec``: its registry or timm-row spec, img_size and dim)."""
    if arch in TOKEN_SHAPES:
        return TOKEN_SHAPES[arch]
    return (int(spec["img_size"]) // 16) ** 2, int(spec["dim"])


def train_subset(labels: np.ndarray, percent: float, *, seed: int = 42) -> np.ndarray | None:
    """Indices of a stratified ``percent``% subset of a train split: each class keeps
    max(1, round(percent / 100 x its count)) images, drawn class by class in sorted label
    order from the legacy NumPy stream seeded ``seed`` (the few-shot sampler's stream), in
    ascending order; None for 100% (every image)."""
    if percent >= 100:
        return None
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    chosen = []
    for label in np.unique(labels):
        pool = np.flatnonzero(labels == label)
        keep = max(1, round(percent / 100 * len(pool)))
        chosen.append(rng.choice(pool, keep, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _batches(images_path, source: dict, spec: dict, options: dict, device, indices):
    """(uint8 batches, N) of a split, or of its images at ``indices`` (None: all)."""
    from workflow_scripts.features import array_batches, split_batches

    if indices is None:
        return split_batches(images_path, source, spec, options, device)
    if source["kind"] == "synthetic":
        images = np.load(images_path, allow_pickle=False, mmap_mode="r")
        return array_batches(images[indices], spec, options["batch_size"]), len(indices)
    from workflow_scripts.datasets.loader import ImageList, make_loader, read_file_list
    from workflow_scripts.datasets.transforms import eval_transform as pil_eval_transform

    items = read_file_list(images_path)
    dataset = ImageList(
        source["kind"],
        source["root"],
        [items[i] for i in indices],
        pil_eval_transform(spec, source.get("preprocessing"), normalize=False),
    )
    loader = make_loader(
        dataset, options["batch_size"], options["workers"], pin_memory=device.type == "cuda"
    )
    return loader, len(indices)


def split_tokens(
    wrapper: TokenBackbone,
    images_path,
    source: dict,
    spec: dict,
    options: dict,
    device,
    where,
    indices=None,
) -> torch.Tensor:
    """The tokens [N, T, D] of one split (or of its images at ``indices``), in
    ``options["dtype"]`` (config features), through the feature extraction's own batching
    and checks."""
    from workflow_scripts.features import extract

    batches, total = _batches(images_path, source, spec, options, device, indices)
    out = np.empty((total, wrapper.embed_dim), dtype=options["dtype"])
    extract(
        wrapper,
        batches,
        total,
        spec=spec,
        device=device,
        precision=options["precision"],
        channels_last=False,
        log_every=options["log_every"],
        label=f"{where[0]} / {where[1]} / {where[2]} tokens: ",
        out=out,
        dtype=options["dtype"],
        where=where,
    )
    return torch.from_numpy(out).view(total, wrapper.tokens, wrapper.dim)


#: The per-job CSV's columns (before the job's constant ones), as the linear probe's.
COLUMNS = (
    "arm",
    "base_lr",
    "lr",
    "seed",
    "top1",
    "top5",
    "top1_best",
    "top5_best",
    "best_epoch",
    "epochs",
    "batch_size",
    "n_train",
    "n_test",
    "tokens",
    "dim",
    "queries",
)


def result_row(records: list[dict], *, arm: str, seed: int, recipe: Recipe, shapes) -> dict:
    """One probe's row: the last epoch's accuracy and the best epoch's, as the linear probe
    reports them."""
    best = max(records, key=lambda r: (r["top1"], -r["epoch"]))
    (n_train, tokens_, dim), n_test = shapes
    return {
        "arm": arm,
        "base_lr": recipe.base_lr,
        "lr": recipe.lr,
        "seed": seed,
        "top1": records[-1]["top1"],
        "top5": records[-1]["top5"],
        "top1_best": best["top1"],
        "top5_best": best["top5"],
        "best_epoch": best["epoch"],
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "n_train": n_train,
        "n_test": n_test,
        "tokens": tokens_,
        "dim": dim,
        "queries": recipe.queries,
    }


def recipe_of(settings: dict) -> Recipe:
    """The recipe from config section ``attentive`` (its other keys are not the recipe's)."""
    fields = {f.name for f in dataclasses.fields(Recipe)}
    return Recipe(**{k: v for k, v in settings.items() if k in fields})


def run_job(
    weights,
    outputs,
    *,
    model: dict,
    datasets: list[str],
    train_images: list[str],
    train_labels: list[str],
    test_images: list[str],
    test_labels: list[str],
    num_classes: list[int],
    arms: list[str],
    settings: dict,
    sources: dict,
    transform: dict,
    options: dict,
    data_root,
    code: str,
    log,
) -> None:
    """One attentive_probe job: per data set, the tokens of its train split (or its
    ``train_percent`` subset) and test split through the frozen backbone (config ``features``
    batch size and precision; held in TOKEN_DTYPE), then one probe per (arm, seed) on them;
    rows written to the matching ``outputs`` file."""
    from workflow_scripts.backbones import load_job_backbone
    from workflow_scripts.datasets import resolve_root
    from workflow_scripts.devices import resolve_device
    from workflow_scripts.features import check_split_sizes
    from workflow_scripts.io import load_npy
    from workflow_scripts.probing import write_rows

    device = resolve_device(settings["device"], "attentive.device")
    options = options | {"dtype": TOKEN_DTYPE}
    recipe = recipe_of(settings)
    # the input side: the transform's crop, else the arch's own size (the demo's 32 px)
    size = transform.get("crop") or registry.ARCHS.get(model["arch"], {}).get("img_size")
    if not size:
        raise ValueError(f"attentive probe: no input size for model '{model['key']}'")
    wrapper = TokenBackbone(load_job_backbone(weights, model), int(size)).to(device)
    jobs = list(
        zip(
            datasets,
            train_images,
            train_labels,
            test_images,
            test_labels,
            num_classes,
            outputs,
            strict=True,
        )
    )
    # every split's images against its labels before any token is computed
    check_split_sizes(
        [
            (d, split, sources[d]["kind"], images, labels)
            for d, xtr, ytr, xte, yte, _, _ in jobs
            for split, images, labels in (("train", xtr, ytr), ("test", xte, yte))
        ]
    )
    for dataset, xtr_path, ytr_path, xte_path, yte_path, classes, out in jobs:
        source = sources[dataset]
        if source["kind"] != "synthetic":
            source = source | {"root": str(resolve_root(source, data_root))}
        split = {}
        for name, images_path, labels_path in (
            ("train", xtr_path, ytr_path),
            ("test", xte_path, yte_path),
        ):
            labels = np.asarray(
                load_npy(labels_path, f"the labels of data set '{dataset}', split '{name}'")
            )
            subset = train_subset(labels, settings["train_percent"]) if name == "train" else None
            if subset is not None:
                log.info(
                    "%s / %s: %d of %d train images",
                    model["key"],
                    dataset,
                    len(subset),
                    len(labels),
                )
                labels = labels[subset]
            labels = torch.as_tensor(labels.astype(np.int64))
            toks = split_tokens(
                wrapper,
                images_path,
                source,
                transform,
                options,
                device,
                where=(model["key"], dataset, name),
                indices=subset,
            )
            if labels.ndim != 1 or len(toks) != len(labels):
                raise ValueError(
                    f"model '{model['key']}', data set '{dataset}', split '{name}': "
                    f"{len(toks)} images but the labels '{labels_path}' have shape "
                    f"{tuple(labels.shape)}"
                )
            split[name] = (toks, labels)
        (xtr, ytr), (xte, yte) = split.pop("train"), split.pop("test")
        rows = []
        for arm in arms:
            for seed in settings["seeds"]:
                records, _ = train(
                    xtr,
                    ytr,
                    xte,
                    yte,
                    num_classes=classes,
                    arm=arm,
                    recipe=recipe,
                    seed=seed,
                    device=device,
                )
                rows.append(
                    result_row(
                        records,
                        arm=arm,
                        seed=seed,
                        recipe=recipe,
                        shapes=(tuple(xtr.shape), len(xte)),
                    )
                )
        frame = write_rows(
            out,
            rows,
            model=model["key"],
            dataset=dataset,
            protocol="attentive",
            code_version=code,
            device=device.type,
        )
        log.info(
            "%s / %s: %s", model["key"], dataset, frame[["arm", "seed", "top1"]].to_dict("records")
        )
