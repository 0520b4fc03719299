"""Rule knn_probe: k-NN on cached features, raw and z-scored (BN) arms, per data set."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import knn, runtime
from workflow_scripts.features import labelled_splits

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
model = sm.wildcards.model
data = labelled_splits(model, sm.params.datasets, sm.input.train, sm.input.train_labels,
                       sm.input.test, sm.input.test_labels)
# knn.device is a run-time key (not part of the result's identity): "auto" = CUDA when
# visible; "cpu" runs faiss without importing torch (seconds per job on a small machine)
knn.run_job(data, list(sm.output), model=model, num_classes=sm.params.num_classes,
            k=sm.params.k, arms=sm.params.arms, threads=sm.threads,
            device=sm.config["knn"]["device"], code=sm.params.code, log=log)
