"""Rule accuracy_table: collect every probe result into results/tables/accuracy.csv, with the
run manifest (what made it) in results/tables/accuracy.json."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

import pandas as pd

from workflow_scripts import runtime
from workflow_scripts.io import resolve_path, save_csv, save_json
from workflow_scripts.manifest import ROOT, run_manifest
from workflow_scripts.results import accuracy_table, devices_by_protocol

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
frames = [pd.read_csv(path) for path in sm.input]
table = accuracy_table(
    frames,
    sm.params.models,
    sm.params.datasets,
    report=sm.params.report,
    report_lr=sm.params.report_lr,
)
save_csv(sm.output.table, table)
tables = {t: resolve_path(sm.config[f"{t}_table"], ROOT) for t in ("models", "datasets")}
save_json(sm.output.manifest, run_manifest(sm.config, tables, devices_by_protocol(frames)))
log.info("%d accuracy rows", len(table))
