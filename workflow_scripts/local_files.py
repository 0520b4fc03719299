"""The bytes of local files that jobs read but Snakemake cannot track by content.

A model row's ``url`` may name a local file (a timm row's weights, a checkpoint row's
checkpoint) and config ``results_tables`` names local tables. Snakemake compares files by
modification time, and a file replaced at the same path by one with an older time (``mv`` of an
earlier download, ``cp -p``, ``rsync -t``) would not rerun anything: every later run would use the
weights, features and tables of the old file. So the plan puts the sha256 of each such file into
the params of the job that reads it (Snakemake's ``params`` rerun trigger): replacing the bytes
reruns that job and what depends on it, a ``touch`` or a copy of the same bytes reruns nothing.

Hashing a checkpoint of a few GB takes seconds, and Snakemake plans the DAG on every call, so a
digest is kept in ``.snakemake/sslbench/sha256.json`` (relative to the run folder) under the
file's identity: its resolved path, size, inode, modification and status-change time. The
status-change time (``st_ctime``) moves on every write, rename into place or ``touch`` and no
tool sets it back, so any replacement is hashed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: The digest cache, relative to the run folder (Snakemake's working directory).
CACHE = Path(".snakemake") / "sslbench" / "sha256.json"

_memory: dict[str, str] = {}


def url_path(url: str | None) -> Path | None:
    """The local file a row's ``url`` names (a path or a ``file://`` URL, as the download reads
    it: ``checkpoints.url_kind``), or None for a download URL or an empty cell."""
    from workflow_scripts.checkpoints import url_kind
    from workflow_scripts.checkpoints.download import _local_source

    if not url or not str(url).strip():
        return None
    try:
        kind = url_kind(str(url))
    except ValueError:  # an unsupported scheme: the row check names it
        return None
    return _local_source(str(url), kind) if kind in ("local", "file") else None


def _identity(path: Path) -> str | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return json.dumps(
        [str(path.resolve()), stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]
    )


def _load_cache(cache: Path) -> dict:
    try:
        found = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _store(cache: Path, identity: str, digest: str) -> None:
    """Add one digest to the cache file, atomically; a cache that cannot be written (a
    read-only run folder) only costs a later re-hash."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        entries = _load_cache(cache)
        live = {key: value for key, value in entries.items() if Path(json.loads(key)[0]).exists()}
        live[identity] = digest
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(live, indent=0, sort_keys=True))
        os.replace(tmp, cache)
    except OSError:
        pass


def sha256(path: str | os.PathLike, cache: str | os.PathLike | None = CACHE) -> str | None:
    """Hex sha256 of the file's bytes; None when it does not exist (the job that reads it
    then fails naming it). Cached by the file's identity (module docstring)."""
    from workflow_scripts.io import sha256_file

    path = Path(path)
    identity = _identity(path)
    if identity is None or not path.is_file():
        return None
    if identity in _memory:
        return _memory[identity]
    cache = Path(cache) if cache is not None else None
    digest = _load_cache(cache).get(identity) if cache is not None else None
    if not isinstance(digest, str):
        digest = sha256_file(path)
        if cache is not None:
            _store(cache, identity, digest)
    _memory[identity] = digest
    return digest


def url_sha256(url: str | None) -> str | None:
    """The sha256 of the local file a ``url`` cell names; None for a download URL."""
    path = url_path(url)
    return sha256(path) if path is not None else None


def source_url(source: str | dict) -> str:
    """The url of a download rule's ``source`` param (``Plan.checkpoint_source``): the url
    itself, or for a local file ``{"url": ..., "sha256": ...}``."""
    return source["url"] if isinstance(source, dict) else source
