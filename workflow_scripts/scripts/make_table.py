"""Rules t1_models, t2_datasets, t3_accuracy: a result table as CSV and/or an HTML view."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime, tables

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
table = tables.make(dict(sm.params.items()), dict(sm.input.items()), dict(sm.output.items()))
log.info("%d rows in %s", len(table), sm.params.table)
