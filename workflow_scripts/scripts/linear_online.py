"""Rule linear_online: the faithful linear probe (augmented images, frozen backbone) per data set."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import numpy as np
import pandas as pd

from workflow_scripts import runtime
from workflow_scripts.backbones import load_backbone
from workflow_scripts.io import save_csv
from workflow_scripts.linear import HeadSpec, Recipe
from workflow_scripts.online_probe import train_online

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm, torch_threads=True)
model, cfg, online = sm.params.model, sm.params.linear, sm.params.online
heads = [HeadSpec(arm, lr, seed) for arm in sm.params.arms for lr in cfg["base_lrs"]
         for seed in cfg["seeds"]]
for i, dataset in enumerate(sm.params.datasets):
    backbone = load_backbone(sm.input.weights, model["arch"], model["embedding"])
    results, _ = train_online(
        backbone, np.load(sm.input.train_images[i]), np.load(sm.input.train_labels[i]),
        np.load(sm.input.test_images[i]), np.load(sm.input.test_labels[i]),
        num_classes=sm.params.num_classes[i], heads=heads, recipe=Recipe.from_config(cfg),
        mean=sm.params.mean, std=sm.params.std, seed=online["seed"],
        authors_drift=online["authors_drift"],
    )
    frame = pd.DataFrame(results).assign(model=model["key"], dataset=dataset,
                                         protocol="linear_online", code_version=sm.params.code,
                                         device="cpu")  # train_online runs on the CPU
    save_csv(sm.output[i], frame)
    log.info("%s / %s: %s", model["key"], dataset, frame[["arm", "top1"]].to_dict("records"))
