"""Figures of the correlation study (seaborn/matplotlib, Agg backend).

Every ``plot_*`` function takes DataFrames (the tidy accuracy table and/or the table of
:func:`workflow_scripts.correlations.correlation_table`), a dict of options and two output paths
(PNG and PDF).  Both files are written atomically (:func:`workflow_scripts.io.atomic_path`) and
the figure is closed afterwards.

Options (all optional) and their defaults are those of config key ``figures.<figure>`` in
config/schemas/config.schema.yaml (common ones: ``method``, ``subset``, ``dpi``, ``cmap``,
``annotate``, ``font_scale``, ``title``); the registry (``registry.FIGURES``) says which plot
function draws which figure.

matplotlib and seaborn are imported lazily, and the Agg backend is selected inside the plotting
functions, never at import time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from workflow_scripts.correlations import (
    GROUP_PREFIX,
    MEAN_OOD,
    correlate,
    identify_datasets,
    order_protocol_arms,
)
from workflow_scripts import registry
from workflow_scripts.io import atomic_path
from workflow_scripts.schema import schema_defaults

METHOD_LABELS = {name: entry["label"] for name, entry in registry.CORRELATION_METHODS.items()}


def render(name: str, tables: dict[str, pd.DataFrame], opts: dict | None, png, pdf):
    """Draw the registered figure ``name`` (:data:`workflow_scripts.registry.FIGURES`) from the
    result tables it reads (``tables``: input name -> DataFrame) to ``png`` and ``pdf``."""
    if name not in registry.FIGURES:
        raise ValueError(f"unknown figure '{name}' (known: {', '.join(registry.FIGURES)})")
    entry = registry.FIGURES[name]
    plot = globals()[entry["plot"]]
    return plot(*(tables[table] for table in entry["inputs"]), opts, png, pdf)


# --------------------------------------------------------------------------------------------
# labels and helpers


def protocol_arm_label(protocol: str, arm: str) -> str:
    """Readable name of a (protocol, arm): ``"kNN"``, ``"linear (BN)"``, ``"few-shot 10%"``...

    ``fewshot<pct>`` is a pct% subset of the train split (not pct images per class)."""
    name = registry.protocol_label(protocol)
    suffix = registry.ARMS[arm]["label"] if arm in registry.ARMS else str(arm)
    return f"{name} ({suffix})" if suffix else name


def dataset_label(dataset: str) -> str:
    """Readable column name: data sets as they are, means as ``"mean OOD"``, ``"mean: ..."``."""
    if dataset == MEAN_OOD:
        return "mean OOD"
    if str(dataset).startswith(GROUP_PREFIX):
        return "mean: " + str(dataset)[len(GROUP_PREFIX) :].replace("_", " ")
    return str(dataset)


def stars(p: float) -> str:
    """Significance stars: * p < .05, ** p < .01, *** p < .001 (nothing for NaN)."""
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def _options(opts: dict | None, figure: str, **fallbacks) -> dict:
    """The options of figure ``figure`` (``"f3"``): ``opts`` over the schema's defaults of
    config key figures.<figure> (over ``fallbacks``: the arms the workflow sets from the
    configured arms); None values fall back."""
    out = {**fallbacks, **schema_defaults(f"figures.{figure}")}
    out.update({k: v for k, v in (opts or {}).items() if v is not None})
    if out["method"] not in METHOD_LABELS:
        raise ValueError(f"unknown method {out['method']!r}; expected one of {list(METHOD_LABELS)}")
    return out


def _pyplot():
    """Select the Agg backend and import pyplot and seaborn (lazily: nothing at import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def _style(sns, o: dict):
    """Context manager combining a clean style and the requested font scale."""
    import contextlib

    stack = contextlib.ExitStack()
    stack.enter_context(sns.axes_style("ticks"))
    stack.enter_context(sns.plotting_context("notebook", font_scale=float(o["font_scale"])))
    return stack


def _save(fig, png: str | os.PathLike, pdf: str | os.PathLike, dpi: int) -> None:
    """Write ``fig`` to both paths atomically (temporary file with the same suffix + rename)."""
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    with atomic_path(pdf) as tmp:
        fig.savefig(tmp, bbox_inches="tight", metadata={"CreationDate": None, "Creator": None})


def _select(corr: pd.DataFrame, o: dict, proxies: bool = False) -> pd.DataFrame:
    """Rows of the chosen method and subset; between accuracies only (F1-F5), or (``proxies``)
    those with a proxy as x and an accuracy as y (F7)."""
    sel = corr[(corr["method"] == o["method"]) & (corr["subset"] == o["subset"])]
    x_proxy = sel["x_protocol"].isin(list(registry.PROXIES))
    y_proxy = sel["y_protocol"].isin(list(registry.PROXIES))
    sel = sel[x_proxy & ~y_proxy] if proxies else sel[~x_proxy & ~y_proxy]
    if sel.empty:
        raise ValueError(
            f"no correlation rows for method={o['method']!r}, subset={o['subset']!r}; "
            f"methods: {sorted(corr['method'].unique())}, "
            f"subsets: {sorted(corr['subset'].unique())}"
        )
    return sel


def _n_text(ns: Iterable) -> str:
    ns = sorted({int(n) for n in ns})
    if not ns:
        return "n = ?"
    return f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]}"


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


