"""Rule download_checkpoint: fetch one model's checkpoint, verify or report its sha256."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime
from workflow_scripts.checkpoints.download import run_job
from workflow_scripts.io import resolve_path
from workflow_scripts.local_files import source_url

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
p = sm.params
# The table only names the row to pin in the message of an unpinned download: it is
# deliberately not a param (no re-download when the same rows move to another table).
table = resolve_path(sm.config["models_table"], _bootstrap.ROOT)
run_job(
    source_url(p.source),
    sm.output.raw,
    sm.output.sha256,
    model=p.model,
    sha256=p.sha256,
    table=table,
    log=log,
    **p.settings,
)
