"""F1: the in-domain correlation matrix between (protocol, arm) pairs (rule f1_id_protocols)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow_scripts.correlations import order_protocol_arms
from workflow_scripts.figures.common import (
    INTERVAL_LEGEND,
    METHOD_LABELS,
    N_LEGEND,
    cell_text,
    foot,
    heatmap,
    n_text,
    options,
    protocol_arm_label,
    pyplot,
    save,
    select,
    stars,
    style,
)


def plot(corr: pd.DataFrame, opts: dict | None, png, pdf) -> None:
    """Symmetric heatmap of the in-domain correlations between (protocol, arm) pairs.

    Cells: coefficient and significance stars (* p < .05, ** p < .01, *** p < .001), in
    parentheses when the 95% bootstrap interval includes 0, with the number of models
    (``n=``) when it varies between cells; diagonal 1. Options besides the common ones:
    ``vmin``/``vmax`` (-1, 1).
    """
    o = options(opts, "f1")
    sel = select(corr, o)
    sel = sel[sel["x_dataset"] == sel["y_dataset"]]
    if sel.empty:
        raise ValueError("no in-domain protocol pairs in the correlation table")
    pas = order_protocol_arms(
        list(zip(sel["x_protocol"], sel["x_arm"])) + list(zip(sel["y_protocol"], sel["y_arm"]))
    )
    k = len(pas)
    pos = {pa: i for i, pa in enumerate(pas)}
    values = np.full((k, k), np.nan)
    annot = np.full((k, k), "", dtype=object)
    np.fill_diagonal(values, 1.0)
    for i in range(k):
        annot[i, i] = "1"
    show_n = sel["n"].nunique() > 1
    for row in sel.itertuples(index=False):
        i, j = pos[(row.x_protocol, row.x_arm)], pos[(row.y_protocol, row.y_arm)]
        text = (
            "–"
            if not np.isfinite(row.value)
            else cell_text(
                row.value,
                row.ci_low,
                row.ci_high,
                row.n if show_n else None,
                suffix=stars(row.p_value),
            )
        )
        values[i, j] = values[j, i] = row.value
        annot[i, j] = annot[j, i] = text
    labels = [protocol_arm_label(*pa) for pa in pas]
    id_ds = sel["x_dataset"].iloc[0]

    plt, sns = pyplot()
    with style(sns, o):
        fig, ax = plt.subplots(figsize=(1.2 * k + 2.6, 1.0 * k + 1.6))
        try:
            mesh = heatmap(
                ax,
                sns,
                pd.DataFrame(values, index=labels, columns=labels),
                cmap=o["cmap"],
                vmin=o["vmin"],
                vmax=o["vmax"],
                annot=annot if o["annotate"] else None,
                fontsize=9 * o["font_scale"],
                linewidth=0.6,
                square=True,
            )
            fig.colorbar(
                mesh, ax=ax, shrink=0.8, label=METHOD_LABELS[o["method"]]
            ).outline.set_linewidth(0)
            plt.setp(ax.get_xticklabels(), rotation=35, ha="right")
            ax.set_title(
                o["title"]
                or f"{METHOD_LABELS[o['method']]} between in-domain protocols\n"
                f"{id_ds}, {o['subset']} models, {n_text(sel['n'])}",
                fontsize=11 * o["font_scale"],
            )
            if o["annotate"]:
                has_p = np.isfinite(sel["p_value"].astype(float)).any()
                foot(
                    fig,
                    [
                        "* p < .05   ** p < .01   *** p < .001" if has_p else "",
                        INTERVAL_LEGEND,
                        N_LEGEND if show_n else "",
                    ],
                )
            save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)