def _heatmap(
    ax,
    sns,
    frame: pd.DataFrame,
    *,
    cmap,
    vmin: float,
    vmax: float,
    annot=None,
    fmt: str = ".2f",
    fontsize: float = 8.0,
    linewidth: float = 0.5,
    square=False,
):
    """A seaborn-style annotated heatmap on ``ax`` (NaN cells left blank); returns the mesh.

    Drawn with ``pcolormesh`` directly: ``sns.heatmap`` renders the whole figure once per call
    (to rotate overlapping tick labels), which makes multi-panel figures slow.  Text colour
    follows the cell's luminance as in seaborn.  ``annot``: None/False (no text), True (values
    formatted with ``fmt``) or an array of strings.
    """
    from seaborn.utils import relative_luminance

    values = frame.to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    cmap = sns.color_palette(cmap, as_cmap=True) if isinstance(cmap, str) else cmap
    mesh = ax.pcolormesh(
        np.ma.masked_invalid(values),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        edgecolors="white",
        linewidth=linewidth,
    )
    ax.set_xlim(0, n_cols)
    ax.set_ylim(n_rows, 0)
    ax.set_xticks(np.arange(n_cols) + 0.5, labels=[str(c) for c in frame.columns])
    ax.set_yticks(np.arange(n_rows) + 0.5, labels=[str(r) for r in frame.index])
    ax.tick_params(axis="y", rotation=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if square:
        ax.set_aspect("equal")
    if annot is not None and annot is not False:
        for i in range(n_rows):
            for j in range(n_cols):
                v = values[i, j]
                text = (format(v, fmt) if np.isfinite(v) else "") if annot is True else annot[i, j]
                if not text:
                    continue
                lum = relative_luminance(cmap(mesh.norm(v))) if np.isfinite(v) else 1.0
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    text,
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color=".15" if lum > 0.408 else "w",
                )
    return mesh


# --------------------------------------------------------------------------------------------
# F1: in-domain protocol x protocol


def plot_f1(corr: pd.DataFrame, opts: dict | None, png, pdf) -> None:
    """Symmetric heatmap of the in-domain correlations between (protocol, arm) pairs.

    Cells: coefficient and significance stars (* p < .05, ** p < .01, *** p < .001); diagonal 1.
    Options besides the common ones: ``vmin``/``vmax`` (-1, 1).
    """
    o = _options(opts, "f1")
    sel = _select(corr, o)
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
    for row in sel.itertuples(index=False):
        i, j = pos[(row.x_protocol, row.x_arm)], pos[(row.y_protocol, row.y_arm)]
        text = "–" if not np.isfinite(row.value) else f"{row.value:.2f}{stars(row.p_value)}"
        values[i, j] = values[j, i] = row.value
        annot[i, j] = annot[j, i] = text
    labels = [protocol_arm_label(*pa) for pa in pas]
    id_ds = sel["x_dataset"].iloc[0]

    plt, sns = _pyplot()
    with _style(sns, o):
        fig, ax = plt.subplots(figsize=(1.2 * k + 2.6, 1.0 * k + 1.6))
        try:
            mesh = _heatmap(
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
                f"{id_ds}, {o['subset']} models, {_n_text(sel['n'])}",
                fontsize=11 * o["font_scale"],
            )
            if o["annotate"] and np.isfinite(sel["p_value"].astype(float)).any():
                fig.text(
                    0.01,
                    0.0,
                    "* p < .05   ** p < .01   *** p < .001",
                    fontsize=8,
                    color="0.35",
                    ha="left",
                    va="top",
                )
            _save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)


