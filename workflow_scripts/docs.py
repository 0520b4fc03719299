"""README.md's tables of what the workflow knows, generated from the registry: the figures, the
protocols, the feature arms, the proxies, the correlation methods, the model sources and the
static rankers.

``python -m workflow_scripts.docs`` rewrites each table between its markers in README.md
(``<!-- generated: NAME ... -->`` ... ``<!-- end of generated: NAME -->``);
``tests/unit/test_registry.py`` fails while one is out of date. Registering a protocol, a
proxy, a figure or a model source therefore adds its README row; nothing lists them by hand.
Planning only: no job imports this module.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from workflow_scripts import registry

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def caption_title(figure: str) -> str:
    """The bold title a figure's caption (report/<figure>.rst) opens with, without its
    trailing full stop."""
    text = (ROOT / "report" / f"{figure}.rst").read_text()
    match = re.match(r"\s*\*\*(.+?)\*\*", text, re.S)
    if match is None:
        raise ValueError(f"report/{figure}.rst does not open with a **bold title**")
    return " ".join(match.group(1).split()).rstrip(".")


def _when(entry: dict) -> str:
    requires = entry.get("requires")
    if requires is None:
        return "always"
    doc = inspect.getdoc(requires) or ""
    return doc.removeprefix("Drawn ").rstrip(".") or "see its requires function"


def figures_table() -> list[str]:
    """One row per registered figure: rule and files, caption title, options, when drawn."""
    rows = ["| figure (rule) | what it shows | options | drawn |", "|---|---|---|---|"]
    for name, entry in registry.FIGURES.items():
        rows.append(
            f"| `results/figures/{name}.{{png,pdf}}` (`{name}`) | {caption_title(name)} "
            f"| `figures.{entry['key']}` | {_when(entry)} |"
        )
    return rows


def protocols_table() -> list[str]:
    rows = [
        "| protocol | kind | label | module | rules | config section |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in registry.PROTOCOLS.items():
        label = entry["label"].format(pct="<pct>")
        rules = ", ".join(f"`{r}`" for r in entry["rules"])
        rows.append(
            f"| `{name}` | {entry['kind']} | {label} | `workflow_scripts/"
            f"{entry['module'].replace('.', '/')}.py` | {rules} | `{name}` |"
        )
    return rows


def arms_table() -> list[str]:
    rows = ["| arm | label in figures |", "|---|---|"]
    rows += [f"| `{name}` | {e['label'] or '(none)'} |" for name, e in registry.ARMS.items()]
    return rows


def proxies_table() -> list[str]:
    rows = ["| proxy | label | direction |", "|---|---|---|"]
    for name, entry in registry.PROXIES.items():
        arrow = "↑ higher is better" if entry["direction"] > 0 else "↓ lower is better"
        rows.append(f"| `{name}` | {entry['label']} | {arrow} |")
    return rows


def methods_table() -> list[str]:
    rows = ["| method | label |", "|---|---|"]
    rows += [f"| `{n}` | {e['label']} |" for n, e in registry.CORRELATION_METHODS.items()]
    return rows


def sources_table() -> list[str]:
    rows = [
        "| source | what | rules | planned by | backbone built by |",
        "|---|---|---|---|---|",
    ]
    for name, entry in registry.SOURCES.items():
        rules = ", ".join(f"`{r}`" for r in entry["rules"])
        rows.append(
            f"| `{name}` | {entry['label']} | {rules} | "
            f"`workflow_scripts/model_sources/{name}.py` | "
            f"`workflow_scripts/{entry['backbone']}.py` |"
        )
    return rows


def rankers_table() -> list[str]:
    rows = ["| static ranker | label | value per model |", "|---|---|---|"]
    rows += [
        f"| `{n}` | {e['label']} | {e['description']} |" for n, e in registry.STATIC_RANKERS.items()
    ]
    rows.append(
        f"| `{registry.TABLE_RANKER_PREFIX}<protocol>:<arm>` | `protocol (arm)` | that "
        "in-domain top-1 of the results tables (`results_tables`) |"
    )
    return rows


#: The demo's committed accuracy table (tests/integration/test_demo_reference.py).
DEMO_REFERENCE = ROOT / "tests" / "reference" / "demo_accuracy.csv"
#: The demo table's columns: (protocol, arm) in-domain, or ("ood", protocol, arm) the OOD mean.
DEMO_COLUMNS = (
    ("knn", "raw"),
    ("knn", "bn"),
    ("linear", "raw"),
    ("linear", "bn"),
    ("attentive", "raw"),
    ("attentive", "bn"),
    ("finetune", "raw"),
    ("finetune", "bn"),
    ("fewshot10", "raw"),
    ("ood", "linear", "raw"),
    ("ood", "linear", "bn"),
    ("ood", "attentive", "bn"),
)


def demo_table() -> list[str]:
    """The demo's in-domain top-1 and the mean over its OOD sets (linear), per model, from the
    committed reference table, by decreasing kNN top-1."""
    import pandas as pd

    acc = pd.read_csv(DEMO_REFERENCE)
    ind = acc[acc["domain"] == "id"].pivot_table(
        index="model", columns=["protocol", "arm"], values="top1"
    )
    ood = acc[acc["domain"] == "ood"].groupby(["model", "protocol", "arm"])["top1"].mean()
    labels = []
    for column in DEMO_COLUMNS:
        if column[0] == "ood":
            labels.append(
                f"OOD mean, {registry.protocol_label(column[1])}"
                + (" (BN)" if column[2] == "bn" else "")
            )
        else:
            labels.append(
                registry.protocol_label(column[0]) + (" (BN)" if column[1] == "bn" else "")
            )
    rows = ["| model | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for model in ind.sort_values(("knn", "raw"), ascending=False).index:
        cells = [
            ood.loc[(model, c[1], c[2])] if c[0] == "ood" else ind.loc[model, c]
            for c in DEMO_COLUMNS
        ]
        rows.append(f"| {model} | " + " | ".join(f"{v:.1f}" for v in cells) + " |")
    return rows


#: README "Use your own checkpoint": the example row's cells (every other column empty).
OWN_ROW = {
    "key": "my_swav",
    "method": "swav",
    "arch": "resnet50",
    "family": "resnet",
    "paradigm": "discriminative",
    "embedding": "avgpool",
    "source": "checkpoint",
    "format": "deepcluster",
    "url": "https://example.org/my_swav.pth.tar",
    "note": "my own SwAV run",
}


def own_row_example() -> list[str]:
    """The paper model table's header and one example row, tab-separated, in a code block:
    the columns are the table's own, so the example cannot fall behind it."""
    header = (ROOT / "config" / "models_paper.tsv").read_text().splitlines()[0].split("\t")
    unknown = sorted(set(OWN_ROW) - set(header))
    if unknown:
        raise ValueError(f"OWN_ROW names columns the paper model table lacks: {unknown}")
    return ["```", "\t".join(header), "\t".join(OWN_ROW.get(c, "") for c in header), "```"]


