"""Source ``timm``: any pretrained timm model by name (``workflow_scripts.timm_models``), its
weights from the hub or a local file (rule ``timm_weights``, a local rule); what the model is
comes from timm, not from ``registry.ARCHS``."""

from __future__ import annotations

from workflow_scripts import registry
from workflow_scripts.model_sources import SourceError


def check_row(row: dict, config: dict) -> dict:
    """The arch is a timm name with a pretrained tag, the embedding exists for it, the family
    agrees with the model's (an empty cell takes it), transform 'model' is reproducible, and
    with trained protocols the model has the fine-tuning recipe. Fills in the family."""
    from workflow_scripts import timm_models

    trained = any(registry.PROTOCOLS[p]["kind"] == "trained" for p in config["protocols"])
    try:
        family = timm_models.check_row(row, trained)
    except timm_models.TimmModelError as error:
        raise SourceError(str(error)) from None
    if row.get("transform") == "model" and "linear_online" in config["protocols"]:
        raise SourceError(
            "transform 'model' is not supported by protocol 'linear_online' (it normalises "
            "with config 'transform'); use transform 'paper' or drop the protocol"
        )
    if row["url"] is not None:
        from workflow_scripts.checkpoints import url_kind

        try:
            kind = url_kind(row["url"])
        except ValueError as error:
            raise SourceError(f"column 'url': {error}") from None
        if kind not in ("local", "file"):
            raise SourceError(
                "column 'url' of a timm row is a local weights file (the hub weights need no "
                f"url), not '{row['url']}'"
            )
    return {"family": family}


def arch_spec(row: dict, config: dict) -> dict:
    """timm's own facts of the arch (a model on the meta device; no download), the memory of
    a model beyond the paper-size one the registry's per-process allowance holds."""
    from workflow_scripts import timm_models

    spec = timm_models.arch_spec(row["arch"])
    size = timm_models.input_size(row, config["transform"]) or spec["img_size"]
    # float32 weights once (frozen use) or four times (weights, gradients, SGD momentum, the
    # state file's copy) beyond a ViT-B's, which registry.HOST_MB includes
    weights_mb = max(0, spec["n_params"] - timm_models.HOST_MB_PARAMS) * 4 / 2**20
    return {
        "dim": spec["dims"][row["embedding"]],
        "img_size": max(size, spec["img_size"]),
        "extra_mb": {
            "features": int(weights_mb),
            "linear_online": int(weights_mb),
            "finetune": int(4 * weights_mb),
        },
    }


def ranker_facts(row: dict, config: dict, pretrain_images: int | None) -> dict:
    """timm's parameter count of the model without its head (a meta-device build) and the
    pre-training epochs of column ``epochs``: static rankers."""
    from workflow_scripts import timm_models

    return {
        "params": timm_models.arch_spec(row["arch"])["n_params"],
        "pretrain_epochs": row.get("epochs"),
    }


def backbone_fields(row: dict, config: dict) -> dict:
    """The source, the transform and the input size the backbone is built for."""
    from workflow_scripts import timm_models

    return timm_models.backbone_fields(row, config["transform"])


def table_fields(row: dict) -> dict:
    """The transform a timm row's accuracies were measured with (column ``transform``)."""
    return {"transform": row.get("transform") or "paper"}


def transform_spec(row: dict, config: dict) -> dict:
    """The configuration's transform, named, or timm's own (transform 'model')."""
    from workflow_scripts import timm_models

    return timm_models.transform_spec(row, config["transform"])


def weights_spec(row: dict, config: dict) -> dict:
    """The weights depend on the arch and the source file only: for a local file (column
    'url') its bytes, by sha256 (``local_files``), so a file replaced at the same path reruns."""
    from workflow_scripts import local_files

    spec = {
        "model": row["key"],
        "arch": row["arch"],
        "url": row.get("url"),
        "sha256": row.get("sha256"),
    }
    if local_files.url_path(row.get("url")) is not None:
        spec["source_sha256"] = local_files.url_sha256(row["url"])
    return spec