# --------------------------------------------------------------------------------------------
# F2: in-domain protocol vs OOD accuracy


def plot_f2(corr: pd.DataFrame, opts: dict | None, png, pdf) -> None:
    """Heatmaps of in-domain (protocol, arm) (rows) vs OOD accuracy (columns).

    Columns: the OOD data sets (grouped by shift group), then the mean per shift group and the
    mean over all OOD data sets, after a separating line.  One panel per OOD (protocol, arm)
    (``y``); options ``y_protocols`` / ``y_arms`` restrict the panels.  Options ``vmin``/``vmax``
    (-1, 1).
    """
    o = _options(opts, "f2")
    sel = _select(corr, o)
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

    plt, sns = _pyplot()
    with _style(sns, o):
        panel_h = 0.42 * len(xs) + 0.75
        fig, axes = plt.subplots(
            len(ys),
            1,
            squeeze=False,
            sharex=True,
            layout="constrained",
            figsize=(0.72 * len(columns) + 3.6, panel_h * len(ys) + 1.4),
        )
        try:
            for ax, (yp, ya) in zip(axes[:, 0], ys):
                rows = sel[(sel["y_protocol"] == yp) & (sel["y_arm"] == ya)]
                mat = rows.pivot_table(
                    index=["x_protocol", "x_arm"],
                    columns="y_dataset",
                    values="value",
                    aggfunc="first",
                    dropna=False,
                ).reindex(index=pd.MultiIndex.from_tuples(xs), columns=columns)
                mat.index, mat.columns = xlabels, clabels
                _heatmap(
                    ax,
                    sns,
                    mat,
                    cmap=o["cmap"],
                    vmin=o["vmin"],
                    vmax=o["vmax"],
                    annot=bool(o["annotate"]),
                    fmt=".2f",
                    fontsize=8 * o["font_scale"],
                )
                for b in breaks:  # between shift groups
                    ax.axvline(b, color="0.35", lw=1.0)
                ax.axvline(len(datasets), color="black", lw=2.5)  # before the means
                ax.tick_params(axis="x", bottom=False, labelbottom=False)
                ax.set_title(
                    f"OOD accuracy under {protocol_arm_label(yp, ya)}  ({_n_text(rows['n'])})",
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
            _save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)


# --------------------------------------------------------------------------------------------
# F3: scatter in-domain vs OOD accuracy


def _accuracy(acc: pd.DataFrame, dataset, protocol, arm) -> pd.Series:
    sel = acc[(acc["dataset"] == dataset) & (acc["protocol"] == protocol) & (acc["arm"] == arm)]
    return sel.set_index("model")["top1"].astype(float).dropna()


def plot_f3(acc: pd.DataFrame, opts: dict | None, png, pdf) -> None:
    """Scatter of in-domain vs OOD top-1 accuracy, one panel per OOD data set.

    Options: ``x_protocol``/``x_arm`` (``"linear"``/``"bn"``) for the in-domain axis,
    ``y_protocol``/``y_arm`` (same defaults) for the OOD axis, ``col_wrap`` (4),
    ``label_points`` (False: write model keys next to the points).  Colour = backbone,
    marker = paradigm; each panel title gives Kendall's tau (scipy) and n.
    """
    o = _options(opts, "f3", x_arm="bn", y_arm="bn")
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

    plt, sns = _pyplot()
    with _style(sns, o):
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
                if o["label_points"]:
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
            _save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)


