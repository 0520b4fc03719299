"""Rules t1_models, t2_datasets, t3_accuracy: a result table as CSV and/or an HTML view."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import pandas as pd

from workflow_scripts import runtime, tables
from workflow_scripts.io import save_csv

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
if sm.params.table == "models":
    table = tables.models_table(sm.params.rows)
    save_csv(sm.output.csv, table)
elif sm.params.table == "datasets":
    pairs = dict(zip(sm.params.dataset_keys, zip(sm.input.train, sm.input.test)))
    table = tables.datasets_table(sm.params.rows, pairs)
    save_csv(sm.output.csv, table)
elif sm.params.table == "accuracy":
    table = pd.read_csv(sm.input.csv)
else:
    raise ValueError(f"unknown table '{sm.params.table}'")
tables.save_html(sm.output.html, table, sm.params.title)
log.info("%d rows in %s", len(table), sm.params.table)
