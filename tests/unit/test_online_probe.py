"""Faithful online linear probe: frozen BN statistics, the drift switch, and an exact oracle."""

import numpy as np
import pytest
import torch

from workflow_scripts.backbones import build_backbone
from workflow_scripts.features import array_batches, extract
from workflow_scripts.linear_heads import HeadSpec, Recipe, train_heads
from workflow_scripts.online_probe import train_online

MEAN, STD = [0.5] * 3, [0.25] * 3
HEADS = [HeadSpec("raw", 0.1, 42), HeadSpec("bn", 0.1, 42)]
RECIPE = Recipe(epochs=3, batch_size=16, warmup_epochs=1)


def _data(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 5, n)


def _resnet():
    torch.manual_seed(0)
    return build_backbone("resnet10_tiny", "avgpool")


def _buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_backbone_bn_statistics_stay_frozen():
    xtr, ytr = _data(64, 0)
    xte, yte = _data(32, 1)
    backbone = _resnet()
    before = _buffers(backbone)
    train_online(
        backbone, xtr, ytr, xte, yte, num_classes=5, heads=HEADS, recipe=RECIPE, mean=MEAN, std=STD
    )
    after = backbone.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key  # running_mean/var, num_batches_tracked too
    assert not any(p.requires_grad for p in backbone.parameters())


def test_authors_drift_switch_changes_bn_statistics():
    xtr, ytr = _data(64, 0)
    xte, yte = _data(32, 1)
    backbone = _resnet()
    before = _buffers(backbone)
    results, _ = train_online(
        backbone,
        xtr,
        ytr,
        xte,
        yte,
        num_classes=5,
        heads=HEADS,
        recipe=RECIPE,
        mean=MEAN,
        std=STD,
        authors_drift=True,
    )
    after = backbone.state_dict()
    assert not torch.equal(before["bn1.running_mean"], after["bn1.running_mean"])
    assert int(after["bn1.num_batches_tracked"]) == 3 * 4  # 3 epochs x 4 batches of 16
    for key in before:  # weights untouched: no gradients reach the backbone
        if not any(s in key for s in ("running_", "num_batches")):
            assert torch.equal(before[key], after[key]), key
    assert all(r["authors_drift"] for r in results)


def test_without_augmentation_equals_the_cached_probe():
    xtr, ytr = _data(80, 2)
    xte, yte = _data(40, 3)
    backbone = _resnet().eval()
    spec = {"resize": None, "crop": None, "mean": MEAN, "std": STD}
    ftr = extract(backbone, array_batches(xtr, spec, 512), len(xtr), spec=spec)
    fte = extract(backbone, array_batches(xte, spec, 512), len(xte), spec=spec)
    cached, _ = train_heads(ftr, ytr, fte, yte, 5, HEADS, RECIPE)
    online, _ = train_online(
        backbone,
        xtr,
        ytr,
        xte,
        yte,
        num_classes=5,
        heads=HEADS,
        recipe=RECIPE,
        mean=MEAN,
        std=STD,
        augment=False,
    )
    for a, b in zip(cached, online, strict=True):
        assert a["top1"] == pytest.approx(b["top1"]) and a["top1_best"] == pytest.approx(
            b["top1_best"]
        )


@pytest.mark.parametrize("split", ["train", "test"])
def test_labels_of_another_length_fail_before_training(split):
    """Issue 28: one label too few was a raw torch size error mid-training; now a ValueError
    naming the split and both lengths before any step (run_job adds model and data set)."""
    xtr, ytr = _data(64, 0)
    xte, yte = _data(32, 1)
    if split == "train":
        ytr = ytr[:-1]
    else:
        yte = yte[:-1]
    backbone = _resnet()
    calls = []
    backbone.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError) as error:
        train_online(
            backbone,
            xtr,
            ytr,
            xte,
            yte,
            num_classes=5,
            heads=HEADS,
            recipe=RECIPE,
            mean=MEAN,
            std=STD,
            where="model 'm', data set 'd'",
        )
    n = 64 if split == "train" else 32
    assert str(error.value).startswith(
        f"model 'm', data set 'd', split '{split}': {n} images but {n - 1} labels"
    )
    assert calls == []  # not a single forward pass


def test_a_job_checks_every_data_sets_labels_before_training(tmp_path, monkeypatch):
    """run_job: a label file of another length in the second data set fails before the first
    data set is trained, naming model, data set, split, both files and both lengths."""
    from workflow_scripts import backbones, online_probe

    paths = {}
    for dataset, cut in (("a", 0), ("b", 1)):
        for split, (n, seed) in (("train", (16, 0)), ("test", (8, 1))):
            images, labels = _data(n, seed)
            for kind, array in (("images", images), ("labels", labels[: n - cut])):
                paths[dataset, split, kind] = tmp_path / f"{dataset}_{split}_{kind}.npy"
                np.save(paths[dataset, split, kind], array)
    loaded = []
    monkeypatch.setattr(backbones, "load_job_backbone", lambda *a: loaded.append(a))

    def column(split, kind):
        return [str(paths[d, split, kind]) for d in ("a", "b")]

    with pytest.raises(ValueError) as error:
        online_probe.run_job(
            "w.safetensors",
            [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")],
            model={"key": "m"},
            datasets=["a", "b"],
            train_images=column("train", "images"),
            train_labels=column("train", "labels"),
            test_images=column("test", "images"),
            test_labels=column("test", "labels"),
            num_classes=[5, 5],
            arms=["raw"],
            cfg={},
            online={"seed": 0, "authors_drift": False},
            mean=MEAN,
            std=STD,
            code="c",
            log=None,
        )
    text = str(error.value)
    assert text.startswith("model 'm': data set 'b', split 'train': ")
    assert "16 images" in text and "(15,)" in text and str(paths["b", "train", "labels"]) in text
    assert loaded == [] and not (tmp_path / "a.csv").exists()
