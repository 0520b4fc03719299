"""The tidy accuracy table: one row per (model, data set, protocol, arm).

``results/tables/accuracy.csv`` columns: model, method, backbone (the backbone family), arch,
paradigm, dataset, domain (id/ood), shift_group, protocol, arm, top1, top5 (percent 0-100;
top5 empty with <= 5 classes), then provenance: top1_sd (over seeds), n_seeds, seed, epochs,
report (last/best epoch), k, n_train, n_test, code_version (hash of the package modules that
computed the row, see ``provenance.code_hash``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow_scripts import registry

COLUMNS = [
    "model",
    "method",
    "backbone",
    "arch",
    "paradigm",
    "dataset",
    "domain",
    "shift_group",
    "protocol",
    "arm",
    "top1",
    "top5",
    "top1_sd",
    "n_seeds",
    "seed",
    "epochs",
    "report",
    "k",
    "n_train",
    "n_test",
    "code_version",
]


def devices_by_protocol(frames: list[pd.DataFrame]) -> dict[str, list[str]]:
    """protocol -> the devices its per-job rows record (``cpu``, ``cuda``; rows written before
    the column existed count as ``unrecorded``)."""
    seen: dict[str, set[str]] = {}
    for frame in frames:
        devices = frame["device"].fillna("unrecorded") if "device" in frame else "unrecorded"
        for protocol, device in pd.DataFrame({"p": frame["protocol"], "d": devices}).itertuples(
            index=False
        ):
            seen.setdefault(str(protocol), set()).add(str(device))
    return {protocol: sorted(devices) for protocol, devices in sorted(seen.items())}


def single_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, data set, protocol, arm) as the probe wrote it (kNN: ``k``)."""
    out = frame.reindex(
        columns=[
            "model",
            "dataset",
            "protocol",
            "arm",
            "top1",
            "top5",
            "k",
            "n_train",
            "n_test",
            "code_version",
        ]
    )
    out["top1_sd"] = 0.0
    out["n_seeds"] = 1
    out["seed"] = ""
    out["epochs"] = np.nan
    out["report"] = ""
    return out


