"""Rows with source 'timm' (workflow_scripts.timm_models), offline.

The weights are random initialisations of real timm architectures saved in the Hugging Face
hub's cache layout (``models--timm--<name>/{blobs,refs,snapshots}``, as huggingface_hub writes
it) under a temporary cache with offline mode on, or in a local file. The oracle is the same
timm model built and loaded by hand (``timm.create_model`` + ``load_state_dict`` of the file),
its embedding computed by hand from ``forward_features``.
"""

import hashlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file, save_file

from tests.hub_cache import REVISION, hub_layout
from workflow_scripts import features, finetune, timm_models
from workflow_scripts.backbones import load_backbone
from workflow_scripts.config import ConfigError, load_study
from workflow_scripts.plan import MODEL_COLUMNS, Plan
from workflow_scripts.schema import schema_defaults

ROOT = Path(__file__).resolve().parents[2]
VIT_CLS = "vit_tiny_patch16_224.augreg_in21k"  # class token, 192-d, native 224
VIT_REG_GAP = "vit_dwee_patch16_reg1_gap_256.sbb_in1k"  # 1 register, average pool, native 256
CONVNEXT = "convnext_atto.d2_in1k"  # 320-d feature maps, native 224


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub cache holding a seeded random initialisation of each test architecture (with
    its classifier, as the hub's files have): arch -> the cached file."""
    cache = tmp_path_factory.mktemp("hub")
    files = {}
    for seed, arch in enumerate((VIT_CLS, VIT_REG_GAP, CONVNEXT)):
        torch.manual_seed(seed)
        net = timm.create_model(arch, pretrained=False)
        with torch.no_grad():  # no zero-initialised tensor may hide a loading error
            for param in net.parameters():
                param.add_(0.02 * torch.randn_like(param))
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        files[arch] = hub_layout(cache, timm.get_pretrained_cfg(arch).hf_hub_id, state)
    return SimpleNamespace(cache=cache, files=files)


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def by_hand(arch: str, path, **kwargs):
    """The oracle: plain timm, the file loaded strictly."""
    net = timm.create_model(arch, pretrained=False, **kwargs)
    net.load_state_dict(load_file(str(path)))
    return net.eval()


def expected(net, x, embedding: str, prefix: int):
    with torch.no_grad():
        tokens = net.forward_features(x)
        if embedding == "pooled":
            return net.forward_head(tokens, pre_logits=True)
        if embedding == "cls":
            return tokens[:, 0]
        if embedding == "mean_patch":
            return tokens[:, prefix:].mean(1)
        return tokens.mean((2, 3))


def images(size: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(size).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


SPEC = {"resize": None, "crop": None, "interpolation": "bilinear", "mean": [0.5, 0.4, 0.3]}
SPEC["std"] = [0.2, 0.25, 0.3]


def by_hand_input(array: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(SPEC["mean"]), torch.tensor(SPEC["std"])
    return (x - mean[:, None, None]) / std[:, None, None]


# arch, embedding, image size fed (native or not), prefix tokens (class + registers)
CASES = [
    (VIT_CLS, "pooled", 224, 1),
    (VIT_CLS, "cls", 224, 1),
    (VIT_CLS, "mean_patch", 224, 1),
    (VIT_REG_GAP, "pooled", 256, 1),
    (VIT_REG_GAP, "mean_patch", 256, 1),
    (VIT_REG_GAP, "pooled", 224, 1),  # the paper's 224 crop on a 256-px model
    (CONVNEXT, "pooled", 224, 0),
    (CONVNEXT, "avgpool", 96, 0),
]


@pytest.mark.parametrize(("arch", "embedding", "size", "prefix"), CASES)
def test_hub_weights_give_the_features_of_the_model_loaded_by_hand(
    hub, offline, tmp_path, arch, embedding, size, prefix
):
    weights, sidecar = tmp_path / "w.safetensors", tmp_path / "w.json"
    info = timm_models.fetch_weights(
        weights, sidecar, model="row", arch=arch, cache_dir=str(hub.cache)
    )
    assert info["hf_hub_id"] == f"timm/{arch}"
    assert info["hub_revision"] == REVISION
    assert info["source_sha256"] == hashlib.sha256(hub.files[arch].read_bytes()).hexdigest()
    backbone = load_backbone(weights, arch, embedding, source="timm", input_size=size)
    array = images(size)
    got = features.extract(backbone, features.array_batches(array, SPEC, 2), len(array), spec=SPEC)
    native = {VIT_CLS: 224, VIT_REG_GAP: 256, CONVNEXT: None}[arch]  # a CNN takes any size
    kwargs = {"dynamic_img_size": True} if native not in (None, size) else {}
    want = expected(
        by_hand(arch, hub.files[arch], **kwargs), by_hand_input(array), embedding, prefix
    )
    assert got.shape == (len(array), timm_models.arch_spec(arch)["dims"][embedding])
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def test_the_feature_sidecar_records_the_transform(hub, offline, tmp_path):
    """An extraction job of a timm row with transform 'model' (the plan's spec) on a synthetic
    set: the sidecar records the named spec; the features are the model's on timm's crop."""
    import json

    weights = tmp_path / "w.safetensors"
    timm_models.fetch_weights(
        weights, tmp_path / "w.json", model="row", arch=VIT_REG_GAP, cache_dir=str(hub.cache)
    )
    spec = timm_models.transform_spec({"arch": VIT_REG_GAP, "transform": "model"}, {})
    array = images(300, n=2)
    np.save(tmp_path / "x.npy", array)
    np.save(tmp_path / "y.npy", np.array([0, 1]))
    out, sidecar = tmp_path / "f.npy", tmp_path / "f.json"
    features.run_job(
        load_backbone(weights, VIT_REG_GAP, "pooled", source="timm", input_size=256),
        weights=weights,
        model="row",
        datasets=["set"],
        splits=["test"],
        images=[tmp_path / "x.npy"],
        labels=[tmp_path / "y.npy"],
        features=[out],
        sidecars=[sidecar],
        sources={"set": {"kind": "synthetic"}},
        transform=spec,
        options=schema_defaults("features") | {"device": "cpu", "batch_size": 2},
        data_root=tmp_path,
        log=__import__("logging").getLogger("test"),
    )
    recorded = json.loads(sidecar.read_text())["transform"]
    assert recorded == {
        "name": "model",
        "resize": 269,  # floor(256 / 0.95)
        "crop": 256,
        "interpolation": "bicubic",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
    }
    from torchvision.transforms.v2 import functional as TF

    x = torch.from_numpy(array).permute(0, 3, 1, 2)  # the crop by hand, torchvision
    x = TF.center_crop(TF.resize(x, [269], TF.InterpolationMode.BICUBIC, antialias=True), [256])
    x = (x.float() / 255 - 0.5) / 0.5
    want = expected(by_hand(VIT_REG_GAP, hub.files[VIT_REG_GAP]), x, "pooled", 1)
    np.testing.assert_allclose(np.load(out), want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_local_file_for_the_architecture(hub, tmp_path, suffix):
    state = load_file(str(hub.files[CONVNEXT]))
    path = tmp_path / f"mine{suffix}"
    if suffix == ".pth":  # a training checkpoint: read with torch.load(weights_only=True)
        torch.save({"state_dict": state, "epoch": 3}, path)
    else:
        save_file(state, str(path))
    weights = tmp_path / "w.safetensors"
    info = timm_models.fetch_weights(
        weights, tmp_path / "w.json", model="mine", arch=CONVNEXT, url=f"file://{path}"
    )
    assert info["source_file"] == str(path) and info["hf_hub_id"] is None
    backbone = load_backbone(weights, CONVNEXT, "pooled", source="timm", input_size=64)
    x = by_hand_input(images(64))
    with torch.no_grad():
        got = backbone(x)
    torch.testing.assert_close(
        got, expected(by_hand(CONVNEXT, hub.files[CONVNEXT]), x, "pooled", 0)
    )


def test_a_local_file_of_another_architecture_is_refused(hub, tmp_path):
    with pytest.raises(RuntimeError, match=r"model 'mine' \(timm 'convnext_atto.d2_in1k'\).*fit"):
        timm_models.fetch_weights(
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="mine",
            arch=CONVNEXT,
            url=str(hub.files[VIT_CLS]),
        )


def test_a_missing_hub_file_offline_names_the_row_and_the_repository(hub, offline, tmp_path):
    arch = "vit_small_patch16_224.augreg_in21k"  # not in the test cache
    with pytest.raises(
        RuntimeError,
        match=r"model 'small_vit' .*hub repository 'timm/vit_small_patch16_224.augreg_in21k' "
        r"are not in the cache .* cannot be reached \(HF_HUB_OFFLINE is set\): connect this "
        r"machine to the hub .* `hf download timm/vit_small_patch16_224.augreg_in21k --cache-dir",
    ):
        timm_models.fetch_weights(
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="small_vit",
            arch=arch,
            cache_dir=str(hub.cache),
        )
    assert not (tmp_path / "w.safetensors").exists()


def _endpoint(monkeypatch, url):
    """Point huggingface_hub at ``url`` as HF_ENDPOINT would (read when it is imported)."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)
    monkeypatch.setattr(
        huggingface_hub.constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        url + "/{repo_id}/resolve/{revision}/{filename}",
    )


def _not_cached(tmp_path, cache):
    return timm_models.fetch_weights(
        tmp_path / "w.safetensors",
        tmp_path / "w.json",
        model="small_vit",
        arch="vit_small_patch16_224.augreg_in21k",  # not in the test cache
        cache_dir=str(cache),
    )


def test_an_uncached_hub_row_fails_at_once_when_the_hub_cannot_be_reached(
    hub, tmp_path, monkeypatch
):
    """Without HF_HUB_OFFLINE: one metadata request decides (here: nothing listens on the
    endpoint's port), not the downloads' retries; the message names the repository and both
    fixes."""
    from checkpoint_layouts import free_port

    _endpoint(monkeypatch, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RuntimeError) as error:
        _not_cached(tmp_path, hub.cache)
    text = str(error.value)
    assert "hub repository 'timm/vit_small_patch16_224.augreg_in21k' are not in the cache" in text
    assert "the hub cannot be reached (ConnectError: [Errno 111] Connection refused)" in text
    assert "set HF_ENDPOINT to a mirror" in text and "`hf download timm/vit_small" in text
    assert not (tmp_path / "w.safetensors").exists()


def test_the_hub_probe_gives_up_after_its_time_out(hub, tmp_path, monkeypatch):
    """A hub that accepts the connection and never answers: the probe's time-out ends it."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepts (the kernel's backlog), never replies
    try:
        _endpoint(monkeypatch, f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setattr(timm_models, "HUB_PROBE_TIMEOUT", 0.5)
        with pytest.raises(RuntimeError, match=r"the hub cannot be reached \(\w*Timeout"):
            _not_cached(tmp_path, hub.cache)
    finally:
        listener.close()


def test_a_hub_pickle_with_code_names_the_file_repository_and_global(tmp_path, offline):
    """A hub file that is a pickle holding a numpy scalar (as training scripts save their best
    accuracy): refused by the restricted loader; the message names the cached file, the
    repository and the global, and does not suggest weights_only=False."""
    import hashlib
    import os

    arch = CONVNEXT
    repo = timm.get_pretrained_cfg(arch).hf_hub_id
    folder = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "blobs").mkdir()
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    state = timm.create_model(arch, pretrained=False).state_dict()
    incoming = folder / "blobs" / "incoming"
    torch.save({**state, "best_acc1": np.float64(81.2)}, incoming)  # a numpy scalar
    blob = folder / "blobs" / hashlib.sha256(incoming.read_bytes()).hexdigest()
    incoming.rename(blob)
    (snapshot / "pytorch_model.bin").symlink_to(os.path.relpath(blob, snapshot))
    with pytest.raises(RuntimeError) as error:
        timm_models.fetch_weights(
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="row",
            arch=arch,
            cache_dir=str(tmp_path / "hub"),
        )
    text = str(error.value)
    assert f"'{snapshot / 'pytorch_model.bin'}' (hub repository '{repo}')" in text
    assert "needs the global 'numpy." in text and "multiarray.scalar'" in text
    assert "weights_only" not in text


class _Payload:
    """Pickles as a call of ``func(*args)``: what a malicious weights file does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious(name: str, marker):
    import builtins
    import os

    if name == "os.system":  # pickled under its module's real name, posix
        return _Payload(os.system, f"echo pwned > {marker}"), "'posix.system' (os.system)"
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    return _Payload(builtins.eval, code), "'builtins.eval'"


def _assert_refusal(text: str, row: str, file, refused: str):
    assert f"model '{row}'" in text and f"'{file}'" in text, text
    assert f"needs the global {refused}" in text, text
    assert "does not fit the architecture" not in text
    assert "weights_only" not in text and "add_safe_globals" not in text
    assert "\x1b" not in text


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("scheme", ["", "file://"])
@pytest.mark.parametrize("name", ["os.system", "builtins.eval"])
def test_a_local_pickle_with_code_is_refused_naming_row_file_and_global(
    tmp_path, name, scheme, legacy
):
    """Column 'url' naming a .pth whose pickle calls os.system / eval: refused before timm sees
    it, with an error that names the row, the file and the global (not torch's advice to
    retry with weights_only=False, not 'does not fit the architecture'); nothing runs."""
    marker = tmp_path / "MARKER"
    payload, refused = _malicious(name, marker)
    state = timm.create_model(CONVNEXT, pretrained=False).state_dict()
    path = tmp_path / "evil.pth"
    torch.save(
        {"state_dict": state, "hook": payload}, path, _use_new_zipfile_serialization=not legacy
    )
    with pytest.raises(timm_models.WeightsRefused) as error:
        timm_models.fetch_weights(
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="evil_row",
            arch=CONVNEXT,
            url=f"{scheme}{path}",
        )
    _assert_refusal(str(error.value), "evil_row", path, refused)
    assert "(column 'url')" in str(error.value)
    assert "do not mark it trusted" in str(error.value)  # no unsafe way out is offered
    assert not marker.exists() and not (tmp_path / "w.safetensors").exists()


def _hub_pickle(tmp_path, arch, obj):
    """A hub cache whose file for ``arch`` is ``obj`` torch.save'd: (repo, cached file)."""
    import os

    repo = timm.get_pretrained_cfg(arch).hf_hub_id
    folder = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "blobs").mkdir()
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    incoming = folder / "blobs" / "incoming"
    torch.save(obj, incoming)
    blob = folder / "blobs" / hashlib.sha256(incoming.read_bytes()).hexdigest()
    incoming.rename(blob)
    (snapshot / "pytorch_model.bin").symlink_to(os.path.relpath(blob, snapshot))
    return repo, snapshot / "pytorch_model.bin"


@pytest.mark.parametrize("name", ["os.system", "builtins.eval"])
def test_a_hub_pickle_with_code_is_refused_not_called_a_misfit(tmp_path, offline, name):
    """The hub file timm loads (torch's weights-only loader refuses it inside timm): the error
    names the row, the cached file, the repository and the global -- it used to say that the
    weights do not fit the architecture."""
    marker = tmp_path / "MARKER"
    payload, refused = _malicious(name, marker)
    state = timm.create_model(CONVNEXT, pretrained=False).state_dict()
    repo, file = _hub_pickle(tmp_path, CONVNEXT, {**state, "hook": payload})
    with pytest.raises(timm_models.WeightsRefused) as error:
        timm_models.fetch_weights(
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="hub_row",
            arch=CONVNEXT,
            cache_dir=str(tmp_path / "hub"),
        )
    _assert_refusal(str(error.value), "hub_row", file, refused)
    assert f"(hub repository '{repo}')" in str(error.value)
    assert not marker.exists() and not (tmp_path / "w.safetensors").exists()


def test_a_damaged_local_file_names_the_row_and_the_file(hub, tmp_path):
    """A torch zip cut in half: unreadable, said so with row and file; not a misfit."""
    state = load_file(str(hub.files[CONVNEXT]))
    whole = tmp_path / "whole.pth"
    torch.save(state, whole)
    path = tmp_path / "cut.pth"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(RuntimeError) as error:
        timm_models.fetch_weights(
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="cut",
            arch=CONVNEXT,
            url=str(path),
        )
    text = str(error.value)
    assert f"model 'cut' (timm '{CONVNEXT}'): '{path}' (column 'url') is not a readable" in text
    assert "truncated or damaged torch zip archive" in text
    assert "does not fit the architecture" not in text and "weights_only" not in text


def test_a_pinned_sha256_is_checked(hub, offline, tmp_path):
    with pytest.raises(ValueError, match=r"model 'row' .* the table pins 0{64}"):
        timm_models.fetch_weights(
            tmp_path / "w.safetensors",
            tmp_path / "w.json",
            model="row",
            arch=VIT_CLS,
            cache_dir=str(hub.cache),
            sha256="0" * 64,
        )


# --------------------------------------------------------------------------------------------
# transform 'model': timm's eval transform


@pytest.mark.parametrize(
    "arch",
    [
        "vit_base_patch16_224.mae",  # crop_pct 0.9, bicubic
        VIT_REG_GAP,  # 256 px, mean/std 0.5
        "convnext_base.fb_in22k_ft_in1k_384",  # crop mode squash
    ],
)
def test_model_transform_is_timms_eval_transform(arch):
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from workflow_scripts.datasets.transforms import eval_transform

    spec = timm_models.model_transform(arch)
    cfg = timm.get_pretrained_cfg(arch).to_dict()
    theirs = create_transform(**resolve_data_config(pretrained_cfg=cfg))
    ours = eval_transform(spec)
    rng = np.random.default_rng(0)
    for shape in [(300, 420, 3), (517, 389, 3)]:
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        torch.testing.assert_close(ours(image), theirs(image), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------
# the configuration


TABLE_HEADER = (
    "key method arch family paradigm embedding source seed steps epochs format url sha256"
)


def _table(tmp_path, rows, extra=()) -> Path:
    demo = (ROOT / "config" / "models_demo.tsv").read_text().splitlines()
    header = TABLE_HEADER.split() + list(extra)
    assert demo[0].split("\t") == header[:13]
    lines = ["\t".join(header)] + [line + "\t" * len(extra) for line in demo[1:5]]
    for row in rows:
        cells = dict(method="m", paradigm="discriminative", source="timm") | row
        lines.append("\t".join(str(cells.get(column, "")) for column in header))
    path = tmp_path / "models.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _load(tmp_path, rows, extra=("transform",), **changes):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config.update(models_table=str(_table(tmp_path, rows, extra)), **changes)
    return config, load_study(config, ROOT)


def test_timm_rows_take_their_family_from_the_model(tmp_path):
    rows = [
        dict(key="vit", arch=VIT_CLS, embedding="cls"),
        dict(key="cnx", arch=CONVNEXT, family="convnext", embedding="pooled", transform="model"),
    ]
    config, study = _load(tmp_path, rows)
    assert study.model("vit")["family"] == "vit"
    assert study.model("cnx")["family"] == "convnext"
    plan = Plan(config, study)
    assert plan.models_by_source["timm"] == ["vit", "cnx"]
    # the paper transform of the demo config (no crop): any input size
    assert plan.model_fields("vit", "backbone") == {
        "key": "vit",
        "method": "m",
        "arch": VIT_CLS,
        "embedding": "cls",
        "source": "timm",
        "transform": "paper",
        "input_size": None,
    }
    assert plan.model_fields("cnx", "backbone")["input_size"] == 224
    assert plan.model_fields("cnx", "table")["transform"] == "model"
    # other rows' params carry their columns, a job's also the source it loads through
    for key in plan.models_by_source["demo"]:
        for use, columns in MODEL_COLUMNS.items():
            extra = ["source"] if use == "backbone" else []
            assert list(plan.model_fields(key, use)) == [*columns, *extra]
    wc = SimpleNamespace(model="cnx")
    assert plan.transform_of(wc) == timm_models.model_transform(CONVNEXT)
    assert plan.transform_of(wc)["mean"] == [0.485, 0.456, 0.406]
    assert (
        plan.transform_of(SimpleNamespace(model="vit")) == {"name": "paper"} | config["transform"]
    )
    demo = SimpleNamespace(model=plan.models_by_source["demo"][0])
    assert plan.transform_of(demo) == config["transform"]
    assert {k: plan.arch_spec("cnx")[k] for k in ("dim", "img_size")} == {
        "dim": 320,
        "img_size": 224,
    }
    assert plan.arch_spec("vit")["dim"] == 192
    assert plan.weights_spec(wc) == {
        "model": "cnx",
        "arch": CONVNEXT,
        "url": None,
        "sha256": None,
    }


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            dict(arch=CONVNEXT, embedding="cls"),
            r"key 'bad': embedding 'cls' is not available for arch 'convnext_atto.d2_in1k' "
            r"\(choose from pooled, avgpool\)",
        ),
        (
            dict(arch=VIT_REG_GAP, embedding="cls"),
            r"key 'bad': embedding 'cls' is not available .*\(choose from pooled, mean_patch\)",
        ),
        (
            dict(arch=VIT_CLS, family="resnet", embedding="pooled"),
            r"key 'bad': family 'resnet' does not match arch .* family 'vit'",
        ),
        (
            dict(arch="vit_tiny_patch16_224.nonexistent", embedding="pooled"),
            r"key 'bad': timm .* has no pretrained tag 'nonexistent' .* vit_tiny_patch16_224",
        ),
        (
            dict(arch="vit_tiny_patch16_224", embedding="pooled"),
            r"key 'bad': arch 'vit_tiny_patch16_224' names no pretrained tag",
        ),
        (
            dict(arch="no_such_net.x", embedding="pooled"),
            r"key 'bad': 'no_such_net.x' is not a timm",
        ),
        (
            dict(arch=CONVNEXT, embedding="pooled", url="https://example.org/w.pth"),
            r"key 'bad': column 'url' of a timm row is a local weights file",
        ),
        (
            dict(arch="swin_tiny_patch4_window7_224.ms_in1k", embedding="pooled"),
            r"key 'bad': the trained protocols \(finetune, fewshot\) need layer-wise lr decay "
            r"and drop-path .*'swin_transformer'",
        ),
    ],
)
def test_bad_timm_rows_are_config_errors_naming_the_row(tmp_path, row, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, [dict(key="bad") | row])


def test_a_model_without_the_recipe_runs_the_frozen_protocols(tmp_path):
    row = dict(key="swin", arch="swin_tiny_patch4_window7_224.ms_in1k", embedding="pooled")
    _, study = _load(tmp_path, [row], protocols=["knn", "linear"])
    assert study.model("swin")["family"] == "swin_transformer"


def test_transform_model_belongs_to_timm_rows(tmp_path):
    path = _table(tmp_path, [], extra=("transform",))
    lines = path.read_text().splitlines()
    lines[1] = lines[1] + "model"
    path.write_text("\n".join(lines) + "\n")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["models_table"] = str(path)
    with pytest.raises(ConfigError, match=r"key 'random_resnet': column 'transform' is 'model'"):
        load_study(config, ROOT)


# --------------------------------------------------------------------------------------------
# fine-tuning: timm's block grouping


@pytest.mark.parametrize("final_norm_in_last_block", [False, True])
def test_timm_vit_layer_decay_is_the_papers(final_norm_in_last_block):
    """On a plain timm ViT the timm rows' grouping gives the paper's ViT rule (BEiT / MAE
    convention, finetune.vit_layer_id on the parameter names)."""
    vit = timm_models.build(VIT_CLS, "cls", drop_path=0.2)
    assert finetune.is_vit(vit)
    ours = finetune.layer_decay_scales(vit, 0.65, final_norm_in_last_block)
    net = timm.create_model(VIT_CLS, pretrained=False, num_classes=0)
    assert not hasattr(net, "layer_decay_scales")  # the name-based rule of the paper's ViTs
    papers = finetune.layer_decay_scales(net, 0.65, final_norm_in_last_block)
    assert ours == {f"net.{name}": scale for name, scale in papers.items()}
    assert ours["net.blocks.0.attn.qkv.weight"] == pytest.approx(0.65**12)
    # timm's linear drop-path schedule up to the rate on the last block
    assert vit.net.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    assert vit.net.blocks[0].drop_path1.__class__.__name__ == "Identity"


def test_a_timm_resnet_takes_the_plain_recipe():
    """As the paper's ResNets: no layer decay, drop-path or label smoothing."""
    net = timm_models.build("resnet10t.c3_in1k", "avgpool", drop_path=0.2)
    assert timm_models.arch_spec("resnet10t.c3_in1k")["family"] == "resnet"
    assert not finetune.is_vit(net)
    assert not any("DropPath" in type(m).__name__ for m in net.modules())
    groups = finetune.param_groups(
        finetune.Classifier(net, 5, "raw"),
        finetune.FinetuneRecipe(epochs=1, batch_size=2, lr=0.1, warmup_epochs=0),
    )
    assert [g["lr"] for g in groups] == [0.1]


def test_convnext_layer_decay_follows_its_stages():
    cnx = timm_models.build(CONVNEXT, "pooled", drop_path=0.1)
    assert finetune.is_vit(cnx)  # the recipe's extras apply
    scales = finetune.layer_decay_scales(cnx, 0.5)
    # convnext_atto: stages of 2, 2, 6, 2 blocks; timm groups a stage's downsampling with its
    # first block: stem 0, 1-2, 3-4, 5-10, 11-12, head norm 13 (full lr)
    by_hand = {
        "net.stem.0.weight": 13,
        "net.stages.0.blocks.0.conv_dw.weight": 12,
        "net.stages.0.blocks.1.mlp.fc1.weight": 11,
        "net.stages.1.downsample.1.weight": 10,
        "net.stages.1.blocks.0.gamma": 10,
        "net.stages.2.blocks.5.norm.bias": 3,
        "net.stages.3.downsample.0.weight": 2,
        "net.stages.3.blocks.1.conv_dw.weight": 1,
        "net.head.norm.weight": 0,
    }
    assert {name: scales[name] for name in by_hand} == {n: 0.5**e for n, e in by_hand.items()}
    assert set(scales) == {name for name, _ in cnx.named_parameters()}
    assert cnx.net.stages[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.1)
    groups = finetune.param_groups(
        finetune.Classifier(cnx, 5, "raw"),
        finetune.FinetuneRecipe(epochs=1, batch_size=2, lr=0.1, warmup_epochs=0),
    )
    assert [g["lr"] for g in groups] == pytest.approx([0.1 * 0.65**e for e in range(13, -1, -1)])
    assert (
        "head.weight" in groups[-1]["names"]
        and "backbone.net.head.norm.weight" in groups[-1]["names"]
    )


# --------------------------------------------------------------------------------------------
# the modern table


def test_the_modern_table_plans_its_dag(tmp_path):
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("snakemake")),
            "-n",
            "--quiet",
            "rules",
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(ROOT / "config" / "paper.yaml"),
            "--config",
            "models_table=config/models_modern.tsv",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = dict(
        line.split()
        for line in (proc.stdout + proc.stderr).splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    )
    rows = len((ROOT / "config" / "models_modern.tsv").read_text().splitlines()) - 1
    assert 10 <= rows <= 15
    assert counts["timm_weights"] == str(rows)
    assert counts["extract_features"] == str(rows * 11)


