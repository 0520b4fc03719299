"""workflow_scripts.attentive: the EP head against a hand-written reference (same init, same
batch: equal logits, loss and LARS step), the pooled vector as the attention-weighted sum of
the value chunks, a task that mean pooling cannot solve, determinism, collapsed tokens, the
schedule, and the tokens each backbone gives against an independent computation."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from workflow_scripts import attentive
from workflow_scripts.attentive import AttentiveProbe, Recipe
from workflow_scripts.backbones import build_backbone


def _reference_logits(params: dict, x: torch.Tensor, arm: str, eps: float) -> torch.Tensor:
    """EP written out token by token and query by query (torch ops, so autograd gives the
    gradients of this independent form)."""
    b, n, d = x.shape
    queries = params["queries"][0]
    q = queries.shape[0]
    width = d // q
    if arm == "bn":
        flat = x.reshape(b * n, d)
        mean = flat.mean(0)
        var = ((flat - mean) ** 2).mean(0)  # biased, as BatchNorm normalises in training
        x = ((flat - mean) / torch.sqrt(var + eps)).reshape(b, n, d)
    rows = []
    for i in range(b):
        values = x[i] @ params["value.weight"].T  # [n, d]
        pooled = []
        for m in range(q):
            scores = torch.stack([(queries[m] * x[i, t]).sum() / math.sqrt(d) for t in range(n)])
            weights = torch.exp(scores - scores.max())
            weights = weights / weights.sum()
            chunk = values[:, m * width : (m + 1) * width]
            pooled.append(sum(weights[t] * chunk[t] for t in range(n)))
        rows.append(torch.cat(pooled))
    z = torch.stack(rows)
    return z @ params["classifier.weight"].T + params["classifier.bias"]


def _mae_lars_step(params: dict, grads: dict, lr: float, trust: float, momentum_buf: dict):
    """MAE's LARS (util/lars.py, which EP uses), weight decay 0, first step: tensors of two or
    more dimensions scaled by trust * |p| / |g|, one-dimensional ones plain SGD."""
    out = {}
    for name, p in params.items():
        g = grads[name]
        if p.ndim > 1:
            pn, gn = p.norm(), g.norm()
            g = g * (trust * pn / gn if pn > 0 and gn > 0 else 1.0)
        momentum_buf[name] = g.clone()
        out[name] = p - lr * momentum_buf[name]
    return out


@pytest.mark.parametrize("arm", ["raw", "bn"])
def test_head_equals_a_hand_written_reference(arm):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, dtype=torch.float64) * 2 + 0.5
    y = torch.tensor([0, 2, 1])
    probe = AttentiveProbe(8, 3, arm=arm, queries=4, seed=7).double()
    probe.train()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in probe.named_parameters()}
    logits = probe(x)
    expected = _reference_logits(params, x, arm, eps=1e-6)
    torch.testing.assert_close(logits, expected, rtol=1e-12, atol=1e-12)
    loss = F.cross_entropy(logits, y)
    ref_loss = -torch.log_softmax(expected, dim=1)[torch.arange(3), y].mean()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)

    recipe = Recipe(epochs=1, batch_size=3, base_lr=0.5, warmup_epochs=0, queries=4)
    opt = attentive.optimizer(probe, recipe)
    loss.backward()
    opt.step()
    ref_loss.backward()
    stepped = _mae_lars_step(
        {k: v.detach() for k, v in params.items()},
        {k: v.grad for k, v in params.items()},
        recipe.lr,
        recipe.trust_coeff,
        {},
    )
    for name, value in probe.named_parameters():
        torch.testing.assert_close(value.detach(), stepped[name], rtol=1e-12, atol=1e-14)
    # the adapted tensors moved by trust * lr * |p| exactly (wd 0, first step)
    moved = (stepped["value.weight"] - params["value.weight"].detach()).norm()
    assert moved.item() == pytest.approx(
        recipe.lr * recipe.trust_coeff * params["value.weight"].detach().norm().item()
    )


def test_pool_is_the_attention_weighted_sum_of_value_chunks():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 12, generator=gen)
    probe = AttentiveProbe(12, 5, queries=3, seed=1).eval()
    with torch.no_grad():
        z = probe.pool(x).numpy()
        a = probe.attention(x).numpy()
        v = probe.value(x).numpy()
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-6)
    expected = np.concatenate(
        [np.einsum("bn,bnc->bc", a[:, m], v[:, :, 4 * m : 4 * (m + 1)]) for m in range(3)], axis=1
    )
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-6)


def _position_task(n: int, seed: int):
    """Class = the position of the one token that carries a marker; every token carries its
    position embedding, so the mean of the tokens is the same for every class."""
    gen = torch.Generator().manual_seed(seed)
    positions = torch.randn(8, 16, generator=torch.Generator().manual_seed(99))
    marker = torch.randn(16, generator=torch.Generator().manual_seed(98)) * 3
    labels = torch.randint(0, 4, (n,), generator=gen)
    x = positions.expand(n, 8, 16) + 0.3 * torch.randn(n, 8, 16, generator=gen)
    x = x.clone()
    x[torch.arange(n), labels] += marker
    return x, labels


def test_learns_what_a_mean_pooled_linear_probe_cannot():
    xtr, ytr = _position_task(800, seed=0)
    xte, yte = _position_task(400, seed=1)
    oracle = LogisticRegression(max_iter=2000).fit(xtr.mean(1).numpy(), ytr.numpy())
    mean_pooled = oracle.score(xte.mean(1).numpy(), yte.numpy()) * 100
    recipe = Recipe(
        epochs=30, batch_size=64, base_lr=1.0, warmup_epochs=2, queries=4, trust_coeff=0.1
    )
    records, _ = attentive.train(
        xtr, ytr, xte, yte, num_classes=4, arm="raw", recipe=recipe, seed=0
    )
    assert mean_pooled < 40  # chance is 25
    assert records[-1]["top1"] > 95
    assert [r["epoch"] for r in records] == list(range(1, 31))
    assert math.isnan(records[-1]["top5"])  # four classes: no top-5


def test_determinism_and_the_seed():
    xtr, ytr = _position_task(200, seed=2)
    xte, yte = _position_task(100, seed=3)
    recipe = Recipe(epochs=3, batch_size=32, base_lr=1.0, warmup_epochs=1, queries=4)
    runs = [
        attentive.train(xtr, ytr, xte, yte, num_classes=4, arm="bn", recipe=recipe, seed=s)
        for s in (5, 5, 6)
    ]
    assert pd.DataFrame(runs[0][0]).equals(pd.DataFrame(runs[1][0]))  # NaN top-5 equal too
    for (name, a), (_, b) in zip(
        runs[0][1].state_dict().items(), runs[1][1].state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert not torch.equal(runs[0][1].queries, runs[2][1].queries)


@pytest.mark.parametrize("arm", ["raw", "bn"])
@pytest.mark.parametrize("fill", [0.0, 3.0])
def test_collapsed_tokens_train_without_nan(arm, fill):
    """Every token identical (all zero, or one constant): attention is uniform, the BN arm
    divides by sqrt(eps), every prediction is the same class."""
    xtr = torch.full((40, 4, 8), fill)
    ytr = torch.arange(40) % 3
    xte = torch.full((30, 4, 8), fill)
    yte = torch.tensor([0] * 20 + [1] * 6 + [2] * 4)
    recipe = Recipe(epochs=2, batch_size=16, base_lr=1.0, warmup_epochs=1, queries=2)
    records, probe = attentive.train(
        xtr, ytr, xte, yte, num_classes=3, arm=arm, recipe=recipe, seed=0
    )
    assert all(math.isfinite(r["train_loss"]) for r in records)
    with torch.no_grad():
        np.testing.assert_allclose(probe.eval().attention(xte).numpy(), 0.25, rtol=1e-6)
    shares = [100 * 20 / 30, 100 * 6 / 30, 100 * 4 / 30]  # one class predicted for all
    assert any(records[-1]["top1"] == pytest.approx(share) for share in shares)


def test_schedule_is_warmup_then_half_cosine():
    recipe = Recipe(epochs=10, batch_size=512, base_lr=0.1, warmup_epochs=2)
    assert recipe.lr == pytest.approx(0.2)
    assert attentive.learning_rate(recipe, 0.0) == 0.0
    assert attentive.learning_rate(recipe, 1.0) == pytest.approx(0.1)
    assert attentive.learning_rate(recipe, 2.0) == pytest.approx(0.2)
    assert attentive.learning_rate(recipe, 6.0) == pytest.approx(0.1)
    assert attentive.learning_rate(recipe, 10.0) == pytest.approx(0.0, abs=1e-15)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="5 queries do not divide the token width 64"):
        AttentiveProbe(64, 3, queries=5)
    with pytest.raises(ValueError, match="unknown arm 'affine'"):
        AttentiveProbe(64, 3, arm="affine")
    with pytest.raises(ValueError, match="10 train tokens for 9 labels"):
        attentive.train(
            torch.zeros(10, 2, 4),
            torch.zeros(9, dtype=torch.long),
            torch.zeros(3, 2, 4),
            torch.zeros(3, dtype=torch.long),
            num_classes=2,
            arm="raw",
            recipe=Recipe(epochs=1, batch_size=4, queries=2),
        )


def test_vit_tokens_are_the_last_block_before_the_final_norm():
    """The demo ViT: timm's blocks run by hand (patch embedding, position embedding, blocks,
    no final norm, prefix token dropped); with the mean-patch embedding, the backbone's own
    output is fc_norm of the tokens' mean."""
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    for embedding in ("cls", "mean_patch"):
        vit = build_backbone("vit_tiny_p8", embedding).eval()
        got = attentive.tokens(vit, images)
        with torch.no_grad():
            x = vit._pos_embed(vit.patch_embed(images))
            x = vit.norm_pre(x)
            for block in vit.blocks:
                x = block(x)
            expected = x[:, vit.num_prefix_tokens :]
        assert got.shape == (3, 16, 64)
        torch.testing.assert_close(got, expected)
        if embedding == "mean_patch":
            with torch.no_grad():
                torch.testing.assert_close(vit.fc_norm(got.mean(1)), vit(images))


