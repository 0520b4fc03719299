"""Rule finetune: full and few-shot fine-tuning of one model on the in-domain set, both arms."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import numpy as np
import pandas as pd

from workflow_scripts import finetune, runtime
from workflow_scripts.features import resolve_device
from workflow_scripts.io import save_csv, sha256_file
from workflow_scripts.sources import open_split

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm, torch_threads=True)
run_time = sm.config["finetune"]  # device and loader workers: not params, they rerun nothing
train, test = (open_split(sm.params.source, sm.input[f"{s}_images"], sm.input[f"{s}_labels"],
                          sm.params.transform, sm.config.get("data_root", "."), run_time.get("workers", 0))
               for s in ("train", "test"))
subsets = {}  # protocol -> {subset seed: indices}
for (pct, seed), path in zip(sm.params.fewshot_runs, sm.input.splits, strict=True):
    subsets.setdefault(f"fewshot{pct}", {})[seed] = np.load(path)
recipes = {p: finetune.recipe_from_config(sm.params.fewshot if p.startswith("fewshot") else sm.params.finetune)
           for p in sm.params.protocols}
rows = finetune.run_protocols(
    weights=sm.input.weights, model=sm.params.model, protocols=sm.params.protocols, arms=sm.params.arms,
    train=train, test=test, subsets=subsets, recipes=recipes, num_classes=sm.params.num_classes,
    state_dir=sm.params.state_dir, weights_sha256=sha256_file(sm.input.weights),
    device=resolve_device(run_time.get("device", "auto"), "finetune.device"),
)
for protocol, out in zip(sm.params.protocols, sm.output, strict=True):
    frame = pd.DataFrame(rows[protocol]).assign(model=sm.wildcards.model, dataset=sm.params.dataset,
                                                code_version=sm.params.code)
    save_csv(out, frame)
