"""External result tables (config key ``results_tables``): published or elsewhere-computed
accuracies analysed beside (or instead of) this run's.

A results table is a CSV file whose rows use the accuracy table's columns
(:data:`workflow_scripts.results.COLUMNS`): required ``model, dataset, domain, protocol, arm,
top1`` (percent), optional ``shift_group, backbone, paradigm, top5`` and the accuracy table's
other columns. :func:`read_results_table` validates one file and names the file, line and
column of every bad cell; :func:`check_merged` checks the tables against each other and
against what this run computes (one domain and shift group per data set, one method,
backbone, arch and paradigm per model, no measurement twice, exactly one in-domain data set);
:func:`merge` writes the analysis table ``results/tables/accuracy_merged.csv``: every row
with a ``source`` column, ``computed`` or the file's name.

The tables are read and checked when the configuration is loaded, before any job.
Nothing runs at import time.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from workflow_scripts import registry
from workflow_scripts.results import COLUMNS

REQUIRED = ("model", "dataset", "domain", "protocol", "arm", "top1")
#: Columns a table may have: the accuracy table's, and its optional provenance column
#: (``transform`` of timm rows).
OPTIONAL = ("transform",)
ALLOWED = (*COLUMNS, *OPTIONAL)
#: Source of the rows this run computed.
COMPUTED = "computed"
#: Protocol and arm names: letters, digits and underscores.
NAME = re.compile(r"^[A-Za-z0-9_]+$")
#: Names of models, data sets, shift groups and model attributes in a results table: letters,
#: digits, '_', '-' and '.', starting with a letter, digit or '_'. Such a name can neither start
#: a spreadsheet formula (=, +, -, @) in the CSV files the analysis writes nor be read as math
#: ($) by a figure's text.
NAME_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
KEY_COLUMNS = ("model", "dataset", "shift_group", "method", "backbone", "arch", "paradigm")
#: What a spreadsheet program evaluates when a cell starts with it.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
DOMAINS = ("id", "ood")
#: Accuracy-table columns holding numbers (an empty cell is a missing value).
PERCENT_COLUMNS = ("top1", "top5")
NUMBER_COLUMNS = ("top1_sd", "n_seeds", "epochs", "k", "n_train", "n_test")
#: What one data set / one model has a single value of, across every table.
DATASET_ATTRIBUTES = ("domain", "shift_group")
MODEL_ATTRIBUTES = ("method", "backbone", "arch", "paradigm")
KEY = ["model", "dataset", "protocol", "arm"]
#: Errors listed before the rest are summarised.
MAX_ERRORS = 20
#: A number cell: ASCII decimal notation with an optional sign and exponent (50, 50.5, 5e1).
#: Python's float() alone also reads '5_0' and non-ASCII digits ('٥٠', '５０') as 50.
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class ResultsTableError(ValueError):
    """A results table (or the tables together) cannot be analysed."""


def source_name(path: str | Path) -> str:
    """The ``source`` value of a file's rows: its file name."""
    return Path(path).name


def _raise(errors: list[str], what: str) -> None:
    if errors:
        more = len(errors) - MAX_ERRORS
        lines = errors[:MAX_ERRORS] + ([f"... and {more} more"] if more > 0 else [])
        raise ResultsTableError(f"{what}:\n  " + "\n  ".join(lines))


def _number(text: str) -> float | None:
    if not NUMBER.fullmatch(text):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _kept(handle, lines: list[str]):
    """The lines of ``handle``, each also appended to ``lines``."""
    for line in handle:
        lines.append(line)
        yield line


