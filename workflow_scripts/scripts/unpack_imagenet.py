"""Rule unpack_imagenet: ImageNet's three official archives in its root, checked against
their pinned checksums, unpacked into train/ and val/ (val sorted by the devkit's ground
truth); records the archives and the counts."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime
from workflow_scripts.datasets.downloads import unpack_imagenet
from workflow_scripts.io import save_json

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
row = sm.params.row | {"download_checksums": sm.params.checksums}
save_json(sm.output[0], unpack_imagenet(row, sm.config["data_root"], log))
