"""Linear probe: schedule factors, batched heads equal separately trained heads."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import workflow_scripts.linear_heads as linear_module
from workflow_scripts.linear_heads import HeadSpec, Recipe, epoch_batches, train_heads
from workflow_scripts.schedules import lr_factor, warmup_cosine_epochs


def test_schedule_matches_paper_formula():
    # Paper: 5 warm-up epochs at (e+1)/6, then cosine to 0 stepped per epoch.
    epochs, warmup = 20, 5
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.4)
    sched = warmup_cosine_epochs(opt, epochs, warmup)
    seen = []
    for _ in range(epochs):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    hand = [0.4 * (e + 1) / 6 for e in range(5)]
    hand += [0.4 * 0.5 * (1 + math.cos(math.pi * (e - 5) / 15)) for e in range(5, 20)]
    assert seen == pytest.approx(hand, rel=1e-9, abs=1e-12)
    assert [0.4 * lr_factor(e, epochs, warmup) for e in range(epochs)] == pytest.approx(hand)
    assert seen[:5] == pytest.approx([0.4 / 6, 0.8 / 6, 0.2, 1.6 / 6, 2.0 / 6])


def test_schedule_without_warmup_is_cosine():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = warmup_cosine_epochs(opt, 4, 0)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(
        [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]
    )


def _data(seed=0, n=203, n_test=61, dim=12, classes=4):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 2
    ytr = rng.integers(0, classes, n)
    yte = rng.integers(0, classes, n_test)
    xtr = (centers[ytr] + rng.normal(size=(n, dim)) + 3).astype(np.float32)
    xte = (centers[yte] + rng.normal(size=(n_test, dim)) + 3).astype(np.float32)
    return xtr, ytr, xte, yte, classes


def _separate(xtr, ytr, xte, yte, classes, spec, recipe):
    """Independent re-implementation: one nn.Sequential(BatchNorm1d?, Linear) per head."""
    dim = xtr.shape[1]
    layers = []
    if spec.arm == "bn":
        layers.append(torch.nn.BatchNorm1d(dim))  # affine, eps 1e-5, momentum 0.1
    linear = torch.nn.Linear(dim, classes)
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(classes, dim, generator=gen) * recipe.init_std)
        linear.bias.zero_()
    layers.append(linear)
    head = torch.nn.Sequential(*layers)
    lr = spec.base_lr * recipe.batch_size / 256
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=recipe.momentum, weight_decay=0.0)
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr).long()
    data_gen = torch.Generator().manual_seed(spec.seed)
    accs = []
    for epoch in range(recipe.epochs):
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(epoch, recipe.epochs, recipe.warmup_epochs)
        head.train()
        for idx in epoch_batches(len(x), recipe.batch_size, data_gen):
            loss = F.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), recipe.grad_clip)
            opt.step()
        head.eval()
        with torch.no_grad():
            pred = head(torch.from_numpy(xte)).argmax(1).numpy()
        accs.append((pred == yte).mean() * 100)
    return head, accs


def test_batched_heads_equal_separate_heads():
    xtr, ytr, xte, yte, classes = _data()
    recipe = Recipe(epochs=8, batch_size=32, warmup_epochs=2, grad_clip=0.5)
    heads = [
        HeadSpec("raw", 0.1, 42),
        HeadSpec("bn", 0.1, 42),
        HeadSpec("raw", 0.5, 7),
        HeadSpec("bn", 0.05, 7),
        HeadSpec("bn", 1.0, 3),
    ]
    results, model = train_heads(xtr, ytr, xte, yte, classes, heads, recipe)
    for h, spec in enumerate(heads):
        head, accs = _separate(xtr, ytr, xte, yte, classes, spec, recipe)
        linear = head[-1]
        torch.testing.assert_close(
            model.weight[h].detach().T, linear.weight.detach(), atol=2e-5, rtol=1e-4
        )
        torch.testing.assert_close(
            model.bias[h].detach(), linear.bias.detach(), atol=2e-5, rtol=1e-4
        )
        if spec.arm == "bn":
            j = model.bn_index.index(h)
            torch.testing.assert_close(
                model.running_mean[j], head[0].running_mean, atol=1e-5, rtol=1e-5
            )
            torch.testing.assert_close(
                model.running_var[j], head[0].running_var, atol=1e-5, rtol=1e-5
            )
            torch.testing.assert_close(
                model.gamma[j].detach(), head[0].weight.detach(), atol=2e-5, rtol=1e-4
            )
        assert results[h]["top1"] == pytest.approx(accs[-1])
        assert results[h]["top1_best"] == pytest.approx(max(accs))
        assert results[h]["best_epoch"] == int(np.argmax(accs)) + 1
        assert results[h]["lr"] == pytest.approx(spec.base_lr * 32 / 256)


def test_bn_arm_rescues_tiny_features():
    # Features with a tiny norm (like a random ResNet's): BN before the head fixes the scale.
    xtr, ytr, xte, yte, classes = _data(seed=1, n=400, n_test=200)
    scale = 1e-3
    results, _ = train_heads(
        xtr * scale,
        ytr,
        xte * scale,
        yte,
        classes,
        [HeadSpec("raw", 0.1, 0), HeadSpec("bn", 0.1, 0)],
        Recipe(epochs=10, batch_size=64, warmup_epochs=1),
    )
    raw, bn = results
    assert bn["top1"] > raw["top1"] + 20


def test_top5_nan_with_few_classes_and_errors():
    xtr, ytr, xte, yte, classes = _data()
    results, _ = train_heads(
        xtr,
        ytr,
        xte,
        yte,
        classes,
        [HeadSpec("raw", 0.1, 0)],
        Recipe(epochs=2, batch_size=64, warmup_epochs=1),
    )
    assert math.isnan(results[0]["top5"])
    bad = xtr.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="train features contain NaN"):
        train_heads(
            bad,
            ytr,
            xte,
            yte,
            classes,
            [HeadSpec("raw", 0.1, 0)],
            Recipe(epochs=2, batch_size=64, warmup_epochs=1),
        )
    with pytest.raises(ValueError, match="warmup_epochs"):
        train_heads(
            xtr,
            ytr,
            xte,
            yte,
            classes,
            [HeadSpec("raw", 0.1, 0)],
            Recipe(epochs=2, batch_size=64, warmup_epochs=2),
        )
    with pytest.raises(ValueError, match="unknown arm"):
        HeadSpec("bnx", 0.1, 0)


def test_top5_counts_hits():
    rng = np.random.default_rng(0)
    xtr = rng.normal(size=(300, 20)).astype(np.float32)
    ytr = rng.integers(0, 8, 300)
    results, model = train_heads(
        xtr,
        ytr,
        xtr,
        ytr,
        8,
        [HeadSpec("raw", 0.1, 0)],
        Recipe(epochs=2, batch_size=64, warmup_epochs=1),
    )
    with torch.no_grad():
        logits = torch.from_numpy(xtr) @ model.weight[0] + model.bias[0]
    top5 = logits.topk(5, dim=1).indices.numpy()
    hand = np.mean([ytr[i] in top5[i] for i in range(300)]) * 100
    assert results[0]["top5"] == pytest.approx(hand)


# Seeds 42 and 7 interleaved: head groups indexed by tensors (not slices), heads out of order.
MIXED_HEADS = [
    HeadSpec("raw", 0.1, 42),
    HeadSpec("bn", 0.1, 7),
    HeadSpec("raw", 0.3, 42),
    HeadSpec("bn", 0.1, 42),
    HeadSpec("bn", 0.5, 7),
    HeadSpec("raw", 0.1, 7),
]


def test_device_cpu_is_bit_identical_to_the_default():
    xtr, ytr, xte, yte, classes = _data(classes=8)
    recipe = Recipe(epochs=4, batch_size=32, warmup_epochs=1, weight_decay=1e-4)
    ref, ref_model = train_heads(xtr, ytr, xte, yte, classes, MIXED_HEADS, recipe)
    ref_state = ref_model.state_dict()
    for device in ("cpu", torch.device("cpu")):
        results, model = train_heads(
            xtr, ytr, xte, yte, classes, MIXED_HEADS, recipe, device=device
        )
        assert results == ref  # 8 classes: no NaN top-5
        state = model.state_dict()
        assert state.keys() == ref_state.keys()
        assert all(torch.equal(state[key], ref_state[key]) for key in state)


def _leaves(tree):
    """The tensors in nested tuples / lists / dicts."""
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _leaves(item)
    elif isinstance(tree, dict):
        yield from _leaves(list(tree.values()))


class NoDeviceMixing(torch.overrides.TorchFunctionMode):
    """Fails any torch call that mixes tensors (other than 0-dim ones) from two devices."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch._has_compatible_shallow_copy_type:  # Module.to() comparing old / new
            return func(*args, **kwargs)
        devices = {t.device.type for t in _leaves((args, kwargs)) if t.dim() > 0}
        assert len(devices) <= 1, f"{func} mixes devices {devices}"
        return func(*args, **kwargs)


