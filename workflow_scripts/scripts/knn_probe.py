"""Rule knn_probe: k-NN on cached features, raw and z-scored (BN) arms, per data set."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import numpy as np
import pandas as pd

from workflow_scripts import runtime
from workflow_scripts.features import load_features
from workflow_scripts.io import save_csv
from workflow_scripts.knn import evaluate_knn

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
model = sm.wildcards.model
for i, dataset in enumerate(sm.params.datasets):
    xtr = load_features(sm.input.train[i], model, dataset, "train")
    xte = load_features(sm.input.test[i], model, dataset, "test")
    ytr, yte = np.load(sm.input.train_labels[i]), np.load(sm.input.test_labels[i])
    rows = evaluate_knn(xtr, ytr, xte, yte, k=sm.params.k, num_classes=sm.params.num_classes[i],
                        arms=tuple(sm.params.arms), threads=sm.threads)
    frame = pd.DataFrame(rows).assign(model=model, dataset=dataset, protocol="knn",
                                      code_version=sm.params.code)
    save_csv(sm.output[i], frame)
    log.info("%s / %s: %s", model, dataset, frame[["arm", "top1", "top5"]].to_dict("records"))