@pytest.mark.parametrize("arch", ["resnet10_tiny", "resnet50"])
def test_resnet_tokens_average_to_the_embedding(arch):
    torch.manual_seed(0)
    model = build_backbone(arch, "avgpool").eval()
    images = torch.randn(2, 3, 64, 64)
    got = attentive.tokens(model, images)
    with torch.no_grad():
        embedding = model(images)
    assert got.shape[0] == 2 and got.shape[2] == embedding.shape[1]
    torch.testing.assert_close(got.mean(1), embedding, rtol=1e-5, atol=1e-6)


def test_beit_tokens_give_its_mean_patch_embedding():
    torch.manual_seed(0)
    beit = build_backbone("beitv2_base_patch16_224", "mean_patch").eval()
    images = torch.randn(1, 3, 224, 224)
    got = attentive.tokens(beit, images)
    assert got.shape == (1, 196, 768)
    with torch.no_grad():
        torch.testing.assert_close(beit.fc_norm(got.mean(1)), beit(images), rtol=1e-4, atol=1e-5)


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="no tokens for a Linear backbone"):
        attentive.tokens(torch.nn.Linear(2, 2), torch.zeros(1, 2))


def test_train_subset_is_stratified_and_seeded():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 3 + [3] * 1)
    subset = attentive.train_subset(labels, 10)
    counts = np.bincount(labels[subset], minlength=4)
    assert counts.tolist() == [5, 3, 1, 1]  # max(1, round(10% of each class))
    assert np.all(np.diff(subset) > 0)  # ascending, no repeats
    np.testing.assert_array_equal(subset, attentive.train_subset(labels, 10))
    assert attentive.train_subset(labels, 100) is None
    # the draw: per class in sorted order from the legacy stream seeded 42
    rng = np.random.RandomState(42)
    expected = np.sort(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(labels == c), k, replace=False)
                for c, k in zip(range(4), [5, 3, 1, 1], strict=True)
            ]
        )
    )
    np.testing.assert_array_equal(subset, expected)


