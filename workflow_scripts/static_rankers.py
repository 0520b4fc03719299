"""Static rankers: orders of the models that need no evaluation, the null baselines of the
correlations (config ``analysis.static_rankers``; ``registry.STATIC_RANKERS``).

A cheap protocol or proxy says something about a model only if it ranks the models better than
what is known without evaluating them: the published ImageNet linear top-1, the parameter
count, the pre-training epochs, or a random order. :func:`values` gives each named ranker's value
per model, known when the configuration loads (the model table, the arch facts, the results
tables), so the correlations job gets them as a param; :func:`workflow_scripts.correlations.
correlation_table` compares every row with the best of them on the same models and resamples.

No torch here: the parameter counts are the registry's (``registry.ARCH_PARAMS``) or timm's
meta-device build, which planning does anyway for a timm row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from workflow_scripts import registry

RANDOM = "random"


def table_ranker(name: str) -> tuple[str, str] | None:
    """(protocol, arm) of a ranker ``table:<protocol>:<arm>``; None for a registry name."""
    return registry.table_ranker(name)


def _table_values(tables: Mapping[str, pd.DataFrame], protocol: str, arm: str) -> dict[str, float]:
    """model -> top-1 of the in-domain rows (``protocol``, ``arm``) of the results tables (the
    analysis has one in-domain data set: ``external.check_merged``)."""
    out: dict[str, float] = {}
    for rows in tables.values():
        hit = rows[(rows["domain"] == "id") & (rows["protocol"] == protocol) & (rows["arm"] == arm)]
        out.update(zip(hit["model"].astype(str), hit["top1"].astype(float)))
    return out


def values(
    names: Sequence[str],
    models: pd.DataFrame,
    config: dict,
    pretrain_images: int | None,
    tables: Mapping[str, pd.DataFrame],
) -> dict[str, dict[str, float]]:
    """Each named ranker (but the random one) -> model -> value, for the models that have one.

    ``models``: the selected rows of the model table (index: key); ``pretrain_images``: the
    in-domain train split's size (a demo row's epochs); ``tables``: the
    results tables' rows (source name -> rows). ``published_linear`` is the model table's column
    where a row has it, else the results tables' in-domain ``linear`` (``published``) rows.
    """
    from workflow_scripts import model_sources

    facts: dict[str, dict] = {}
    if any(n in ("params", "pretrain_epochs") for n in names):
        for key in models.index:
            row = {c: _cell(models.loc[key, c]) for c in models.columns}
            source = model_sources.load(row["source"])
            facts[key] = source.ranker_facts(row, config, pretrain_images)
    out: dict[str, dict[str, float]] = {}
    for name in names:
        if name == RANDOM:
            continue
        spec = table_ranker(name)
        if spec is not None:
            found = _table_values(tables, *spec)
        elif name == "published_linear":
            found = _table_values(tables, "linear", "published")
            if "published_linear" in models:
                found.update(models["published_linear"].dropna().astype(float).to_dict())
        else:
            found = {key: f[name] for key, f in facts.items()}
        out[name] = {
            str(m): float(v) for m, v in sorted(found.items()) if v is not None and np.isfinite(v)
        }
    return out


def _cell(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def unavailable(
    names: Sequence[str], found: Mapping[str, Mapping[str, float]], models
) -> dict[int, tuple[str, str]]:
    """The configured rankers (position in ``analysis.static_rankers`` -> (name, where its
    values come from)) that have no value for any of the analysed ``models``: never eligible,
    so never a baseline."""
    out = {}
    for i, name in enumerate(names):
        if name == RANDOM or set(found.get(name, {})) & set(models):
            continue
        spec = table_ranker(name)
        where = (
            f"no results table has an in-domain {spec[0]} ({spec[1]}) row"
            if spec
            else registry.STATIC_RANKERS[name]["description"]
        )
        out[i] = (name, where)
    return out
