"""Rule finetune: the (run, arm) units of one job -- full fine-tuning or a few-shot subset, raw
or BN arm -- each in this process or in finetune.gpus data-parallel processes."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import devices, finetune, runtime

sm = snakemake  # noqa: F821 - injected by Snakemake
run_time = sm.config["finetune"]  # device, workers, gpus, save_minutes: not params
threads = sm.config["threads"]["finetune"]  # compute threads per process
log = runtime.setup(sm, torch_threads=threads)
devices.check_requested_gpus(sm, log)  # a granted GPU that is not there: fail now
split_args = {
    s: {
        "source": sm.params.source,
        "images_path": sm.input[f"{s}_images"],
        "labels_path": sm.input[f"{s}_labels"],
        "spec": sm.params.transform,
        "data_root": sm.config["data_root"],
        "workers": run_time["workers"],
    }
    for s in ("train", "test")
}
specs = finetune.job_specs(
    weights=sm.input.weights,
    model=sm.params.model,
    runs=sm.params.runs,
    recipes=sm.params.recipes,
    train=split_args["train"],
    test=split_args["test"],
    num_classes=sm.params.num_classes,
    state_dir=sm.params.state_dir,
    run_time=run_time,
    threads=threads,
    log_files=list(sm.log),
)
finetune.run_job(
    specs,
    runtime.named_files(sm.output, "runs"),
    processes=run_time["gpus"],
    dataset=sm.params.dataset,
    code=sm.params.code,
    gathered_outputs=runtime.named_files(sm.output, "gathered"),  # batch_runs
    gathered_inputs=sm.params.gathered,
)
