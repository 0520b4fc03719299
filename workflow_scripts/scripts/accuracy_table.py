"""Rule accuracy_table: collect every probe result into results/tables/accuracy.csv."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import pandas as pd

from workflow_scripts import runtime
from workflow_scripts.io import save_csv
from workflow_scripts.results import accuracy_table

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
table = accuracy_table(
    [pd.read_csv(path) for path in sm.input], sm.params.models, sm.params.datasets,
    report=sm.params.report, report_lr=sm.params.report_lr,
)
save_csv(sm.output[0], table)
log.info("%d accuracy rows", len(table))
