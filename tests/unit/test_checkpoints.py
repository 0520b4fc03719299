"""Checkpoint conversion: every source format gives back the exact backbone weights.

The oracle is the fabricated reference state dict (tests/unit/checkpoint_layouts.py wraps it in
each source's published layout independently of the converter); the embedding of a fixed input
through the converted safetensors must equal the reference's bit for bit.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoint_layouts import EMBEDDING, embedding_of, other, random_reference, write  # noqa: E402

from workflow_scripts.backbones import load_backbone  # noqa: E402
from workflow_scripts.checkpoints import FORMATS  # noqa: E402
from workflow_scripts.checkpoints.convert import (  # noqa: E402
    CheckpointError,
    convert,
    mmcls_vit_to_timm,
)

TINY = {"resnet": "resnet10_tiny", "vit": "vit_tiny_p8"}
ARCH_OF_FORMAT = {fmt: TINY[spec["families"][0]] for fmt, spec in FORMATS.items()}
# BEiT-v2 has no small architecture: its conversion runs on the real beitv2_base_patch16_224 in
# tests/integration/test_zoo.py (three builds of it take about a minute here).
UNIT_FORMATS = sorted(f for f in FORMATS if f != "beit_v2")


def _convert(tmp_path, fmt, arch, ckpt_ref, momentum=None, options=None, trusted=None):
    raw = tmp_path / f"{fmt}.ckpt"
    write(raw, fmt, ckpt_ref, momentum=momentum, vit=arch.startswith("vit"))
    weights, sidecar = tmp_path / f"{fmt}.safetensors", tmp_path / f"{fmt}.json"
    info = convert(raw, weights, sidecar, model=f"m_{fmt}", arch=arch, embedding=EMBEDDING[arch],
                   fmt=fmt, url="http://example.invalid/x", sha256=None,
                   trusted=FORMATS[fmt]["pickle"] if trusted is None else trusted,
                   options=options)
    return raw, weights, sidecar, info


def _assert_exact(weights, arch, ref):
    """Same tensors as the reference, and the same embedding of a fixed input."""
    state = load_file(str(weights))
    assert set(state) == set(ref)
    for key, value in ref.items():
        assert state[key].dtype == value.dtype, key
        assert torch.equal(state[key], value), key
    model = load_backbone(weights, arch, EMBEDDING[arch])  # strict
    converted = embedding_of(model, arch)
    assert converted.shape == (2, model.embed_dim)
    assert torch.equal(converted, embedding_of(model, arch, ref))
    return model


@pytest.mark.parametrize("fmt", UNIT_FORMATS)
def test_every_format_converts_to_the_exact_weights(tmp_path, fmt):
    arch = ARCH_OF_FORMAT[fmt]
    ref = random_reference(arch, seed=UNIT_FORMATS.index(fmt))
    raw, weights, sidecar, info = _convert(tmp_path, fmt, arch, ref, momentum=other(ref, 7))
    _assert_exact(weights, arch, ref)
    side = json.loads(sidecar.read_text())
    assert side == info
    assert side["format"] == fmt and side["arch"] == arch
    assert side["source_sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert side["sha256"] == hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    assert side["embed_dim"] == {"resnet10_tiny": 128, "vit_tiny_p8": 64}[arch]
    assert side["unpickling"] == ("full" if fmt == "npid_numpy" else
                                  "safetensors" if fmt == "safetensors" else "weights_only")


def test_dropped_and_added_keys_are_recorded(tmp_path):
    ref = random_reference("vit_tiny_p8", 1)
    *_, info = _convert(tmp_path, "mmselfsup_vit", "vit_tiny_p8", ref)
    assert {"backbone.mask_token", "neck.decoder_pred.weight", "target_generator.hog.weight_x",
            "data_preprocessor.mean"} == set(info["dropped_keys"])
    ref = random_reference("resnet10_tiny", 2)
    *_, info = _convert(tmp_path, "moco_v2", "resnet10_tiny", ref)
    assert "module.encoder_q.fc.0.weight" in info["dropped_keys"]
    assert "module.queue" in info["dropped_keys"]
    assert not any(k.startswith("module.encoder_q.") and ".fc." not in k for k in info["dropped_keys"])


@pytest.mark.parametrize("arch", ["resnet10_tiny", "vit_tiny_p8"])
def test_moco_v3_switch_base_or_momentum(tmp_path, arch):
    base = random_reference(arch, 4)
    momentum = other(base, 5)
    _, weights, _, info = _convert(tmp_path, "moco_v3", arch, base, momentum=momentum)
    _assert_exact(weights, arch, base)
    assert info["options"] == {}
    _, weights, _, info = _convert(tmp_path, "moco_v3", arch, base, momentum=momentum,
                                   options={"moco_v3_encoder": "momentum"})
    _assert_exact(weights, arch, momentum)
    assert info["options"] == {"moco_v3_encoder": "momentum"}
    assert any(k.startswith("module.base_encoder.") for k in info["dropped_keys"])


def test_npid_values_are_numpy_and_need_trust(tmp_path):
    ref = random_reference("resnet10_tiny", 6)
    with pytest.raises(CheckpointError, match=r"model 'm_npid_numpy': format 'npid_numpy'.*"
                                              r"full unpickling.*column 'trusted'"):
        _convert(tmp_path, "npid_numpy", "resnet10_tiny", ref, trusted=False)
    assert not (tmp_path / "npid_numpy.safetensors").exists()


def test_untrusted_file_that_needs_unpickling_is_refused(tmp_path):
    """A format read weights-only whose file holds numpy arrays: refused unless trusted."""
    ref = random_reference("resnet10_tiny", 7)
    raw = tmp_path / "np.torch"
    torch.save({"classy_state_dict": {"base_model": {"model": {"trunk": {
        f"_feature_blocks.{k}": v.numpy() for k, v in ref.items()}}}}}, raw)
    kwargs = dict(model="np_vissl", arch="resnet10_tiny", embedding="avgpool", fmt="vissl_trunk")
    with pytest.raises(CheckpointError, match=r"model 'np_vissl'.*weights_only=True.*"
                                              r"column 'trusted'"):
        convert(raw, tmp_path / "w.safetensors", tmp_path / "w.json", trusted=False, **kwargs)
    assert not (tmp_path / "w.safetensors").exists()
    info = convert(raw, tmp_path / "w.safetensors", tmp_path / "w.json", trusted=True, **kwargs)
    assert info["unpickling"] == "full"
    _assert_exact(tmp_path / "w.safetensors", "resnet10_tiny", ref)


def test_unexpected_missing_and_misshaped_keys_are_listed(tmp_path):
    ref = random_reference("resnet10_tiny", 8)
    bad = dict(ref)
    bad["layer5.0.conv1.weight"] = torch.zeros(3, 3)
    bad["extra_bias"] = torch.zeros(3)
    del bad["layer4.conv2.weight"]
    bad["conv1.weight"] = torch.zeros(1, 2, 3, 3)
    raw = tmp_path / "bad.pth"
    torch.save(bad, raw)
    with pytest.raises(CheckpointError) as err:
        convert(raw, tmp_path / "w.safetensors", tmp_path / "w.json", model="bad_one",
                arch="resnet10_tiny", embedding="avgpool", fmt="torchvision")
    text = str(err.value)
    assert "model 'bad_one'" in text
    assert "unexpected keys: layer5.0.conv1.weight, extra_bias" in text
    assert "missing keys: layer4.conv2.weight" in text
    assert "conv1.weight (1, 2, 3, 3) != (16, 3, 3, 3)" in text
    assert not (tmp_path / "w.safetensors").exists() and not (tmp_path / "w.json").exists()


def test_missing_bn_counters_are_filled_and_reported(tmp_path):
    ref = random_reference("resnet10_tiny", 9)
    raw = tmp_path / "old.pth"
    torch.save({k: v for k, v in ref.items() if not k.endswith("num_batches_tracked")}, raw)
    info = convert(raw, tmp_path / "w.safetensors", tmp_path / "w.json", model="old",
                   arch="resnet10_tiny", embedding="avgpool", fmt="torchvision")
    counters = sorted(k for k in ref if k.endswith("num_batches_tracked"))
    assert info["added_keys"] == counters
    state = load_file(str(tmp_path / "w.safetensors"))
    assert all(int(state[k]) == 0 for k in counters)


def test_wrong_nesting_names_the_missing_level(tmp_path):
    raw = tmp_path / "x.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}}, raw)
    with pytest.raises(CheckpointError, match=r"model 'x' .*expects ckpt\['model'\], which is "
                                              r"missing \(ckpt has: \['state_dict'\]\)"):
        convert(raw, tmp_path / "w.safetensors", tmp_path / "w.json", model="x",
                arch="vit_tiny_p8", embedding="cls", fmt="mae")


def test_pinned_sha256_is_rechecked_before_unpickling(tmp_path):
    raw = tmp_path / "x.pth"
    torch.save({"a": torch.zeros(1)}, raw)
    with pytest.raises(CheckpointError, match=r"model 'x': .* has sha256 [0-9a-f]{64}, the table "
                                              r"pins 0{64}"):
        convert(raw, tmp_path / "w.safetensors", tmp_path / "w.json", model="x",
                arch="vit_tiny_p8", embedding="cls", fmt="timm_vit", sha256="0" * 64)


@pytest.mark.parametrize(("mmcls", "timm_name"), [
    ("layers.0.ln1.weight", "blocks.0.norm1.weight"),
    ("layers.11.ln2.bias", "blocks.11.norm2.bias"),
    ("layers.3.ffn.layers.0.0.weight", "blocks.3.mlp.fc1.weight"),
    ("layers.3.ffn.layers.1.bias", "blocks.3.mlp.fc2.bias"),
    ("layers.7.attn.qkv.weight", "blocks.7.attn.qkv.weight"),
    ("layers.7.attn.proj.bias", "blocks.7.attn.proj.bias"),
    ("patch_embed.projection.weight", "patch_embed.proj.weight"),
    ("ln1.weight", "norm.weight"),
    ("cls_token", "cls_token"),
    ("pos_embed", "pos_embed"),
])
def test_mmcls_vit_names(mmcls, timm_name):
    assert mmcls_vit_to_timm(mmcls) == timm_name


def test_numpy_reference_round_trip_is_exact():
    """The NPID path turns numpy arrays into tensors without any rounding."""
    from workflow_scripts.checkpoints.convert import _tensors

    values = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    out = _tensors({"w": values, "n": np.int64(5)}, "npid_numpy")
    assert torch.equal(out["w"], torch.from_numpy(values)) and int(out["n"]) == 5
