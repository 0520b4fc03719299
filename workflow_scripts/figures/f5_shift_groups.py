"""F5: in-domain (protocol, arm) vs OOD accuracy averaged per domain-shift group (rule
f5_shift_groups)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from workflow_scripts.correlations import GROUP_PREFIX, MEAN_OOD, order_protocol_arms
from workflow_scripts.figures.common import (
    INTERVAL_LEGEND,
    METHOD_LABELS,
    N_LEGEND,
    cell_text,
    dataset_label,
    foot,
    heatmap,
    n_text,
    options,
    protocol_arm_label,
    pyplot,
    save,
    select,
    style,
)


def f5_cells(corr: pd.DataFrame, opts: dict | None = None) -> pd.DataFrame:
    """The cells of F5: one row per (OOD panel y, in-domain row x, shift-group column).

    Rows of ``corr`` with the chosen ``method`` and ``subset`` whose ``y_dataset`` is a shift
    group mean (``group:<name>``) and, with option ``include_mean`` (True), the mean over all OOD
    data sets.  Columns: ``y_protocol``, ``y_arm``, ``x_protocol``, ``x_arm``, ``y_dataset``,
    ``value``, ``ci_low``, ``ci_high``, ``n``, ``n_datasets``, ``margin``, ``margin_ci_low``,
    ``margin_ci_high``, ``single_best`` (the correlation table's: set on the best row of a
    column), ``best`` (the column's highest value), ``framed`` (``best`` and ``single_best``:
    the paired bootstrap of its margin over the runner-up excludes 0), ``text`` (the
    annotation: in parentheses when the interval includes 0, ``n=`` where n varies within the
    panel), and ``row``/``col``/``panel`` (positions in the figure).  Options ``y_protocols`` /
    ``y_arms`` restrict the panels.
    """
    o = options(opts, "f5")
    sel = select(corr, o)
    is_group = sel["y_dataset"].astype(str).str.startswith(GROUP_PREFIX)
    keep = is_group | ((sel["y_dataset"] == MEAN_OOD) & bool(o["include_mean"]))
    sel = sel[keep & (sel["x_dataset"] != sel["y_dataset"])]
    if not is_group.any():
        raise ValueError(
            "no shift-group rows (y_dataset 'group:<name>') in the correlation "
            f"table for method={o['method']!r}, subset={o['subset']!r}"
        )
    ys = order_protocol_arms(zip(sel["y_protocol"], sel["y_arm"]))
    if o.get("y_protocols"):
        ys = [pa for pa in ys if pa[0] in set(o["y_protocols"])]
    if o.get("y_arms"):
        ys = [pa for pa in ys if pa[1] in set(o["y_arms"])]
    if not ys:
        raise ValueError("no shift-group correlation rows to plot (check y_protocols/y_arms)")
    sel = sel[pd.Series(list(zip(sel["y_protocol"], sel["y_arm"])), index=sel.index).isin(ys)]
    xs = order_protocol_arms(zip(sel["x_protocol"], sel["x_arm"]))
    groups = list(dict.fromkeys(d for d in sel["y_dataset"] if str(d).startswith(GROUP_PREFIX)))
    columns = groups + ([MEAN_OOD] if (sel["y_dataset"] == MEAN_OOD).any() else [])
    cells = []
    for panel, (yp, ya) in enumerate(ys):
        rows = sel[(sel["y_protocol"] == yp) & (sel["y_arm"] == ya)]
        show_n = rows["n"].nunique() > 1
        for row in rows.itertuples(index=False):
            value = float(row.value)
            cells.append(
                {
                    "y_protocol": yp,
                    "y_arm": ya,
                    "x_protocol": row.x_protocol,
                    "x_arm": row.x_arm,
                    "y_dataset": row.y_dataset,
                    "value": value,
                    "ci_low": row.ci_low,
                    "ci_high": row.ci_high,
                    "n": row.n,
                    "n_datasets": getattr(row, "n_datasets", np.nan),
                    "margin": float(getattr(row, "margin", np.nan)),
                    "margin_ci_low": float(getattr(row, "margin_ci_low", np.nan)),
                    "margin_ci_high": float(getattr(row, "margin_ci_high", np.nan)),
                    "single_best": _flag(getattr(row, "single_best", None)),
                    "text": cell_text(value, row.ci_low, row.ci_high, row.n if show_n else None),
                    "panel": panel,
                    "row": xs.index((row.x_protocol, row.x_arm)),
                    "col": columns.index(row.y_dataset),
                }
            )
    out = pd.DataFrame(cells).sort_values(["panel", "row", "col"], ignore_index=True)
    top = out.groupby(["panel", "col"])["value"].transform("max")
    out["best"] = out["value"].notna() & (out["value"] == top)
    out["framed"] = out["best"] & out["single_best"].eq(True)
    return out


def _flag(value) -> bool | None:
    """A boolean cell of correlations.csv (True, False, or empty: None)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return bool(value)


