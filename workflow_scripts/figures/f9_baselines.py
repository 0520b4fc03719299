"""F9: each protocol and proxy against the best static ranker (rule f9_baselines)."""

from __future__ import annotations

import string

import pandas as pd

from workflow_scripts import registry
from workflow_scripts.correlations import order_protocol_arms
from workflow_scripts.figures.common import (
    METHOD_LABELS,
    cell_text,
    foot,
    heatmap,
    n_text,
    options,
    protocol_arm_label,
    proxy_label,
    pyplot,
    save,
    style,
)


def row_label(protocol: str, arm: str) -> str:
    """A protocol's label, or a proxy's with its direction (↑ higher predicts better, ↓)."""
    if protocol in registry.PROXIES:
        return proxy_label(protocol, arm)
    return protocol_arm_label(protocol, arm)


def f9_cells(corr: pd.DataFrame, opts: dict | None = None) -> pd.DataFrame:
    """The cells of F9: one row per (x = an in-domain protocol or proxy, column = a target).

    Rows of ``corr`` with the option ``method`` and ``subset`` and a ``baseline``: ``pair`` rows
    (columns: each in-domain (protocol, arm) as y) and, with option ``include_ood_mean``,
    ``mean`` rows (columns ``"<protocol (arm)>, mean OOD"``). Columns ``x_protocol``, ``x_arm``,
    ``column``, ``value``, ``baseline``, ``baseline_value``, ``baseline_diff``,
    ``baseline_ci_low``, ``baseline_ci_high``, ``beats_baseline``, ``n``, ``code`` (the
    baseline's letter; "" when one ranker is the baseline of every cell), ``text`` (the
    annotation), ``row``, ``col``.
    """
    o = options(opts, "f9")
    sel = corr[(corr["method"] == o["method"]) & (corr["subset"] == o["subset"])]
    kinds = ["pair", "mean"] if o["include_ood_mean"] else ["pair"]
    has = sel["baseline"].fillna("").astype(str).ne("") if "baseline" in sel else False
    sel = sel[has & sel["y_kind"].isin(kinds)]
    if sel.empty:
        raise ValueError(
            f"no correlation rows with a static-ranker baseline for method={o['method']!r}, "
            f"subset={o['subset']!r} (config analysis.static_rankers)"
        )
    rows = order_protocol_arms(zip(sel["x_protocol"], sel["x_arm"]))
    ys = order_protocol_arms(zip(sel["y_protocol"], sel["y_arm"]))
    columns = [
        (kind, pa)
        for kind in kinds
        for pa in ys
        if ((sel["y_kind"] == kind) & (sel["y_protocol"] == pa[0]) & (sel["y_arm"] == pa[1])).any()
    ]
    codes = ranker_codes(sel["baseline"])
    if len(codes) == 1:  # one baseline throughout: the legend names it, no letters
        codes = {name: "" for name in codes}
    show_n = sel["n"].nunique() > 1
    cells = []
    for r in sel.itertuples(index=False):
        name = protocol_arm_label(r.y_protocol, r.y_arm)
        diff = float(r.baseline_diff)
        cells.append(
            {
                "x_protocol": r.x_protocol,
                "x_arm": r.x_arm,
                "column": name if r.y_kind == "pair" else f"{name}, mean OOD",
                "value": float(r.value),
                "baseline": r.baseline,
                "baseline_value": float(r.baseline_value),
                "baseline_diff": diff,
                "baseline_ci_low": float(r.baseline_ci_low),
                "baseline_ci_high": float(r.baseline_ci_high),
                "beats_baseline": bool(r.beats_baseline) if pd.notna(r.beats_baseline) else None,
                "n": r.n,
                "code": codes[r.baseline],
                "text": cell_text(
                    diff,
                    r.baseline_ci_low,
                    r.baseline_ci_high,
                    r.n if show_n else None,
                    fmt="+.2f",
                    suffix=codes[r.baseline],
                ),
                "row": rows.index((r.x_protocol, r.x_arm)),
                "col": columns.index((r.y_kind, (r.y_protocol, r.y_arm))),
            }
        )
    return pd.DataFrame(cells).sort_values(["row", "col"], ignore_index=True)


def ranker_codes(names) -> dict[str, str]:
    """A letter per static ranker, in the registry's order (``table:`` rankers after)."""
    order = list(registry.STATIC_RANKERS)
    present = sorted(
        {str(n) for n in names if str(n)},
        key=lambda n: (order.index(n) if n in order else len(order), n),
    )
    return {name: string.ascii_uppercase[i % 26] for i, name in enumerate(present)}


def plot(corr: pd.DataFrame, opts: dict | None, png, pdf) -> pd.DataFrame:
    """Heatmap of each in-domain protocol and proxy (rows) against each accuracy target
    (columns: the in-domain protocols it is paired with, then the mean over the OOD data sets)
    minus the best static ranker of that cell (correlations.csv ``baseline_diff``: the row's
    coefficient, oriented by the proxy's direction, minus the best ranker's, on the same
    models). The letter names that ranker (none when one ranker is every cell's baseline). A value is in parentheses when the paired bootstrap
    interval of the difference includes 0: positive values without parentheses beat every
    configured static ranker (``beats_baseline``). Returns :func:`f9_cells`."""
    o = options(opts, "f9")
    cells = f9_cells(corr, o)
    frame = cells.pivot(index="row", columns="col", values="baseline_diff").sort_index()
    frame = frame.reindex(columns=sorted(cells["col"].unique()))
    texts = cells.pivot(index="row", columns="col", values="text")
    texts = texts.reindex(index=frame.index, columns=frame.columns).fillna("")
    names = cells.drop_duplicates("row").sort_values("row")
    frame.index = [row_label(p, a) for p, a in zip(names["x_protocol"], names["x_arm"])]
    frame.columns = list(cells.drop_duplicates("col").sort_values("col")["column"])
    codes = dict(cells.drop_duplicates("baseline")[["baseline", "code"]].to_numpy())
    beats = int(cells["beats_baseline"].eq(True).sum())
    plt, sns = pyplot()
    with style(sns, o):
        fig, ax = plt.subplots(
            figsize=(0.85 * frame.shape[1] + 3.2, 0.42 * frame.shape[0] + 2.4),
        )
        try:
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
            fig.colorbar(
                mesh, ax=ax, shrink=0.8, label=f"{METHOD_LABELS[o['method']]} − best static ranker"
            ).outline.set_linewidth(0)
            ax.set_title(
                o["title"]
                or f"{METHOD_LABELS[o['method']]} beyond the best static ranker "
                f"({o['subset']} models, {n_text(cells['n'])}; "
                f"{beats} of {len(cells)} cells beat it)",
                fontsize=11 * o["font_scale"],
            )
            if o["annotate"]:
                if len(codes) == 1:
                    legend = (
                        f"baseline of every cell: {registry.static_ranker_label(next(iter(codes)))}"
                    )
                else:
                    pairs = sorted(codes.items(), key=lambda kv: kv[1])
                    legend = "baseline: " + ", ".join(
                        f"{c} = {registry.static_ranker_label(n)}" for n, c in pairs
                    )
                foot(
                    fig,
                    [
                        legend,
                        "(value): the paired 95% interval includes 0",
                        "n: models, where it varies" if cells["n"].nunique() > 1 else "",
                    ],
                )
            save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)
    return cells
