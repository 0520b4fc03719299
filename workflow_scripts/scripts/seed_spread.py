"""Rule seed_spread: the correlation tables of the runs of demo.seeds side by side, each
correlation's spread across the seeds (workflow_scripts.seed_spread)."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime, seed_spread

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
seed_spread.run_job(
    list(sm.input.runs), sm.params.runs, sm.params.id_dataset, sm.output.csv, sm.output.html, log
)
