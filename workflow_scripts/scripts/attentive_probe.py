"""Rule attentive_probe: the attentive probe (efficient probing) on the frozen tokens of each
data set of the job, raw and BN arms (workflow_scripts.attentive.run_job)."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import attentive, devices, runtime

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm, torch_threads=True)
devices.check_requested_gpus(sm, log)  # a granted GPU that is not there: fail now
attentive.run_job(
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
    # the whole section: the params carry its keys that change a result, device is read here
    settings=sm.config["attentive"],
    sources=sm.params.sources,
    transform=sm.params.transform,
    options=sm.config["features"] | sm.params.options,
    data_root=sm.config["data_root"],
    code=sm.params.code,
    log=log,
)
