"""F6: paradigm within the ViT backbone, and the same pre-training method across backbones
(rule f6_paradigm_backbone)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow_scripts.correlations import identify_datasets, order_protocol_arms
from workflow_scripts.figures.common import (
    label_points,
    options,
    protocol_arm_label,
    pyplot,
    save,
    style,
)


PARADIGM_ORDER = ("discriminative", "generative", "baseline")
ID_MEASURE, OOD_MEASURE = "in-domain", "mean OOD"


def _meta(acc: pd.DataFrame) -> pd.DataFrame:
    """One row per model: method, backbone, paradigm (clash -> ValueError naming the model)."""
    cols = [c for c in ("method", "backbone", "paradigm") if c in acc]
    missing = sorted({"method", "backbone", "paradigm"} - set(cols))
    if missing:
        raise ValueError(f"accuracy table lacks columns {missing}")
    meta = acc[["model", *cols]].drop_duplicates()
    clash = meta["model"][meta["model"].duplicated()].unique().tolist()
    if clash:
        raise ValueError(f"models with more than one method/backbone/paradigm: {clash}")
    return meta.set_index("model")


def f6_measures(acc: pd.DataFrame, arm: str) -> pd.DataFrame:
    """Per (model, measure, protocol) top-1 of one arm: ``in-domain`` = the in-domain data
    set's accuracy; ``mean OOD`` = the mean over all OOD data sets (only models measured on
    every OOD set with that protocol).  Columns: model, method, backbone, paradigm, measure,
    protocol, top1."""
    id_ds, ood_sets, _ = identify_datasets(acc)
    sel = acc[(acc["arm"] == arm) & acc["top1"].notna()]
    parts = []
    ind = sel[sel["dataset"] == id_ds].groupby(["model", "protocol"], as_index=False)["top1"]
    parts.append(ind.first().assign(measure=ID_MEASURE))
    if ood_sets:
        ood = sel[sel["dataset"].isin(ood_sets)].groupby(["model", "protocol"])["top1"]
        ood = ood.agg(["mean", "count"]).reset_index()
        ood = ood[ood["count"] == len(ood_sets)].rename(columns={"mean": "top1"})
        parts.append(ood[["model", "protocol", "top1"]].assign(measure=OOD_MEASURE))
    out = pd.concat(parts, ignore_index=True).join(_meta(acc), on="model")
    out["top1"] = out["top1"].astype(float)
    return out[["model", "method", "backbone", "paradigm", "measure", "protocol", "top1"]]


def f6_data(acc: pd.DataFrame, opts: dict | None = None) -> dict:
    """Data of F6 for one arm (option ``arm``: ``"bn"`` when measured, else the first arm).

    ``vit``: the :func:`f6_measures` rows of the models with backbone ``vit_backbone``
    (``"vit"``), each with its paradigm.  ``pairs``: for every method with models on at least
    two backbones, one row per (method, backbone, measure, protocol) with the mean top-1 over
    that method's models on that backbone (``n_models``, ``models``), only where the method is
    measured on at least two backbones.  ``notes``: why a part is empty.
    """
    o = options(opts, "f6", arm=None)
    arm = o["arm"] or ("bn" if (acc["arm"] == "bn").any() else sorted(acc["arm"].unique())[0])
    if not (acc["arm"] == arm).any():
        raise ValueError(f"no accuracy rows for arm {arm!r}; arms: {sorted(acc['arm'].unique())}")
    m = f6_measures(acc, arm)
    notes = {}
    vit = m[m["backbone"] == o["vit_backbone"]].reset_index(drop=True)
    if vit.empty:
        notes["vit"] = f"no models with backbone '{o['vit_backbone']}'"
    elif vit["paradigm"].nunique() < 2:
        notes["vit"] = (
            f"all {o['vit_backbone']} models have paradigm "
            f"'{vit['paradigm'].iloc[0]}': nothing to compare"
        )
        vit = vit.iloc[0:0]
    per_method = m.groupby("method")["backbone"].nunique()
    shared = sorted(per_method.index[per_method >= 2])
    pairs = (
        m[m["method"].isin(shared)]
        .groupby(["method", "backbone", "measure", "protocol"], as_index=False)
        .agg(
            top1=("top1", "mean"),
            n_models=("model", "size"),
            models=("model", lambda s: ",".join(sorted(s))),
        )
    )
    nb = pairs.groupby(["method", "measure", "protocol"])["backbone"].transform("nunique")
    pairs = pairs[nb >= 2].reset_index(drop=True)
    if pairs.empty:
        notes["pairs"] = "no pre-training method has models on two backbones"
    return {"arm": arm, "vit": vit, "pairs": pairs, "notes": notes}


def _protocol_axis(measures: pd.DataFrame, measure: str) -> list[str]:
    protocols = measures.loc[measures["measure"] == measure, "protocol"]
    return [p for p, _ in order_protocol_arms((p, "") for p in protocols)]


def plot(acc: pd.DataFrame, opts: dict | None, png, pdf) -> dict:
    """(a) discriminative vs generative (vs baseline) within the ViT backbone; (b) the same
    pre-training method on different backbones.  Left column: in-domain top-1 per protocol;
    right column: mean OOD top-1 per frozen protocol; one arm (option ``arm``).

    (a) one point per ViT model, colour = paradigm, bar = paradigm mean, the model keys beside
    the points (option ``label_points``, auto: with at most LABEL_LIMIT ViT models).  (b) one dumbbell per
    method shared by the backbones (marker = backbone, colour = method).  An empty part gets a
    note instead of a plot.  Returns :func:`f6_data`.
    """
    o = options(opts, "f6", arm=None)
    data = f6_data(acc, o)
    vit, pairs, arm = data["vit"], data["pairs"], data["arm"]
    both = pd.concat([vit, pairs], ignore_index=True)
    measures = [ms for ms in (ID_MEASURE, OOD_MEASURE) if (both["measure"] == ms).any()] or [
        ID_MEASURE
    ]
    id_ds, _, _ = identify_datasets(acc)
    axes_protocols = {ms: _protocol_axis(both, ms) for ms in measures}

    plt, sns = pyplot()
    with style(sns, o):
        widths = [max(2, len(axes_protocols[ms])) for ms in measures]
        fig, axes = plt.subplots(
            2,
            len(measures),
            squeeze=False,
            layout="constrained",
            figsize=(1.25 * sum(widths) + 3.8, 8.0),
            gridspec_kw={"width_ratios": widths},
        )
        fs = o["font_scale"]
        try:
            # (a) paradigms within ViT
            paradigms = [p for p in PARADIGM_ORDER if (vit["paradigm"] == p).any()]
            paradigms += sorted(set(vit["paradigm"]) - set(paradigms))
            pal = dict(zip(paradigms, sns.color_palette("colorblind", len(paradigms))))
            for ax, ms in zip(axes[0], measures):
                protocols = axes_protocols[ms]
                part = vit[vit["measure"] == ms]
                if "vit" in data["notes"] or part.empty:
                    _note(
                        ax,
                        "(a) " + data["notes"].get("vit", f"no {ms} accuracy for ViT models"),
                        fs,
                    )
                    continue
                width = 0.8 / max(1, len(paradigms))
                for j, par in enumerate(paradigms):
                    for i, protocol in enumerate(protocols):
                        pts = part[(part["paradigm"] == par) & (part["protocol"] == protocol)]
                        if pts.empty:
                            continue
                        xc = i + (j - (len(paradigms) - 1) / 2) * width
                        spread = (
                            np.linspace(-0.25, 0.25, len(pts)) * width
                            if len(pts) > 1
                            else np.zeros(1)
                        )
                        pts = pts.sort_values("top1")
                        ax.scatter(
                            xc + spread,
                            pts["top1"],
                            s=28,
                            color=pal[par],
                            edgecolor="white",
                            lw=0.5,
                            zorder=3,
                            label=par if i == 0 else None,
                        )
                        if label_points(o["label_points"], vit["model"].nunique()):
                            for x, row in zip(xc + spread, pts.itertuples(index=False)):
                                ax.annotate(
                                    str(row.model),
                                    (x, row.top1),
                                    xytext=(3, 0),
                                    textcoords="offset points",
                                    fontsize=5.5 * fs,
                                    color="0.3",
                                    va="center",
                                )
                        ax.hlines(
                            pts["top1"].mean(),
                            xc - 0.45 * width,
                            xc + 0.45 * width,
                            color=pal[par],
                            lw=2.2,
                            zorder=2,
                        )
                _protocol_ticks(ax, protocols, fs)
                ax.set_title(
                    f"(a) ViT models by paradigm: {ms}"
                    + (f" ({id_ds})" if ms == ID_MEASURE else ""),
                    fontsize=10 * fs,
                    loc="left",
                )
                ax.set_ylabel(f"top-1 (%), arm {arm}")
            if not vit.empty:
                counts = vit.drop_duplicates("model")["paradigm"].value_counts()
                handles = [
                    plt.Line2D(
                        [], [], marker="o", ls="", color=pal[p], label=f"{p} ({counts.get(p, 0)})"
                    )
                    for p in paradigms
                ]
                handles.append(plt.Line2D([], [], color="0.3", lw=2.2, label="paradigm mean"))
                axes[0, -1].legend(
                    handles=handles,
                    loc="upper left",
                    bbox_to_anchor=(1.02, 1),
                    frameon=False,
                    fontsize=8 * fs,
                    title="paradigm (n)",
                    title_fontsize=8.5 * fs,
                )

            # (b) same method, different backbones
            methods = sorted(pairs["method"].unique())
            backbones = sorted(pairs["backbone"].unique())
            mpal = dict(zip(methods, sns.color_palette("tab10", len(methods))))
            markers = dict(zip(backbones, "o^sDvP*"))
            for ax, ms in zip(axes[1], measures):
                protocols = axes_protocols[ms]
                part = pairs[pairs["measure"] == ms]
                if part.empty:
                    _note(
                        ax,
                        "(b) " + data["notes"].get("pairs", f"no {ms} accuracy for shared methods"),
                        fs,
                    )
                    continue
                width = 0.8 / max(1, len(methods))
                for j, method in enumerate(methods):
                    for i, protocol in enumerate(protocols):
                        pts = part[(part["method"] == method) & (part["protocol"] == protocol)]
                        if pts.empty:
                            continue
                        xc = i + (j - (len(methods) - 1) / 2) * width
                        ax.vlines(
                            xc,
                            pts["top1"].min(),
                            pts["top1"].max(),
                            color=mpal[method],
                            lw=1.6,
                            zorder=2,
                        )
                        for row in pts.itertuples(index=False):
                            ax.scatter(
                                xc,
                                row.top1,
                                marker=markers[row.backbone],
                                s=34,
                                color=mpal[method],
                                edgecolor="white",
                                lw=0.5,
                                zorder=3,
                            )
                _protocol_ticks(ax, protocols, fs)
                ax.set_title(
                    f"(b) same method on {' vs '.join(backbones)}: {ms}",
                    fontsize=10 * fs,
                    loc="left",
                )
                ax.set_ylabel(f"top-1 (%), arm {arm}")
            if not pairs.empty:
                handles = [
                    plt.Line2D([], [], marker="s", ls="", color=mpal[mt], label=mt)
                    for mt in methods
                ]
                handles += [
                    plt.Line2D([], [], marker=markers[b], ls="", color="0.3", label=b)
                    for b in backbones
                ]
                axes[1, -1].legend(
                    handles=handles,
                    loc="upper left",
                    bbox_to_anchor=(1.02, 1),
                    frameon=False,
                    fontsize=8 * fs,
                    title="method / backbone",
                    title_fontsize=8.5 * fs,
                )
            fig.suptitle(
                o["title"]
                or "Paradigm or backbone? Accuracy of ViT models by paradigm "
                "(a) and of the same method on both backbones (b)",
                fontsize=11 * fs,
            )
            save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)
    return data


def _note(ax, text: str, fs: float) -> None:
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=9 * fs,
        color="0.3",
        wrap=True,
    )
    ax.set_axis_off()


def _protocol_ticks(ax, protocols: list[str], fs: float) -> None:
    ax.set_xticks(range(len(protocols)), labels=[protocol_arm_label(p, "raw") for p in protocols])
    ax.set_xlim(-0.6, len(protocols) - 0.4)
    for i in range(1, len(protocols)):
        ax.axvline(i - 0.5, color="0.9", lw=0.8, zorder=0)
    plt_labels = ax.get_xticklabels()
    for lab in plt_labels:
        lab.set_rotation(25)
        lab.set_ha("right")
        lab.set_fontsize(8.5 * fs)
    ax.grid(True, axis="y", lw=0.4, color="0.9")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
