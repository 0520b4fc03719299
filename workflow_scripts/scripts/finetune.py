"""Rule finetune: the (run, arm) units of one job -- full fine-tuning or a few-shot subset, raw
or BN arm -- each in this process or in finetune.gpus data-parallel processes."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import pandas as pd

from workflow_scripts import finetune, runtime
from workflow_scripts.features import resolve_device
from workflow_scripts.io import concat_csv, load_npy, save_csv, sha256_file

sm = snakemake  # noqa: F821 - injected by Snakemake
run_time = sm.config["finetune"]  # device, workers, gpus, save_minutes: not params
threads = sm.config.get("threads", {}).get("finetune", 1)  # compute threads per process
log = runtime.setup(sm, torch_threads=threads)
device = resolve_device(run_time["device"], "finetune.device")
weights_sha = sha256_file(sm.input.weights)
split_args = {
    s: {"source": sm.params.source, "images_path": sm.input[f"{s}_images"],
        "labels_path": sm.input[f"{s}_labels"], "spec": sm.params.transform,
        "data_root": sm.config.get("data_root", "."), "workers": run_time["workers"]}
    for s in ("train", "test")
}
def files(name):
    """A named output as a list (Snakemake stores a single file as a plain string)."""
    value = getattr(sm.output, name, [])
    return [value] if isinstance(value, str) else list(value)


for unit, out in zip(sm.params.runs, files("runs"), strict=True):
    cfg = sm.params.recipes[unit["protocol"]]
    recipe = finetune.with_authors_quirks(finetune.recipe_from_config(cfg), sm.params.model["method"])
    spec = finetune.RunSpec(
        weights=sm.input.weights, weights_sha256=weights_sha, model=sm.params.model,
        protocol=unit["protocol"], subset_seed=unit["subset_seed"], arm=unit["arm"], recipe=recipe,
        index=None if unit["split"] is None else load_npy(unit["split"], f"the subset '{unit['split']}'"),
        train=split_args["train"], test=split_args["test"], num_classes=sm.params.num_classes,
        state_path=f"{sm.params.state_dir}/{unit['run']}_{unit['arm']}.pt",
        speed=finetune.Speed(device=str(device), precision=cfg["precision"], compile=cfg["compile"],
                             save_minutes=run_time["save_minutes"]),
        threads=threads, log_path=sm.log[0] if sm.log else None,
    )
    row = finetune.run(spec, processes=run_time["gpus"])
    frame = pd.DataFrame([row]).assign(model=sm.wildcards.model, dataset=sm.params.dataset,
                                       code_version=sm.params.code)
    save_csv(out, frame)
for out, parts in zip(files("gathered"), sm.params.gathered, strict=True):  # batch_runs
    concat_csv(parts, out)
