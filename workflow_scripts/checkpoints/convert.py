"""Convert a downloaded checkpoint into the backbone's safetensors: the only unpickling step.

``load_checkpoint`` opens the file with ``torch.load(weights_only=True)``; a file that also
holds objects this refuses (numpy arrays, mmengine's message hub, an ``argparse.Namespace``) is
read with the restricted unpickler of ``safe_pickle`` -- no code from the file runs, unknown
classes become inert placeholders -- and only a file that reaches for code (a refused global)
needs its table row marked ``trusted`` for full unpickling. The extractor registered for the
source format (``formats.FORMATS``) turns the loaded object into a state dict with
torchvision/timm names and lists what it dropped; ``fit`` checks it against ``build_backbone(arch, embedding)`` -- any missing or
unexpected key or shape mismatch is an error listing them -- and ``convert`` loads it with
``strict=True`` and writes ``results/checkpoints/{model}.safetensors`` plus a JSON sidecar.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from workflow_scripts.checkpoints.formats import FORMATS, CheckpointError, extract
from workflow_scripts.io import sha256_file

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- loading


TRUST_HINT = (
    "full unpickling can run arbitrary code, so it is done only for a row whose column "
    "'trusted' is true in the models table; set it only if you trust the file's source"
)


def load_checkpoint(
    path: str | Path, fmt: str, *, model: str, trusted: bool
) -> tuple[Any, str, list[str]]:
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
            raise CheckpointError(
                f"model '{model}': '{path}' is not a safetensors file: {error}"
            ) from None
    import pickle

    import torch

    from workflow_scripts.safe_pickle import (
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
    log.info(
        "model %s: torch.load(weights_only=True) refuses %s; loading with the restricted unpickler",
        model,
        ", ".join(refused) or "the file",
    )
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
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
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
    raw: str | Path,
    weights: str | Path,
    sidecar: str | Path,
    *,
    model: str,
    arch: str,
    embedding: str,
    fmt: str,
    url: str | None = None,
    sha256: str | None = None,
    trusted: bool = False,
    options: dict | None = None,
) -> dict:
    """Convert ``raw`` into ``weights`` (safetensors) and ``sidecar`` (JSON); return the sidecar."""
    import torch
    from workflow_scripts import registry
    from workflow_scripts.backbones import build_backbone
    from workflow_scripts.io import save_json, save_safetensors

    if fmt not in FORMATS:
        raise CheckpointError(
            f"model '{model}': unknown format '{fmt}' (known: {', '.join(FORMATS)})"
        )
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
    metadata = {
        "model": model,
        "arch": arch,
        "embedding": embedding,
        "format": fmt,
        "source_sha256": digest,
    }
    save_safetensors(weights, state, metadata)
    info = {
        "model": model,
        "arch": arch,
        "embedding": embedding,
        "embed_dim": int(out.shape[1]),
        "source": "checkpoint",
        "format": fmt,
        "layout": FORMATS[fmt]["layout"],
        "source_url": url,
        "source_sha256": digest,
        "source_sha256_pinned": bool(sha256),
        "unpickling": how,
        "placeholders": placeholders,
        "options": dict(options or {}),
        "dropped_keys": sorted(dropped),
        "added_keys": sorted(added + filled),
        "n_tensors": len(state),
        "n_parameters": int(sum(p.numel() for p in backbone.parameters())),
        "sha256": sha256_file(weights),
        "torch": torch.__version__,
    }
    save_json(sidecar, info)
    log.info(
        "model %s: %d tensors (%d parameters), dropped %d source keys, added %d; embedding dim %d",
        model,
        len(state),
        info["n_parameters"],
        len(dropped),
        len(added) + len(filled),
        info["embed_dim"],
    )
    return info
