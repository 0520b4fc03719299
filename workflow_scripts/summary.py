"""The run summary, ``results/summary.md`` (and its HTML view for the report): what a reader
looks at first when a run ends -- the in-domain top-1 of every model under every protocol and
arm, the headline rank correlations with their intervals and p-values, which figures were drawn
or skipped and why, and where the files are. The workflow prints it when a run succeeds.

Numbers are copied from the accuracy and correlation tables, never recomputed. No torch import;
nothing runs at import time.
"""

from __future__ import annotations

import html
import math
import os

import pandas as pd

from workflow_scripts.io import atomic_path
from workflow_scripts.seed_spread import HEADLINE_SUBSET, headline_rows

#: Where the files are, in the order a reader needs them (``files`` keeps those a run makes).
FILES = (
    ("results/summary.md", "this summary"),
    (
        "results/tables/accuracy.csv",
        "every accuracy of this run: model x data set x protocol x arm",
    ),
    (
        "results/tables/accuracy_merged.csv",
        "every accuracy of this run and of the result tables (config results_tables)",
    ),
    ("results/tables/correlations.csv", "every rank correlation, with p-values and intervals"),
    ("results/tables/proxies.csv", "the label-free proxies per model and data set"),
    ("results/tables/accuracy.html", "T3: the accuracy table to read"),
    ("results/figures/", "the figures (PNG and PDF)"),
    ("results/tables/accuracy.json", "what made the numbers: code, packages, configuration"),
)


def files(targets: list[str]) -> list[list[str]]:
    """The rows of ``FILES`` that a run with these targets (``Plan.all_targets``) writes, as
    [path, what] pairs; the figures' folder when it draws any figure."""
    made = set(targets) | {"results/summary.md"}
    made |= {"results/figures/" for t in targets if t.startswith("results/figures/")}
    return [[path, what] for path, what in FILES if path in made]


def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def id_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Models x (protocol, arm): the in-domain top-1, in the table's order of protocols and
    arms; models by their first column, best first."""
    rows = accuracy[accuracy["domain"] == "id"]
    columns = list(dict.fromkeys(zip(rows["protocol"], rows["arm"])))
    table = rows.pivot_table(index="model", columns=["protocol", "arm"], values="top1")
    table = table.reindex(columns=pd.MultiIndex.from_tuples(columns))
    return table.sort_values(columns[0], ascending=False)


def headlines(correlations: pd.DataFrame, id_dataset: str) -> pd.DataFrame:
    """The README's headline correlations present in ``correlations`` (Kendall's tau, all
    models): label, n, value, interval, p-value, and whether it beats its baseline."""
    keys = headline_rows(id_dataset)
    on = [c for c in keys.columns if c != "headline"]
    merged = keys.merge(correlations, on=on, how="inner")
    columns = ["headline", "n", "value", "ci_low", "ci_high", "p_value"]
    if "beats_baseline" in merged:
        columns.append("beats_baseline")
    return merged[columns]


def _label(protocol: str, arm: str) -> str:
    from workflow_scripts.registry import protocol_label

    return protocol_label(protocol) + (" (BN)" if arm == "bn" else "")


def sections(
    accuracy: pd.DataFrame,
    correlations: pd.DataFrame,
    id_dataset: str,
    drawn: list[str],
    skipped: dict[str, str],
    where: list[list[str]] | None = None,
) -> list[tuple[str, object]]:
    """(heading, content) pairs: a DataFrame (a table) or a list of lines (a list)."""
    ids = id_table(accuracy)
    top = ids.copy()
    top.columns = [_label(p, a) for p, a in ids.columns]
    top = top.map(_fmt).reset_index()
    heads = headlines(correlations, id_dataset)
    corr = pd.DataFrame(
        {
            "correlation": heads["headline"],
            "n": heads["n"].astype(int).astype(str),
            "tau": heads["value"].map(lambda v: _fmt(v, 2)),
            "95% interval": [
                f"[{_fmt(lo, 2)}, {_fmt(hi, 2)}]"
                for lo, hi in zip(heads["ci_low"], heads["ci_high"])
            ],
            "p": heads["p_value"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}"),
        }
    )
    if "beats_baseline" in heads:
        corr["beats baseline"] = heads["beats_baseline"].map(
            lambda v: "" if pd.isna(v) else ("yes" if str(v).lower() == "true" else "no")
        )
    figures = [f"{name}: `results/figures/{name}.png`" for name in drawn] + [
        f"{name}: not drawn ({why})" for name, why in skipped.items()
    ]
    located = [f"`{path}`: {what}" for path, what in (FILES if where is None else where)]
    return [
        (f"In-domain top-1 (%) on {id_dataset}, {len(ids)} models", top),
        (
            "Headline rank correlations: Kendall's tau across "
            + ("all models" if HEADLINE_SUBSET == "all" else f"subset '{HEADLINE_SUBSET}'")
            + ", its bootstrap 95% interval and p-value",
            corr,
        ),
        ("Figures", figures),
        ("Where the files are", located),
    ]


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return [head, rule, *body]


def markdown(parts: list[tuple[str, object]], title: str) -> str:
    lines = [f"# {title}", ""]
    for heading, content in parts:
        lines += [f"## {heading}", ""]
        if isinstance(content, pd.DataFrame):
            lines += _markdown_table(content) if len(content) else ["(none)"]
        else:
            lines += [f"- {line}" for line in content] or ["(none)"]
        lines.append("")
    return "\n".join(lines)


def html_page(parts: list[tuple[str, object]], title: str) -> str:
    body = [f"<h2>{html.escape(title)}</h2>"]
    for heading, content in parts:
        body.append(f"<h3>{html.escape(heading)}</h3>")
        if isinstance(content, pd.DataFrame):
            body.append(content.to_html(index=False, border=0, classes="table", escape=True))
        else:
            items = "".join(f"<li>{html.escape(line).replace('`', '')}</li>" for line in content)
            body.append(f"<ul>{items}</ul>")
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;font-size:13px;margin:1em}"
        "table{border-collapse:collapse}th,td{padding:2px 8px;text-align:right;"
        "border-bottom:1px solid #ddd}th{background:#f4f4f4}"
        "td:first-child,th:first-child{text-align:left}"
        "</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def make(params: dict, inputs: dict, outputs: dict) -> str:
    """Rule summary: ``inputs`` accuracy and correlations (CSV), ``params`` id_dataset,
    drawn (figure names), skipped (name -> reason) and files ([path, what] pairs); writes ``outputs`` md and html;
    returns the markdown."""
    accuracy = pd.read_csv(inputs["accuracy"])
    correlations = pd.read_csv(inputs["correlations"])
    parts = sections(
        accuracy,
        correlations,
        params["id_dataset"],
        params["drawn"],
        params["skipped"],
        params["files"],
    )
    title = "sslbench: run summary"
    text = markdown(parts, title)
    for key, content in (("md", text), ("html", html_page(parts, title))):
        with atomic_path(outputs[key]) as tmp:
            tmp.write_text(content, encoding="utf-8")
    return text


def printable(path: str | os.PathLike) -> str | None:
    """The summary's text for the end of a run, or None when there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None
