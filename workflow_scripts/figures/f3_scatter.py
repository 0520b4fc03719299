"""F3: scatter of in-domain vs OOD top-1 accuracy, one panel per OOD data set (rule
f3_scatter)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from workflow_scripts.correlations import correlate, identify_datasets
from workflow_scripts.figures.common import (
    label_points,
    options,
    protocol_arm_label,
    pyplot,
    save,
    stars,
    style,
)


def _accuracy(acc: pd.DataFrame, dataset, protocol, arm) -> pd.Series:
    sel = acc[(acc["dataset"] == dataset) & (acc["protocol"] == protocol) & (acc["arm"] == arm)]
    return sel.set_index("model")["top1"].astype(float).dropna()


def plot(acc: pd.DataFrame, opts: dict | None, png, pdf) -> None:
    """Scatter of in-domain vs OOD top-1 accuracy, one panel per OOD data set.

    Options: ``x_protocol``/``x_arm`` (``"linear"``/``"bn"``) for the in-domain axis,
    ``y_protocol``/``y_arm`` (same defaults) for the OOD axis, ``col_wrap`` (4),
    ``label_points`` (auto: write model keys next to the points of a panel with at most
    LABEL_LIMIT models).  Colour = backbone,
    marker = paradigm; each panel title gives Kendall's tau (scipy) and n.
    """
    o = options(opts, "f3", x_arm="bn", y_arm="bn")
    id_ds, ood_sets, _ = identify_datasets(acc)
    x = _accuracy(acc, id_ds, o["x_protocol"], o["x_arm"])
    if x.empty:
        raise ValueError(f"no in-domain accuracy for ({o['x_protocol']}, {o['x_arm']}) on {id_ds}")
    meta = acc.drop_duplicates("model").set_index("model")
    panels = []
    for d in ood_sets:
        y = _accuracy(acc, d, o["y_protocol"], o["y_arm"])
        common = x.index.intersection(y.index)
        if len(common):
            panels.append((d, pd.DataFrame({"x": x[common], "y": y[common]})))
    if not panels:
        raise ValueError(f"no OOD accuracy for ({o['y_protocol']}, {o['y_arm']})")
    for _, frame in panels:
        for col in ("backbone", "paradigm"):
            values = meta[col] if col in meta else pd.Series(dtype=object)
            frame[col] = values.reindex(frame.index).fillna("n/a").astype(str).to_numpy()
    hue_order = sorted({v for _, f in panels for v in f["backbone"]})
    style_order = sorted({v for _, f in panels for v in f["paradigm"]})

    plt, sns = pyplot()
    with style(sns, o):
        ncol = max(1, min(int(o["col_wrap"]), len(panels)))
        nrow = math.ceil(len(panels) / ncol)
        fig, axes = plt.subplots(
            nrow,
            ncol,
            squeeze=False,
            sharex=True,
            layout="constrained",
            figsize=(3.3 * ncol + 1.8, 3.0 * nrow + 0.6),
        )
        palette = dict(zip(hue_order, sns.color_palette("colorblind", len(hue_order))))
        try:
            handles = labels = None
            for ax, (d, frame) in zip(axes.ravel(), panels):
                sns.scatterplot(
                    data=frame,
                    x="x",
                    y="y",
                    hue="backbone",
                    style="paradigm",
                    hue_order=hue_order,
                    style_order=style_order,
                    palette=palette,
                    s=45,
                    ax=ax,
                    legend=handles is None,
                )
                if handles is None:
                    handles, labels = ax.get_legend_handles_labels()
                    ax.get_legend().remove()
                tau, p = correlate(frame["x"], frame["y"])["kendall"]
                tau_text = "τ = n/a" if not np.isfinite(tau) else f"τ = {tau:.2f}{stars(p)}"
                ax.set_title(f"{d}\n{tau_text} (n = {len(frame)})", fontsize=10 * o["font_scale"])
                ax.set_xlabel("")
                ax.set_ylabel("")
                if label_points(o["label_points"], len(frame)):
                    for model, row in frame.iterrows():
                        ax.annotate(
                            str(model),
                            (row["x"], row["y"]),
                            xytext=(3, 2),
                            textcoords="offset points",
                            fontsize=6,
                            color="0.3",
                        )
                ax.grid(True, lw=0.4, color="0.9")
            for ax in axes.ravel()[len(panels) :]:
                ax.set_visible(False)
            for ax in axes.ravel()[len(panels) - ncol : len(panels)]:
                ax.tick_params(labelbottom=True)
            fig.supxlabel(
                f"{id_ds} top-1 (%), {protocol_arm_label(o['x_protocol'], o['x_arm'])}",
                fontsize=10 * o["font_scale"],
            )
            fig.supylabel(
                f"OOD top-1 (%), {protocol_arm_label(o['y_protocol'], o['y_arm'])}",
                fontsize=10 * o["font_scale"],
            )
            fig.legend(
                handles,
                labels,
                loc="outside right center",
                frameon=False,
                fontsize=9 * o["font_scale"],
            )
            fig.suptitle(
                o["title"] or "In-domain vs. out-of-domain accuracy", fontsize=11 * o["font_scale"]
            )
            save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)
