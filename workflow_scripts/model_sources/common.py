"""What the sources whose backbones are the registry's archs (``registry.ARCHS``: the demo zoo
and the released checkpoints) share: the checks of a row against its arch, and the arch facts."""

from __future__ import annotations

from workflow_scripts import registry
from workflow_scripts.model_sources import SourceError


def check_arch(row: dict) -> None:
    """The row's arch is registered, its family and embedding are the arch's, and it leaves
    column 'transform' to timm rows."""
    arch = registry.ARCHS.get(row["arch"])
    if arch is None:
        raise SourceError(f"unknown arch '{row['arch']}' (known: {', '.join(registry.ARCHS)})")
    if arch["family"] != row["family"]:
        raise SourceError(
            f"family '{row['family']}' does not match arch '{row['arch']}' "
            f"(family '{arch['family']}')"
        )
    if row["embedding"] not in arch["embeddings"]:
        raise SourceError(
            f"embedding '{row['embedding']}' is not available for arch "
            f"'{row['arch']}' (choose from {', '.join(arch['embeddings'])})"
        )
    if row.get("transform") not in (None, "paper"):
        raise SourceError(
            f"column 'transform' is '{row['transform']}'; only source 'timm' rows take another "
            "transform than 'paper'"
        )


def arch_spec(row: dict) -> dict:
    """The registry's facts of the row's arch (dim, img_size, ...)."""
    return registry.ARCHS[row["arch"]]


def ranker_facts(row: dict) -> dict:
    """The static rankers' facts of a row of a registry arch: its parameter count
    (``registry.ARCH_PARAMS``) and the pre-training epochs of column ``epochs`` (None if empty)."""
    return {"params": registry.ARCH_PARAMS[row["arch"]], "pretrain_epochs": row.get("epochs")}
