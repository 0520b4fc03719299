"""Checkpoint conversion: every source format gives back the exact backbone weights.

The oracle is the fabricated reference state dict (tests/unit/checkpoint_layouts.py wraps it in
each source's published layout independently of the converter); the embedding of a fixed input
through the converted safetensors must equal the reference's bit for bit.
"""

import hashlib
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoint_layouts import (  # noqa: E402
    EMBEDDING,
    FABRICATORS,
    embedding_of,
    other,
    random_reference,
    write,
)

from workflow_scripts.backbones import load_backbone  # noqa: E402
from workflow_scripts import registry  # noqa: E402
from workflow_scripts.checkpoints import FORMATS  # noqa: E402
from workflow_scripts.checkpoints.convert import CheckpointError, convert  # noqa: E402
from workflow_scripts.checkpoints.formats import extract, mmcls_vit_to_timm, register  # noqa: E402
from workflow_scripts.checkpoints.inspect import classify_global, pickle_globals  # noqa: E402
from workflow_scripts.safe_pickle import (  # noqa: E402
    Placeholder,
    RefusedGlobal,
    restricted_load,
)

TINY = {"resnet": "resnet10_tiny", "vit": "vit_tiny_p8"}
ARCH_OF_FORMAT = {fmt: TINY[spec["families"][0]] for fmt, spec in FORMATS.items()}
# BEiT-v2 has no small architecture: its conversion runs on the real beitv2_base_patch16_224 in
# tests/integration/test_zoo.py (three builds of it take about a minute here).
UNIT_FORMATS = sorted(f for f in FORMATS if f != "beit_v2")
HISTORY_BUFFER = "mmengine.logging.history_buffer.HistoryBuffer"
# format -> (how its fabricated file is read, the placeholders met)
RESTRICTED = {
    "npid_numpy": ("restricted", []),
    "mmselfsup_resnet": ("restricted", [HISTORY_BUFFER]),
    "mmselfsup_vit": ("restricted", [HISTORY_BUFFER]),
    "mae": ("restricted", ["argparse.Namespace"]),
}


def _convert(tmp_path, fmt, arch, ckpt_ref, momentum=None, options=None, trusted=False, **layout):
    raw = tmp_path / f"{fmt}.ckpt"
    write(raw, fmt, ckpt_ref, momentum=momentum, vit=arch.startswith("vit"), **layout)
    weights, sidecar = tmp_path / f"{fmt}.safetensors", tmp_path / f"{fmt}.json"
    info = convert(
        raw,
        weights,
        sidecar,
        model=f"m_{fmt}",
        arch=arch,
        embedding=EMBEDDING[arch],
        fmt=fmt,
        url="http://example.invalid/x",
        sha256=None,
        trusted=trusted,
        options=options,
    )
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


def test_each_format_is_one_registration():
    """Every registered format says which backbone families its files hold, where the backbone
    is, and extracts; a name registers once; an unknown name is an error listing the known."""
    families = {spec["family"] for spec in registry.ARCHS.values()}
    assert len(FORMATS) == 15 and list(FORMATS)[:2] == ["vissl_trunk", "npid_numpy"]
    for fmt, spec in FORMATS.items():
        assert set(spec) == {"families", "layout", "extract"}, fmt
        assert spec["families"] and set(spec["families"]) <= families, fmt
        assert spec["layout"].strip() and callable(spec["extract"]), fmt
    # formats that are the backbone's own state dict share one extractor
    assert FORMATS["torchvision"]["extract"] is FORMATS["safetensors"]["extract"]
    with pytest.raises(ValueError, match="'mae' is registered twice"):
        register("mae", families=("vit",), layout="again")(lambda ckpt, fmt, options: None)
    assert FORMATS["mae"]["layout"].startswith("ckpt['model']")
    with pytest.raises(
        CheckpointError, match=r"unknown checkpoint format 'x' \(known: vissl_trunk, npid_numpy, "
    ):
        extract({}, "x")


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
    # the files that hold more than tensors (numpy arrays, mmengine's message hub, MAE-style
    # training state) are read by the restricted unpickler, no row needs trust
    assert (
        side["unpickling"]
        == RESTRICTED.get(fmt, ("safetensors" if fmt == "safetensors" else "weights_only", []))[0]
    )
    assert side["placeholders"] == RESTRICTED.get(fmt, (None, []))[1]


