"""Rule convert_checkpoint: the one unpickling step; backbone -> safetensors + JSON sidecar."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime
from workflow_scripts.checkpoints.convert import convert

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm, torch_threads=True)
info = convert(sm.input.raw, sm.output.weights, sm.output.sidecar, **sm.params.spec)
log.info(
    "converted %s (%s) -> %s, sha256 %s",
    info["model"],
    info["format"],
    sm.output.weights,
    info["sha256"],
)