def test_the_modern_table_names_models_timm_knows():
    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    config["models_table"] = "config/models_modern.tsv"
    study = load_study(config, ROOT)
    known = set(timm.list_pretrained())
    assert all(arch in known for arch in study.models["arch"])
    families = set(study.models["family"])
    assert families == {"vit", "convnext"}
    methods = set(study.models["method"])
    assert {"dinov2", "dinov3", "ijepa", "mae", "dino", "eva02", "supervised"} <= methods
    assert {"clip", "siglip"} & methods


def test_the_modern_table_mixes_with_the_papers(tmp_path):
    """README "Evaluate any timm model": the documented concatenation of the two tables loads
    with paper.yaml; the paper's rows keep their params, the timm rows add theirs."""
    import pandas as pd

    tables = [ROOT / "config" / "models_paper.tsv", ROOT / "config" / "models_modern.tsv"]
    frames = [pd.read_csv(t, sep="\t", dtype=str, keep_default_na=False) for t in tables]
    path = tmp_path / "models_all.tsv"
    pd.concat(frames).fillna("").to_csv(path, sep="\t", index=False)
    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    config["models_table"] = str(path)
    study = load_study(config, ROOT)
    plan = Plan(config, study)
    by_source = plan.models_by_source
    assert len(by_source["checkpoint"]) == 26 and len(by_source["timm"]) == len(frames[1])
    assert set(study.models["family"]) == {"resnet", "vit", "convnext"}
    assert plan.model_fields("dino_vitb16", "backbone") == {
        "key": "dino_vitb16",
        "method": "dino",
        "arch": "vit_base_patch16_224",
        "embedding": "cls",
        "source": "checkpoint",
    }
    assert plan.model_fields("dino_vitb16_timm", "backbone") == {
        "key": "dino_vitb16_timm",
        "method": "dino",
        "arch": "vit_base_patch16_224.dino",
        "embedding": "cls",
        "source": "timm",
        "transform": "paper",
        "input_size": 224,
    }
    # DINOv2 at the paper's 224 crop: 768-d, the GPU and memory of a paper-size model
    assert {k: plan.arch_spec("dinov2_vitb14")[k] for k in ("dim", "img_size")} == {
        "dim": 768,
        "img_size": 518,
    }
    # memory: a ViT-B's is in registry.HOST_MB; the ViT-H's 631 M parameters come on top
    # (float32: once to extract, four times to fine-tune); the paper rows' requests as before
    from workflow_scripts import registry

    vith = SimpleNamespace(model="ijepa_vith14")
    base = registry.HOST_MB + config["features"]["workers"] * registry.WORKER_MB
    extra = (630_762_240 - 86_000_000) * 4 / 2**20
    assert plan.job_memory_mb(vith, "features") == base + int(extra)
    tuned = registry.HOST_MB + config["finetune"]["workers"] * registry.WORKER_MB + int(4 * extra)
    assert plan.job_memory_mb(vith, "finetune") == tuned
    assert plan.job_memory_mb(SimpleNamespace(model="dino_vitb16"), "features") == base
    assert plan.model_fields("siglip_vitb16", "backbone")["input_size"] == 224
    assert plan.transform_of(SimpleNamespace(model="siglip_vitb16"))["mean"] == [0.5, 0.5, 0.5]
    from workflow_scripts.tables import models_table

    t1 = models_table([study.model(key) for key in study.model_keys]).set_index("key")
    assert (t1.loc["siglip_vitb16", "transform"], t1.loc["dinov2_vitb14", "backbone"]) == (
        "model",
        "vit",
    )
    assert pd.isna(t1.loc["swav", "transform"]) and t1.loc["swav", "source"] == "checkpoint"