# --------------------------------------------------------------------------------------------
# F4: effect of BatchNorm


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


def plot_f4(acc: pd.DataFrame, corr: pd.DataFrame, opts: dict | None, png, pdf) -> None:
    """Effect of BatchNorm on the features.

    Left: heatmap of the top-1 change (BN - raw, percentage points) per model (rows) and
    protocol on the in-domain data set, plus (option ``include_ood_mean``, True) the mean change
    over the OOD data sets per protocol.  Right: per protocol, the change of the correlation of
    in-domain with mean OOD accuracy (same protocol and arm for x and y, ``y_dataset ==
    "mean_ood"``) from the raw to the BN arm.  Option ``subsets``: list of subsets shown as bar
    groups (default: [``subset``]).
    """
    o = _options(opts, "f4")
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

    plt, sns = _pyplot()
    with _style(sns, o):
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
            mesh = _heatmap(
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
            _save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)


# --------------------------------------------------------------------------------------------
# F5: correlations per domain-shift group


def f5_cells(corr: pd.DataFrame, opts: dict | None = None) -> pd.DataFrame:
    """The cells of F5: one row per (OOD panel y, in-domain row x, shift-group column).

    Rows of ``corr`` with the chosen ``method`` and ``subset`` whose ``y_dataset`` is a shift
    group mean (``group:<name>``) and, with option ``include_mean`` (True), the mean over all OOD
    data sets.  Columns: ``y_protocol``, ``y_arm``, ``x_protocol``, ``x_arm``, ``y_dataset``,
    ``value``, ``ci_low``, ``ci_high``, ``n``, ``n_datasets``, ``text`` (the annotation), and
    ``row``/``col``/``panel`` (positions in the figure).  Options ``y_protocols`` / ``y_arms``
    restrict the panels.
    """
    o = _options(opts, "f5")
    sel = _select(corr, o)
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
                    "text": f"{value:.2f}" if np.isfinite(value) else "",
                    "panel": panel,
                    "row": xs.index((row.x_protocol, row.x_arm)),
                    "col": columns.index(row.y_dataset),
                }
            )
    return pd.DataFrame(cells).sort_values(["panel", "row", "col"], ignore_index=True)


def plot_f5(corr: pd.DataFrame, opts: dict | None, png, pdf) -> pd.DataFrame:
    """Heatmaps of in-domain (protocol, arm) (rows) vs domain-shift groups (columns).

    Each cell is the mean, over the OOD data sets of one shift group, of the correlation between
    the row's in-domain accuracy and the data set's accuracy under the panel's OOD (protocol,
    arm); the last column (after a thick line) is the mean over all OOD data sets.  One panel
    per OOD (protocol, arm) (options ``y_protocols`` / ``y_arms``), ``col_wrap`` (3) panels per
    row.  The best in-domain predictor of each column is framed.  Returns the drawn cells
    (:func:`f5_cells`).  Options ``vmin``/``vmax`` (-1, 1), ``include_mean`` (True).
    """
    o = _options(opts, "f5")
    cells = f5_cells(corr, o)
    sel = _select(corr, o)
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

    plt, sns = _pyplot()
    with _style(sns, o):
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
                _heatmap(
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
                for j in range(len(columns)):  # frame the best predictor of each column
                    col = values[:, j]
                    if np.isfinite(col).any():
                        i = int(np.nanargmax(col))
                        ax.add_patch(
                            plt.Rectangle(
                                (j + 0.04, i + 0.04),
                                0.92,
                                0.92,
                                fill=False,
                                lw=1.6,
                                edgecolor="black",
                            )
                        )
                plt.setp(ax.get_xticklabels(), rotation=0, fontsize=8 * o["font_scale"])
                ax.tick_params(axis="x", labeltop=False)
                ax.set_title(
                    f"OOD accuracy under {protocol_arm_label(yp, ya)}\n({_n_text(part['n'])})",
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
                "frame = best predictor)",
                fontsize=11 * o["font_scale"],
            )
            _save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)
    return cells


