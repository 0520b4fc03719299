"""Rule fewshot_split: the authors' few-shot subset indices of one data set and fraction."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import numpy as np

from workflow_scripts import runtime
from workflow_scripts.fewshot import fewshot_indices
from workflow_scripts.io import save_npy

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
labels = np.load(sm.input.labels)
indices = fewshot_indices(
    labels,
    sm.params.num_classes,
    float(sm.wildcards.pct),
    dataset=sm.wildcards.dataset,
    seed=sm.params.seed,
)
save_npy(sm.output[0], indices)
log.info(
    "%s: %s%% subset (seed %d), %d images (%d per class)",
    sm.wildcards.dataset,
    sm.wildcards.pct,
    sm.params.seed,
    len(indices),
    len(indices) // sm.params.num_classes,
)
