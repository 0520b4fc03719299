"""Source ``checkpoint``: a released checkpoint, downloaded (rule ``download_checkpoint``, a
local rule) and converted once (rule ``convert_checkpoint``: the only unpickling step) into the
backbone of a registry arch; columns ``format`` (``checkpoints.FORMATS``) and ``url``."""

from __future__ import annotations

from workflow_scripts.model_sources import SourceError, common


def check_row(row: dict, config: dict) -> dict:
    from workflow_scripts.checkpoints import FORMATS, url_kind  # no torch

    common.check_arch(row)
    fmt = row["format"]
    if fmt is None:
        raise SourceError(
            f"column 'format' is required for source 'checkpoint' (known: {', '.join(FORMATS)})"
        )
    if fmt not in FORMATS:
        raise SourceError(
            f"column 'format': unknown checkpoint format '{fmt}' (known: {', '.join(FORMATS)})"
        )
    if row["family"] not in FORMATS[fmt]["families"]:
        raise SourceError(
            f"column 'format': format '{fmt}' holds a "
            f"{'/'.join(FORMATS[fmt]['families'])} backbone, not a {row['family']} one"
        )
    if row["url"] is None:
        raise SourceError("column 'url' is required for source 'checkpoint'")
    try:
        url_kind(row["url"])
    except ValueError as error:
        raise SourceError(f"column 'url': {error}") from None
    return {}


def arch_spec(row: dict, config: dict) -> dict:
    return common.arch_spec(row)


def backbone_fields(row: dict, config: dict) -> dict:
    return {"source": "checkpoint"}


def ranker_facts(row: dict, config: dict, pretrain_images: int | None) -> dict:
    """Parameter count and pre-training epochs (column ``epochs``): static rankers."""
    return common.ranker_facts(row)


def table_fields(row: dict) -> dict:
    return {}


def transform_spec(row: dict, config: dict) -> dict:
    return dict(config["transform"])


def weights_spec(row: dict, config: dict) -> dict:
    """What the conversion of the row needs (``checkpoints.conversion_spec``)."""
    from workflow_scripts.checkpoints import conversion_spec

    return conversion_spec(row, config["checkpoints"])
