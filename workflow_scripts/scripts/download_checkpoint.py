"""Rule download_checkpoint: fetch one model's checkpoint, verify or report its sha256."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime
from workflow_scripts.checkpoints.download import download, pin_message
from workflow_scripts.config import resolve_path
from workflow_scripts.io import atomic_path

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm)
p = sm.params
digest = download(p.url, sm.output.raw, model=p.model, sha256=p.sha256, log=log, **p.settings)
with atomic_path(sm.output.sha256) as tmp:
    tmp.write_text(f"{digest}  {p.model}.ckpt\n")
if not p.sha256:
    # Only for the message: the table path is deliberately not a param (no re-download when
    # the same rows move to another table).
    table = resolve_path(sm.config["models_table"], _bootstrap.ROOT)
    log.warning(pin_message(table, p.model, digest))