def plot(corr: pd.DataFrame, opts: dict | None, png, pdf) -> pd.DataFrame:
    """Heatmaps of in-domain (protocol, arm) (rows) vs domain-shift groups (columns).

    Each cell is the mean, over the OOD data sets of one shift group, of the correlation between
    the row's in-domain accuracy and the data set's accuracy under the panel's OOD (protocol,
    arm); the last column (after a thick line) is the mean over all OOD data sets.  One panel
    per OOD (protocol, arm) (options ``y_protocols`` / ``y_arms``), ``col_wrap`` (3) panels per
    row.  A value is in parentheses when its 95% bootstrap interval includes 0, with ``n=``
    where the number of models varies within a panel.  The best in-domain predictor of a
    column is framed only where the paired bootstrap interval of its margin over the runner-up
    (correlations.csv ``margin``, same resamples) excludes 0; otherwise its highest value gets a
    dashed frame and the column's label says "no single best".  Returns the drawn cells (:func:`f5_cells`).  Options ``vmin``/``vmax``
    (-1, 1), ``include_mean`` (True).
    """
    o = options(opts, "f5")
    cells = f5_cells(corr, o)
    sel = select(corr, o)
    xs = list(
        cells.drop_duplicates("row")
        .sort_values("row")[["x_protocol", "x_arm"]]
        .itertuples(index=False, name=None)
    )
    columns = cells.drop_duplicates("col").sort_values("col")["y_dataset"].tolist()
    n_sets = {}
    for c in columns:
        kind_rows = sel[sel["y_dataset"] == c]
        n_sets[c] = int(kind_rows["n_datasets"].max()) if "n_datasets" in sel else None
    clabels = [
        (dataset_label(c).removeprefix("mean: ") if c != MEAN_OOD else "mean OOD")
        + (f"\n({n_sets[c]} set{'s' if n_sets[c] != 1 else ''})" if n_sets[c] else "")
        for c in columns
    ]
    xlabels = [protocol_arm_label(*pa) for pa in xs]
    panels = cells.drop_duplicates("panel").sort_values("panel")[["y_protocol", "y_arm"]]
    panels = list(panels.itertuples(index=False, name=None))

    plt, sns = pyplot()
    with style(sns, o):
        ncol = max(1, min(int(o["col_wrap"]), len(panels)))
        nrow = math.ceil(len(panels) / ncol)
        fig, axes = plt.subplots(
            nrow,
            ncol,
            squeeze=False,
            sharey=True,
            layout="constrained",
            figsize=(ncol * (0.8 * len(columns) + 0.6) + 2.6, nrow * (0.36 * len(xs) + 1.4) + 0.8),
        )
        try:
            for ax, (panel, (yp, ya)) in zip(axes.ravel(), enumerate(panels)):
                part = cells[cells["panel"] == panel]
                values = np.full((len(xs), len(columns)), np.nan)
                annot = np.full(values.shape, "", dtype=object)
                values[part["row"], part["col"]] = part["value"]
                annot[part["row"], part["col"]] = part["text"]
                heatmap(
                    ax,
                    sns,
                    pd.DataFrame(values, index=xlabels, columns=clabels),
                    cmap=o["cmap"],
                    vmin=o["vmin"],
                    vmax=o["vmax"],
                    annot=annot if o["annotate"] else None,
                    fontsize=8 * o["font_scale"],
                )
                if MEAN_OOD in columns and len(columns) > 1:
                    ax.axvline(columns.index(MEAN_OOD), color="black", lw=2.5)
                # a column's highest value: a solid frame where it is the single best
                # predictor, a dashed one where it is not
                for cell in part[part["best"]].itertuples(index=False):
                    pad, lw, ls, colour = (
                        (0.04, 1.6, "-", "black") if cell.framed else (0.06, 1.0, "--", "0.2")
                    )
                    ax.add_patch(
                        plt.Rectangle(
                            (cell.col + pad, cell.row + pad),
                            1 - 2 * pad,
                            1 - 2 * pad,
                            fill=False,
                            lw=lw,
                            ls=ls,
                            edgecolor=colour,
                        )
                    )
                undecided = set(part.loc[part["best"] & ~part["framed"], "col"])
                ax.set_xticks(
                    np.arange(len(columns)) + 0.5,
                    labels=[
                        label + ("\nno single\nbest" if j in undecided else "")
                        for j, label in enumerate(clabels)
                    ],
                )
                plt.setp(ax.get_xticklabels(), rotation=0, fontsize=8 * o["font_scale"])
                ax.tick_params(axis="x", labeltop=False)
                ax.set_title(
                    f"OOD accuracy under {protocol_arm_label(yp, ya)}\n({n_text(part['n'])})",
                    fontsize=9.5 * o["font_scale"],
                )
            for ax in axes.ravel()[len(panels) :]:
                ax.set_visible(False)
            import matplotlib as mpl

            cmap = o["cmap"]
            sm = mpl.cm.ScalarMappable(
                norm=mpl.colors.Normalize(o["vmin"], o["vmax"]),
                cmap=sns.color_palette(cmap, as_cmap=True) if isinstance(cmap, str) else cmap,
            )
            fig.colorbar(
                sm,
                ax=axes.ravel().tolist(),
                shrink=min(0.9, 0.5 + 0.2 * nrow),
                label=f"mean {METHOD_LABELS[o['method']]}",
            ).outline.set_linewidth(0)
            fig.supylabel("in-domain protocol (x)", fontsize=10 * o["font_scale"])
            fig.suptitle(
                o["title"]
                or f"{METHOD_LABELS[o['method']]} of in-domain accuracy with OOD "
                f"accuracy, averaged per domain-shift group ({o['subset']} models; "
                "frame = single best predictor)",
                fontsize=11 * o["font_scale"],
            )
            if o["annotate"]:
                varies = any(
                    cells.loc[cells["panel"] == p, "n"].nunique() > 1 for p in range(len(panels))
                )
                foot(
                    fig,
                    [
                        INTERVAL_LEGEND,
                        "frame: the single best predictor (its paired-bootstrap margin over the "
                        "runner-up excludes 0); dashed: the highest value, no single best",
                        N_LEGEND if varies else "",
                    ],
                )
            save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)
    return cells
