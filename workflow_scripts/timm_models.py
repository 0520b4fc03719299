"""Any pretrained timm model as one model-table row (``source: timm``).

``arch`` is a timm model name with its pretrained tag (``vit_base_patch14_dinov2.lvd142m``).
Its weights come from the Hugging Face hub through timm and huggingface_hub (cached under
config key ``timm.cache_dir``, huggingface_hub's own cache when null; ``HF_HUB_OFFLINE=1``
makes a missing file an error naming the row and the repository), or -- column ``url`` -- from
a local file for the same architecture (safetensors, or a torch file read with
``torch.load(weights_only=True)``: no code from the file runs). A pickle that needs a global
outside torch's allow-list is refused with :class:`WeightsRefused`, naming the row, the file and
the global (read from the file with pickletools), never with torch's advice to load it in full;
a damaged file is said to be one -- neither is "does not fit the architecture". timm builds
the model and loads the file (its own key filters: classifier dropped, position embeddings
resampled); the result is written as ``results/checkpoints/{model}.safetensors`` (:func:`fetch_weights`), the
one form later steps read, and loaded strictly into :func:`build` by every later step.

What the model is comes from timm, not from a fixed list (:func:`arch_spec`): its family (by
the module of its class: ``vit`` for ViT, EVA and BEiT, ``convnext``, ``resnet``, else the
module's name), its embedding widths (``num_features``; ``head_hidden_size`` for ``pooled``),
its native input size and data config (``timm.get_pretrained_cfg``). The spec is read from a
model built on the ``meta`` device (no memory, no weights, no download): planning the DAG stays
fast and offline.

Embeddings (column ``embedding``), from ``forward_features``' output:

* ``pooled`` -- the model's own pre-logits pooling: ``forward_head(..., pre_logits=True)``
  (CLS token, average or attention pool, ConvNeXt's pooled norm), every model;
* ``cls`` -- the class token (models with one);
* ``mean_patch`` -- the mean of the patch tokens, prefix tokens (class, registers) left out
  (token models: ViT, EVA, BEiT);
* ``avgpool`` -- the global average of the final feature map (CNNs: ConvNeXt, ResNet).

Preprocessing (column ``transform``): ``paper`` (default) = the configuration's ``transform``
section, as for every other row; ``model`` = timm's ``resolve_data_config`` for the model
(:func:`model_transform`: its resolution, crop fraction, interpolation, mean and std, as
``create_transform`` builds its eval transform). A token model fed another size than its
native one is built with timm's ``dynamic_img_size`` (position embeddings resampled by timm,
no parameter changes), so one weights file serves both transforms.

This module imports neither torch nor timm at import time.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

#: timm module of the model's class -> (family, kind). kind "tokens": ``forward_features``
#: gives [B, N, D] tokens; "maps": [B, C, H, W] feature maps. Other modules: family = the
#: module's name, kind "other" (``pooled`` only, no fine-tuning recipe).
MODULE_FAMILIES: dict[str, tuple[str, str]] = {
    "vision_transformer": ("vit", "tokens"),
    "eva": ("vit", "tokens"),
    "beit": ("vit", "tokens"),
    "deit": ("vit", "tokens"),
    "convnext": ("convnext", "maps"),
    "resnet": ("resnet", "maps"),
}
EMBEDDINGS = ("pooled", "cls", "mean_patch", "avgpool")
TRANSFORMS = ("paper", "model")
#: families fine-tuned with the recipe's ViT extras: layer-wise lr decay along timm's layer
#: grouping (``group_matcher``), timm's ``drop_path_rate`` and label smoothing
VIT_RECIPE_FAMILIES = ("vit", "convnext")
#: families fine-tuned with the paper's ResNet recipe (no extras)
PLAIN_RECIPE_FAMILIES = ("resnet",)


#: parameters of the paper-size model (ViT-B/16, 86 M) that ``registry.HOST_MB`` allows for;
#: a bigger timm model's jobs ask for the difference on top (``plan.Plan.arch_spec``)
HOST_MB_PARAMS = 86_000_000


class TimmModelError(ValueError):
    """A timm row that cannot work; the message names the arch (the caller adds the row)."""


class WeightsRefused(RuntimeError):
    """A weights file that is a pickle needing a global outside torch's weights-only
    allow-list: refused, nothing from it ran. The message names the row, the file and the
    global; it is not the error of weights that do not fit the architecture."""


def split_arch(arch: str) -> tuple[str, str]:
    """(model name, pretrained tag) of ``arch`` ('' when it has no tag)."""
    name, _, tag = arch.partition(".")
    return name, tag


def _timm():
    import timm

    return timm


@functools.cache
def arch_spec(arch: str) -> dict:
    """What timm says about ``arch`` (cached): family, kind, native ``img_size``,
    ``dims`` (embedding -> width), ``embeddings``, ``hf_hub_id`` (None without hub weights),
    ``tags`` (the pretrained tags timm knows for the name), ``finetune`` (True when the model
    has the layer grouping and drop-path the trained protocols need), ``pretrained_cfg``.
    :class:`TimmModelError` for a name timm does not know."""
    timm = _timm()
    import torch

    name, tag = split_arch(arch)
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise TimmModelError(
            f"'{arch}' is not a timm model name (timm {timm.__version__}"
            + (f"; similar: {', '.join(close)}" if close else "")
            + ")"
        )
    tags = [p for p in timm.list_pretrained(f"{name}.*") if split_arch(p)[0] == name]
    if tag and arch not in tags:
        raise TimmModelError(
            f"timm {timm.__version__} has no pretrained tag '{tag}' for model '{name}' "
            f"(known: {', '.join(tags) or 'none'})"
        )
    cfg = timm.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    try:
        with torch.device("meta"):
            net = timm.create_model(arch, pretrained=False, num_classes=0)
    except Exception as error:  # noqa: BLE001 - timm's own message, with the arch
        raise TimmModelError(f"timm cannot build '{arch}': {error}") from None
    module = type(net).__module__.rsplit(".", 1)[-1]
    family, kind = MODULE_FAMILIES.get(module, (module, "other"))
    width = int(net.num_features)
    dims = {"pooled": int(getattr(net, "head_hidden_size", None) or width)}
    if kind == "tokens":
        if getattr(net, "cls_token", None) is not None:
            dims["cls"] = width
        if hasattr(net, "num_prefix_tokens"):
            dims["mean_patch"] = width
    elif kind == "maps":
        dims["avgpool"] = width
    input_size = cfg.get("input_size") or (3, 224, 224)
    return {
        "arch": arch,
        "family": family,
        "kind": kind,
        "module": module,
        "img_size": int(input_size[-1]),
        "dims": dims,
        "dim": dims["pooled"],
        "embeddings": tuple(e for e in EMBEDDINGS if e in dims),
        "hf_hub_id": cfg.get("hf_hub_id") or None,
        # weights timm downloads from a URL instead (e.g. I-JEPA): torch hub's file cache
        "url": None if cfg.get("hf_hub_id") else (cfg.get("url") or None),
        "tags": tags,
        # the recipe's ViT extras apply (else the plain recipe, or no fine-tuning)
        "vit_recipe": family in VIT_RECIPE_FAMILIES and hasattr(net, "group_matcher"),
        "finetune": family in PLAIN_RECIPE_FAMILIES
        or (family in VIT_RECIPE_FAMILIES and hasattr(net, "group_matcher")),
        "n_params": int(sum(p.numel() for p in net.parameters())),
        "pretrained_cfg": cfg,
    }


# --------------------------------------------------------------------------------------------
# the row: validation at config load, the fields of a job's params


def check_row(row: dict, trained: bool) -> str:
    """Check one ``source: timm`` row (a mapping of its cells); return its family. Raises
    :class:`TimmModelError` (message without the row; the caller names it). ``trained``: the
    configuration runs a trained protocol (fine-tuning needs the model's block structure)."""
    spec = arch_spec(row["arch"])
    name, tag = split_arch(row["arch"])
    if not row.get("url"):
        if not tag:
            raise TimmModelError(
                f"arch '{row['arch']}' names no pretrained tag, and column 'url' gives no local "
                f"file: write the tag (known: {', '.join(spec['tags']) or 'none'})"
            )
        if not spec["hf_hub_id"] and not spec["pretrained_cfg"].get("url"):
            raise TimmModelError(
                f"timm has no download for '{row['arch']}': give a local file in column 'url'"
            )
    if row.get("format"):
        raise TimmModelError(
            "column 'format' must be empty for source 'timm' (timm reads the weights)"
        )
    if row["family"] is not None and row["family"] != spec["family"]:
        raise TimmModelError(
            f"family '{row['family']}' does not match arch '{row['arch']}' (timm module "
            f"'{spec['module']}': family '{spec['family']}'; leave the cell empty to take it)"
        )
    if row["embedding"] not in spec["embeddings"]:
        raise TimmModelError(
            f"embedding '{row['embedding']}' is not available for arch '{row['arch']}' "
            f"(choose from {', '.join(spec['embeddings'])})"
        )
    transform = row.get("transform") or "paper"
    if transform == "model":
        model_transform(row["arch"])  # a data config sslbench cannot reproduce is an error
    if trained and not spec["finetune"]:
        raise TimmModelError(
            f"the trained protocols (finetune, fewshot) need layer-wise lr decay and drop-path "
            f"along the model's blocks, which sslbench applies to timm ViT-like and ConvNeXt "
            f"models (timm's group_matcher; ResNets take the plain recipe); '{row['arch']}' "
            f"(timm module '{spec['module']}') has no such recipe here: deselect the row or "
            "the trained protocols"
        )
    return spec["family"]


def input_size(row: dict, paper: dict) -> int | None:
    """The square side the backbone of a timm row sees: the model's native size with
    transform ``model``, the configuration's crop with ``paper`` (None: the images' own size,
    e.g. the demo's uncropped 32 px)."""
    if (row.get("transform") or "paper") == "model":
        return arch_spec(row["arch"])["img_size"]
    return paper.get("crop")


def backbone_fields(row: dict, paper: dict) -> dict:
    """What a timm row adds to a job's ``model`` param (extraction, fine-tuning): the source,
    the transform and the input size the backbone is built for."""
    return {
        "source": "timm",
        "transform": row.get("transform") or "paper",
        "input_size": input_size(row, paper),
    }


def model_transform(arch: str) -> dict:
    """The eval transform timm's ``create_transform(**resolve_data_config(...))`` builds for
    ``arch``, as the workflow's transform spec: Resize(floor(size / crop_pct), shorter side;
    ``squash``: both sides) -> CenterCrop(size) -> mean / std (the same steps; tested against
    timm's transform)."""
    from timm.data import resolve_data_config

    spec = arch_spec(arch)
    data = resolve_data_config(pretrained_cfg=spec["pretrained_cfg"])
    height, width = data["input_size"][-2:]
    mode = data.get("crop_mode") or "center"
    if height != width or mode not in ("center", "squash"):
        raise TimmModelError(
            f"transform 'model' of '{arch}': timm's data config (input {height}x{width}, crop "
            f"mode '{mode}') is not a square centre crop; use transform 'paper'"
        )
    if data["interpolation"] not in ("bilinear", "bicubic", "nearest"):
        raise TimmModelError(
            f"transform 'model' of '{arch}': interpolation '{data['interpolation']}' unsupported"
        )
    scale = math.floor(height / data["crop_pct"])
    return {
        "name": "model",
        "resize": [scale, scale] if mode == "squash" else scale,
        "crop": int(height),
        "interpolation": data["interpolation"],
        "mean": [float(v) for v in data["mean"]],
        "std": [float(v) for v in data["std"]],
    }


def transform_spec(row: dict, paper: dict) -> dict:
    """The eval / train transform spec of a timm row: the configuration's (``paper``, named so
    the feature sidecar records it) or timm's (``model``)."""
    if (row.get("transform") or "paper") == "model":
        return model_transform(row["arch"])
    return {"name": "paper", **paper}


# --------------------------------------------------------------------------------------------
# the backbone


def _backbone_class():
    from torch import nn

    class TimmBackbone(nn.Module):
        """A timm model whose ``forward`` returns one embedding; its state dict is the timm
        model's own (no prefix), so the hub's weights and the workflow's file are alike."""

        def __init__(self, net: nn.Module, embedding: str, dim: int, vit_recipe: bool) -> None:
            super().__init__()
            self.net = net
            self.embedding = embedding
            self.embed_dim = dim
            # the recipe's ViT extras (layer decay, drop-path, label smoothing) apply
            self.vit_recipe = vit_recipe

        def forward(self, x):
            features = self.net.forward_features(x)
            if self.embedding == "pooled":
                return self.net.forward_head(features, pre_logits=True)
            if self.embedding == "cls":
                return features[:, 0]
            if self.embedding == "mean_patch":
                return features[:, self.net.num_prefix_tokens :].mean(1)
            return features.mean((2, 3))  # avgpool

        def layer_decay_scales(self, decay: float, final_norm_in_last_block: bool = False):
            """lr multiplier per parameter (names as ``named_parameters``): see
            :func:`layer_ids`; decay ** (top - layer id)."""
            ids, top = layer_ids(self.net, final_norm_in_last_block)
            return {f"net.{name}": decay ** (top - ids[name]) for name in ids}

        def state_dict(self, *args, **kwargs):  # type: ignore[override]
            return self.net.state_dict(*args, **kwargs)

        def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
            return self.net.load_state_dict(state_dict, strict=strict, assign=assign)

    return TimmBackbone


#: parameters outside timm's stem pattern that belong to the embeddings all the same
EMBEDDING_PARAMS = ("cls_token", "reg_token", "mask_token", "pos_embed", "patch_embed")


def layer_ids(net, final_norm_in_last_block: bool = False) -> tuple[dict[str, int], int]:
    """(parameter name -> layer id, top id) for layer-wise lr decay along the model's own block
    structure: timm's ``group_matcher(coarse=False)`` grouped by ``timm.models.group_parameters``
    (stem 0, then one id per block -- ViT blocks, ConvNeXt stage blocks and downsamplers -- in
    order; the names no pattern matches, i.e. what follows the blocks: final norm, fc_norm,
    the head's norm, in one last group ``top``, at the full lr), as the paper's BEiT / MAE
    convention for ViTs. timm's matcher would merge the final norm into the last block's
    group; that is done only with ``final_norm_in_last_block`` (the authors' quirk: every
    parameter after the blocks at the last block's rate). Tokens outside timm's stem pattern
    (registers, mask token) count as embeddings (0)."""
    from timm.models import group_parameters
    from timm.models._manipulate import MATCH_PREV_GROUP

    matcher = dict(net.group_matcher(coarse=False))
    if isinstance(matcher.get("blocks"), (list, tuple)):
        matcher["blocks"] = [m for m in matcher["blocks"] if tuple(m[1] or ()) != MATCH_PREV_GROUP]
    grouped = group_parameters(net, matcher, reverse=True)
    ids = {
        name: 0 if name.split(".")[0] in EMBEDDING_PARAMS else grouped[name]
        for name, _ in net.named_parameters()
    }
    top = max(ids.values())
    if final_norm_in_last_block:
        ids = {name: min(layer, top - 1) for name, layer in ids.items()}
    return ids, top


def create(arch: str, input_size: int | None = None, drop_path: float = 0.0, **kwargs):
    """The timm model of ``arch`` without classifier (``num_classes=0``), built for
    ``input_size`` (token models fed another size than their native one get timm's
    ``dynamic_img_size``), drop-path ``drop_path``; ``kwargs`` go to ``timm.create_model``."""
    timm = _timm()
    spec = arch_spec(arch)
    if spec["kind"] == "tokens" and input_size != spec["img_size"]:
        kwargs["dynamic_img_size"] = True
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    return timm.create_model(arch, num_classes=0, **kwargs)


def build(arch: str, embedding: str, drop_path: float = 0.0, input_size: int | None = None):
    """A randomly initialised backbone of ``arch`` returning ``embedding`` (the weights come
    from ``results/checkpoints``, loaded strictly by ``backbones.load_backbone``)."""
    spec = arch_spec(arch)
    if embedding not in spec["embeddings"]:
        raise TimmModelError(
            f"embedding '{embedding}' is not available for arch '{arch}' "
            f"(choose from {', '.join(spec['embeddings'])})"
        )
    # drop-path belongs to the ViT extras of the recipe (the paper's ResNets have none)
    net = create(arch, input_size, drop_path if spec["vit_recipe"] else 0.0, pretrained=False)
    return _backbone_class()(net, embedding, spec["dims"][embedding], spec["vit_recipe"])


def build_job_backbone(model: dict, drop_path: float = 0.0):
    """:func:`build` of a job's ``model`` param (``registry.SOURCES["timm"]["backbone"]``)."""
    return build(model["arch"], model["embedding"], drop_path, model["input_size"])


# --------------------------------------------------------------------------------------------
# the weights: hub or local file -> results/checkpoints/{model}.safetensors


def read_state(path: str | Path) -> dict:
    """A local weights file's state dict: safetensors, or ``torch.load(weights_only=True)``
    (a ``state_dict`` / ``model`` entry of a training checkpoint is taken)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    return obj


def local_file(url: str) -> Path:
    """The path of a row's ``url`` (a local path or a file:// URL)."""
    import urllib.parse

    if url.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    return Path(url)


def hub_file(repo_id: str, cache_dir: str | None, filename: str | None = None) -> str | None:
    """The cached weights file of a hub repository (None if not cached): ``filename`` (the
    pretrained config's ``hf_hub_filename``) or the names timm tries."""
    from huggingface_hub import try_to_load_from_cache

    for name in (filename, "model.safetensors", "pytorch_model.bin"):
        if not name:
            continue
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        if isinstance(found, str):
            return found
    return None


def _chain(error: BaseException | None) -> list[BaseException]:
    """``error`` and the errors it chains (``raise ... from``, or raised while handling)."""
    out: list[BaseException] = []
    while error is not None and error not in out:
        out.append(error)
        error = error.__cause__ or error.__context__
    return out


def _refused_global(error: BaseException) -> str | None:
    """The global a restricted (weights-only) unpickling refused, as torch's error (or one it
    chains) names it; None for any other error. torch may drop the module (``eval`` for
    ``builtins.eval``): :func:`weights_only_refused` reads the file for the full name."""
    from workflow_scripts.pickle_files import unsupported_globals

    for link in _chain(error):
        found = unsupported_globals(str(link))
        if found:
            return found[0]
    return None


def weights_only_refused(path: str | Path, also_allowed: tuple[str, ...] = ()) -> list[str]:
    """The globals of the pickle in ``path`` that torch's weights-only loader refuses (outside
    its allow-list and ``also_allowed``), in the order the file uses them (the first is the one
    torch stopped at), read with pickletools: nothing is imported or run. [] when the file
    cannot be read so (damaged, or not a pickle)."""
    from torch import _weights_only_unpickler

    from workflow_scripts.pickle_files import pickle_globals
    from workflow_scripts.safe_pickle import decide

    allowed = set(_weights_only_unpickler._get_allowed_globals()) | set(also_allowed)
    try:
        names = pickle_globals(path)
    except Exception:  # noqa: BLE001 - damaged: the torch error says what was refused
        return []
    refused: list[str] = []
    for name in names:
        module, _, attr = name.rpartition(".")
        dotted = decide(module, attr)[0]  # Python 2 spellings mapped (__builtin__.eval)
        if name not in allowed and dotted not in allowed and dotted not in refused:
            refused.append(dotted)
    return refused


#: what each container is called when it cannot be read
DAMAGED = {
    "torch-zip": "truncated or damaged torch zip archive",
    "torch-legacy": "truncated or damaged torch legacy file",
    "safetensors": "truncated or damaged safetensors file",
}


def _unreadable(where: str, file, origin: str, error: BaseException) -> RuntimeError:
    from workflow_scripts.pickle_files import container, without_unsafe_advice

    try:
        kind = "safetensors" if str(file).endswith(".safetensors") else container(file)
    except OSError:
        kind = "unknown"
    what = DAMAGED.get(kind, "not a torch or safetensors file (or a damaged one)")
    detail = without_unsafe_advice(str(error)) or "no detail"
    return RuntimeError(
        f"{where}: '{file}' ({origin}) is not a readable weights file: {what} "
        f"({type(error).__name__}: {detail})"
    )


def _refusal(
    where: str, file, origin: str, error: BaseException, also_allowed: tuple[str, ...] = ()
) -> WeightsRefused | None:
    """The error for a weights file torch's weights-only loader refused (``error``, or an error
    it chains, names a global, or is an ``UnpicklingError`` and the file needs one); None when
    ``error`` is no such refusal. Names the row, the file and every refused global; never
    suggests loading the file in full."""
    import pickle

    from workflow_scripts.pickle_files import describe_global, runs_code
    from workflow_scripts.safe_pickle import decide

    chain = _chain(error)
    named = _refused_global(error)
    if not named and not any(isinstance(e, pickle.UnpicklingError) for e in chain):
        return None
    names = weights_only_refused(file, also_allowed) if file and Path(file).is_file() else []
    if not names:
        if not named:
            return None  # an unpickling error that names no global: a damaged file
        names = [named]
    also = (
        f" (and also {', '.join(describe_global(n) for n in names[1:4])}"
        + (", ..." if len(names) > 4 else "")
        + ")"
        if len(names) > 1
        else ""
    )
    code = [n for n in names if runs_code(n)]
    if code:
        hint = (
            f"{describe_global(code[0])} runs code, so the file is likely malicious: do not mark "
            "it trusted or load it any other way; get these weights as a safetensors file from "
            "a source you trust"
        )
    elif all(decide(*n.rsplit(".", 1))[1] != "refused" for n in names):
        hint = (
            "Convert it to safetensors, or load it as a checkpoint row (source checkpoint), "
            "whose restricted unpickler reads numpy values and other classes (as inert "
            "placeholders) without running code from the file"
        )
    else:
        hint = "Convert it to safetensors where its source is trusted"
    return WeightsRefused(
        f"{where}: '{file}' ({origin}) is a pickle that needs the global "
        f"{describe_global(names[0])}{also}, which the restricted loader refuses: such a file "
        f"could run code; it was not loaded and nothing from it ran. {hint}"
    )


def url_file(url: str, cache_dir: str | None) -> Path:
    """Where timm caches the weights it downloads from ``url`` (torch hub's folder layout:
    ``cache_dir``, or ``<torch hub dir>/checkpoints``, then the URL's file name)."""
    import os
    import urllib.parse

    import torch

    folder = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    return folder / os.path.basename(urllib.parse.urlsplit(url).path)


#: Seconds the hub may take to answer before a hub row whose weights are not cached gives up.
HUB_PROBE_TIMEOUT = 10.0


def hub_unreachable(repo_id: str, filename: str | None, timeout: float) -> str | None:
    """Why the hub cannot serve ``repo_id`` now (the error of one metadata request, at most
    ``timeout`` seconds), or None when it answers (an HTTP error status is an answer)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename or "model.safetensors"), timeout=timeout)
    except HfHubHTTPError:
        return None
    except Exception as error:  # no route, no name, a time-out, offline mode
        return f"{type(error).__name__}: {error}"
    return None


def _fetch_hint(repo: str, cache_dir: str | None) -> str:
    cache = f" --cache-dir {cache_dir}" if cache_dir else ""
    return (
        f"connect this machine to the hub (or set HF_ENDPOINT to a mirror), or fetch them where "
        f"the hub is reachable with `hf download {repo}{cache}` and copy that cache here "
        "(README 'Evaluate any timm model')"
    )


def fetch_weights(
    weights: str | Path,
    sidecar: str | Path,
    *,
    model: str,
    arch: str,
    url: str | None = None,
    sha256: str | None = None,
    cache_dir: str | None = None,
) -> dict:
    """Load ``arch``'s pretrained weights through timm (hub, or the local file ``url``), write
    the model's state dict (no classifier) to ``weights`` and a JSON ``sidecar``; return it.
    ``sha256`` pins the source file (hub or local). Errors name the row ``model``."""
    import pickle

    import huggingface_hub
    import torch
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    from workflow_scripts.io import save_json, save_safetensors, sha256_file

    spec = arch_spec(arch)
    where = f"model '{model}' (timm '{arch}')"
    repo = spec["hf_hub_id"]
    if url:
        path = local_file(url)
        if not path.is_file():
            raise FileNotFoundError(f"{where}: the weights file '{path}' (column 'url') is missing")
        source = str(path)
        try:
            state = read_state(path)
        except Exception as error:  # refused, or not readable: never "does not fit"
            raise (
                _refusal(where, path, "column 'url'", error)
                or _unreadable(where, path, "column 'url'", error)
            ) from None
        # timm's own loading of a state dict: its key filter (classifier, position embeddings)
        kwargs = {"pretrained_cfg_overlay": {"state_dict": state, "source": ""}}
    else:
        kwargs = {"cache_dir": cache_dir}
        if not repo:  # a URL download (torch hub's cache): offline, it must be there
            source = str(url_file(spec["url"], cache_dir))
            if huggingface_hub.constants.is_offline_mode() and not Path(source).is_file():
                raise RuntimeError(
                    f"{where}: the weights from '{spec['url']}' are not in the cache ('{source}') "
                    "and HF_HUB_OFFLINE is set: download them where the network is reachable"
                )
    filename = spec["pretrained_cfg"].get("hf_hub_filename")
    cache = cache_dir or huggingface_hub.constants.HF_HUB_CACHE
    if repo and not url and hub_file(repo, cache_dir, filename) is None:
        # not cached: fail in seconds when the hub cannot be reached, not after the retries
        if huggingface_hub.constants.is_offline_mode():
            reason = "HF_HUB_OFFLINE is set"
        else:
            reason = hub_unreachable(repo, filename, HUB_PROBE_TIMEOUT)
        if reason:
            raise RuntimeError(
                f"{where}: the weights of hub repository '{repo}' are not in the cache "
                f"'{cache}' and the hub cannot be reached ({reason}): "
                + _fetch_hint(repo, cache_dir)
            )
    try:
        net = create(arch, spec["img_size"], pretrained=True, **kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        raise RuntimeError(
            f"{where}: the weights of hub repository '{repo}' are not in the cache '{cache}' "
            f"({type(error).__name__}): " + _fetch_hint(repo, cache_dir)
        ) from None
    except Exception as error:
        file = hub_file(repo, cache_dir, filename) if (repo and not url) else source
        origin = f"hub repository '{repo}'" if repo else f"downloaded from '{spec['url']}'"
        # timm reads hub files with argparse.Namespace allowed besides torch's allow-list
        refusal = _refusal(where, file, origin, error, also_allowed=("argparse.Namespace",))
        if refusal:
            raise refusal from None
        if any(
            isinstance(e, EOFError | pickle.UnpicklingError) or "PytorchStreamReader" in str(e)
            for e in _chain(error)
        ):  # a damaged file
            raise _unreadable(where, file, origin, error) from None
        # timm's key filter or strict loading: not this architecture
        from workflow_scripts.pickle_files import without_unsafe_advice

        raise RuntimeError(
            f"{where}: the weights do not fit the architecture: {type(error).__name__}: "
            + without_unsafe_advice(str(error), limit=4000)
        ) from None
    if not url and repo:
        source = hub_file(repo, cache_dir, filename)
    digest = sha256_file(source) if source else None
    if sha256 and digest != sha256.lower():
        raise ValueError(f"{where}: '{source}' has sha256 {digest}, the table pins {sha256}")
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    save_safetensors(weights, state, {"model": model, "arch": arch, "source": "timm"})
    timm = _timm()
    info = {
        "model": model,
        "arch": arch,
        "source": "timm",
        "family": spec["family"],
        "hf_hub_id": None if url else repo,
        "source_file": source,
        # the snapshot folder of a hub file is its commit (.../snapshots/<commit>/<file>)
        "hub_revision": Path(source).parent.name if (source and repo and not url) else None,
        "source_url": None if (url or repo) else spec["url"],
        "source_sha256": digest,
        "source_sha256_pinned": bool(sha256),
        "img_size": spec["img_size"],
        "dims": spec["dims"],
        "n_tensors": len(state),
        "n_parameters": int(sum(p.numel() for p in net.parameters())),
        "sha256": sha256_file(weights),
        "timm": timm.__version__,
        "torch": torch.__version__,
    }
    save_json(sidecar, info)
    return info
