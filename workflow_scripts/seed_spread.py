"""Seed spread (config ``demo.seeds``): the study run again under other training seeds, and how
far each correlation moves between the runs.

Run 0 is the configured study (``results/``). Run ``s`` (1 .. N-1) is the same study with every
training seed shifted by ``s`` (:data:`SEED_KEYS`, :func:`shifted_config`), on the same data sets,
written under ``results/seeds/<s>/`` by a Snakemake module of this workflow (the Snakefile).
:func:`spread_table` sets the runs' correlation tables side by side: per correlation row its
value in each run, their mean, sd, minimum and maximum, whether every run gives it the same
sign, and in how many runs its bootstrap interval excludes 0, it beats its best null baseline
and it is the single best predictor. :data:`HEADLINES` names the rows the README states as the
demo's conclusions.

Nothing runs at import time.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from workflow_scripts.correlations import COLUMNS

#: Every training seed of a configuration, (section, key): a run's offset is added to each
#: (to every item of a list). pretrain.seed_offset shifts the model table's seeds
#: (config.load_study). The data sets' generator seeds stay: every run sees the same data.
SEED_KEYS = (
    ("pretrain", "seed_offset"),
    ("linear", "seeds"),
    ("linear_online", "seed"),
    ("attentive", "seeds"),
    ("finetune", "seed"),
    ("fewshot", "seed"),
    ("fewshot", "extra_seeds"),
    ("proxies", "seed"),
)
#: The columns that identify a correlation row: those before its count ``n``.
KEY_COLUMNS = COLUMNS[: COLUMNS.index("n")]
#: The demo's headline correlations (README "Headline correlations"): label, x and y as
#: (protocol, arm, data set), where "id" is the in-domain set and "mean_ood" the mean over
#: the OOD sets; all models, Kendall's tau. Rows of protocols a run lacks are left out.
HEADLINES = (
    ("kNN vs linear (BN)", ("knn", "raw", "id"), ("linear", "bn", "id")),
    ("kNN vs linear", ("knn", "raw", "id"), ("linear", "raw", "id")),
    ("linear vs linear (BN)", ("linear", "raw", "id"), ("linear", "bn", "id")),
    ("kNN vs fine-tune", ("knn", "raw", "id"), ("finetune", "raw", "id")),
    ("linear vs fine-tune", ("linear", "raw", "id"), ("finetune", "raw", "id")),
    ("linear (BN) vs fine-tune (BN)", ("linear", "bn", "id"), ("finetune", "bn", "id")),
    ("attentive vs fine-tune", ("attentive", "raw", "id"), ("finetune", "raw", "id")),
    ("attentive (BN) vs fine-tune (BN)", ("attentive", "bn", "id"), ("finetune", "bn", "id")),
    ("kNN vs few-shot 10%", ("knn", "raw", "id"), ("fewshot10", "raw", "id")),
    ("kNN vs few-shot 1%", ("knn", "raw", "id"), ("fewshot1", "raw", "id")),
    ("kNN in-domain vs OOD mean", ("knn", "raw", "id"), ("knn", "raw", "mean_ood")),
    ("linear in-domain vs OOD mean", ("linear", "raw", "id"), ("linear", "raw", "mean_ood")),
    ("LogME vs linear (BN)", ("logme", "raw", "id"), ("linear", "bn", "id")),
    ("NC1 vs linear (BN)", ("nc1", "raw", "id"), ("linear", "bn", "id")),
    ("RankMe vs linear (BN)", ("rankme", "raw", "id"), ("linear", "bn", "id")),
    ("alpha-ReQ vs linear (BN)", ("alpha_req", "raw", "id"), ("linear", "bn", "id")),
)
HEADLINE_SUBSET = "all"
HEADLINE_METHOD = "kendall"


def offsets(config: Mapping) -> list[int]:
    """The further runs of ``demo.seeds``: 1 .. N-1 (none for a single seed)."""
    return list(range(1, config["demo"]["seeds"]))


def run_prefix(offset: int) -> str:
    """Folder a further run writes its results/ and logs/ under (the module's prefix)."""
    return f"results/seeds/{offset}"


def run_path(offset: int, path: str) -> str:
    """``path`` (relative to the working directory) of run ``offset``."""
    return path if offset == 0 else f"{run_prefix(offset)}/{path}"


def shifted_config(config: Mapping, offset: int) -> dict:
    """The configuration of run ``offset``: ``config`` with every seed of :data:`SEED_KEYS`
    shifted by ``offset``, ``demo.run`` ``offset`` (its params name its own files) and
    ``demo.seeds`` 1 (a run has no further runs of its own)."""
    out = copy.deepcopy(dict(config))
    out["demo"] = {**out["demo"], "seeds": 1, "run": offset}
    for section, key in SEED_KEYS:
        value = out[section][key]
        out[section][key] = (
            [seed + offset for seed in value] if isinstance(value, list) else value + offset
        )
    return out


def headline_rows(id_dataset: str) -> pd.DataFrame:
    """:data:`HEADLINES` as correlation-row keys, with a ``headline`` label column."""
    datasets = {"id": id_dataset, "mean_ood": "mean_ood"}
    return pd.DataFrame(
        [
            {
                "x_protocol": x[0],
                "x_arm": x[1],
                "x_dataset": datasets[x[2]],
                "y_protocol": y[0],
                "y_arm": y[1],
                "y_dataset": datasets[y[2]],
                "subset": HEADLINE_SUBSET,
                "method": HEADLINE_METHOD,
                "headline": label,
            }
            for label, x, y in HEADLINES
        ]
    )


def _true(column: pd.Series) -> pd.Series:
    """A boolean column read from CSV (True/False, or empty where it does not apply)."""
    return column.astype("string").str.lower().eq("true").fillna(False)


def spread_table(
    runs: Mapping[int, pd.DataFrame], id_dataset: str, alpha: float = 0.05
) -> pd.DataFrame:
    """One row per correlation row of run 0 (``runs``: offset -> correlation table): its
    ``value`` in run 0 and ``value_seed<s>`` in each run, ``n_runs`` (runs with a value),
    ``mean``, ``sd`` (ddof 1; empty with one value), ``min``, ``max``, ``sign_agrees`` (every
    run's value has run 0's sign, none is 0), and the runs in which its bootstrap interval
    excludes 0 (``ci_excludes_0_runs``), p < ``alpha`` (``significant_runs``), it beats its best
    static ranker (``beats_baseline_runs``) and it is the single best predictor
    (``single_best_runs``). ``headline`` labels the rows of :data:`HEADLINES`; they come first."""
    if 0 not in runs:
        raise ValueError("the seed spread needs run 0 (the configured seeds)")
    keys = list(KEY_COLUMNS)
    order = sorted(runs)
    base = runs[0][keys].drop_duplicates()
    values, counts = [], {}
    for offset in order:
        frame = runs[offset]
        if frame.duplicated(keys).any():
            raise ValueError(f"run {offset}: the correlation table repeats a row key")
        merged = base.merge(frame, on=keys, how="left", validate="one_to_one")
        values.append(merged["value"].to_numpy(dtype=float))
        p_value = merged["p_value"].to_numpy(dtype=float)
        low, high = (merged[c].to_numpy(dtype=float) for c in ("ci_low", "ci_high"))
        flags = {
            "ci_excludes_0_runs": (low > 0) | (high < 0),
            "significant_runs": p_value < alpha,
            "beats_baseline_runs": _true(
                merged.get("beats_baseline", pd.Series(index=merged.index))
            ).to_numpy(),
            "single_best_runs": _true(
                merged.get("single_best", pd.Series(index=merged.index))
            ).to_numpy(),
        }
        for name, flag in flags.items():
            counts[name] = counts.get(name, 0) + np.asarray(flag, dtype=int)
    matrix = np.column_stack(values)  # rows x runs
    valid = ~np.isnan(matrix)
    n_runs = valid.sum(axis=1)
    out = base.reset_index(drop=True)
    out["n_runs"] = n_runs
    out["value"] = matrix[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frame = pd.DataFrame(matrix)
        out["mean"] = frame.mean(axis=1, skipna=True).to_numpy()
        out["sd"] = frame.std(axis=1, ddof=1, skipna=True).to_numpy()
        out["min"] = frame.min(axis=1, skipna=True).to_numpy()
        out["max"] = frame.max(axis=1, skipna=True).to_numpy()
    sign = np.sign(matrix)
    out["sign_agrees"] = (
        (n_runs == len(order)) & (sign != 0).all(axis=1) & (sign == sign[:, :1]).all(axis=1)
    )
    for name, count in counts.items():
        out[name] = count
    for i, offset in enumerate(order):
        out[f"value_seed{offset}"] = matrix[:, i]
    heads = headline_rows(id_dataset)
    out = out.merge(heads, on=keys, how="left")
    out["headline"] = out["headline"].fillna("")
    rank = {label: i for i, (label, _, _) in enumerate(HEADLINES)}
    out["_order"] = out["headline"].map(rank).fillna(len(rank))
    out = out.sort_values("_order", kind="stable").drop(columns="_order")
    columns = [*keys, "headline", *[c for c in out.columns if c not in keys and c != "headline"]]
    return out[columns].reset_index(drop=True)


def headline_view(table: pd.DataFrame) -> pd.DataFrame:
    """The headline rows of a spread table, the columns a reader compares (the report's view)."""
    rows = table[table["headline"] != ""]
    runs = [c for c in table.columns if c.startswith("value_seed")]
    columns = [
        "headline",
        "n_runs",
        "value",
        "mean",
        "sd",
        "min",
        "max",
        "sign_agrees",
        "ci_excludes_0_runs",
        "beats_baseline_runs",
        *runs,
    ]
    return rows[columns].reset_index(drop=True)


def run_job(
    paths: Sequence[str], offsets_: Sequence[int], id_dataset: str, csv: str, html: str, log
) -> pd.DataFrame:
    """Rule seed_spread: the correlation tables of runs ``offsets_`` (``paths``, same order) to
    the spread table ``csv`` and its headline view ``html``."""
    from workflow_scripts.io import save_csv
    from workflow_scripts.tables import save_html

    runs = {offset: pd.read_csv(path) for offset, path in zip(offsets_, paths, strict=True)}
    table = spread_table(runs, id_dataset)
    save_csv(csv, table)
    view = headline_view(table)
    save_html(html, view, f"Seed spread: headline correlations over {len(runs)} runs")
    log.info("%d correlation rows over %d runs, %d headline rows", len(table), len(runs), len(view))
    return table
