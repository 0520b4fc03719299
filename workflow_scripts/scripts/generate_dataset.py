"""Rule generate_dataset: render one synthetic data set's train and test splits."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime, synthetic

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
synthetic.run_job(sm.params.row, dict(sm.output.items()), log)
