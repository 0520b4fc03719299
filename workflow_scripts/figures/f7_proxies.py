"""F7: label-free and transferability proxies vs accuracy (rule f7_proxies)."""

from __future__ import annotations

import pandas as pd

from workflow_scripts.correlations import order_protocol_arms
from workflow_scripts.figures.common import (
    INTERVAL_LEGEND,
    METHOD_LABELS,
    N_LEGEND,
    cell_texts,
    foot,
    heatmap,
    n_text,
    options,
    protocol_arm_label,
    proxy_label,
    pyplot,
    save,
    select,
    style,
)


def f7_cells(corr: pd.DataFrame, opts: dict | None = None) -> pd.DataFrame:
    """The cells of F7: one row per (panel = model subset, proxy row, accuracy column).

    Rows of ``corr`` with a proxy as x and an accuracy as y (method ``method``): ``pair`` rows
    (columns: the in-domain (protocol, arm)) and, with option ``include_ood_mean``, ``mean``
    rows (columns ``"<protocol (arm)>, mean OOD"``: the in-domain proxy vs the mean over the
    OOD data sets). Panels: option ``subsets`` (default: ``all`` and every ``backbone=...``
    subset in the table). Columns ``subset``, ``x_protocol``, ``x_arm``, ``column``, ``value``,
    ``ci_low``, ``ci_high``, ``n``, ``text`` (the annotation: in parentheses when the 95%
    interval includes 0, ``n=`` where n varies within the panel), ``row``, ``col``, ``panel``.
    """
    o = options(opts, "f7")
    subsets = o["subsets"] or [
        "all",
        *sorted(s for s in corr["subset"].unique() if str(s).startswith("backbone=")),
    ]
    cells = []
    for panel, subset in enumerate(subsets):
        sel = select(corr, {**o, "subset": subset}, proxies=True)
        kinds = ["pair", "mean"] if o["include_ood_mean"] else ["pair"]
        sel = sel[sel["y_kind"].isin(kinds)]
        rows = order_protocol_arms(zip(sel["x_protocol"], sel["x_arm"]))
        ys = order_protocol_arms(zip(sel["y_protocol"], sel["y_arm"]))
        columns = [
            (kind, pa)
            for kind in kinds
            for pa in ys
            if (
                (sel["y_kind"] == kind) & (sel["y_protocol"] == pa[0]) & (sel["y_arm"] == pa[1])
            ).any()
        ]
        for r in sel.itertuples(index=False):
            col = (r.y_kind, (r.y_protocol, r.y_arm))
            name = protocol_arm_label(r.y_protocol, r.y_arm)
            cells.append(
                {
                    "subset": subset,
                    "x_protocol": r.x_protocol,
                    "x_arm": r.x_arm,
                    "column": name if r.y_kind == "pair" else f"{name}, mean OOD",
                    "value": float(r.value),
                    "ci_low": float(r.ci_low),
                    "ci_high": float(r.ci_high),
                    "n": r.n,
                    "panel": panel,
                    "row": rows.index((r.x_protocol, r.x_arm)),
                    "col": columns.index(col),
                }
            )
    out = pd.DataFrame(cells).sort_values(["panel", "row", "col"], ignore_index=True)
    out["text"] = ""
    for _, part in out.groupby("panel"):
        out.loc[part.index, "text"] = cell_texts(part)
    return out


def plot(corr: pd.DataFrame, opts: dict | None, png, pdf) -> pd.DataFrame:
    """Heatmaps of the correlation between each proxy (rows, with its direction) on the
    in-domain set and each accuracy (columns: in-domain protocols, then their mean OOD), one
    panel per model subset (all models, then per backbone). A proxy ranks the models as its
    direction says when the value is positive (↑) or negative (↓). A value is in parentheses
    when its 95% bootstrap interval includes 0, with ``n=`` where the number of models varies
    within a panel. Returns :func:`f7_cells`."""
    o = options(opts, "f7")
    cells = f7_cells(corr, o)
    panels = list(dict.fromkeys(cells["subset"]))
    plt, sns = pyplot()
    with style(sns, o):
        n_cols = int(cells["col"].max()) + 1
        n_rows = int(cells["row"].max()) + 1
        fig, axes = plt.subplots(
            1,
            len(panels),
            squeeze=False,
            figsize=(len(panels) * (0.75 * n_cols + 2.8), 0.45 * n_rows + 2.6),
        )
        try:
            for ax, subset in zip(axes[0], panels, strict=True):
                part = cells[cells["subset"] == subset]
                frame = part.pivot(index="row", columns="col", values="value").sort_index()
                frame = frame.reindex(columns=sorted(part["col"].unique()))
                texts = part.pivot(index="row", columns="col", values="text")
                texts = texts.reindex(index=frame.index, columns=frame.columns).fillna("")
                row_names = part.drop_duplicates("row").sort_values("row")
                frame.index = [
                    proxy_label(p, a) for p, a in zip(row_names["x_protocol"], row_names["x_arm"])
                ]
                frame.columns = list(part.drop_duplicates("col").sort_values("col")["column"])
                mesh = heatmap(
                    ax,
                    sns,
                    frame,
                    cmap=o["cmap"],
                    vmin=o["vmin"],
                    vmax=o["vmax"],
                    annot=texts.to_numpy(dtype=object) if o["annotate"] else None,
                    fontsize=8 * o["font_scale"],
                )
                plt.setp(ax.get_xticklabels(), rotation=40, ha="right")
                if ax is not axes[0][0]:  # the rows are the same in every panel
                    ax.set_yticklabels([])
                ax.set_title(f"{subset} models, {n_text(part['n'])}", fontsize=10 * o["font_scale"])
            fig.colorbar(
                mesh, ax=list(axes[0]), shrink=0.8, label=METHOD_LABELS[o["method"]]
            ).outline.set_linewidth(0)
            fig.suptitle(
                o["title"]
                or f"{METHOD_LABELS[o['method']]} of each proxy with accuracy across models",
                fontsize=11 * o["font_scale"],
            )
            if o["annotate"]:
                varies = any(part["n"].nunique() > 1 for _, part in cells.groupby("panel"))
                foot(fig, [INTERVAL_LEGEND, N_LEGEND if varies else ""])
            save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)
    return cells