def test_a_timm_row_fine_tunes_with_the_recipe_extras(hub, offline, tmp_path):
    """train_run's loading path (the row's source and input size, the recipe's drop-path) on a
    ConvNeXt row, one epoch on a few 32-px images: the rates it applied are the recipe's, and
    the optimiser's lrs are timm's grouping at layer_decay (13 layers below the head norm)."""
    from workflow_scripts.sources import ArraySource

    weights = tmp_path / "w.safetensors"
    timm_models.fetch_weights(
        weights, tmp_path / "w.json", model="cnx", arch=CONVNEXT, cache_dir=str(hub.cache)
    )
    backbone = load_backbone(weights, CONVNEXT, "pooled", 0.1, source="timm", input_size=None)
    assert backbone.net.stages[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.1)
    rng = np.random.default_rng(0)
    data = ArraySource(
        rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
        np.arange(8) % 2,
        [0.5] * 3,
        [0.25] * 3,
    )
    recipe = finetune.FinetuneRecipe(
        epochs=1, batch_size=4, lr=0.01, warmup_epochs=0, drop_path=0.1, layer_decay=0.5
    )
    seen = []
    original = torch.optim.SGD.__init__

    def spy(self, groups, **kwargs):
        seen.extend(g["lr"] for g in groups)
        original(self, groups, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.SGD, "__init__", spy)
        result, _ = finetune.finetune(
            backbone, data, data, num_classes=2, arm="bn", recipe=recipe, seed=0
        )
    assert (result["drop_path"], result["layer_decay"]) == (0.1, 0.5)
    assert result["label_smoothing"] == recipe.label_smoothing
    assert sorted(seen) == pytest.approx([0.01 * 0.5**e for e in range(13, -1, -1)])
    assert 0 <= result["top1"] <= 100 and np.isfinite(result["train_loss"])
