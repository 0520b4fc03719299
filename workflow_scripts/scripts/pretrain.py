"""Rule pretrain: train one demo model inside the workflow; write its backbone as safetensors."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import time

import numpy as np

from workflow_scripts import runtime
from workflow_scripts.backbones import save_weights
from workflow_scripts.io import save_json, sha256_file
from workflow_scripts.pretrain.loop import pretrain

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm, torch_threads=True)
row, hp = sm.params.row, sm.params.hp
images, labels = np.load(sm.input.images), np.load(sm.input.labels)
started = time.perf_counter()
backbone, history = pretrain(
    arch=row["arch"],
    embedding=row["embedding"],
    method=row["method"],
    images=images,
    labels=labels,
    num_classes=sm.params.num_classes,
    steps=row["steps"],
    seed=row["seed"],
    hp=hp,
)
seconds = time.perf_counter() - started
save_weights(backbone, sm.output.weights, metadata={"model": row["key"], "arch": row["arch"]})
save_json(
    sm.output.sidecar,
    {
        "model": row["key"],
        "method": row["method"],
        "arch": row["arch"],
        "embedding": row["embedding"],
        "source": "demo",
        "steps": row["steps"],
        "seed": row["seed"],
        "hyperparameters": hp,
        "train_seconds": round(seconds, 2),
        "loss_history": history,
        "sha256": sha256_file(sm.output.weights),
        "embed_dim": int(backbone.embed_dim),
    },
)
log.info(
    "pre-trained %s (%s, %d steps) in %.1f s", row["key"], row["method"], row["steps"], seconds
)
