"""Rules collect_trained and proxies_table: CSV files with one header in one file, byte for
byte (a trained protocol's (run, arm) rows; every job's proxy rows)."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime
from workflow_scripts.io import concat_csv

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
concat_csv(list(sm.input), sm.output[0])
log.info("%d files -> %s", len(sm.input), sm.output[0])
