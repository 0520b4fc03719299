"""Model sources: where a model-table row's backbone comes from (column ``source``), one module
per source named like its ``registry.SOURCES`` key, each with the same functions:

* planned (at Snakefile parse time, no torch): ``check_row(row, config)`` validates the row
  (a mapping of its cells) and returns the cells it fills in (``{}`` or e.g. the family);
  ``arch_spec(row, config)`` the facts planning needs (``dim``: the embedding width,
  ``img_size``, ``extra_mb``: job memory beyond the registry's per-process allowance);
  ``backbone_fields(row, config)`` what a job's ``model`` param carries beyond key, method, arch
  and embedding (the source itself included, so the job loads through this module);
  ``table_fields(row)`` extra accuracy-table columns; ``transform_spec(row, config)`` the
  eval/train transform of the model's jobs;
* fetched: ``weights_spec(row, config)`` the params of the source's weights rule (its
  ``registry.SOURCES[...]["rules"]``, in rules/zoo.smk), which writes
  ``results/checkpoints/{model}.safetensors``.

Loading is not here: a job builds its backbone with the module ``registry.SOURCES[source]
["backbone"]`` names (``backbones`` for the registry's archs, ``timm_models``), imported by name
(``backbones.load_job_backbone``). These modules are planning only; no job imports them, so
their edits rerun nothing but what they plan differently (a param), and a job's code identity
(``workflow_scripts.provenance``) holds its own source's loader only: editing the timm source
reruns the timm rows' jobs, nothing of the demo zoo.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class SourceError(ValueError):
    """A model row its source cannot serve; the message names the column, not the row (the
    caller adds table and key)."""


def module_name(source: str) -> str:
    """The package module (relative to ``workflow_scripts``) of a source."""
    return f"model_sources.{source}"


def load(source: str) -> ModuleType:
    """The module of a model source, imported now."""
    return importlib.import_module(f"workflow_scripts.{module_name(source)}")
