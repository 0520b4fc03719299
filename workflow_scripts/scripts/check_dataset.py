"""Rule check_dataset: list one split of a real data set, check it against the table, write
its labels, file list and manifest (the inputs of every later step)."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime
from workflow_scripts.datasets import list_split
from workflow_scripts.datasets.integrity import check_split, save_file_list
from workflow_scripts.io import save_json, save_npy

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
row, split = sm.params.row, sm.wildcards.split
root, listing = list_split(row, split, sm.config["data_root"])
log.info("%s / %s: %d images under %s", row["key"], split, len(listing.items), root)
manifest = check_split(row, split, listing, root=root, allow_subset=sm.params.allow_subset)
save_npy(sm.output.labels, listing.labels)
save_file_list(sm.output.files, listing.items)
save_json(sm.output.manifest, manifest)
log.info(
    "%s / %s: %d images, %d of %d classes present, file list sha256 %s",
    row["key"],
    split,
    manifest["n"],
    manifest["classes_present"],
    manifest["num_classes"],
    manifest["files_sha256"],
)
