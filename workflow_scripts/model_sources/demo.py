"""Source ``demo``: a backbone the workflow pre-trains itself (rule ``pretrain``) on the
in-domain set, with the method (``registry.METHODS``, ``workflow_scripts.pretrain``), seed and
step budget of the row and the config's ``pretrain`` section."""

from __future__ import annotations

from workflow_scripts import registry
from workflow_scripts.model_sources import SourceError, common


def check_row(row: dict, config: dict) -> dict:
    common.check_arch(row)
    method = registry.METHODS.get(row["method"])
    if method is None:
        raise SourceError(
            f"method '{row['method']}' cannot be trained by the workflow "
            f"(known: {', '.join(registry.METHODS)})"
        )
    if row["family"] not in method["families"]:
        raise SourceError(f"method '{row['method']}' does not run on a {row['family']} backbone")
    for column in ("seed", "steps"):
        if row[column] is None:
            raise SourceError(f"column '{column}' is required for source 'demo'")
    if row["method"] != "random" and row["steps"] == 0:
        raise SourceError("column 'steps' must be > 0 for a trained method")
    return {}


def arch_spec(row: dict, config: dict) -> dict:
    return common.arch_spec(row)


def backbone_fields(row: dict, config: dict) -> dict:
    return {"source": "demo"}


def ranker_facts(row: dict, config: dict, pretrain_images: int | None) -> dict:
    """Parameter count, and the pre-training epochs the row's step budget amounts to: steps x
    batch size (``pretrain.batch_size`` or its method's own) / ``pretrain_images`` (the
    in-domain train split it trains on)."""
    epochs = None
    if pretrain_images:
        epochs = row["steps"] * weights_spec(row, config)["batch_size"] / pretrain_images
    return {"params": registry.ARCH_PARAMS[row["arch"]], "pretrain_epochs": epochs}


def table_fields(row: dict) -> dict:
    return {}


def transform_spec(row: dict, config: dict) -> dict:
    return dict(config["transform"])


def weights_spec(row: dict, config: dict) -> dict:
    """Pre-training hyper-parameters of the row: the shared ones plus its method's, and the
    normalisation of the transform."""
    cfg = config["pretrain"]
    # seed_offset reaches a job through the row's seed (config.load_study)
    hp = {k: v for k, v in cfg.items() if k not in ("methods", "seed_offset")}
    hp.update(cfg["methods"][row["method"]])
    hp.update(mean=config["transform"]["mean"], std=config["transform"]["std"])
    return hp
