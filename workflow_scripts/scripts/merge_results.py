"""Rule merge_results: this run's accuracy table and the external result tables (config
results_tables) in one analysis table with a source column."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import external, runtime

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
external.run_job(
    runtime.named_files(sm.input, "computed"),
    [table["path"] for table in sm.params.tables.values()],
    sm.output[0],
    log,
)
