"""Rule summary: results/summary.md and its HTML view from the accuracy and correlation
tables (workflow_scripts.summary); the workflow prints it when a run succeeds."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime, summary

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
summary.make(dict(sm.params), dict(sm.input), dict(sm.output))
log.info("wrote %s", sm.output.md)
