"""Rules f1_* .. f9_* (registry.FIGURES): render one figure (PNG and PDF) from the result
tables, with plot() of the figure's own module workflow_scripts/figures/<name>.py (loaded by
name: the rule's code hash covers that module and what it imports, not the other figures)."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import importlib

import pandas as pd

from workflow_scripts import kept_figures, runtime

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
figure = importlib.import_module(f"workflow_scripts.figures.{sm.params.figure}")
frames = [pd.read_csv(path) for path in sm.input]  # the registry's input order
figure.plot(*frames, dict(sm.params.options), sm.output.png, sm.output.pdf)
# a copy the Snakefile's onerror puts back should a later run of this figure fail
kept_figures.keep(sm.output.png, sm.output.pdf)
log.info("wrote %s and %s", sm.output.png, sm.output.pdf)
