"""Rule extract_features: embed the train and test splits of one or more data sets."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import numpy as np

from workflow_scripts import runtime
from workflow_scripts.backbones import load_backbone
from workflow_scripts.features import array_batches, extract, sha256_file, write_features

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm, torch_threads=True)
model = sm.params.model
backbone = load_backbone(sm.input.weights, model["arch"], model["embedding"])
weights_sha = sha256_file(sm.input.weights)
jobs = zip(sm.params.datasets, sm.params.splits, sm.input.images, sm.input.labels,
           sm.output.features, sm.output.sidecars, strict=True)
for dataset, split, images_path, labels_path, out, sidecar in jobs:
    images = np.load(images_path)
    feats = extract(backbone, array_batches(images, sm.params.transform, sm.params.batch_size), len(images))
    write_features(out, sidecar, feats, model=model["key"], dataset=dataset, split=split,
                   dtype=sm.params.dtype, weights_sha256=weights_sha, transform=sm.params.transform,
                   labels_path=labels_path)
    log.info("%s / %s / %s: %s", model["key"], dataset, split, feats.shape)
