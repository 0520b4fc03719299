"""F2: in-domain (protocol, arm) vs OOD accuracy per data set, shift group and overall
(rule f2_id_vs_ood)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow_scripts.correlations import GROUP_PREFIX, MEAN_OOD, order_protocol_arms
from workflow_scripts.figures.common import (
    INTERVAL_LEGEND,
    METHOD_LABELS,
    N_LEGEND,
    cell_texts,
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


def _ood_columns(rows: pd.DataFrame) -> tuple[list[str], list[str], list[int]]:
    """OOD data sets (grouped by shift group), group means, and where groups of sets change."""
    kind = (
        rows["y_kind"]
        if "y_kind" in rows
        else pd.Series(
            np.where(
                rows["y_dataset"] == MEAN_OOD,
                "mean",
                np.where(
                    rows["y_dataset"].astype(str).str.startswith(GROUP_PREFIX), "group", "dataset"
                ),
            ),
            index=rows.index,
        )
    )
    ds_rows = rows[kind == "dataset"]
    datasets = list(dict.fromkeys(ds_rows["y_dataset"]))
    if "y_shift_group" in rows:
        group_of = dict(zip(ds_rows["y_dataset"], ds_rows["y_shift_group"]))
    else:
        group_of = {d: "" for d in datasets}
    group_order = list(dict.fromkeys(group_of[d] for d in datasets))
    datasets = sorted(datasets, key=lambda d: group_order.index(group_of[d]))  # stable
    breaks = [
        i for i in range(1, len(datasets)) if group_of[datasets[i]] != group_of[datasets[i - 1]]
    ]
    groups = [
        GROUP_PREFIX + g for g in group_order if (rows["y_dataset"] == GROUP_PREFIX + g).any()
    ]
    if len(groups) < 2:
        groups = []  # a single group's mean is the overall mean
    return datasets, groups, breaks


def plot(corr: pd.DataFrame, opts: dict | None, png, pdf) -> None:
    """Heatmaps of in-domain (protocol, arm) (rows) vs OOD accuracy (columns).

    Columns: the OOD data sets (grouped by shift group), then the mean per shift group and the
    mean over all OOD data sets, after a separating line.  One panel per OOD (protocol, arm)
    (``y``); options ``y_protocols`` / ``y_arms`` restrict the panels.  A value is in
    parentheses when its 95% bootstrap interval includes 0; ``n=`` gives the models behind a
    cell where that number varies within a panel.  Options ``vmin``/``vmax`` (-1, 1).
    """
    o = options(opts, "f2")
    sel = select(corr, o)
    sel = sel[sel["x_dataset"] != sel["y_dataset"]]
    ys = order_protocol_arms(zip(sel["y_protocol"], sel["y_arm"]))
    if o.get("y_protocols"):
        ys = [pa for pa in ys if pa[0] in set(o["y_protocols"])]
    if o.get("y_arms"):
        ys = [pa for pa in ys if pa[1] in set(o["y_arms"])]
    if not ys:
        raise ValueError("no out-of-domain correlation rows to plot (check y_protocols/y_arms)")
    xs = order_protocol_arms(zip(sel["x_protocol"], sel["x_arm"]))
    datasets, groups, breaks = _ood_columns(sel)
    columns = datasets + groups + [MEAN_OOD]
    n_mean = len(groups) + 1
    xlabels = [protocol_arm_label(*pa) for pa in xs]
    clabels = [dataset_label(c) for c in columns]

    plt, sns = pyplot()
    with style(sns, o):
        panel_h = 0.42 * len(xs) + 0.75
        fig, axes = plt.subplots(
            len(ys),
            1,
            squeeze=False,
            sharex=True,
            layout="constrained",
            figsize=(0.72 * len(columns) + 3.6, panel_h * len(ys) + 1.4),
        )
        varies = False
        try:
            for ax, (yp, ya) in zip(axes[:, 0], ys):
                rows = sel[(sel["y_protocol"] == yp) & (sel["y_arm"] == ya)]
                rows = rows.drop_duplicates(["x_protocol", "x_arm", "y_dataset"])
                varies |= rows["n"].nunique() > 1
                texts = pd.Series(
                    cell_texts(rows),
                    index=pd.MultiIndex.from_arrays(
                        [rows["x_protocol"], rows["x_arm"], rows["y_dataset"]]
                    ),
                )
                mat = rows.pivot_table(
                    index=["x_protocol", "x_arm"],
                    columns="y_dataset",
                    values="value",
                    aggfunc="first",
                    dropna=False,
                ).reindex(index=pd.MultiIndex.from_tuples(xs), columns=columns)
                annot = np.array(
                    [[texts.get((xp, xa, c), "") for c in columns] for xp, xa in xs], dtype=object
                )
                mat.index, mat.columns = xlabels, clabels
                heatmap(
                    ax,
                    sns,
                    mat,
                    cmap=o["cmap"],
                    vmin=o["vmin"],
                    vmax=o["vmax"],
                    annot=annot if o["annotate"] else None,
                    fontsize=8 * o["font_scale"],
                )
                for b in breaks:  # between shift groups
                    ax.axvline(b, color="0.35", lw=1.0)
                ax.axvline(len(datasets), color="black", lw=2.5)  # before the means
                ax.tick_params(axis="x", bottom=False, labelbottom=False)
                ax.set_title(
                    f"OOD accuracy under {protocol_arm_label(yp, ya)}  ({n_text(rows['n'])})",
                    fontsize=10 * o["font_scale"],
                    loc="left",
                )
                ax.set_ylabel("")
                ax.set_xlabel("")
                ax.tick_params(axis="y", rotation=0)
            bottom = axes[-1, 0]
            bottom.tick_params(axis="x", bottom=True, labelbottom=True)
            bottom.set_xticks(np.arange(len(columns)) + 0.5)
            bottom.set_xticklabels(clabels, rotation=40, ha="right")
            for lab in bottom.get_xticklabels()[-n_mean:]:
                lab.set_fontweight("bold")
            import matplotlib as mpl

            cmap = o["cmap"]
            sm = mpl.cm.ScalarMappable(
                norm=mpl.colors.Normalize(o["vmin"], o["vmax"]),
                cmap=sns.color_palette(cmap, as_cmap=True) if isinstance(cmap, str) else cmap,
            )
            fig.colorbar(
                sm,
                ax=axes[:, 0].tolist(),
                shrink=min(0.9, 1.5 / len(ys) + 0.3),
                label=METHOD_LABELS[o["method"]],
            ).outline.set_linewidth(0)
            fig.supylabel("in-domain protocol (x)", fontsize=10 * o["font_scale"])
            fig.suptitle(
                o["title"]
                or f"{METHOD_LABELS[o['method']]}: in-domain accuracy (rows) vs. "
                f"OOD accuracy (columns), {o['subset']} models",
                fontsize=11 * o["font_scale"],
            )
            if o["annotate"]:
                foot(fig, [INTERVAL_LEGEND, N_LEGEND if varies else ""])
            save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)
