"""Rule knn_probe: k-NN on cached features, raw and z-scored (BN) arms, per data set."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import pandas as pd

from workflow_scripts import runtime
from workflow_scripts.features import load_labelled, resolve_device
from workflow_scripts.io import save_csv
from workflow_scripts.knn import evaluate_knn

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
model = sm.wildcards.model
# run-time key (not part of the result's identity): "auto" = CUDA when visible; "cpu" runs
# faiss without importing torch (seconds per job on a small machine)
name = sm.config["knn"]["device"]
device = "cpu" if name == "cpu" else str(resolve_device(name, "knn.device"))
device_type = device.split(":")[0]
if device_type == "cuda":
    log.info("kNN candidate search on %s (torch matmul + topk, IEEE float32); exact re-rank "
             "on the CPU", device)
for i, dataset in enumerate(sm.params.datasets):
    xtr, ytr = load_labelled(sm.input.train[i], sm.input.train_labels[i], model, dataset, "train")
    xte, yte = load_labelled(sm.input.test[i], sm.input.test_labels[i], model, dataset, "test")
    rows = evaluate_knn(xtr, ytr, xte, yte, k=sm.params.k, num_classes=sm.params.num_classes[i],
                        arms=tuple(sm.params.arms), threads=sm.threads, device=device)
    frame = pd.DataFrame(rows).assign(model=model, dataset=dataset, protocol="knn",
                                      code_version=sm.params.code, device=device_type)
    save_csv(sm.output[i], frame)
    log.info("%s / %s: %s", model, dataset, frame[["arm", "top1", "top5"]].to_dict("records"))
