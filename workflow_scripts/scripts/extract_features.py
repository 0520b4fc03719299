"""Rule extract_features: embed the train and test splits of one or more data sets.

Synthetic sets are read from their uint8 arrays, real ones through their adapter and the paper
transform (file list from the integrity rule); device, batch size, loader workers, precision
and channels-last come from the configuration's ``features`` section. Each split is written
into a memory-mapped temporary .npy and renamed when complete (``features.run_job``).
"""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import devices, features, runtime
from workflow_scripts.backbones import load_job_backbone

sm = snakemake  # noqa: F821 - injected by Snakemake
options = sm.config["features"] | sm.params.options  # run-time keys + result keys
log = runtime.setup(sm, torch_threads=options["threads"])  # the job's other CPUs: loader workers
devices.check_requested_gpus(sm, log)  # a granted GPU that is not there: fail now
model = sm.params.model
features.run_job(
    load_job_backbone(sm.input.weights, model),
    weights=sm.input.weights,
    model=model["key"],
    datasets=sm.params.datasets,
    splits=sm.params.splits,
    images=sm.input.images,
    labels=sm.input.labels,
    features=sm.output.features,
    sidecars=sm.output.sidecars,
    sources=sm.params.sources,
    transform=sm.params.transform,
    options=options,
    data_root=sm.config["data_root"],
    log=log,
)
