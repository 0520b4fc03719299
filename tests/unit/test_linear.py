"""Linear probe: schedule factors, batched heads equal separately trained heads."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workflow_scripts.linear import HeadSpec, Recipe, epoch_batches, train_heads
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
    assert seen == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))])


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
    heads = [HeadSpec("raw", 0.1, 42), HeadSpec("bn", 0.1, 42), HeadSpec("raw", 0.5, 7),
             HeadSpec("bn", 0.05, 7), HeadSpec("bn", 1.0, 3)]
    results, model = train_heads(xtr, ytr, xte, yte, classes, heads, recipe)
    for h, spec in enumerate(heads):
        head, accs = _separate(xtr, ytr, xte, yte, classes, spec, recipe)
        linear = head[-1]
        torch.testing.assert_close(model.weight[h].detach().T, linear.weight.detach(), atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(model.bias[h].detach(), linear.bias.detach(), atol=2e-5, rtol=1e-4)
        if spec.arm == "bn":
            j = model.bn_index.index(h)
            torch.testing.assert_close(model.running_mean[j], head[0].running_mean, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model.running_var[j], head[0].running_var, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model.gamma[j].detach(), head[0].weight.detach(), atol=2e-5, rtol=1e-4)
        assert results[h]["top1"] == pytest.approx(accs[-1])
        assert results[h]["top1_best"] == pytest.approx(max(accs))
        assert results[h]["best_epoch"] == int(np.argmax(accs)) + 1
        assert results[h]["lr"] == pytest.approx(spec.base_lr * 32 / 256)


def test_bn_arm_rescues_tiny_features():
    # Features with a tiny norm (like a random ResNet's): BN before the head fixes the scale.
    xtr, ytr, xte, yte, classes = _data(seed=1, n=400, n_test=200)
    scale = 1e-3
    results, _ = train_heads(xtr * scale, ytr, xte * scale, yte, classes,
                             [HeadSpec("raw", 0.1, 0), HeadSpec("bn", 0.1, 0)],
                             Recipe(epochs=10, batch_size=64, warmup_epochs=1))
    raw, bn = results
    assert bn["top1"] > raw["top1"] + 20


def test_top5_nan_with_few_classes_and_errors():
    xtr, ytr, xte, yte, classes = _data()
    results, _ = train_heads(xtr, ytr, xte, yte, classes, [HeadSpec("raw", 0.1, 0)],
                             Recipe(epochs=2, batch_size=64, warmup_epochs=1))
    assert math.isnan(results[0]["top5"])
    bad = xtr.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="train features contain NaN"):
        train_heads(bad, ytr, xte, yte, classes, [HeadSpec("raw", 0.1, 0)], Recipe(epochs=2, batch_size=64, warmup_epochs=1))
    with pytest.raises(ValueError, match="warmup_epochs"):
        train_heads(xtr, ytr, xte, yte, classes, [HeadSpec("raw", 0.1, 0)], Recipe(epochs=2, batch_size=64, warmup_epochs=2))
    with pytest.raises(ValueError, match="unknown arm"):
        HeadSpec("bnx", 0.1, 0)


def test_top5_counts_hits():
    rng = np.random.default_rng(0)
    xtr = rng.normal(size=(300, 20)).astype(np.float32)
    ytr = rng.integers(0, 8, 300)
    results, model = train_heads(xtr, ytr, xtr, ytr, 8, [HeadSpec("raw", 0.1, 0)],
                                 Recipe(epochs=2, batch_size=64, warmup_epochs=1))
    with torch.no_grad():
        logits = torch.from_numpy(xtr) @ model.weight[0] + model.bias[0]
    top5 = logits.topk(5, dim=1).indices.numpy()
    hand = np.mean([ytr[i] in top5[i] for i in range(300)]) * 100
    assert results[0]["top5"] == pytest.approx(hand)
