"""Rules f1_* .. f6_* (registry.FIGURES): render one figure (PNG and PDF) from the result
tables."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import pandas as pd

from workflow_scripts import figures, runtime

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
tables = {name: pd.read_csv(path) for name, path in sm.input.items()}
figures.render(sm.params.figure, tables, dict(sm.params.options), sm.output.png, sm.output.pdf)
log.info("wrote %s and %s", sm.output.png, sm.output.pdf)