@pytest.mark.parametrize("arch", sorted(attentive.TOKEN_SHAPES))
def test_token_shapes_for_the_memory_request_are_measured(arch):
    """The table the plan sizes jobs with equals the tokens each backbone gives."""
    from workflow_scripts import registry

    spec = registry.ARCHS[arch]
    model = build_backbone(arch, spec["embeddings"][0])
    wrapper = attentive.TokenBackbone(model, spec["img_size"])
    assert (wrapper.tokens, wrapper.dim) == attentive.token_shape(arch, spec)
    assert wrapper.embed_dim == wrapper.tokens * wrapper.dim


def test_run_job_equals_training_on_independently_computed_tokens(tmp_path):
    """One job on a synthetic data set (uint8 arrays, as the demo's): its rows equal
    attentive.train on tokens computed here from the images (normalised by hand, blocks of
    timm's forward_intermediates), for both arms; provenance columns as the linear probe's."""
    import logging

    import pandas as pd

    from workflow_scripts.backbones import save_weights

    torch.manual_seed(0)
    vit = build_backbone("vit_tiny_p8", "cls")
    weights = tmp_path / "w.safetensors"
    save_weights(vit, weights)
    rng = np.random.default_rng(0)
    paths = {}
    for split, n in (("train", 60), ("test", 30)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 3, n).astype(np.int64)
        np.save(tmp_path / f"{split}_images.npy", images)
        np.save(tmp_path / f"{split}_labels.npy", labels)
        paths[split] = (images, labels)
    spec = {
        "resize": None,
        "crop": None,
        "interpolation": "bilinear",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
    }
    settings = {
        "device": "cpu",
        "epochs": 3,
        "batch_size": 16,
        "base_lr": 1.0,
        "warmup_epochs": 1,
        "trust_coeff": 0.05,
        "queries": 8,
        "seeds": [0, 1],
        "train_percent": 100,
    }
    out = tmp_path / "probe.csv"
    attentive.run_job(
        weights,
        [out],
        model={
            "key": "m",
            "arch": "vit_tiny_p8",
            "embedding": "cls",
            "source": "demo",
            "method": "random",
        },
        datasets=["d"],
        train_images=[tmp_path / "train_images.npy"],
        train_labels=[tmp_path / "train_labels.npy"],
        test_images=[tmp_path / "test_images.npy"],
        test_labels=[tmp_path / "test_labels.npy"],
        num_classes=[3],
        arms=["raw", "bn"],
        settings=settings,
        sources={"d": {"kind": "synthetic"}},
        transform=spec,
        options={
            "batch_size": 32,
            "dtype": "float32",
            "precision": "fp32",
            "workers": 0,
            "log_every": 60.0,
        },
        data_root=tmp_path,
        code="c0de",
        log=logging.getLogger("test"),
    )
    rows = pd.read_csv(out)
    assert rows[["arm", "seed"]].values.tolist() == [["raw", 0], ["raw", 1], ["bn", 0], ["bn", 1]]
    assert set(rows.columns) >= {
        *attentive.COLUMNS,
        "model",
        "dataset",
        "protocol",
        "code_version",
        "device",
    }
    assert (rows["protocol"] == "attentive").all() and (rows["tokens"] == 16).all()

    def independent_tokens(images):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        x = (x - 0.5) / 0.25
        vit.eval()
        with torch.no_grad():
            t = vit._pos_embed(vit.patch_embed(x))
            for block in vit.blocks:
                t = block(t)
        return t[:, vit.num_prefix_tokens :]

    # held in float16 as the job holds them
    xtr = independent_tokens(paths["train"][0]).half()
    xte = independent_tokens(paths["test"][0]).half()
    ytr, yte = (torch.as_tensor(paths[s][1]) for s in ("train", "test"))
    recipe = attentive.recipe_of(settings)
    for row in rows.itertuples():
        records, _ = attentive.train(
            xtr, ytr, xte, yte, num_classes=3, arm=row.arm, recipe=recipe, seed=row.seed
        )
        assert row.top1 == pytest.approx(records[-1]["top1"])
        assert row.top1_best == pytest.approx(max(r["top1"] for r in records))


