"""Rule linear_probe: all linear heads (arms x lrs x seeds) of a (model, data set) at once."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import pandas as pd

from workflow_scripts import runtime
from workflow_scripts.features import load_labelled, resolve_device
from workflow_scripts.io import save_csv
from workflow_scripts.linear import HeadSpec, Recipe, train_heads

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm, torch_threads=True)
model, cfg = sm.wildcards.model, sm.params.linear
# run-time key (not part of the result's identity): "auto" = CUDA when visible
device = resolve_device(sm.config.get("linear", {}).get("device", "auto"), "linear.device")
log.info("linear heads train on %s", device)
heads = [HeadSpec(arm, lr, seed) for arm in sm.params.arms for lr in cfg["base_lrs"]
         for seed in cfg["seeds"]]
recipe = Recipe.from_config(cfg)
for i, dataset in enumerate(sm.params.datasets):
    xtr, ytr = load_labelled(sm.input.train[i], sm.input.train_labels[i], model, dataset, "train")
    xte, yte = load_labelled(sm.input.test[i], sm.input.test_labels[i], model, dataset, "test")
    results, _ = train_heads(xtr, ytr, xte, yte, sm.params.num_classes[i], heads, recipe,
                             device=device)
    frame = pd.DataFrame(results).assign(model=model, dataset=dataset, protocol="linear",
                                         code_version=sm.params.code, device=device.type)
    save_csv(sm.output[i], frame)
    log.info("%s / %s: %s", model, dataset, frame[["arm", "base_lr", "seed", "top1"]].to_dict("records"))
