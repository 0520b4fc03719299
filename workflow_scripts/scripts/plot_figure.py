"""Rules f1_* .. f6_*: render one figure (PNG and PDF) from the result tables."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import pandas as pd

from workflow_scripts import figures, runtime

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
tables = {name: pd.read_csv(path) for name, path in sm.input.items()}
opts, png, pdf = dict(sm.params.options), sm.output.png, sm.output.pdf
if sm.params.figure == "f1":
    figures.plot_f1(tables["correlations"], opts, png, pdf)
elif sm.params.figure == "f2":
    figures.plot_f2(tables["correlations"], opts, png, pdf)
elif sm.params.figure == "f3":
    figures.plot_f3(tables["accuracy"], opts, png, pdf)
elif sm.params.figure == "f4":
    figures.plot_f4(tables["accuracy"], tables["correlations"], opts, png, pdf)
elif sm.params.figure == "f5":
    figures.plot_f5(tables["correlations"], opts, png, pdf)
elif sm.params.figure == "f6":
    figures.plot_f6(tables["accuracy"], opts, png, pdf)
else:
    raise ValueError(f"unknown figure '{sm.params.figure}'")
log.info("wrote %s and %s", png, pdf)
