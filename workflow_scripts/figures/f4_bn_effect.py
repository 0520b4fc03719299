"""F4: the effect of BatchNorm on the features: top-1 change per model and protocol, and
the change of the in-domain vs mean-OOD correlation (rule f4_bn_effect)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow_scripts.correlations import MEAN_OOD, identify_datasets, order_protocol_arms
from workflow_scripts import registry
from workflow_scripts.figures.common import METHOD_LABELS, heatmap, options, pyplot, save, style


def _bn_delta(acc: pd.DataFrame, dataset_mask: pd.Series) -> pd.DataFrame:
    """bn - raw top-1 per (model, dataset, protocol) on the selected data sets."""
    sel = acc[dataset_mask & acc["arm"].isin(["raw", "bn"])]
    wide = sel.pivot_table(
        index=["model", "dataset", "protocol"], columns="arm", values="top1", aggfunc="first"
    )
    if not {"raw", "bn"} <= set(wide.columns):
        return pd.DataFrame(columns=["model", "dataset", "protocol", "delta"])
    delta = (wide["bn"] - wide["raw"]).dropna().rename("delta")
    return delta.reset_index()


def plot(acc: pd.DataFrame, corr: pd.DataFrame, opts: dict | None, png, pdf) -> None:
    """Effect of BatchNorm on the features.

    Left: heatmap of the top-1 change (BN - raw, percentage points) per model (rows) and
    protocol on the in-domain data set, plus (option ``include_ood_mean``, True) the mean change
    over the OOD data sets per protocol.  Right: per protocol, the change of the correlation of
    in-domain with mean OOD accuracy (same protocol and arm for x and y, ``y_dataset ==
    "mean_ood"``) from the raw to the BN arm.  Option ``subsets``: list of subsets shown as bar
    groups (default: [``subset``]).
    """
    o = options(opts, "f4")
    id_ds, ood_sets, _ = identify_datasets(acc)
    delta_id = _bn_delta(acc, acc["dataset"] == id_ds)
    if delta_id.empty:
        raise ValueError(f"no model has both a raw and a bn arm on {id_ds}")
    prot_order = [p for p, _ in order_protocol_arms((p, "raw") for p in delta_id["protocol"])]
    left = delta_id.pivot_table(index="model", columns="protocol", values="delta")
    left = left[prot_order]
    left.columns = [registry.protocol_label(p) for p in prot_order]
    n_id_cols = left.shape[1]
    if o["include_ood_mean"] and ood_sets:
        delta_ood = _bn_delta(acc, acc["dataset"].isin(ood_sets))
        if not delta_ood.empty:
            ood_mean = delta_ood.pivot_table(
                index="model", columns="protocol", values="delta", aggfunc="mean"
            )
            ood_order = [p for p, _ in order_protocol_arms((p, "raw") for p in ood_mean.columns)]
            ood_mean = ood_mean[ood_order]
            ood_mean.columns = [f"{registry.protocol_label(p)}\n(mean OOD)" for p in ood_order]
            left = left.join(ood_mean, how="outer")
    meta = acc.drop_duplicates("model").set_index("model")
    backbone = meta["backbone"] if "backbone" in meta else pd.Series("", index=meta.index)
    backbone = backbone.reindex(left.index).fillna("").astype(str)
    order = sorted(left.index, key=lambda m: (backbone[m], str(m)))
    left = left.loc[order]
    left.index = [f"{m}  [{backbone[m]}]" if backbone[m] else str(m) for m in order]
    breaks = [i for i in range(1, len(order)) if backbone[order[i]] != backbone[order[i - 1]]]

    sel = corr[
        (corr["method"] == o["method"])
        & (corr["y_dataset"] == MEAN_OOD)
        & (corr["x_protocol"] == corr["y_protocol"])
        & (corr["x_arm"] == corr["y_arm"])
    ]
    subsets = list(o["subsets"] or [o["subset"]])
    sel = sel[sel["subset"].isin(subsets)]
    bars = []
    for (subset, protocol), grp in sel.groupby(["subset", "x_protocol"], sort=False):
        by_arm = grp.set_index("x_arm")["value"]
        if {"raw", "bn"} <= set(by_arm.index):
            bars.append(
                {
                    "subset": subset,
                    "protocol": protocol,
                    "raw": by_arm["raw"],
                    "bn": by_arm["bn"],
                    "delta": by_arm["bn"] - by_arm["raw"],
                }
            )
    bars = pd.DataFrame(bars, columns=["subset", "protocol", "raw", "bn", "delta"])
    bar_protocols = [p for p, _ in order_protocol_arms((p, "raw") for p in bars["protocol"])]
    bars["label"] = [registry.protocol_label(p) for p in bars["protocol"]]

    plt, sns = pyplot()
    with style(sns, o):
        n_models, n_cols = left.shape
        height = max(4.0, 0.3 * n_models + 2.0)
        n_groups = max(1, bars["subset"].nunique())
        right_w = (0.9 + 0.35 * n_groups) * max(2, len(bar_protocols))
        fig, (ax_l, ax_r) = plt.subplots(
            1,
            2,
            layout="constrained",
            figsize=(0.95 * n_cols + 2.8 + right_w + 1.5, height),
            gridspec_kw={"width_ratios": [0.95 * n_cols + 2.0, right_w]},
        )
        try:
            lim = float(np.nanmax(np.abs(left.to_numpy(dtype=float)))) if left.size else 1.0
            lim = lim if np.isfinite(lim) and lim > 0 else 1.0
            mesh = heatmap(
                ax_l,
                sns,
                left,
                cmap=o["cmap"],
                vmin=-lim,
                vmax=lim,
                annot=bool(o["annotate"]),
                fmt=".1f",
                fontsize=7.5 * o["font_scale"],
            )
            fig.colorbar(
                mesh, ax=ax_l, shrink=0.6, label="Δ top-1 (pp), BN − raw"
            ).outline.set_linewidth(0)
            if n_cols > n_id_cols:
                ax_l.axvline(n_id_cols, color="black", lw=2.5)
            for b in breaks:
                ax_l.axhline(b, color="black", lw=1.2)
            ax_l.tick_params(axis="y", labelsize=8 * o["font_scale"])
            ax_l.set_ylabel("")
            ax_l.set_title(
                f"Top-1 change from BN (pp): {id_ds}"
                + (" | mean OOD" if n_cols > n_id_cols else ""),
                fontsize=10 * o["font_scale"],
            )

            if bars.empty:
                ax_r.text(
                    0.5,
                    0.5,
                    "no raw/BN pair with a\nmean-OOD correlation",
                    ha="center",
                    va="center",
                    transform=ax_r.transAxes,
                )
                ax_r.set_axis_off()
            else:
                multi = bars["subset"].nunique() > 1
                order_labels = [registry.protocol_label(p) for p in bar_protocols]
                sns.barplot(
                    data=bars,
                    x="label",
                    y="delta",
                    order=order_labels,
                    hue="subset" if multi else "label",
                    hue_order=subsets if multi else order_labels,
                    palette="colorblind" if multi else "muted",
                    legend=multi,
                    ax=ax_r,
                )
                ax_r.axhline(0, color="black", lw=0.8)
                lo = min(0.0, float(bars["delta"].min()))
                hi = max(0.0, float(bars["delta"].max()))
                pad = max(0.3 * (hi - lo), 0.02)
                ax_r.set_ylim(
                    lo - (pad if lo < 0 else 0.1 * pad), hi + (pad if hi > 0 else 0.1 * pad)
                )
                if not multi:
                    for i, row in bars.set_index("label").reindex(order_labels).iterrows():
                        pos = order_labels.index(i)
                        ax_r.annotate(
                            f"{row['raw']:.2f}→{row['bn']:.2f}",
                            (pos, row["delta"]),
                            xytext=(0, 4 if row["delta"] >= 0 else -4),
                            textcoords="offset points",
                            ha="center",
                            va="bottom" if row["delta"] >= 0 else "top",
                            fontsize=8 * o["font_scale"],
                        )

                if multi:
                    sns.move_legend(
                        ax_r,
                        "upper center",
                        bbox_to_anchor=(0.5, -0.08),
                        frameon=False,
                        title="subset",
                        fontsize=8 * o["font_scale"],
                        title_fontsize=9 * o["font_scale"],
                    )
                ax_r.set_xlabel("")
                ax_r.set_ylabel(f"Δ {METHOD_LABELS[o['method']]} (BN − raw)")
                ax_r.set_title(
                    f"{METHOD_LABELS[o['method']]} with mean OOD accuracy\n"
                    "(same protocol and arm): raw → BN",
                    fontsize=10 * o["font_scale"],
                )
                sns.despine(ax=ax_r)
            fig.suptitle(
                o["title"] or "Effect of BatchNorm on the features", fontsize=11 * o["font_scale"]
            )
            save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)
