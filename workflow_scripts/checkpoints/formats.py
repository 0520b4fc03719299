"""Source checkpoint formats: one registration per format.

``@register(name, families=..., layout=...)`` on an extractor puts the format into ``FORMATS``
with everything the workflow knows about it: the backbone ``families`` its files hold (checked
against the model table at Snakefile parse time), the ``layout`` -- where the backbone is in
the file and what is dropped (written into the converted weights' sidecar) -- and the extractor
itself, which turns the loaded object (``convert.load_checkpoint``) into a state dict with
torchvision/timm names and lists the source keys it dropped and the keys it added. Adding a
format is one registered function (or one more ``register`` of an existing one).

Importable without torch: the extractors import numpy and torch when they run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from workflow_scripts.schema import schema_defaults

Extracted = tuple[dict, list[str], list[str]]  # state, dropped source keys, added keys
Extractor = Callable[[Any, str, dict], Extracted]  # (loaded checkpoint, format, options)

# format -> {"families": tuple of backbone families, "layout": str, "extract": Extractor},
# in registration order
FORMATS: dict[str, dict] = {}


class CheckpointError(ValueError):
    """A checkpoint that cannot be converted; the message names the model and the culprit."""


def register(
    name: str, *, families: tuple[str, ...], layout: str
) -> Callable[[Extractor], Extractor]:
    """Decorator: register the decorated extractor as source format ``name``."""

    def add(extract: Extractor) -> Extractor:
        if name in FORMATS:
            raise ValueError(f"checkpoint format '{name}' is registered twice")
        FORMATS[name] = {"families": tuple(families), "layout": layout, "extract": extract}
        return extract

    return add


def extract(ckpt: Any, fmt: str, options: dict | None = None) -> Extracted:
    """Backbone state dict of a loaded checkpoint in format ``fmt``; ``options``: config
    section ``checkpoints`` (keys left out: their schema defaults)."""
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown checkpoint format '{fmt}' (known: {', '.join(FORMATS)})")
    return FORMATS[fmt]["extract"](ckpt, fmt, schema_defaults("checkpoints") | dict(options or {}))


# --------------------------------------------------------------------------- helpers


def _get(obj: Any, path: list[str], fmt: str) -> Mapping:
    """``obj[path[0]][path[1]]...`` with an error naming the missing level."""
    where = "ckpt"
    for part in path:
        if not isinstance(obj, Mapping) or part not in obj:
            keys = list(obj)[:12] if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(
                f"format '{fmt}' expects {where}['{part}'], which is missing ({where} has: {keys})"
            )
        obj = obj[part]
        where += f"['{part}']"
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"format '{fmt}': {where} is a {type(obj).__name__}, not a state dict"
        )
    return obj


def _tensors(state: Mapping, fmt: str) -> dict:
    """str -> torch.Tensor, converting numpy arrays (NPID) exactly."""
    import numpy as np
    import torch

    out = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray | np.generic):
            value = torch.from_numpy(np.array(value, copy=True, order="C"))  # keeps 0-d shape
        if not isinstance(value, torch.Tensor):
            what = (
                f"an inert placeholder of '{value.dotted}'"
                if hasattr(value, "dotted")
                else f"a {type(value).__name__}"
            )
            raise CheckpointError(f"format '{fmt}': entry '{key}' is {what}, not a tensor")
        out[str(key)] = value
    return out


def _strip(state: dict, prefix: str) -> dict:
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def _keep(state: dict, prefix: str) -> tuple[dict, list[str]]:
    """Entries under ``prefix`` (prefix removed) and the names of all others."""
    kept = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return kept, [k for k in state if not k.startswith(prefix)]


def _drop(state: dict, pattern: str) -> tuple[dict, list[str]]:
    rx = re.compile(pattern)
    return ({k: v for k, v in state.items() if not rx.match(k)}, [k for k in state if rx.match(k)])


def _require(state: dict, fmt: str, what: str) -> dict:
    if not state:
        raise CheckpointError(f"format '{fmt}': no {what} found in the checkpoint")
    return state


# --------------------------------------------------------------------------- extractors


@register(
    "vissl_trunk",
    families=("resnet",),
    layout="ckpt['classy_state_dict']['base_model']['model']['trunk'], prefix "
    "'_feature_blocks.' stripped, leftover 'fc.*'/'head.*' dropped",
)
def _vissl_trunk(ckpt, fmt, options) -> Extracted:
    trunk = _tensors(_get(ckpt, ["classy_state_dict", "base_model", "model", "trunk"], fmt), fmt)
    # A classifier left in a (converted) trunk, e.g. ClusterFit's; the authors dropped it too.
    trunk, leftover = _drop(
        _require(trunk, fmt, "trunk weights"), r"(_feature_blocks\.)?(fc|head)\."
    )
    return _require(_strip(trunk, "_feature_blocks."), fmt, "trunk weights"), leftover, []


@register(
    "npid_numpy",
    families=("resnet",),
    layout="ckpt['model_state_dict'] with numpy-array values, prefix '_feature_blocks.' "
    "stripped, 'fc*' dropped",
)
def _npid_numpy(ckpt, fmt, options) -> Extracted:
    state = _strip(_tensors(_get(ckpt, ["model_state_dict"], fmt), fmt), "_feature_blocks.")
    state, dropped = _drop(state, r"fc")
    return _require(state, fmt, "backbone weights"), dropped, []


@register(
    "deepcluster",
    families=("resnet",),
    layout="bare state dict, prefix 'module.' stripped, 'projection_head.*' and "
    "'prototypes.*' dropped (SwAV, SeLa-v2, DeepCluster-v2)",
)
def _deepcluster(ckpt, fmt, options) -> Extracted:
    state = _strip(_tensors(_get(ckpt, [], fmt), fmt), "module.")
    state, dropped = _drop(state, r"(projection_head|prototypes)\.")
    return _require(state, fmt, "backbone weights"), dropped, []


@register(
    "moco_v2",
    families=("resnet",),
    layout="ckpt['state_dict'], 'module.encoder_q.*' minus the projector 'fc.*'",
)
def _moco_v2(ckpt, fmt, options) -> Extracted:
    state, dropped = _keep(_tensors(_get(ckpt, ["state_dict"], fmt), fmt), "module.encoder_q.")
    state, projector = _drop(_require(state, fmt, "'module.encoder_q.*' weights"), r"fc\.")
    return state, dropped + [f"module.encoder_q.{k}" for k in projector], []


@register(
    "moco_v3",
    families=("resnet", "vit"),
    layout="ckpt['state_dict'], 'module.base_encoder.*' (or the momentum encoder, "
    "checkpoints.moco_v3_encoder) minus the projectors 'fc.*'/'head.*'",
)
def _moco_v3(ckpt, fmt, options) -> Extracted:
    source = _tensors(_get(ckpt, ["state_dict"], fmt), fmt)
    base, _ = _keep(source, "module.base_encoder.")
    momentum, _ = _keep(source, "module.momentum_encoder.")
    _require(base, fmt, "'module.base_encoder.*' weights")
    encoder = options["moco_v3_encoder"]
    if encoder == "momentum":
        # The authors' loading: base encoder first, then overwritten by the momentum encoder.
        state = {**base, **_require(momentum, fmt, "'module.momentum_encoder.*' weights")}
        used = "module.momentum_encoder."
    elif encoder == "base":
        state, used = base, "module.base_encoder."
    else:
        raise CheckpointError(
            f"checkpoints.moco_v3_encoder must be 'base' or 'momentum', not {encoder!r}"
        )
    state, projector = _drop(state, r"(fc|head)\.")
    dropped = [k for k in source if not k.startswith(used)] + [used + k for k in projector]
    return state, dropped, []


@register(
    "mmselfsup_resnet",
    families=("resnet",),
    layout="ckpt['state_dict'], 'backbone.*' (torchvision names)",
)
def _mmselfsup_resnet(ckpt, fmt, options) -> Extracted:
    state, dropped = _keep(_tensors(_get(ckpt, ["state_dict"], fmt), fmt), "backbone.")
    return _require(state, fmt, "'backbone.*' weights"), dropped, []


def mmcls_vit_to_timm(key: str) -> str:
    """One mmcls/MMSelfSup ViT parameter name (without 'backbone.') -> its timm name."""
    key = re.sub(r"^layers\.(\d+)\.", r"blocks.\1.", key)
    key = re.sub(r"^patch_embed\.projection\.", "patch_embed.proj.", key)
    key = re.sub(r"^(blocks\.\d+\.)ln([12])\.", r"\1norm\2.", key)
    key = re.sub(r"^(blocks\.\d+\.)ffn\.layers\.0\.0\.", r"\1mlp.fc1.", key)
    key = re.sub(r"^(blocks\.\d+\.)ffn\.layers\.1\.", r"\1mlp.fc2.", key)
    return re.sub(r"^ln1\.", "norm.", key)


@register(
    "mmselfsup_vit",
    families=("vit",),
    layout="ckpt['state_dict'], 'backbone.*' with mmcls ViT names renamed to timm, "
    "'mask_token' dropped",
)
def _mmselfsup_vit(ckpt, fmt, options) -> Extracted:
    state, dropped = _keep(_tensors(_get(ckpt, ["state_dict"], fmt), fmt), "backbone.")
    state, masks = _drop(_require(state, fmt, "'backbone.*' weights"), r"mask_token$")
    renamed = {mmcls_vit_to_timm(k): v for k, v in state.items()}
    if len(renamed) != len(state):
        raise CheckpointError(f"format '{fmt}': two parameters map to the same timm name")
    return renamed, dropped + [f"backbone.{k}" for k in masks], []


@register(
    "byol_online",
    families=("resnet",),
    layout="ckpt['online_backbone'], prefix 'module.' stripped, the ImageNet classifier "
    "'fc.*' dropped",
)
def _byol_online(ckpt, fmt, options) -> Extracted:
    state = _tensors(_get(ckpt, ["online_backbone"], fmt), fmt)
    state, classifier = _drop(state, r"(module\.)?fc\.")  # the torchvision ResNet's classifier
    return _require(_strip(state, "module."), fmt, "online backbone weights"), classifier, []


@register(
    "extracted_backbone",
    families=("resnet",),
    layout="ckpt['state_dict'] with torchvision names, no prefix (what "
    "tools/extract_backbone_weights.py of DenseCL/OpenSelfSup/MMSelfSup writes, "
    "beside 'author')",
)
def _extracted_backbone(ckpt, fmt, options) -> Extracted:
    return _require(_tensors(_get(ckpt, ["state_dict"], fmt), fmt), fmt, "backbone weights"), [], []


@register("timm_vit", families=("vit",), layout="bare timm ViT state dict (no head)")
@register("torchvision", families=("resnet",), layout="bare torchvision ResNet state dict (no fc)")
def _bare(ckpt, fmt, options) -> Extracted:
    return _require(_tensors(_get(ckpt, [], fmt), fmt), fmt, "weights"), [], []


@register("ibot", families=("vit",), layout="ckpt['state_dict'], 'head.*' dropped")
def _ibot(ckpt, fmt, options) -> Extracted:
    state, dropped = _drop(_tensors(_get(ckpt, ["state_dict"], fmt), fmt), r"head\.")
    return _require(state, fmt, "backbone weights"), dropped, []


@register(
    "mae",
    families=("vit",),
    layout="ckpt['model'] (timm names), 'mask_token' and 'decoder*' dropped (MAE, MILAN)",
)
def _mae(ckpt, fmt, options) -> Extracted:
    state, dropped = _drop(_tensors(_get(ckpt, ["model"], fmt), fmt), r"(mask_token$|decoder)")
    return _require(state, fmt, "encoder weights"), dropped, []


@register(
    "beit_v2",
    families=("vit",),
    layout="ckpt['model']; the shared 'rel_pos_bias.relative_position_bias_table' copied "
    "into every block; 'lm_head', 'cls_pt_layers', 'mask_token' and the final 'norm' "
    "dropped; identity 'fc_norm' added",
)
def _beit_v2(ckpt, fmt, options) -> Extracted:
    import torch

    source = _tensors(_get(ckpt, ["model"], fmt), fmt)
    table_key = "rel_pos_bias.relative_position_bias_table"
    if table_key not in source:
        raise CheckpointError(f"format '{fmt}': the shared '{table_key}' is missing")
    # The final 'norm' is dropped on purpose: the paper's embedding (the authors' code, quirk 4)
    # is the mean of the patch tokens through a fresh, identity fc_norm.
    state, dropped = _drop(
        source,
        r"(rel_pos_bias\.|lm_head\.|cls_pt_layers\.|mask_token$|norm\.|"
        r"blocks\.\d+\.attn\.relative_position_index$)",
    )
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if not blocks:
        raise CheckpointError(f"format '{fmt}': no 'blocks.N.*' weights found")
    table = source[table_key]
    added = []
    for index in blocks:
        name = f"blocks.{index}.attn.relative_position_bias_table"
        if name in state:
            raise CheckpointError(f"format '{fmt}': block {index} already has its own '{name}'")
        state[name] = table.clone()
        added.append(name)
    dim = _require({k: v for k, v in state.items() if k == "cls_token"}, fmt, "'cls_token'")
    width = dim["cls_token"].shape[-1]
    if "fc_norm.weight" in state or "fc_norm.bias" in state:
        raise CheckpointError(f"format '{fmt}': the checkpoint has its own 'fc_norm'")
    state["fc_norm.weight"] = torch.ones(width, dtype=table.dtype)
    state["fc_norm.bias"] = torch.zeros(width, dtype=table.dtype)
    return state, dropped, added + ["fc_norm.weight", "fc_norm.bias"]


# The backbone's own state dict, already in safetensors (read by convert.load_checkpoint).
register(
    "safetensors",
    families=("resnet", "vit"),
    layout="a safetensors file already holding the backbone's torchvision/timm names",
)(_bare)
