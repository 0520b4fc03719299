"""Rule linear_online: the faithful linear probe (augmented images, frozen backbone) per data set."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import online_probe, runtime

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm, torch_threads=True)
online_probe.run_job(
    sm.input.weights,
    list(sm.output),
    model=sm.params.model,
    datasets=sm.params.datasets,
    train_images=sm.input.train_images,
    train_labels=sm.input.train_labels,
    test_images=sm.input.test_images,
    test_labels=sm.input.test_labels,
    num_classes=sm.params.num_classes,
    arms=sm.params.arms,
    cfg=sm.params.linear,
    online=sm.params.online,
    mean=sm.params.mean,
    std=sm.params.std,
    code=sm.params.code,
    log=log,
)
