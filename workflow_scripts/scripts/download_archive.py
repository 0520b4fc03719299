"""Rule download_archive: check the free disk space for every file of the study still to fetch,
then fetch one file of a data set row (resuming), verify its pinned checksum, unpack or move it
under data_root, and record URL, checksum and date."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import copy

from workflow_scripts import runtime
from workflow_scripts.config import load_study
from workflow_scripts.datasets import downloads
from workflow_scripts.io import save_json

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
# data_root is read from the config at run time, not a param: moving the data reruns nothing
data_root = sm.config["data_root"]
# the study's other files are read at run time too: adding a data set reruns no download
study = load_study(copy.deepcopy(dict(sm.config)), basedir=_bootstrap.ROOT)
pending = downloads.pending([study.dataset(k) for k in study.dataset_keys], data_root, True)
save_json(sm.output[0], downloads.fetch_archive(sm.params.file, data_root, log, pending))