def test_dropped_and_added_keys_are_recorded(tmp_path):
    ref = random_reference("vit_tiny_p8", 1)
    *_, info = _convert(tmp_path, "mmselfsup_vit", "vit_tiny_p8", ref)
    assert {
        "backbone.mask_token",
        "neck.decoder_pred.weight",
        "target_generator.hog.weight_x",
        "data_preprocessor.mean",
    } == set(info["dropped_keys"])
    ref = random_reference("resnet10_tiny", 2)
    *_, info = _convert(tmp_path, "moco_v2", "resnet10_tiny", ref)
    assert "module.encoder_q.fc.0.weight" in info["dropped_keys"]
    assert "module.queue" in info["dropped_keys"]
    assert not any(
        k.startswith("module.encoder_q.") and ".fc." not in k for k in info["dropped_keys"]
    )
    # BYOL's online backbone keeps the ImageNet classifier; the authors' loader deleted it
    *_, info = _convert(tmp_path, "byol_online", "resnet10_tiny", ref)
    assert info["dropped_keys"] == ["module.fc.bias", "module.fc.weight"]
    # a converted VISSL trunk (ClusterFit) with a leftover classifier
    *_, info = _convert(tmp_path, "vissl_trunk", "resnet10_tiny", ref, leftover_fc=True)
    assert info["dropped_keys"] == ["_feature_blocks.fc.bias", "_feature_blocks.fc.weight"]
    # MILAN's release: the whole training checkpoint, decoder and all
    vit = random_reference("vit_tiny_p8", 3)
    _, weights, _, info = _convert(tmp_path, "mae", "vit_tiny_p8", vit, training_state=True)
    _assert_exact(weights, "vit_tiny_p8", vit)
    assert (
        "mask_token" in info["dropped_keys"]
        and "decoder_blocks.0.attn.kv.weight" in info["dropped_keys"]
    )
    assert info["unpickling"] == "restricted" and info["placeholders"] == ["argparse.Namespace"]


@pytest.mark.parametrize("arch", ["resnet10_tiny", "vit_tiny_p8"])
def test_moco_v3_switch_base_or_momentum(tmp_path, arch):
    base = random_reference(arch, 4)
    momentum = other(base, 5)
    _, weights, _, info = _convert(tmp_path, "moco_v3", arch, base, momentum=momentum)
    _assert_exact(weights, arch, base)
    assert info["options"] == {}
    _, weights, _, info = _convert(
        tmp_path, "moco_v3", arch, base, momentum=momentum, options={"moco_v3_encoder": "momentum"}
    )
    _assert_exact(weights, arch, momentum)
    assert info["options"] == {"moco_v3_encoder": "momentum"}
    assert any(k.startswith("module.base_encoder.") for k in info["dropped_keys"])


def test_npid_numpy_values_load_without_trust(tmp_path):
    ref = random_reference("resnet10_tiny", 6)
    _, weights, _, info = _convert(tmp_path, "npid_numpy", "resnet10_tiny", ref, trusted=False)
    _assert_exact(weights, "resnet10_tiny", ref)
    assert info["unpickling"] == "restricted" and info["placeholders"] == []
    assert info["dropped_keys"] == ["fc.bias", "fc.weight"]


