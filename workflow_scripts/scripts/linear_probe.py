"""Rule linear_probe: all linear heads (arms x lrs x seeds) of a (model, data set) at once."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import linear, runtime
from workflow_scripts.features import labelled_splits, resolve_device

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm, torch_threads=True)
model = sm.wildcards.model
# run-time key (not part of the result's identity): "auto" = CUDA when visible
device = resolve_device(sm.config.get("linear", {}).get("device", "auto"), "linear.device")
log.info("linear heads train on %s", device)
data = labelled_splits(model, sm.params.datasets, sm.input.train, sm.input.train_labels,
                       sm.input.test, sm.input.test_labels)
linear.run_job(data, list(sm.output), model=model, num_classes=sm.params.num_classes,
               arms=sm.params.arms, cfg=sm.params.linear, device=device, code=sm.params.code,
               log=log)