def test_every_training_tensor_follows_the_device(monkeypatch):
    """The whole loop on the meta device, no CPU tensor mixed into any torch call (CUDA would
    accept a CPU index tensor silently, with a copy and a sync)."""
    model = linear_module.LinearHeads(12, 8, MIXED_HEADS, 0.01).to("meta")
    indices = [model.restore, model.bn_heads]
    indices += [i for group in model.groups for i in group if isinstance(i, torch.Tensor)]
    assert len(indices) == 5 and all(t.device.type == "meta" for t in indices)
    x = torch.zeros(40, 12, device="meta")
    y = torch.zeros(40, dtype=torch.long, device="meta")
    with NoDeviceMixing(), pytest.raises(NotImplementedError, match="meta tensor"):
        linear_module.evaluate(model, x, y, 8, chunk=16)  # fails only at the copy to the CPU

    seen = []

    def evaluate(model, x, y, num_classes):  # (the real one returns numpy arrays)
        seen.append((x.device.type, y.device.type, model.weight.device.type))
        return np.zeros(len(model.heads)), np.zeros(len(model.heads))

    monkeypatch.setattr(linear_module, "evaluate", evaluate)
    xtr, ytr, xte, yte, classes = _data()
    with NoDeviceMixing():
        _, model = train_heads(
            xtr,
            ytr,
            xte,
            yte,
            classes,
            MIXED_HEADS,
            Recipe(epochs=2, batch_size=32, warmup_epochs=1, weight_decay=1e-4),
            device="meta",
        )
    assert seen == [("meta", "meta", "meta")] * 2
    assert all(t.device.type == "meta" for t in model.state_dict().values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_agrees_with_cpu():
    xtr, ytr, xte, yte, classes = _data(classes=8)
    recipe = Recipe(epochs=4, batch_size=32, warmup_epochs=1)
    cpu, cpu_model = train_heads(xtr, ytr, xte, yte, classes, MIXED_HEADS, recipe)
    gpu, gpu_model = train_heads(xtr, ytr, xte, yte, classes, MIXED_HEADS, recipe, device="cuda")
    assert gpu_model.weight.device.type == "cuda"
    for key, value in cpu_model.state_dict().items():
        torch.testing.assert_close(gpu_model.state_dict()[key].cpu(), value, atol=2e-5, rtol=1e-4)
    for a, b in zip(cpu, gpu, strict=True):
        assert abs(a["top1"] - b["top1"]) <= 100 / len(yte) + 1e-9  # at most one sample