def test_a_real_layouts_train_subset_gives_the_full_splits_rows(tmp_path):
    """A real data set (ImageNet's layout, read through its adapter and file list): the tokens
    of a subset are the full split's tokens at those indices; a synthetic array too."""
    from tests import dataset_layouts

    truth = dataset_layouts.imagenet(tmp_path)
    files = tmp_path / "train_files.txt"
    files.write_text("\n".join(truth["splits"]["train"][0]) + "\n")
    torch.manual_seed(0)
    wrapper = attentive.TokenBackbone(build_backbone("vit_tiny_p8", "cls"), 32)
    spec = {
        "resize": 32,
        "crop": 32,
        "interpolation": "bilinear",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
    }
    options = {
        "batch_size": 3,
        "dtype": "float16",
        "precision": "fp32",
        "workers": 0,
        "log_every": 60.0,
    }
    source = {"kind": "imagenet", "root": str(truth["root"]), "preprocessing": None}
    where = ("m", "imagenet", "train")
    cpu = torch.device("cpu")
    full = attentive.split_tokens(wrapper, files, source, spec, options, cpu, where)
    assert full.shape == (len(truth["splits"]["train"][0]), 16, 64)
    assert full.dtype == torch.float16
    index = np.array([1, 4, 5])
    part = attentive.split_tokens(wrapper, files, source, spec, options, cpu, where, index)
    torch.testing.assert_close(part, full[index])
    images = np.random.default_rng(1).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    synthetic = {"kind": "synthetic"}
    whole = attentive.split_tokens(
        wrapper, tmp_path / "x.npy", synthetic, spec, options, cpu, where
    )
    some = attentive.split_tokens(
        wrapper, tmp_path / "x.npy", synthetic, spec, options, cpu, where, np.array([0, 6])
    )
    torch.testing.assert_close(some, whole[[0, 6]])


