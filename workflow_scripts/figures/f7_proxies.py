"""F7: label-free and transferability proxies vs accuracy (rule f7_proxies)."""

from __future__ import annotations

import pandas as pd

from workflow_scripts import registry
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


def direction(proxy: str) -> int:
    """+1 when a higher value of the proxy predicts a better model, -1 when a lower one does."""
    return int(registry.PROXIES.get(proxy, {"direction": 1})["direction"])


def panels_of(cells: pd.DataFrame) -> list[tuple[str, bool, pd.DataFrame]]:
    """(subset, mean-OOD columns?, its cells) of each panel, stacked top to bottom: per model
    subset the in-domain accuracies, then their mean over the OOD sets. Splitting the columns
    keeps the figure about one panel wide whatever the number of subsets and protocols."""
    mean = cells["column"].str.endswith("mean OOD")
    out = []
    for subset in dict.fromkeys(cells["subset"]):
        for is_mean in (False, True):
            part = cells[(cells["subset"] == subset) & (mean == is_mean)]
            if len(part):
                out.append((subset, is_mean, part))
    return out


def plot(corr: pd.DataFrame, opts: dict | None, png, pdf) -> pd.DataFrame:
    """Heatmaps of the correlation between each proxy (rows, with its direction) on the
    in-domain set and each accuracy, one panel per model subset (all models, then per backbone)
    and kind of column (in-domain protocols; their mean over the OOD sets), stacked. The colour
    is the coefficient times the proxy's direction, so red is always "the proxy orders the
    models as its arrow says" and blue the opposite, for ↑ and ↓ proxies alike; the number is
    the coefficient itself, in parentheses when its 95% bootstrap interval includes 0, with
    ``n=`` where the number of models varies within a panel. Returns :func:`f7_cells`."""
    o = options(opts, "f7")
    cells = f7_cells(corr, o)
    panels = panels_of(cells)
    plt, sns = pyplot()
    with style(sns, o):
        n_rows = int(cells["row"].max()) + 1
        widest = max(part["col"].nunique() for _, _, part in panels)
        height = 0.42 * n_rows  # each panel's cells; its rotated column names need ~1.6 in
        fig, axes = plt.subplots(
            len(panels),
            1,
            squeeze=False,
            figsize=(0.62 * widest + 3.6, len(panels) * (height + 2.0) + 0.6),
            gridspec_kw={"hspace": 2.0 / height},
        )
        try:
            for ax, (subset, is_mean, part) in zip(axes[:, 0], panels, strict=True):
                frame = part.pivot(index="row", columns="col", values="value").sort_index()
                frame = frame.reindex(columns=sorted(part["col"].unique()))
                texts = part.pivot(index="row", columns="col", values="text")
                texts = texts.reindex(index=frame.index, columns=frame.columns).fillna("")
                row_names = part.drop_duplicates("row").sort_values("row")
                signs = [direction(p) for p in row_names["x_protocol"]]
                oriented = frame.mul(signs, axis=0)  # colour: agreement with the arrow
                oriented.index = [
                    proxy_label(p, a) for p, a in zip(row_names["x_protocol"], row_names["x_arm"])
                ]
                names = part.drop_duplicates("col").sort_values("col")["column"]
                oriented.columns = [n.removesuffix(", mean OOD") for n in names]
                mesh = heatmap(
                    ax,
                    sns,
                    oriented,
                    cmap=o["cmap"],
                    vmin=o["vmin"],
                    vmax=o["vmax"],
                    annot=texts.to_numpy(dtype=object) if o["annotate"] else None,
                    fontsize=8 * o["font_scale"],
                )
                plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
                what = "mean over the OOD data sets" if is_mean else "in-domain accuracy"
                ax.set_title(
                    f"{subset} models, {n_text(part['n'])}: {what}",
                    fontsize=10 * o["font_scale"],
                )
            fig.colorbar(
                mesh,
                ax=list(axes[:, 0]),
                shrink=0.6,
                label=f"{METHOD_LABELS[o['method']]} x direction (red: as the arrow says)",
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
