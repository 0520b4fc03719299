"""Rule generate_dataset: render one synthetic data set's train and test splits."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime, synthetic
from workflow_scripts.io import save_npy

log = runtime.setup(snakemake)  # noqa: F821 - injected by Snakemake
row = snakemake.params.row  # noqa: F821
for split in ("train", "test"):
    images, labels = synthetic.generate(
        row["generator"], row["variant"], row[f"n_{split}"], row["seed"], split
    )
    save_npy(snakemake.output[f"{split}_images"], images)  # noqa: F821
    save_npy(snakemake.output[f"{split}_labels"], labels)  # noqa: F821
    log.info("%s %s: %s images, %d classes", row["key"], split, images.shape, len(set(labels)))