def test_a_labels_mismatch_fails_before_any_token_is_computed(tmp_path, monkeypatch):
    """The test split's labels are one short: the job names data set, split and files before
    the backbone sees an image (the train split would come first)."""
    import logging

    from workflow_scripts.backbones import save_weights

    save_weights(build_backbone("vit_tiny_p8", "cls"), tmp_path / "w.safetensors")
    rng = np.random.default_rng(0)
    for split, n, n_labels in (("train", 10, 10), ("test", 6, 5)):
        np.save(tmp_path / f"{split}_x.npy", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
        np.save(tmp_path / f"{split}_y.npy", np.zeros(n_labels, dtype=np.int64))
    calls = []
    monkeypatch.setattr(attentive, "split_tokens", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError, match=r"data set 'd', split 'test': .* lists 6 images"):
        attentive.run_job(
            tmp_path / "w.safetensors",
            [tmp_path / "out.csv"],
            model={
                "key": "m",
                "arch": "vit_tiny_p8",
                "embedding": "cls",
                "source": "demo",
                "method": "random",
            },
            datasets=["d"],
            train_images=[tmp_path / "train_x.npy"],
            train_labels=[tmp_path / "train_y.npy"],
            test_images=[tmp_path / "test_x.npy"],
            test_labels=[tmp_path / "test_y.npy"],
            num_classes=[2],
            arms=["raw"],
            settings={
                "device": "cpu",
                "epochs": 1,
                "batch_size": 4,
                "queries": 8,
                "seeds": [0],
                "train_percent": 100,
            },
            sources={"d": {"kind": "synthetic"}},
            transform={
                "resize": None,
                "crop": None,
                "mean": [0.5] * 3,
                "std": [0.25] * 3,
                "interpolation": "bilinear",
            },
            options={"batch_size": 4, "precision": "fp32", "workers": 0, "log_every": 60.0},
            data_root=tmp_path,
            code="c",
            log=logging.getLogger("test"),
        )
    assert calls == [] and not (tmp_path / "out.csv").exists()
