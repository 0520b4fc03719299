"""Tables T1 (models) and T2 (data sets) of the study, and HTML views of any result table.

T1 ``results/tables/models.csv``: the selected rows of the model table, one per model, with the
columns a reader needs (``family`` is called ``backbone``, as in the accuracy table).
T2 ``results/tables/datasets.csv``: the selected rows of the data set table plus the sizes
measured from the label files (``measured_train``, ``measured_test``, ``classes_in_train``).
T3 is the accuracy table itself (:mod:`workflow_scripts.results`).

No torch import: these are light steps.  Nothing runs at import time.
"""

from __future__ import annotations

import html
import os

import numpy as np
import pandas as pd

from workflow_scripts.io import atomic_path, save_csv
from workflow_scripts.runtime import named_files

#: T1 columns, in this order (model-table column in brackets when it differs).
MODEL_COLUMNS = (
    "key",
    "method",
    "arch",
    "backbone",
    "paradigm",
    "embedding",
    "source",
    "seed",
    "steps",
    "epochs",
    "format",
    "url",
    "sha256",
)
#: T2 columns taken from the data set table, in this order.
DATASET_COLUMNS = ("key", "kind", "role", "shift_group", "num_classes", "n_train", "n_test")
#: Optional columns appended when the input table has them: a timm row's transform (empty =
#: paper), the published reference number, then free text.
NOTE_COLUMNS = ("transform", "published_linear", "note", "notes", "description")


def _frame(rows: list[dict], what: str) -> pd.DataFrame:
    if not rows:
        raise ValueError(f"no {what} rows to tabulate")
    frame = pd.DataFrame([dict(r) for r in rows])
    if "key" not in frame:
        raise ValueError(f"{what} rows lack the 'key' column")
    dup = frame["key"][frame["key"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{what} rows repeat key(s) {dup}")
    return frame


def models_table(rows: list[dict], accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """T1 from the selected model-table rows (dicts, e.g. ``Study.model(key)``), in their order.

    With ``accuracy`` (the accuracy table; given when the rows have ``published_linear``),
    ``measured_linear`` follows ``published_linear``: this run's in-domain top-1 of the
    ``linear`` probe, BN arm (:func:`measured_linear`)."""
    frame = _frame(rows, "model").rename(columns={"family": "backbone"})
    missing = [c for c in MODEL_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"model rows lack column(s) {missing}")
    notes = [c for c in NOTE_COLUMNS if c in frame]
    if accuracy is not None:
        frame["measured_linear"] = frame["key"].map(measured_linear(accuracy))
        notes.insert(notes.index("published_linear") + 1, "measured_linear")
    return frame[[*MODEL_COLUMNS, *notes]].reset_index(drop=True).convert_dtypes()


def measured_linear(accuracy: pd.DataFrame) -> pd.Series:
    """model -> this run's in-domain top-1 (percent) of the ``linear`` probe in the BN arm, the
    measurement closest to a published ImageNet linear-probe number (a BatchNorm before the head,
    as MAE's and others' protocols); the raw arm where BN did not run."""
    rows = accuracy[(accuracy["domain"] == "id") & (accuracy["protocol"] == "linear")]
    arm = "bn" if (rows["arm"] == "bn").any() else "raw"
    return rows[rows["arm"] == arm].set_index("model")["top1"].astype(float)


def label_stats(train: str | os.PathLike, test: str | os.PathLike) -> dict:
    """Sizes measured from a data set's label files (int labels, one per image)."""
    y_train = np.load(train, allow_pickle=False)
    y_test = np.load(test, mmap_mode="r", allow_pickle=False)
    return {
        "measured_train": int(y_train.shape[0]),
        "measured_test": int(y_test.shape[0]),
        "classes_in_train": int(np.unique(y_train).size),
    }


def datasets_table(rows: list[dict], labels: dict[str, tuple] | None = None) -> pd.DataFrame:
    """T2 from the selected data-set-table rows, in their order.

    ``labels`` maps a data set key to its (train, test) label files; their measured sizes are
    added (:func:`label_stats`; empty for data sets without an entry).
    """
    frame = _frame(rows, "data set")
    missing = [c for c in DATASET_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"data set rows lack column(s) {missing}")
    unknown = sorted(set(labels or {}) - set(frame["key"]))
    if unknown:
        raise ValueError(f"label files given for data sets not in the table: {unknown}")
    out = frame[list(DATASET_COLUMNS)].copy()
    measured = pd.DataFrame(
        [label_stats(*labels[k]) if labels and k in labels else {} for k in out["key"]],
        columns=["measured_train", "measured_test", "classes_in_train"],
        index=out.index,
    )
    out = pd.concat([out, measured.astype("Int64")], axis=1)
    notes = [c for c in NOTE_COLUMNS if c in frame]
    return pd.concat([out, frame[notes]], axis=1).reset_index(drop=True).convert_dtypes()


def save_html(
    path: str | os.PathLike, frame: pd.DataFrame, title: str, float_format: str = "{:.2f}"
) -> None:
    """A self-contained HTML view of ``frame`` (for the Snakemake report), written atomically."""
    body = frame.convert_dtypes().to_html(
        index=False,
        na_rep="",
        border=0,
        classes="table",
        float_format=float_format.format,
        escape=True,
    )
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;font-size:13px;margin:1em}"
        "table{border-collapse:collapse}th,td{padding:2px 8px;text-align:left;"
        "border-bottom:1px solid #ddd;white-space:nowrap}"
        "th{position:sticky;top:0;background:#f4f4f4}tr:hover td{background:#f0f6ff}"
        f"</style></head><body><h3>{html.escape(title)}</h3>\n{body}\n</body></html>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")


def make(params: dict, inputs: dict, outputs: dict) -> pd.DataFrame:
    """One table rule (t1_models, t2_datasets, t3_accuracy) from its params, inputs and outputs
    (by name): ``params["table"]`` is models (T1 from ``rows``), datasets (T2 from ``rows``,
    measured from the ``train``/``test`` label files of ``dataset_keys``) or accuracy (the
    ``csv`` the accuracy rule wrote). T1 and T2 are written to ``outputs["csv"]``; every table
    gets its HTML view ``outputs["html"]`` titled ``params["title"]``. Returns the table."""
    kind = params["table"]
    if kind == "models":
        accuracy = [pd.read_csv(path) for path in named_files(inputs, "accuracy")]
        table = models_table(params["rows"], *accuracy)
    elif kind == "datasets":
        labels = dict(zip(params["dataset_keys"], zip(inputs["train"], inputs["test"])))
        table = datasets_table(params["rows"], labels)
    elif kind == "accuracy":
        table = pd.read_csv(inputs["csv"])
    else:
        raise ValueError(f"unknown table '{kind}'")
    if kind != "accuracy":
        save_csv(outputs["csv"], table)
    save_html(outputs["html"], table, params["title"])
    return table
