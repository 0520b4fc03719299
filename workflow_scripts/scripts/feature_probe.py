"""Rules knn_probe, linear_probe (registry.PROTOCOLS[...]["probe"]): a probe on cached
features, raw and BN arms, per data set of the job, through its module's run_job()."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import importlib

from workflow_scripts import runtime
from workflow_scripts.feature_cache import labelled_splits

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
probe = importlib.import_module(f"workflow_scripts.{sm.params.module}")
data = labelled_splits(
    sm.wildcards.model,
    sm.params.datasets,
    sm.input.train,
    sm.input.train_labels,
    sm.input.test,
    sm.input.test_labels,
)
# the whole config section: the params carry its keys that change a result, the run-time
# keys (device) are read here
probe.run_job(
    data,
    list(sm.output),
    model=sm.wildcards.model,
    num_classes=sm.params.num_classes,
    arms=sm.params.arms,
    settings=sm.config[sm.params.protocol],
    threads=sm.threads,
    code=sm.params.code,
    log=log,
)
