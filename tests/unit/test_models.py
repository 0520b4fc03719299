"""Backbones, safetensors round trip, pre-training determinism, feature extraction checks."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from workflow_scripts import registry
from workflow_scripts.backbones import build_backbone, load_backbone, save_weights
from workflow_scripts.feature_cache import check_finite, load_features
from workflow_scripts.features import array_batches, eval_transform, extract
from workflow_scripts.pretrain.loop import pretrain, warmup_cosine

DEMO_ARCHS = [("resnet10_tiny", "avgpool"), ("vit_tiny_p8", "cls"), ("vit_tiny_p8", "mean_patch")]


@pytest.mark.parametrize(("arch", "embedding"), DEMO_ARCHS)
def test_demo_backbones_embed_with_registered_dim(arch, embedding):
    model = build_backbone(arch, embedding).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, registry.ARCHS[arch]["dim"])


def test_vit_cls_embedding_is_normed_cls_token():
    torch.manual_seed(0)
    vit = build_backbone("vit_tiny_p8", "cls").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = vit.forward_features(x)  # after the final norm
        assert torch.equal(vit(x), tokens[:, 0])
        mean_vit = build_backbone("vit_tiny_p8", "mean_patch").eval()
        mean_vit.load_state_dict(vit.state_dict(), strict=False)
        # mean_patch: mean of patch tokens (CLS excluded) through a fresh LayerNorm (w=1, b=0)
        feats = mean_vit.forward_features(x)
        expected = torch.nn.functional.layer_norm(feats[:, 1:].mean(1), (64,), eps=1e-6)
        torch.testing.assert_close(mean_vit(x), expected)


def test_every_arch_names_an_existing_builder():
    """registry.ARCHS (no torch) names each arch's builder; backbones.BUILDERS holds them all
    and no builder is left unused."""
    from workflow_scripts.backbones import BUILDERS

    named = {arch: spec["builder"] for arch, spec in registry.ARCHS.items()}
    assert {arch: name for arch, name in named.items() if name not in BUILDERS} == {}
    assert set(BUILDERS) == set(named.values())
    assert all(callable(build) for build in BUILDERS.values())


def test_unknown_arch_or_embedding():
    with pytest.raises(ValueError, match="unknown arch 'vit_huge'"):
        build_backbone("vit_huge", "cls")
    with pytest.raises(
        ValueError, match="embedding 'cls' is not available for arch 'resnet10_tiny'"
    ):
        build_backbone("resnet10_tiny", "cls")


def test_safetensors_round_trip_is_exact_and_strict(tmp_path):
    torch.manual_seed(1)
    model = build_backbone("resnet10_tiny", "avgpool")
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    loaded = load_backbone(path, "resnet10_tiny", "avgpool")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    state = load_file(str(path))
    state["layer5.conv1.weight"] = torch.zeros(1)
    del state["bn1.running_var"]
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(
        ValueError,
        match=r"missing keys \['bn1.running_var'\], unexpected keys \['layer5.conv1.weight'\]",
    ):
        load_backbone(tmp_path / "bad.safetensors", "resnet10_tiny", "avgpool")


def _images(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


HP = {
    "batch_size": 16,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup_fraction": 0.2,
    "mean": [0.5] * 3,
    "std": [0.25] * 3,
}


@pytest.mark.parametrize(
    ("arch", "method"),
    [
        ("resnet10_tiny", "simclr"),
        ("resnet10_tiny", "byol"),
        ("resnet10_tiny", "simsiam"),
        ("resnet10_tiny", "rotation"),
        ("resnet10_tiny", "supervised"),
        ("vit_tiny_p8", "mae"),
        ("vit_tiny_p8", "simmim"),
        ("vit_tiny_p8", "simclr"),
    ],
)
def test_pretraining_is_bit_identical_and_changes_weights(arch, method):
    torch.set_num_threads(1)
    images, labels = _images()
    embedding = "avgpool" if arch.startswith("resnet") else "cls"
    kwargs = dict(
        arch=arch,
        embedding=embedding,
        method=method,
        images=images,
        labels=labels,
        num_classes=10,
        steps=3,
        seed=7,
        hp=HP,
    )
    a, history = pretrain(**kwargs)
    b, _ = pretrain(**kwargs)
    init, _ = pretrain(**{**kwargs, "method": "random"})
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    changed = False
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
        changed |= not torch.equal(value, init.state_dict()[key])
    assert changed


def test_warmup_cosine_steps():
    factors = [warmup_cosine(s, 10, 2) for s in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0) and factors[-1] == pytest.approx(
        0.5 * (1 + np.cos(np.pi * 7 / 8))
    )


def test_eval_transform_resize_crop_normalise():
    x = torch.full((2, 3, 40, 60), 255, dtype=torch.uint8)
    out = eval_transform(
        x,
        {
            "resize": 32,
            "crop": 28,
            "interpolation": "bilinear",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.25, 0.5],
        },
    )
    assert out.shape == (2, 3, 28, 28)
    torch.testing.assert_close(out[:, 1], torch.full((2, 28, 28), 2.0))
    out = eval_transform(
        x[:, :, :32, :32], {"resize": None, "crop": None, "mean": [0] * 3, "std": [1] * 3}
    )
    torch.testing.assert_close(out, torch.ones(2, 3, 32, 32))


def test_extract_runs_in_eval_mode_in_order():
    torch.manual_seed(0)
    model = build_backbone("resnet10_tiny", "avgpool")
    model.train()
    images, _ = _images(n=50)
    spec = {"resize": None, "crop": None, "mean": [0.5] * 3, "std": [0.25] * 3}
    feats = extract(model, array_batches(images, spec, batch_size=16), len(images), spec=spec)
    assert not model.training
    with torch.no_grad():
        ref = model(eval_transform(torch.from_numpy(images[7:9]).permute(0, 3, 1, 2), spec))
    np.testing.assert_allclose(feats[7:9], ref.numpy(), rtol=1e-4, atol=1e-5)


def test_non_finite_features_name_model_dataset_split(tmp_path):
    feats = np.ones((5, 3), dtype=np.float32)
    feats[2, 1] = np.nan
    with pytest.raises(
        ValueError, match=r"model 'mae_vit' on data set 'count' split 'test' contain 1 NaN/infinite"
    ):
        check_finite(feats, "mae_vit", "count", "test")
    np.save(tmp_path / "f.npy", np.where(np.isnan(feats), np.inf, feats))
    with pytest.raises(ValueError, match="model 'm' on data set 'd' split 'train'"):
        load_features(tmp_path / "f.npy", "m", "d", "train")


class _Flat(torch.nn.Module):
    """A backbone with a known output: flatten the normalised image, one linear layer."""

    def __init__(self, dim: int, nan_row: int | None = None):
        super().__init__()
        self.embed_dim = dim
        self.fc = torch.nn.Linear(3 * 8 * 8, dim)
        self.nan_row = nan_row
        self.seen = 0

    def forward(self, x):
        out = self.fc(x.flatten(1))
        if self.nan_row is not None and self.seen <= self.nan_row < self.seen + len(x):
            out[self.nan_row - self.seen, 0] = float("nan")
        self.seen += len(x)
        return out


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_extraction_writes_through_a_memory_map_within_1_1x_the_array(tmp_path, dtype):
    """The features go batch by batch into a memory-mapped .npy (renamed when complete): the
    Python heap (tracemalloc: numpy's buffers) never holds more than 1.1x the feature array --
    the old path held the array, its dtype copy and two N x D masks (~2.5x)."""
    import tracemalloc

    from workflow_scripts.features import extract_split_to

    n, dim = 3000, 256
    rng = np.random.default_rng(0)
    np.save(tmp_path / "images.npy", rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8))
    spec = {"resize": None, "crop": None, "mean": [0.5] * 3, "std": [0.25] * 3}
    options = {"batch_size": 128, "dtype": dtype, "device": "cpu", "precision": "fp32"}
    torch.manual_seed(0)
    backbone = _Flat(dim)
    out = tmp_path / "features" / "train.npy"
    tracemalloc.start()
    try:
        shape = extract_split_to(
            out,
            backbone,
            tmp_path / "images.npy",
            {"kind": "synthetic"},
            spec,
            options,
            where=("m", "d", "train"),
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    array_bytes = n * dim * np.dtype(dtype).itemsize
    assert peak < 1.1 * array_bytes, (peak, array_bytes)
    assert shape == (n, dim)
    stored = np.load(out)
    images = np.load(tmp_path / "images.npy")
    expected = extract(backbone, array_batches(images, spec, 500), n, spec=spec)
    np.testing.assert_array_equal(stored, expected.astype(dtype))
    assert stored.dtype == np.dtype(dtype)
    assert [p.name for p in out.parent.iterdir()] == ["train.npy"]  # no temporary left


def test_non_finite_features_stop_extraction_before_the_file_exists(tmp_path):
    from workflow_scripts.features import extract_split_to

    np.save(tmp_path / "images.npy", np.zeros((300, 8, 8, 3), dtype=np.uint8))
    spec = {"resize": None, "crop": None, "mean": [0.5] * 3, "std": [0.25] * 3}
    out = tmp_path / "f" / "test.npy"
    with pytest.raises(
        ValueError,
        match=r"model 'm' on data set 'd' split 'test' contain 1 "
        r"NaN/infinite values in 1 rows \(first rows: \[217\]\)",
    ):
        extract_split_to(
            out,
            _Flat(16, nan_row=217),
            tmp_path / "images.npy",
            {"kind": "synthetic"},
            spec,
            {"batch_size": 64, "dtype": "float32", "device": "cpu"},
            where=("m", "d", "test"),
        )
    assert not out.parent.exists() or not list(out.parent.iterdir())
