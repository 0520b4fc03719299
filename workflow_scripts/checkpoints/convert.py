"""Convert a downloaded checkpoint into the backbone's safetensors: the only unpickling step.

``load_checkpoint`` opens the file with ``torch.load(weights_only=True)``; a file that also
holds objects this refuses (numpy arrays, mmengine's message hub, an ``argparse.Namespace``) is
read with the restricted unpickler of ``safe_pickle`` -- no code from the file runs, unknown
classes become inert placeholders -- and only a file that reaches for code (a refused global)
needs its table row marked ``trusted`` for full unpickling. One extractor per source format
(``EXTRACTORS``) turns the loaded object into a state dict with torchvision/timm names and lists
what it dropped; ``fit`` checks it against ``build_backbone(arch, embedding)`` -- any missing or
unexpected key or shape mismatch is an error listing them -- and ``convert`` loads it with
``strict=True`` and writes ``results/checkpoints/{model}.safetensors`` plus a JSON sidecar.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from workflow_scripts.checkpoints import FORMATS
from workflow_scripts.io import sha256_file

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be converted; the message names the model and the culprit."""


# --------------------------------------------------------------------------- loading


TRUST_HINT = ("full unpickling can run arbitrary code, so it is done only for a row whose column "
              "'trusted' is true in the models table; set it only if you trust the file's source")


def load_checkpoint(path: str | Path, fmt: str, *, model: str,
                    trusted: bool) -> tuple[Any, str, list[str]]:
    """Open ``path``; return (object, how, placeholders).

    how: 'safetensors'; 'weights_only' (``torch.load(weights_only=True)``); 'restricted'
    (``safe_pickle.restricted_load``: the file also holds objects torch's loader refuses --
    numpy arrays, mmengine loggers, argparse Namespaces -- loaded without running code from the
    file; ``placeholders`` names the classes met); or 'full' (a refused global in a row marked
    ``trusted``)."""
    if fmt == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), "safetensors", []
        except Exception as error:
            raise CheckpointError(f"model '{model}': '{path}' is not a safetensors file: {error}") from None
    import pickle

    import torch

    from workflow_scripts.checkpoints.safe_pickle import (
        RefusedGlobal,
        plain,
        restricted_load,
        unsupported_globals,
    )

    def unreadable(error: Exception) -> CheckpointError:
        return CheckpointError(
            f"model '{model}': '{path}' is not a readable torch checkpoint: "
            f"{type(error).__name__}: {plain(str(error))}"
        )

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True), "weights_only", []
    except pickle.UnpicklingError as error:
        refused = unsupported_globals(str(error))
    except Exception as error:
        raise unreadable(error) from None
    log.info("model %s: torch.load(weights_only=True) refuses %s; loading with the restricted "
             "unpickler", model, ", ".join(refused) or "the file")
    try:
        obj, placeholders = restricted_load(path)
    except RefusedGlobal as error:
        if not trusted:
            raise CheckpointError(
                f"model '{model}': '{path}' cannot be read without running code from it: "
                f"{error}; {TRUST_HINT}"
            ) from None
        log.warning("model %s: %s; full unpickling (row marked trusted)", model, error)
        return torch.load(str(path), map_location="cpu", weights_only=False), "full", []
    except Exception as error:
        raise unreadable(error) from None
    if placeholders:
        log.info("model %s: inert placeholders for %s (not used)", model, ", ".join(placeholders))
    return obj, "restricted", placeholders


# --------------------------------------------------------------------------- extractors


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
        raise CheckpointError(f"format '{fmt}': {where} is a {type(obj).__name__}, not a state dict")
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
            what = (f"an inert placeholder of '{value.dotted}'" if hasattr(value, "dotted")
                    else f"a {type(value).__name__}")
            raise CheckpointError(f"format '{fmt}': entry '{key}' is {what}, not a tensor")
        out[str(key)] = value
    return out


def _strip(state: dict, prefix: str) -> dict:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _keep(state: dict, prefix: str) -> tuple[dict, list[str]]:
    """Entries under ``prefix`` (prefix removed) and the names of all others."""
    kept = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return kept, [k for k in state if not k.startswith(prefix)]


def _drop(state: dict, pattern: str) -> tuple[dict, list[str]]:
    rx = re.compile(pattern)
    return ({k: v for k, v in state.items() if not rx.match(k)},
            [k for k in state if rx.match(k)])


def _require(state: dict, fmt: str, what: str) -> dict:
    if not state:
        raise CheckpointError(f"format '{fmt}': no {what} found in the checkpoint")
    return state


Extracted = tuple[dict, list[str], list[str]]  # state, dropped source keys, added keys