# --------------------------------------------------------------------------------------------
# F6: paradigm within ViT, and the same method across backbones

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
    o = _options(opts, "f6", arm=None)
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


def plot_f6(acc: pd.DataFrame, opts: dict | None, png, pdf) -> dict:
    """(a) discriminative vs generative (vs baseline) within the ViT backbone; (b) the same
    pre-training method on different backbones.  Left column: in-domain top-1 per protocol;
    right column: mean OOD top-1 per frozen protocol; one arm (option ``arm``).

    (a) one point per ViT model, colour = paradigm, bar = paradigm mean.  (b) one dumbbell per
    method shared by the backbones (marker = backbone, colour = method).  An empty part gets a
    note instead of a plot.  Returns :func:`f6_data`.
    """
    o = _options(opts, "f6", arm=None)
    data = f6_data(acc, o)
    vit, pairs, arm = data["vit"], data["pairs"], data["arm"]
    both = pd.concat([vit, pairs], ignore_index=True)
    measures = [ms for ms in (ID_MEASURE, OOD_MEASURE) if (both["measure"] == ms).any()] or [
        ID_MEASURE
    ]
    id_ds, _, _ = identify_datasets(acc)
    axes_protocols = {ms: _protocol_axis(both, ms) for ms in measures}

    plt, sns = _pyplot()
    with _style(sns, o):
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
            _save(fig, png, pdf, o["dpi"])
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


# --------------------------------------------------------------------------------------------
# F7: label-free and transferability proxies vs accuracy


def proxy_label(proxy: str, arm: str) -> str:
    """``"NC1 ↓ (BN)"``: the proxy, its direction (↑ higher predicts better), the arm."""
    entry = registry.PROXIES.get(proxy, {"label": str(proxy), "direction": 1})
    arrow = "↑" if entry["direction"] > 0 else "↓"
    suffix = registry.ARMS[arm]["label"] if arm in registry.ARMS else str(arm)
    return f"{entry['label']} {arrow}" + (f" ({suffix})" if suffix else "")


def f7_cells(corr: pd.DataFrame, opts: dict | None = None) -> pd.DataFrame:
    """The cells of F7: one row per (panel = model subset, proxy row, accuracy column).

    Rows of ``corr`` with a proxy as x and an accuracy as y (method ``method``): ``pair`` rows
    (columns: the in-domain (protocol, arm)) and, with option ``include_ood_mean``, ``mean``
    rows (columns ``"<protocol (arm)>, mean OOD"``: the in-domain proxy vs the mean over the
    OOD data sets). Panels: option ``subsets`` (default: ``all`` and every ``backbone=...``
    subset in the table). Columns ``subset``, ``x_protocol``, ``x_arm``, ``column``, ``value``,
    ``n``, ``row``, ``col``, ``panel``.
    """
    o = _options(opts, "f7")
    subsets = o["subsets"] or [
        "all",
        *sorted(s for s in corr["subset"].unique() if str(s).startswith("backbone=")),
    ]
    cells = []
    for panel, subset in enumerate(subsets):
        sel = _select(corr, {**o, "subset": subset}, proxies=True)
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
                    "n": r.n,
                    "panel": panel,
                    "row": rows.index((r.x_protocol, r.x_arm)),
                    "col": columns.index(col),
                }
            )
    return pd.DataFrame(cells).sort_values(["panel", "row", "col"], ignore_index=True)


