"""Rule correlations: every correlation method across models (scipy), p-values, bootstrap
intervals and regret, of the accuracy table and the proxies, each row against the static rankers."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import correlations, runtime

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
correlations.run_job(
    sm.input.accuracy,
    runtime.named_files(sm.input, "proxies"),
    sm.output[0],
    sm.params.analysis,
    log,
    ranker_values=sm.params.rankers,
)