@pytest.mark.parametrize("v073", [False, True])
@pytest.mark.parametrize("fmt", ["mmselfsup_resnet", "mmselfsup_vit"])
def test_mmengine_message_hub_loads_restricted(tmp_path, fmt, v073):
    """MMSelfSup 1.x files keep mmengine's message hub (HistoryBuffer objects of numpy arrays,
    numpy 1.x names); mmengine >= 0.7.3 also pickles getattr(HistoryBuffer, 'min')."""
    arch = ARCH_OF_FORMAT[fmt]
    ref = random_reference(arch, 11)
    raw, weights, _, info = _convert(tmp_path, fmt, arch, ref, v073=v073)
    _assert_exact(weights, arch, ref)
    assert info["unpickling"] == "restricted"
    expected = [HISTORY_BUFFER] + (
        [f"{HISTORY_BUFFER}.{m}" for m in ("current", "max", "mean", "min")] if v073 else []
    )
    assert info["placeholders"] == expected
    with pytest.raises(
        pickle.UnpicklingError, match="mmengine.logging.history_buffer.HistoryBuffer"
    ):
        torch.load(raw, weights_only=True)  # the oracle: torch itself refuses the file
    obj, met = restricted_load(raw)
    buffer = obj["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buffer, Placeholder) and buffer.dotted == HISTORY_BUFFER
    assert (
        buffer.state["_log_history"].dtype == np.float64 and buffer.state["max_length"] == 1000000
    )
    assert obj["meta"]["dataset_meta"]["classes"][:2] == ("class_0000", "class_0001")
    assert obj["state_dict"]._metadata[""] == {"version": 1}


def test_restricted_loader_reads_numpy_arrays_exactly(tmp_path):
    """numpy 1.x (numpy.core.multiarray) and 2.x (numpy._core.multiarray) names, scalars and
    object arrays; the values equal the saved ones."""
    import checkpoint_layouts

    rng = np.random.default_rng(3)
    obj = {
        "f": rng.standard_normal((3, 4)).astype(np.float32),
        "i": np.arange(5),
        "s": np.float64(2.5),
        "o": np.array(["a", 1], dtype=object),
        "t": torch.arange(6).view(2, 3),
    }
    for name, save in (
        ("np1.pth", lambda o, p: checkpoint_layouts.save(o, p, legacy=True)),
        ("np2.pth", lambda o, p: torch.save(o, p)),
    ):
        save(obj, tmp_path / name)
        loaded, met = restricted_load(tmp_path / name)
        assert met == []
        for key in ("f", "i", "o"):
            assert loaded[key].dtype == obj[key].dtype and np.array_equal(loaded[key], obj[key])
        assert loaded["s"] == 2.5 and type(loaded["s"]) is np.float64
        assert torch.equal(loaded["t"], obj["t"])
    assert "numpy.core.multiarray._reconstruct" in pickle_globals(tmp_path / "np1.pth")
    assert "numpy._core.multiarray._reconstruct" in pickle_globals(tmp_path / "np2.pth")


class _Payload:
    """Pickles as a call of ``func(*args)``: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker):
    import builtins
    import os
    import subprocess

    import payload_module

    code = f"open({str(marker)!r}, 'w').write('ran')"
    return {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "builtins.exec": _Payload(builtins.exec, code),
        "builtins.eval": _Payload(builtins.eval, code),
        "subprocess.call": _Payload(subprocess.call, ["touch", str(marker)]),
        # a module outside any deny list: refused because the pickle calls it
        "payload_module.make_marker": _Payload(payload_module.make_marker, str(marker)),
    }


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "builtins.exec",
        "builtins.eval",
        "subprocess.call",
        "payload_module.make_marker",
    ],
)
@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_payload_is_refused_and_never_runs(tmp_path, name, legacy):
    import checkpoint_layouts

    marker = tmp_path / "marker"
    ref = random_reference("resnet10_tiny", 12)
    obj = {
        "state_dict": {f"backbone.{k}": v for k, v in ref.items()},
        "meta": {"hook": _payloads(marker)[name]},
    }
    raw = tmp_path / "evil.pth"
    checkpoint_layouts.save(obj, raw, legacy=legacy)
    assert not marker.exists()
    expected = {"os.system": "posix.system"}.get(name, name)  # os.system is posix.system
    assert any(g.endswith(name.split(".")[-1]) for g in pickle_globals(raw))
    with pytest.raises(CheckpointError) as err:
        convert(
            raw,
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="evil",
            arch="resnet10_tiny",
            embedding="avgpool",
            fmt="mmselfsup_resnet",
        )
    text = str(err.value)
    assert "model 'evil'" in text and "nothing from it ran" in text
    assert f"the pickle references '{expected}'" in text, text
    assert "\x1b" not in text and "column 'trusted'" in text
    assert not marker.exists()
    assert not (tmp_path / "w.safetensors").exists() and not (tmp_path / "w.json").exists()
    with pytest.raises(RefusedGlobal):
        restricted_load(raw)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["os.system", "builtins.eval"])
def test_a_plain_pickle_with_code_is_refused_naming_row_and_file(tmp_path, name):
    """A pickle.dump'ed checkpoint is no torch file: the conversion refuses it at the first
    global outside the allow-list (its tensors' torch.storage._load_from_bytes), naming the row
    and the file, never suggesting weights_only=False; nothing runs. (The inspector reads such
    files, README 'Look inside a file first'; the conversion's own code is left as it is, so
    that no finished conversion reruns.)"""
    marker = tmp_path / "marker"
    ref = random_reference("resnet10_tiny", 16)
    raw = tmp_path / "evil.pkl"
    with open(raw, "wb") as handle:
        pickle.dump(
            {
                "state_dict": {f"backbone.{k}": v for k, v in ref.items()},
                "hook": _payloads(marker)[name],
            },
            handle,
        )
    with pytest.raises(CheckpointError) as err:
        convert(
            raw,
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="evil",
            arch="resnet10_tiny",
            embedding="avgpool",
            fmt="mmselfsup_resnet",
        )
    text = str(err.value)
    assert f"model 'evil': '{raw}' cannot be read without running code from it" in text
    assert "the pickle references 'torch.storage._load_from_bytes'" in text
    assert "weights_only=False" not in text and "nothing from it ran" in text
    assert not marker.exists()


def test_refused_global_loads_in_full_only_when_trusted(tmp_path):
    """A harmless class that pickles through a call (fractions.Fraction): refused without trust,
    read by full unpickling with it."""
    from fractions import Fraction

    ref = random_reference("resnet10_tiny", 13)
    raw = tmp_path / "fraction.pth"
    torch.save(
        {
            "state_dict": {f"backbone.{k}": v for k, v in ref.items()},
            "meta": {"ratio": Fraction(1, 3)},
        },
        raw,
    )
    kwargs = dict(model="frac", arch="resnet10_tiny", embedding="avgpool", fmt="mmselfsup_resnet")
    with pytest.raises(
        CheckpointError,
        match=r"model 'frac'.*'fractions.Fraction', which the "
        r"pickle calls.*column 'trusted'",
    ):
        convert(raw, tmp_path / "w.safetensors", tmp_path / "w.json", trusted=False, **kwargs)
    info = convert(raw, tmp_path / "w.safetensors", tmp_path / "w.json", trusted=True, **kwargs)
    assert info["unpickling"] == "full"
    _assert_exact(tmp_path / "w.safetensors", "resnet10_tiny", ref)


def test_placeholder_inside_the_state_dict_is_an_error(tmp_path):
    import argparse

    ref = random_reference("resnet10_tiny", 14)
    state = {f"backbone.{k}": v for k, v in ref.items()}
    state["backbone.conv1.weight"] = argparse.Namespace(x=1)
    raw = tmp_path / "odd.pth"
    torch.save({"state_dict": state}, raw)
    with pytest.raises(
        CheckpointError,
        match=r"entry 'backbone.conv1.weight' is an inert "
        r"placeholder of 'argparse.Namespace', not a tensor",
    ):
        convert(
            raw,
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="odd",
            arch="resnet10_tiny",
            embedding="avgpool",
            fmt="mmselfsup_resnet",
        )


def test_pickle_globals_agree_with_torch(tmp_path):
    """The inspector's static reading (pickletools) against torch's own scanner of unsafe
    globals (protocol 2, which torch.save writes); protocol 4 (STACK_GLOBAL, memoized names,
    which torch's scanner cannot read) must give the same names."""
    ref = random_reference("vit_tiny_p8", 15)
    obj, _ = FABRICATORS["mae"](ref)
    found = {}
    for protocol in (2, 4):
        raw = tmp_path / f"p{protocol}.pth"
        torch.save(obj, raw, pickle_protocol=protocol)
        found[protocol] = pickle_globals(raw)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(tmp_path / "p2.pth"))
    assert unsafe == ["argparse.Namespace"]
    assert [g for g in found[2] if classify_global(g) != "weights-only"] == unsafe
    assert found[4] == found[2]
    assert {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "argparse.Namespace",
    } <= set(found[2])


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
        convert(
            raw,
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="bad_one",
            arch="resnet10_tiny",
            embedding="avgpool",
            fmt="torchvision",
        )
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
    info = convert(
        raw,
        tmp_path / "w.safetensors",
        tmp_path / "w.json",
        model="old",
        arch="resnet10_tiny",
        embedding="avgpool",
        fmt="torchvision",
    )
    counters = sorted(k for k in ref if k.endswith("num_batches_tracked"))
    assert info["added_keys"] == counters
    state = load_file(str(tmp_path / "w.safetensors"))
    assert all(int(state[k]) == 0 for k in counters)


def test_wrong_nesting_names_the_missing_level(tmp_path):
    raw = tmp_path / "x.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}}, raw)
    with pytest.raises(
        CheckpointError,
        match=r"model 'x' .*expects ckpt\['model'\], which is "
        r"missing \(ckpt has: \['state_dict'\]\)",
    ):
        convert(
            raw,
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="x",
            arch="vit_tiny_p8",
            embedding="cls",
            fmt="mae",
        )


def test_pinned_sha256_is_rechecked_before_unpickling(tmp_path):
    raw = tmp_path / "x.pth"
    torch.save({"a": torch.zeros(1)}, raw)
    with pytest.raises(
        CheckpointError,
        match=r"model 'x': .* has sha256 [0-9a-f]{64}, the table "
        r"pins 0{64}",
    ):
        convert(
            raw,
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="x",
            arch="vit_tiny_p8",
            embedding="cls",
            fmt="timm_vit",
            sha256="0" * 64,
        )


@pytest.mark.parametrize(
    ("mmcls", "timm_name"),
    [
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
    ],
)
def test_mmcls_vit_names(mmcls, timm_name):
    assert mmcls_vit_to_timm(mmcls) == timm_name


def test_numpy_reference_round_trip_is_exact():
    """The NPID path turns numpy arrays into tensors without any rounding."""
    from workflow_scripts.checkpoints.formats import _tensors

    values = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    out = _tensors({"w": values, "n": np.int64(5)}, "npid_numpy")
    assert torch.equal(out["w"], torch.from_numpy(values)) and int(out["n"]) == 5


def test_protocol_1_rebuilds_objects_as_placeholders(tmp_path):
    """Protocol 1 re-creates plain objects through copyreg._reconstructor; the restricted loader
    answers it with a placeholder (torch.save writes protocol 2 unless asked; torch itself
    cannot read protocol 0 files)."""
    import argparse

    raw = tmp_path / "old.pth"
    torch.save(
        {"model": {"w": torch.arange(3.0)}, "args": argparse.Namespace(lr=0.5)},
        raw,
        pickle_protocol=1,
    )
    assert "copy_reg._reconstructor" in pickle_globals(raw)  # Python 2's name, as pickled
    obj, met = restricted_load(raw)
    assert met == ["argparse.Namespace"]
    assert isinstance(obj["args"], Placeholder) and obj["args"].state == {"lr": 0.5}
    assert torch.equal(obj["model"]["w"], torch.arange(3.0))


def test_value_types_that_pickle_through_a_call_are_recorded_not_called(tmp_path):
    """datetime and pathlib objects pickle as a call (REDUCE); the restricted loader records the
    call as a placeholder with its arguments instead of making it; other calls are refused."""
    import datetime
    from pathlib import PurePosixPath

    raw = tmp_path / "meta.pth"
    when = datetime.datetime(2022, 8, 25, 10, 10, 10)
    torch.save(
        {"model": {"w": torch.ones(2)}, "meta": {"time": when, "dir": PurePosixPath("/work/run")}},
        raw,
    )
    obj, met = restricted_load(raw)
    assert met == ["datetime.datetime", "pathlib.PurePosixPath"]
    stamp = obj["meta"]["time"]
    assert isinstance(stamp, Placeholder) and stamp.dotted == "datetime.datetime"
    assert stamp.args == when.__reduce__()[1]  # the recorded arguments, as pickled
    assert obj["meta"]["dir"].args == ("/", "work", "run")
    assert classify_global("datetime.datetime") == "placeholder"
    assert classify_global("posix.system") == "REFUSED"
    assert classify_global("__builtin__.getattr") == "allowed"
    assert classify_global("numpy.core.multiarray._reconstruct") == "allowed"
