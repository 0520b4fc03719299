"""What more than one figure uses: readable labels (:func:`protocol_arm_label`,
:func:`dataset_label`, :func:`stars`, :data:`METHOD_LABELS`), the figure's options
(:func:`options`: config over the schema's defaults), the lazy pyplot/seaborn import and style
(:func:`pyplot`, :func:`style`), the row selection of the correlation table (:func:`select`),
the annotated heatmap (:func:`heatmap`) and the atomic PNG/PDF writer (:func:`save`).

A helper that one figure alone uses lives in that figure's module: a change here reruns every
figure that imports it, a change there that figure alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from workflow_scripts.correlations import GROUP_PREFIX, MEAN_OOD
from workflow_scripts import registry
from workflow_scripts.io import atomic_path
from workflow_scripts.schema import schema_defaults

METHOD_LABELS = {name: entry["label"] for name, entry in registry.CORRELATION_METHODS.items()}


def protocol_arm_label(protocol: str, arm: str) -> str:
    """Readable name of a (protocol, arm): ``"kNN"``, ``"linear (BN)"``, ``"few-shot 10%"``...

    ``fewshot<pct>`` is a pct% subset of the train split (not pct images per class)."""
    name = registry.protocol_label(protocol)
    suffix = registry.ARMS[arm]["label"] if arm in registry.ARMS else str(arm)
    return f"{name} ({suffix})" if suffix else name


def proxy_label(proxy: str, arm: str) -> str:
    """``"NC1 ↓ (BN)"``: the proxy, its direction (↑ higher predicts better), the arm."""
    entry = registry.PROXIES.get(proxy, {"label": str(proxy), "direction": 1})
    arrow = "↑" if entry["direction"] > 0 else "↓"
    suffix = registry.ARMS[arm]["label"] if arm in registry.ARMS else str(arm)
    return f"{entry['label']} {arrow}" + (f" ({suffix})" if suffix else "")


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


def options(opts: dict | None, figure: str, **fallbacks) -> dict:
    """The options of figure ``figure`` (``"f3"``): ``opts`` over the schema's defaults of
    config key figures.<figure> (over ``fallbacks``: the arms the workflow sets from the
    configured arms); None values fall back."""
    out = {**fallbacks, **schema_defaults(f"figures.{figure}")}
    out.update({k: v for k, v in (opts or {}).items() if v is not None})
    if out["method"] not in METHOD_LABELS:
        raise ValueError(f"unknown method {out['method']!r}; expected one of {list(METHOD_LABELS)}")
    return out


def pyplot():
    """Select the Agg backend and import pyplot and seaborn (lazily: nothing at import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def style(sns, o: dict):
    """Context manager combining a clean style and the requested font scale; text is drawn
    as written (no mathtext: a '$' in a name is a dollar sign, never an error)."""
    import contextlib

    import matplotlib

    stack = contextlib.ExitStack()
    stack.enter_context(matplotlib.rc_context({"text.parse_math": False}))
    stack.enter_context(sns.axes_style("ticks"))
    stack.enter_context(sns.plotting_context("notebook", font_scale=float(o["font_scale"])))
    return stack


def save(fig, png: str | os.PathLike, pdf: str | os.PathLike, dpi: int) -> None:
    """Write ``fig`` to both paths atomically (temporary file with the same suffix + rename)."""
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    with atomic_path(pdf) as tmp:
        fig.savefig(tmp, bbox_inches="tight", metadata={"CreationDate": None, "Creator": None})


def select(corr: pd.DataFrame, o: dict, proxies: bool = False) -> pd.DataFrame:
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


#: The legend of :func:`cell_text`'s marks, for a figure's foot.
INTERVAL_LEGEND = "(value): its 95% bootstrap interval includes 0"
N_LEGEND = "n: models behind a cell, shown where it varies"


def excludes_zero(low: float, high: float) -> bool:
    """Whether the interval [low, high] lies on one side of 0 (False when either is NaN)."""
    return bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))


def cell_text(
    value: float, low: float, high: float, n=None, *, fmt: str = ".2f", suffix: str = ""
) -> str:
    """A cell's annotation: the value (and ``suffix``, e.g. stars), in parentheses when its
    interval [low, high] includes 0 (or is unknown), and a second line ``n=<n>`` when ``n`` is
    given (pass it only where n varies between a panel's cells); "" for a NaN value."""
    if value is None or not np.isfinite(value):
        return ""
    text = format(value, fmt) + suffix
    if not excludes_zero(low, high):
        text = f"({text})"
    return text if n is None else f"{text}\nn={int(n)}"


def cell_texts(rows: pd.DataFrame, value: str = "value", **kwargs) -> list[str]:
    """:func:`cell_text` of each row of ``rows`` (columns ``value``, ``ci_low``, ``ci_high``,
    ``n``), with ``n`` shown only when it varies between the rows."""
    show_n = rows["n"].nunique() > 1
    return [
        cell_text(r[value], r["ci_low"], r["ci_high"], r["n"] if show_n else None, **kwargs)
        for _, r in rows.iterrows()
    ]


#: Option ``label_points: auto``: write model keys next to the points of a panel holding at
#: most this many models (beyond it the keys overlap).
LABEL_LIMIT = 12


def label_points(option, n_models: int) -> bool:
    """Whether to write the model keys: option true/false, or ``auto`` (at most LABEL_LIMIT)."""
    if option == "auto":
        return n_models <= LABEL_LIMIT
    return bool(option)


def foot(fig, lines: Iterable[str], fontsize: float = 8.0) -> None:
    """Grey legend lines under the figure."""
    text = "   ".join(line for line in lines if line)
    if text:
        fig.text(0.01, 0.0, text, fontsize=fontsize, color="0.35", ha="left", va="top")


def n_text(ns: Iterable) -> str:
    """``"n = 12"`` (or ``"n = 9–12"``): the number(s) of models behind the shown values."""
    ns = sorted({int(n) for n in ns})
    if not ns:
        return "n = ?"
    return f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]}"


def heatmap(
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