def _vissl_trunk(ckpt, fmt, options) -> Extracted:
    trunk = _tensors(_get(ckpt, ["classy_state_dict", "base_model", "model", "trunk"], fmt), fmt)
    # A classifier left in a (converted) trunk, e.g. ClusterFit's; the authors dropped it too.
    trunk, leftover = _drop(_require(trunk, fmt, "trunk weights"), r"(_feature_blocks\.)?(fc|head)\.")
    return _require(_strip(trunk, "_feature_blocks."), fmt, "trunk weights"), leftover, []


def _npid_numpy(ckpt, fmt, options) -> Extracted:
    state = _strip(_tensors(_get(ckpt, ["model_state_dict"], fmt), fmt), "_feature_blocks.")
    state, dropped = _drop(state, r"fc")
    return _require(state, fmt, "backbone weights"), dropped, []


def _deepcluster(ckpt, fmt, options) -> Extracted:
    state = _strip(_tensors(_get(ckpt, [], fmt), fmt), "module.")
    state, dropped = _drop(state, r"(projection_head|prototypes)\.")
    return _require(state, fmt, "backbone weights"), dropped, []


def _moco_v2(ckpt, fmt, options) -> Extracted:
    state, dropped = _keep(_tensors(_get(ckpt, ["state_dict"], fmt), fmt), "module.encoder_q.")
    state, projector = _drop(_require(state, fmt, "'module.encoder_q.*' weights"), r"fc\.")
    return state, dropped + [f"module.encoder_q.{k}" for k in projector], []


def _moco_v3(ckpt, fmt, options) -> Extracted:
    source = _tensors(_get(ckpt, ["state_dict"], fmt), fmt)
    base, _ = _keep(source, "module.base_encoder.")
    momentum, _ = _keep(source, "module.momentum_encoder.")
    _require(base, fmt, "'module.base_encoder.*' weights")
    encoder = options.get("moco_v3_encoder", "base")
    if encoder == "momentum":
        # The authors' loading: base encoder first, then overwritten by the momentum encoder.
        state = {**base, **_require(momentum, fmt, "'module.momentum_encoder.*' weights")}
        used = "module.momentum_encoder."
    elif encoder == "base":
        state, used = base, "module.base_encoder."
    else:
        raise CheckpointError(f"checkpoints.moco_v3_encoder must be 'base' or 'momentum', not {encoder!r}")
    state, projector = _drop(state, r"(fc|head)\.")
    dropped = [k for k in source if not k.startswith(used)] + [used + k for k in projector]
    return state, dropped, []


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


def _mmselfsup_vit(ckpt, fmt, options) -> Extracted:
    state, dropped = _keep(_tensors(_get(ckpt, ["state_dict"], fmt), fmt), "backbone.")
    state, masks = _drop(_require(state, fmt, "'backbone.*' weights"), r"mask_token$")
    renamed = {mmcls_vit_to_timm(k): v for k, v in state.items()}
    if len(renamed) != len(state):
        raise CheckpointError(f"format '{fmt}': two parameters map to the same timm name")
    return renamed, dropped + [f"backbone.{k}" for k in masks], []


def _byol_online(ckpt, fmt, options) -> Extracted:
    state = _tensors(_get(ckpt, ["online_backbone"], fmt), fmt)
    state, classifier = _drop(state, r"(module\.)?fc\.")  # the torchvision ResNet's classifier
    return _require(_strip(state, "module."), fmt, "online backbone weights"), classifier, []


def _extracted_backbone(ckpt, fmt, options) -> Extracted:
    return _require(_tensors(_get(ckpt, ["state_dict"], fmt), fmt), fmt, "backbone weights"), [], []


def _bare(ckpt, fmt, options) -> Extracted:
    return _require(_tensors(_get(ckpt, [], fmt), fmt), fmt, "weights"), [], []


def _ibot(ckpt, fmt, options) -> Extracted:
    state, dropped = _drop(_tensors(_get(ckpt, ["state_dict"], fmt), fmt), r"head\.")
    return _require(state, fmt, "backbone weights"), dropped, []


def _mae(ckpt, fmt, options) -> Extracted:
    state, dropped = _drop(_tensors(_get(ckpt, ["model"], fmt), fmt), r"(mask_token$|decoder)")
    return _require(state, fmt, "encoder weights"), dropped, []


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


EXTRACTORS: dict[str, Callable[[Any, str, dict], Extracted]] = {
    "vissl_trunk": _vissl_trunk,
    "npid_numpy": _npid_numpy,
    "deepcluster": _deepcluster,
    "moco_v2": _moco_v2,
    "moco_v3": _moco_v3,
    "mmselfsup_resnet": _mmselfsup_resnet,
    "mmselfsup_vit": _mmselfsup_vit,
    "byol_online": _byol_online,
    "extracted_backbone": _extracted_backbone,
    "torchvision": _bare,
    "timm_vit": _bare,
    "ibot": _ibot,
    "mae": _mae,
    "beit_v2": _beit_v2,
    "safetensors": _bare,
}