def _line_breaks(text: str) -> int:
    """The line breaks in ``text`` as the file's lines count them (\\n, \\r or \\r\\n)."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _unclosed_quote(lines: list[str], first: int, end: int, cells: list[str]):
    """(line, cell index) where the quoted last cell of a row (lines ``first`` .. ``end``,
    1-based, of ``lines``) opens when its quote is never closed, else None.

    A quote that is never closed makes the csv reader take the rest of the file into that
    cell (a row that ends on the file's last line): parsed again with a line after it, such a
    row takes that line in too, a closed one ends before it."""
    if not lines or end != len(lines):
        return None
    again = list(csv.reader([*lines[first - 1 :], "\n", "end\n"]))
    if again and again[-1] == ["end"]:
        return None
    return first + sum(map(_line_breaks, cells[:-1])), len(cells) - 1


def read_results_table(path: str | Path, name: str | None = None) -> pd.DataFrame:
    """One results table, validated: a frame with the file's columns as strings (empty cells
    None, numbers as floats), a ``line`` column (the row's line in the file) and ``source``.

    Raises :class:`ResultsTableError` naming the file, and the line and column of each bad
    cell: a missing or unknown column, an empty required cell, a domain other than id/ood, a
    protocol or arm name with characters other than letters, digits and ``_``, a model, data
    set, shift group or model attribute that is not a :data:`NAME_KEY` name, another text cell
    that starts like a spreadsheet formula, a file name that is not a name, a protocol
    named like a proxy, a data set named like the analysis' pseudo data sets, an accuracy that
    is not a number in [0, 100], a number cell not in ASCII decimal notation (:data:`NUMBER`:
    ``5_0`` or non-ASCII digits, which float() reads), a top-5 below its top-1, a ``top1``
    column empty on every row, a quote that is never closed (at the line where its cell opens),
    or a header without rows.
    """
    path = Path(path)
    name = name or source_name(path)
    where = f"results table '{path}'"
    if not path.is_file():
        raise ResultsTableError(f"{where}: no such file (config key 'results_tables')")
    if not NAME_KEY.match(name):
        raise ResultsTableError(
            f"{where}: its name {name!r} becomes the 'source' of its rows; use a file name of "
            "letters, digits, '_', '-' and '.' starting with a letter, digit or '_'"
        )
    lines: list[str] = []  # the file's lines as read, for an unclosed quote's line
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(_kept(handle, lines))
        try:
            header = next(reader, None)
            records = []  # (first line, last line, cells) of each row that is not blank
            while True:
                first = reader.line_num + 1
                cells = next(reader, None)
                if cells is None:
                    break
                if any(map(str.strip, cells)):
                    records.append((first, reader.line_num, cells))
        except (UnicodeDecodeError, csv.Error) as error:
            raise ResultsTableError(
                f"{where}: not a UTF-8 CSV file (after line {reader.line_num}: {error})"
            ) from None
    if not header:
        raise ResultsTableError(
            f"{where}: empty file; expected a header line with columns {', '.join(REQUIRED)}"
        )
    header = [column.strip() for column in header]
    last = records[-1] if records else (1, len(lines), header)
    opened = _unclosed_quote(lines, *last)
    if opened is not None:
        line, index = opened
        if last[0] == 1 or index >= len(header):  # in the header, or a cell beyond it
            column = f"column {index + 1}"
        else:
            column = f"column '{header[index]}'"
        raise ResultsTableError(
            f"{where}:\n  line {line}, {column}: the quote '\"' that opens this cell is never "
            "closed (the cell would run to the end of the file); close it or remove it"
        )
    records = [(end, cells) for _, end, cells in records]
    errors = []
    unknown = [c for c in header if c not in ALLOWED]
    if unknown:
        errors.append(
            f"line 1: unknown column(s) {', '.join(map(repr, unknown))} (allowed: the accuracy "
            f"table's columns {', '.join(ALLOWED)})"
        )
    lacking = [c for c in REQUIRED if c not in header]
    if lacking:
        errors.append(f"line 1: missing column(s) {', '.join(map(repr, lacking))}")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        errors.append(f"line 1: column(s) {', '.join(map(repr, repeated))} more than once")
    _raise(errors, where)
    if not records:
        raise ResultsTableError(f"{where}: a header but no rows")

    rows = []
    for line, cells in records:
        if len(cells) != len(header):
            errors.append(f"line {line}: {len(cells)} cells, the header has {len(header)}")
            continue
        row: dict = {c: (v.strip() or None) for c, v in zip(header, cells)}
        for column in REQUIRED[:-1]:
            if row[column] is None:
                errors.append(f"line {line}, column '{column}': empty")
        if row["domain"] is not None and row["domain"] not in DOMAINS:
            errors.append(
                f"line {line}, column 'domain': {row['domain']!r} is neither 'id' nor 'ood'"
            )
        for column in ("protocol", "arm"):
            if row[column] is not None and not NAME.match(row[column]):
                errors.append(
                    f"line {line}, column '{column}': {row[column]!r} has characters other "
                    "than letters, digits and '_'"
                )
        for column in KEY_COLUMNS:
            value = row.get(column)
            if value is not None and not NAME_KEY.match(value):
                errors.append(
                    f"line {line}, column '{column}': {value!r} is not a name of letters, "
                    "digits, '_', '-' and '.' starting with a letter, digit or '_' (a cell "
                    "starting with =, +, -, @ is run as a formula by spreadsheet programs, a '$' "
                    "is read as math by the figures)"
                )
        for column, value in row.items():
            if (
                column not in KEY_COLUMNS
                and column not in PERCENT_COLUMNS + NUMBER_COLUMNS
                and isinstance(value, str)
                and value.startswith(FORMULA_START)
            ):
                errors.append(
                    f"line {line}, column '{column}': {value!r} starts like a spreadsheet "
                    "formula (=, +, -, @)"
                )
        if row["protocol"] in registry.PROXIES:
            errors.append(
                f"line {line}, column 'protocol': {row['protocol']!r} is a proxy's name "
                "(proxies come from results/tables/proxies.csv); rename the protocol"
            )
        dataset = row["dataset"] or ""
        if dataset == "mean_ood" or dataset.startswith("group:"):
            errors.append(
                f"line {line}, column 'dataset': {dataset!r} is reserved for the analysis' "
                "means over OOD data sets"
            )
        for column in PERCENT_COLUMNS + NUMBER_COLUMNS:
            text = row.get(column)
            if text is None:
                continue
            value = _number(text)
            percent = column in PERCENT_COLUMNS
            if value is None or value < 0 or (percent and value > 100):
                wanted = "a number in [0, 100] (percent)" if percent else "a number >= 0"
                if value is None:
                    wanted += " written with ASCII decimal digits (e.g. 50, 50.5, 5e1)"
                errors.append(f"line {line}, column '{column}': {text!r} is not {wanted}")
            else:
                row[column] = value
        top1, top5 = row.get("top1"), row.get("top5")
        if isinstance(top1, float) and isinstance(top5, float) and top5 < top1:
            errors.append(f"line {line}, column 'top5': {top5:g} is below top1 ({top1:g})")
        rows.append(row | {"line": line})
    if rows and all(row["top1"] is None for row in rows):
        errors.append(
            f"column 'top1': empty on every row (lines {rows[0]['line']}-{rows[-1]['line']}); "
            "a results table gives top-1 accuracies (percent)"
        )
    _raise(errors, where)
    frame = pd.DataFrame.from_records(rows)
    frame["source"] = name
    return frame


def computed_skeleton(
    models: pd.DataFrame,
    datasets: pd.DataFrame,
    frozen: Sequence[str],
    trained: Sequence[str],
    arms: Sequence[str],
) -> pd.DataFrame:
    """The measurements this run will compute, as accuracy-table key and attribute columns
    (no accuracies): frozen protocols on every data set, trained ones on the in-domain set,
    each in every arm. ``models`` / ``datasets``: the selected model / data set table rows
    (indexed by key)."""
    rows = []
    for model, m in models.iterrows():
        for dataset, d in datasets.iterrows():
            protocols = list(frozen) + (list(trained) if d["role"] == "id" else [])
            rows += [
                {
                    "model": model,
                    "method": m["method"],
                    "backbone": m["family"],
                    "arch": m["arch"],
                    "paradigm": m["paradigm"],
                    "dataset": dataset,
                    "domain": d["role"],
                    "shift_group": d["shift_group"],
                    "protocol": protocol,
                    "arm": arm,
                }
                for protocol in protocols
                for arm in arms
            ]
    columns = ["model", *MODEL_ATTRIBUTES, "dataset", *DATASET_ATTRIBUTES, "protocol", "arm"]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    frame["source"] = COMPUTED
    return frame


def _place(row) -> str:
    """Where a row comes from, for an error message."""
    line = row.get("line")
    if row["source"] == COMPUTED:
        return "this run's results"
    if line is None or (isinstance(line, float) and math.isnan(line)):
        return f"'{row['source']}'"
    return f"'{row['source']}' line {int(line)}"


def check_merged(frames: Sequence[pd.DataFrame]) -> None:
    """Check the tables against each other (each frame with a ``source`` column and, for a
    file, a ``line`` column): one domain and shift group per data set, one method, backbone,
    arch and paradigm per model (where given), no (model, data set, protocol, arm) twice, exactly
    one in-domain data set. Raises :class:`ResultsTableError` naming the sources and lines."""
    table = pd.concat([frame for frame in frames if len(frame)], ignore_index=True)
    if "line" not in table:
        table["line"] = None
    errors = []
    for owner, attributes in (("dataset", DATASET_ATTRIBUTES), ("model", MODEL_ATTRIBUTES)):
        for column in attributes:
            if column not in table:
                continue
            given = table[table[column].notna()]
            for key, part in given.groupby(owner, sort=True):
                values = part.drop_duplicates(column)
                if len(values) > 1:
                    seen = "; ".join(f"{r[column]!r} in {_place(r)}" for _, r in values.iterrows())
                    errors.append(f"{owner} {key!r} has more than one {column}: {seen}")
    dup = table[table.duplicated(KEY, keep=False)]
    for key, part in dup.groupby(KEY, sort=True):
        places = ", ".join(_place(r) for _, r in part.iterrows())
        errors.append(
            f"(model, dataset, protocol, arm) = {tuple(key)} is given more than once: {places}"
        )
    ids = sorted(table.loc[table["domain"] == "id", "dataset"].unique())
    if len(ids) != 1:
        errors.append(
            f"the analysis needs exactly one in-domain (domain 'id') data set; the tables have "
            f"{len(ids)}: {', '.join(map(repr, ids)) or 'none'}"
        )
    _raise(errors, "the result tables do not fit together")


def merge(computed: pd.DataFrame | None, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The analysis table: this run's accuracy rows (``computed``, or None without models)
    and each results table (name -> :func:`read_results_table` frame), checked together,
    with the accuracy table's columns plus ``source``."""
    frames = []
    if computed is not None:
        frames.append(computed.assign(source=COMPUTED))
    frames += [frame.assign(source=name) for name, frame in tables.items()]
    check_merged(frames)
    table = pd.concat(frames, ignore_index=True)
    optional = [c for c in OPTIONAL if c in table]
    table = table.reindex(columns=[*COLUMNS, *optional, "source"])
    # a row that leaves a model's or data set's attribute empty gets the one another row
    # gives (e.g. a published number of a model this run computes)
    for owner, attributes in (("model", MODEL_ATTRIBUTES), ("dataset", DATASET_ATTRIBUTES)):
        for column in attributes:
            table[column] = table.groupby(owner)[column].transform("first")
    return table


def run_job(computed: Sequence[str], tables: Sequence[str], output: str, log) -> None:
    """Rule merge_results: the analysis table of this run's accuracy table (``computed``:
    [] or its path) and the results tables (paths), written to ``output``."""
    from workflow_scripts.io import save_csv

    acc = pd.read_csv(computed[0]) if computed else None
    frames = {source_name(path): read_results_table(path) for path in tables}
    table = merge(acc, frames)
    save_csv(output, table)
    counts = table["source"].value_counts(sort=False)
    log.info("%d rows: %s", len(table), ", ".join(f"{s} {n}" for s, n in counts.items()))
