"""Rule collect_trained: a trained protocol's (run, arm) result rows in one file, byte for byte."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts.io import concat_csv

sm = snakemake  # noqa: F821 - injected by Snakemake
concat_csv(list(sm.input), sm.output[0])
