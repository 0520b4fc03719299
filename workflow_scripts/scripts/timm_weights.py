"""Rule timm_weights: a timm row's pretrained weights (hub or local file) -> safetensors."""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime
from workflow_scripts.timm_models import fetch_weights

sm = snakemake  # noqa: F821 - injected by Snakemake
log = runtime.setup(sm, torch_threads=True)
spec = dict(sm.params.spec)
# a local file's planned sha256 is the rerun trigger only; the sidecar records the bytes read
spec.pop("source_sha256", None)
info = fetch_weights(
    sm.output.weights,
    sm.output.sidecar,
    **spec,
    cache_dir=sm.config["timm"]["cache_dir"],  # where the hub cache lives changes no result
)
log.info(
    "%s: %s from %s (sha256 %s) -> %s",
    info["model"],
    info["arch"],
    info["source_file"],
    info["source_sha256"],
    sm.output.weights,
)