#: The generated tables: marker name -> rows.
TABLES = {
    "figures": figures_table,
    "protocols": protocols_table,
    "arms": arms_table,
    "proxies": proxies_table,
    "correlation methods": methods_table,
    "model sources": sources_table,
    "static rankers": rankers_table,
    "demo accuracies": demo_table,
    "own checkpoint row": own_row_example,
}


def contents_rows(text: str) -> list[str]:
    """README's table of contents: its ## and ### headings (outside code blocks) as a nested
    list of links to GitHub's heading anchors."""
    import re

    rows, seen, fenced = [], {}, False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"(##|###) (.+)", line)
        if not match:
            continue
        title = match.group(2).strip()
        if title == "Contents":
            continue
        anchor = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchor = f"{anchor}-{count}" if count else anchor
        indent = "  " if match.group(1) == "###" else ""
        rows.append(f"{indent}- [{title}](#{anchor})")
    return rows


def begin_marker(name: str) -> str:
    return f"<!-- generated: {name} (python -m workflow_scripts.docs; edit the registry) -->"


def end_marker(name: str) -> str:
    return f"<!-- end of generated: {name} -->"


def with_tables(text: str) -> str:
    """``text`` (README.md) with every generated table rewritten; an error names a table
    whose markers are missing."""
    for name, rows in TABLES.items():
        begin, end = begin_marker(name), end_marker(name)
        if begin not in text or end not in text:
            raise ValueError(f"README.md lacks the markers of the generated table '{name}'")
        start, stop = text.index(begin), text.index(end) + len(end)
        text = text[:start] + "\n".join([begin, "", *rows(), "", end]) + text[stop:]
    begin, end = begin_marker("contents"), end_marker("contents")
    if begin not in text or end not in text:
        raise ValueError("README.md lacks the markers of the generated table 'contents'")
    start, stop = text.index(begin), text.index(end) + len(end)
    return text[:start] + "\n".join([begin, "", *contents_rows(text), "", end]) + text[stop:]


if __name__ == "__main__":  # rewrite README.md's generated tables from the registry
    README.write_text(with_tables(README.read_text()))