def extract(ckpt: Any, fmt: str, options: dict | None = None) -> Extracted:
    """Backbone state dict of a loaded checkpoint in format ``fmt``."""
    if fmt not in EXTRACTORS:
        raise CheckpointError(f"unknown checkpoint format '{fmt}' (known: {', '.join(EXTRACTORS)})")
    return EXTRACTORS[fmt](ckpt, fmt, dict(options or {}))


# --------------------------------------------------------------------------- fitting, writing


def _listing(keys: list[str], limit: int = 40) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def fit(state: dict, model) -> tuple[dict, list[str]]:
    """``state`` ordered, typed and checked like ``model.state_dict()``.

    Missing BatchNorm ``num_batches_tracked`` counters (unused in eval mode) are added as 0 and
    reported; any other missing key, any unexpected key and any shape mismatch is an error.
    """
    import torch

    expected = model.state_dict()
    added = [k for k in expected if k not in state and k.endswith(".num_batches_tracked")]
    missing = [k for k in expected if k not in state and k not in added]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {_listing(shapes)}")
        raise CheckpointError("; ".join(parts))
    out = {}
    for key, ref in expected.items():
        value = state[key] if key in state else torch.zeros_like(ref)
        if value.dtype != ref.dtype:
            if value.is_floating_point() != ref.is_floating_point():
                raise CheckpointError(f"'{key}' has dtype {value.dtype}, the backbone {ref.dtype}")
            value = value.to(ref.dtype)  # float to float or integer to integer
        out[key] = value.detach().contiguous().clone()
    return out, added


def convert(
    raw: str | Path, weights: str | Path, sidecar: str | Path, *, model: str, arch: str,
    embedding: str, fmt: str, url: str | None = None, sha256: str | None = None,
    trusted: bool = False, options: dict | None = None,
) -> dict:
    """Convert ``raw`` into ``weights`` (safetensors) and ``sidecar`` (JSON); return the sidecar."""
    import torch
    from workflow_scripts import registry
    from workflow_scripts.backbones import build_backbone
    from workflow_scripts.io import save_json, save_safetensors

    if fmt not in FORMATS:
        raise CheckpointError(f"model '{model}': unknown format '{fmt}' (known: {', '.join(FORMATS)})")
    digest = sha256_file(raw)
    if sha256 and digest != sha256.lower():
        raise CheckpointError(
            f"model '{model}': '{raw}' has sha256 {digest}, the table pins {sha256}"
        )
    ckpt, how, placeholders = load_checkpoint(raw, fmt, model=model, trusted=bool(trusted))
    try:
        state, dropped, added = extract(ckpt, fmt, options)
        del ckpt
        backbone = build_backbone(arch, embedding)
        state, filled = fit(state, backbone)
    except CheckpointError as error:
        raise CheckpointError(
            f"model '{model}' (format '{fmt}', arch '{arch}', file '{raw}'): {error}"
        ) from None
    backbone.load_state_dict(state, strict=True)
    backbone.eval()
    size = registry.ARCHS[arch]["img_size"]
    with torch.no_grad():
        out = backbone(torch.zeros(1, 3, size, size))
    if out.shape != (1, backbone.embed_dim) or not torch.isfinite(out).all():
        raise CheckpointError(
            f"model '{model}': the converted backbone gives an embedding of shape "
            f"{tuple(out.shape)} (expected (1, {backbone.embed_dim})) or non-finite values"
        )
    metadata = {"model": model, "arch": arch, "embedding": embedding, "format": fmt,
                "source_sha256": digest}
    save_safetensors(weights, state, metadata)
    info = {
        "model": model, "arch": arch, "embedding": embedding, "embed_dim": int(out.shape[1]),
        "source": "checkpoint", "format": fmt, "layout": FORMATS[fmt]["layout"],
        "source_url": url, "source_sha256": digest, "source_sha256_pinned": bool(sha256),
        "unpickling": how, "placeholders": placeholders, "options": dict(options or {}),
        "dropped_keys": sorted(dropped), "added_keys": sorted(added + filled),
        "n_tensors": len(state),
        "n_parameters": int(sum(p.numel() for p in backbone.parameters())),
        "sha256": sha256_file(weights), "torch": torch.__version__,
    }
    save_json(sidecar, info)
    log.info("model %s: %d tensors (%d parameters), dropped %d source keys, added %d; "
             "embedding dim %d", model, len(state), info["n_parameters"], len(dropped),
             len(added) + len(filled), info["embed_dim"])
    return info
