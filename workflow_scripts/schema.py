"""The defaults of the configuration, read from config/schemas/config.schema.yaml (the one place
a default lives). Imports only yaml, so the job-side modules that fall back on a default
(extraction options, pre-training hyper-parameters, figure options) can use it cheaply.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parent.parent / "config" / "schemas" / "config.schema.yaml"


@functools.cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def resolve(root: dict, node: dict) -> dict:
    """``node`` with a local ``$ref`` replaced by its target (``node``'s other keywords, e.g.
    ``default`` and ``description``, kept over the target's)."""
    ref = node.get("$ref")
    if not (ref and ref.startswith("#/")):
        return node
    target = root
    for part in ref[2:].split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def fill_defaults(config: dict, node: dict, root: dict) -> None:
    """Set every key ``config`` leaves out to its schema ``default``, recursing into the
    sections (a section left out gets its ``default: {}`` and then its keys' defaults): what
    ``snakemake.utils.validate(..., set_default=True)`` does."""
    node = resolve(root, node)
    for key, prop in node.get("properties", {}).items():
        prop = resolve(root, prop)
        if key not in config and "default" in prop:
            config[key] = copy.deepcopy(prop["default"])
        if isinstance(config.get(key), dict) and "properties" in prop:
            fill_defaults(config[key], prop, root)


def schema_node(path: str) -> dict:
    """The schema of the configuration key ``path`` (dotted, e.g. ``"figures.f3"``; ``""`` =
    the whole configuration), ``$ref`` resolved."""
    root = _schema()
    node = root
    for part in filter(None, path.split(".")):
        properties = resolve(root, node).get("properties", {})
        if part not in properties:
            raise KeyError(f"'{path}' is no configuration key ({SCHEMA.name} has no '{part}')")
        node = properties[part]
    return resolve(root, node)


def schema_defaults(path: str = "") -> dict:
    """The defaults of one section of the configuration: what the loader fills into a
    configuration that leaves the section out, nested sections included. E.g.
    ``schema_defaults("figures.f3")``, ``schema_defaults("pretrain.methods.mae")``,
    ``schema_defaults("features")``. A fresh dict on every call."""
    node = schema_node(path)
    if "properties" not in node:
        raise KeyError(f"'{path}' is a single key, not a section of the configuration")
    out: dict = {}
    fill_defaults(out, node, _schema())
    return out


class _SchemaDefault:
    def __repr__(self) -> str:
        return "<schema default>"


#: Default of a dataclass field whose value is the schema's default of the same key
#: (:func:`fill_from_schema` in ``__post_init__``), so the value lives in the schema alone.
FROM_SCHEMA = _SchemaDefault()


def fill_from_schema(obj, section: str) -> None:
    """Set each field of the dataclass instance ``obj`` left at :data:`FROM_SCHEMA` to the
    schema default of ``<section>.<field>`` (frozen dataclasses included)."""
    pending = [f.name for f in dataclasses.fields(obj) if getattr(obj, f.name) is FROM_SCHEMA]
    if pending:
        defaults = schema_defaults(section)
        for name in pending:
            object.__setattr__(obj, name, defaults[name])