def trained_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Fine-tuning and few-shot fine-tuning: the mean (and sd) over few-shot subset seeds.

    Full fine-tuning has one run per (model, arm) and its training seed in ``seed``; few-shot
    runs list their subset seeds in ``seed`` (``subset_seed`` of the per-job rows).
    """
    frame = frame.copy()
    if "subset_seed" not in frame:
        frame["subset_seed"] = ""
    subset = frame["subset_seed"].fillna("").astype(str).str.replace(r"\.0$", "", regex=True)
    frame["seed"] = subset.where(subset != "", frame["seed"].astype(str))
    grouped = frame.groupby(["model", "dataset", "protocol", "arm"], sort=False)
    out = grouped.agg(
        top1=("top1", "mean"),
        top5=("top5", "mean"),
        top1_sd=("top1", lambda s: s.std(ddof=1) if len(s) > 1 else 0.0),
        n_seeds=("seed", "size"),
        seed=("seed", lambda s: ";".join(sorted(s, key=_seed_key))),
        epochs=("epochs", "first"),
        n_train=("n_train", "first"),
        n_test=("n_test", "first"),
        code_version=("code_version", "first"),
    ).reset_index()
    out["report"] = "last"
    out["k"] = np.nan
    return out


def _seed_key(seed: str):
    return (0, int(seed)) if seed.isdigit() else (1, seed)


def linear_rows(frame: pd.DataFrame, report: str, report_lr: float) -> pd.DataFrame:
    """Average the heads at ``report_lr`` over seeds, at the last or the best epoch."""
    chosen = frame[np.isclose(frame["base_lr"], report_lr)].copy()
    if chosen.empty:
        raise ValueError(f"no linear-probe head was trained at base lr {report_lr}")
    return probe_rows(chosen, report)


def probe_rows(chosen: pd.DataFrame, report: str) -> pd.DataFrame:
    """Average trained probes (one row per arm and seed) over seeds, at the last or the best
    epoch."""
    chosen = chosen.copy()
    suffix = "" if report == "last" else "_best"
    chosen["top1"] = chosen[f"top1{suffix}"]
    chosen["top5"] = chosen[f"top5{suffix}"]
    grouped = chosen.groupby(["model", "dataset", "protocol", "arm"], sort=False)
    out = grouped.agg(
        top1=("top1", "mean"),
        top5=("top5", "mean"),
        top1_sd=("top1", lambda s: s.std(ddof=1) if len(s) > 1 else 0.0),
        n_seeds=("seed", "size"),
        seed=("seed", lambda s: ";".join(str(v) for v in sorted(s))),
        epochs=("epochs", "first"),
        n_train=("n_train", "first"),
        n_test=("n_test", "first"),
        code_version=("code_version", "first"),
    ).reset_index()
    out["report"] = report
    out["k"] = np.nan
    return out


#: How each protocol's per-job rows become table rows (registry.PROTOCOLS[...]["rows"]).
REDUCERS = {
    "single": lambda frame, **_: single_rows(frame),
    "linear_heads": lambda frame, report, report_lr: linear_rows(frame, report, report_lr),
    "probe_runs": lambda frame, report, **_: probe_rows(frame, report),
    "subset_seeds": lambda frame, **_: trained_rows(frame),
}


def accuracy_table(
    probe_frames: list[pd.DataFrame],
    models: list[dict],
    datasets: list[dict],
    *,
    report: str,
    report_lr: float,
) -> pd.DataFrame:
    """Join the per-job probe results with the model and data set tables."""
    parts = []
    by_protocol: dict[str, list[pd.DataFrame]] = {}
    for frame in probe_frames:
        for protocol, group in frame.groupby("protocol"):
            by_protocol.setdefault(protocol, []).append(group)
    for protocol, frames in by_protocol.items():
        key, _ = registry.protocol_entry(protocol)
        if key is None:
            raise ValueError(f"unknown protocol '{protocol}' in the probe results")
        reduce = REDUCERS[registry.PROTOCOLS[key]["rows"]]
        parts.append(
            reduce(pd.concat(frames, ignore_index=True), report=report, report_lr=report_lr)
        )
    table = pd.concat(parts, ignore_index=True)
    # provenance column 'transform' (paper / model) when a timm row brings one: the model
    # fields of the other rows have none (they use the paper's transform)
    extra = ["transform"] if any("transform" in m for m in models) else []
    model_info = pd.DataFrame(models)[["key", "method", "family", "arch", "paradigm", *extra]]
    model_info = model_info.rename(columns={"key": "model", "family": "backbone"})
    if extra:
        model_info["transform"] = model_info["transform"].fillna("paper")
    data_info = pd.DataFrame(datasets)[["key", "role", "shift_group"]].rename(
        columns={"key": "dataset", "role": "domain"}
    )
    table = table.merge(model_info, on="model", how="left").merge(
        data_info, on="dataset", how="left"
    )
    unknown = table[table["method"].isna() | table["domain"].isna()]
    if not unknown.empty:
        raise ValueError(
            f"probe results for unknown model/data set: {unknown[['model', 'dataset']].drop_duplicates().values.tolist()}"
        )
    duplicated = table.duplicated(["model", "dataset", "protocol", "arm"])
    if duplicated.any():
        raise ValueError(
            f"duplicate accuracy rows: {table[duplicated][['model', 'dataset', 'protocol', 'arm']].values.tolist()}"
        )

    ranks = {
        "model": {m["key"]: i for i, m in enumerate(models)}.get,
        "dataset": {d["key"]: i for i, d in enumerate(datasets)}.get,
        "protocol": registry.protocol_sort_key,
        "arm": registry.arm_sort_key,
    }
    table = table.sort_values(
        ["model", "dataset", "protocol", "arm"], key=lambda s: s.map(ranks[s.name])
    ).reset_index(drop=True)
    for column in ("k", "epochs", "n_seeds", "n_train", "n_test"):
        table[column] = table[column].astype("Int64")
    return table[COLUMNS[: COLUMNS.index("code_version")] + extra + ["code_version"]]
