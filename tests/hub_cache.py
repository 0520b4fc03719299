"""A Hugging Face hub cache written by hand, in huggingface_hub's layout (the timm-row tests
run offline: HF_HUB_OFFLINE=1 and this cache)."""

import hashlib
import os
from pathlib import Path

from safetensors.torch import save_file

REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_layout(cache: Path, repo_id: str, state: dict) -> Path:
    """Write ``state`` as ``model.safetensors`` of ``repo_id`` the way huggingface_hub caches
    a download: the file under blobs/<sha256>, a relative symlink to it in
    snapshots/<commit>/, the commit in refs/main, and the repository's config.json."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / REVISION
    (folder / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(REVISION)
    for name, write in (
        ("model.safetensors", lambda p: save_file(state, str(p))),
        ("config.json", lambda p: p.write_text('{"architecture": "%s"}' % repo_id)),
    ):
        tmp = folder / "blobs" / "incoming"
        write(tmp)
        blob = folder / "blobs" / hashlib.sha256(tmp.read_bytes()).hexdigest()
        tmp.rename(blob)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot / "model.safetensors"