def plot_f7(corr: pd.DataFrame, opts: dict | None, png, pdf) -> pd.DataFrame:
    """Heatmaps of the correlation between each proxy (rows, with its direction) on the
    in-domain set and each accuracy (columns: in-domain protocols, then their mean OOD), one
    panel per model subset (all models, then per backbone). A proxy ranks the models as its
    direction says when the value is positive (↑) or negative (↓). Returns :func:`f7_cells`."""
    o = _options(opts, "f7")
    cells = f7_cells(corr, o)
    panels = list(dict.fromkeys(cells["subset"]))
    plt, sns = _pyplot()
    with _style(sns, o):
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
                row_names = part.drop_duplicates("row").sort_values("row")
                frame.index = [
                    proxy_label(p, a) for p, a in zip(row_names["x_protocol"], row_names["x_arm"])
                ]
                frame.columns = list(part.drop_duplicates("col").sort_values("col")["column"])
                mesh = _heatmap(
                    ax,
                    sns,
                    frame,
                    cmap=o["cmap"],
                    vmin=o["vmin"],
                    vmax=o["vmax"],
                    annot=bool(o["annotate"]),
                    fontsize=8 * o["font_scale"],
                )
                plt.setp(ax.get_xticklabels(), rotation=40, ha="right")
                if ax is not axes[0][0]:  # the rows are the same in every panel
                    ax.set_yticklabels([])
                ax.set_title(
                    f"{subset} models, {_n_text(part['n'])}", fontsize=10 * o["font_scale"]
                )
            fig.colorbar(
                mesh, ax=list(axes[0]), shrink=0.8, label=METHOD_LABELS[o["method"]]
            ).outline.set_linewidth(0)
            fig.suptitle(
                o["title"]
                or f"{METHOD_LABELS[o['method']]} of each proxy with accuracy across models",
                fontsize=11 * o["font_scale"],
            )
            _save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)
    return cells


# --------------------------------------------------------------------------------------------
# F8: this run against the published numbers


def f8_data(models: pd.DataFrame) -> dict:
    """The points of F8 from T1 (``published_linear``, ``measured_linear``): the models with
    both, and Kendall's tau and Spearman's rho over them (:func:`correlate`, scipy)."""
    missing = [c for c in ("key", "published_linear", "measured_linear") if c not in models]
    if missing:
        raise ValueError(
            f"the models table lacks column(s) {missing} (T1 with published "
            "numbers and an accuracy table)"
        )
    points = models[["key", "backbone", "published_linear", "measured_linear"]].copy()
    for column in ("published_linear", "measured_linear"):
        points[column] = pd.to_numeric(points[column], errors="coerce")
    points = points.dropna(subset=["published_linear", "measured_linear"]).reset_index(drop=True)
    stats = correlate(points["published_linear"], points["measured_linear"])
    return {"points": points, "n": len(points), **stats}


def plot_f8(models: pd.DataFrame, opts: dict | None, png, pdf) -> dict:
    """Scatter of this run's in-domain linear (BN) top-1 (y) against the published ImageNet
    linear top-1 (x) per model, colour = backbone, y = x dashed; Kendall's tau and Spearman's
    rho with p in the title. Option ``label_points`` (True). Returns :func:`f8_data`."""
    o = _options(opts, "f8")
    data = f8_data(models)
    if data["n"] == 0:
        raise ValueError("no model has both a published and a measured linear accuracy")
    points = data["points"]
    plt, sns = _pyplot()
    with _style(sns, o):
        fig, ax = plt.subplots(figsize=(5.6, 5.0))
        try:
            sns.scatterplot(
                data=points, x="published_linear", y="measured_linear", hue="backbone", ax=ax, s=45
            )
            low = float(min(points["published_linear"].min(), points["measured_linear"].min()))
            high = float(max(points["published_linear"].max(), points["measured_linear"].max()))
            ax.plot([low, high], [low, high], ls="--", color="0.5", lw=1)
            if o["label_points"]:
                for row in points.itertuples(index=False):
                    ax.annotate(
                        row.key,
                        (row.published_linear, row.measured_linear),
                        fontsize=7 * o["font_scale"],
                        xytext=(3, 2),
                        textcoords="offset points",
                    )
            ax.set_xlabel("published ImageNet linear top-1 (%)")
            ax.set_ylabel("this run: in-domain linear (BN) top-1 (%)")
            tau, p_tau = data["kendall"]
            rho, p_rho = data["spearman"]
            ax.set_title(
                o["title"]
                or f"this run vs published, n = {data['n']}\n"
                f"Kendall τ = {tau:.2f}{stars(p_tau)}, Spearman ρ = {rho:.2f}"
                f"{stars(p_rho)}",
                fontsize=10 * o["font_scale"],
            )
            _save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)
    return data
