"""Rule correlations: Kendall/Spearman/Pearson across models with p-values and bootstrap CIs."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import pandas as pd

from workflow_scripts import runtime
from workflow_scripts.correlations import correlation_table
from workflow_scripts.io import save_csv

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
cfg = sm.params.analysis
table = correlation_table(
    pd.read_csv(sm.input[0]), n_resamples=cfg["bootstrap_resamples"], seed=cfg["bootstrap_seed"],
    min_subset=cfg["min_subset"], subsets=list(cfg["subsets"]),
)
save_csv(sm.output[0], table)
log.info("%d correlation rows", len(table))
