"""Atomic file output: nothing half-written is ever taken as done.

Every writer goes through :func:`atomic_path`, which hands out a temporary name in the target's
directory and renames it over the target only after the block finished without an exception
(``os.replace`` is atomic on POSIX within one file system). The file gets the mode any tool
gives a new file (0666 less the umask), and temporary files of the same target left by a
killed job are removed when the target is next written.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=1)
def _new_file_mode() -> int:
    """0666 less the process umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _remove_stale_temporaries(target: Path, suffix: str) -> None:
    """Temporary files of ``target`` that a killed writer left (mkstemp's pattern below)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}")
    with os.scandir(target.parent) as entries:
        for entry in entries:
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    ``suffix`` defaults to the target's own suffix, so libraries that infer the format from the
    file name (matplotlib, numpy) write the right format.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix if suffix is None else suffix
    _remove_stale_temporaries(target, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _new_file_mode())  # mkstemp creates 0600
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_safetensors(path: str | os.PathLike, state: dict, metadata: dict | None = None) -> None:
    """Write a state dict as safetensors, atomically and byte-deterministically.

    safetensors keeps the header's ``__metadata__`` in a hash map whose order changes from one
    process to the next, so several keys would give different bytes for the same weights. The
    metadata is therefore stored as one key, ``sslbench``, holding sorted JSON."""
    from safetensors.torch import save_file

    header = None
    if metadata:
        header = {"sslbench": json.dumps(metadata, sort_keys=True, separators=(",", ":"))}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=header)


def safetensors_metadata(path: str | os.PathLike) -> dict:
    """The metadata :func:`save_safetensors` stored ({} if none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    return json.loads(meta["sslbench"]) if "sslbench" in meta else {}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as a .npy file atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


class DataFileError(ValueError):
    """A result or data file that cannot be read as what it should be; the message names it."""


def load_npy(path: str | os.PathLike, what: str, mmap_mode: str | None = None) -> np.ndarray:
    """``np.load`` without pickles; a truncated or foreign file is an error naming the file and
    ``what`` it holds (e.g. "labels of data set 'x', split 'train'")."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
    except (ValueError, OSError, EOFError) as error:
        raise DataFileError(f"cannot read {what} from '{path}': {error}") from None


def load_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV (no index) atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def concat_csv(inputs, output: str | os.PathLike) -> None:
    """Concatenate CSV files that share one header, byte for byte, atomically (the rows of a
    trained protocol's (run, arm) jobs -> the protocol's result file)."""
    header = None
    rows: list[str] = []
    for path in inputs:
        lines = Path(path).read_text().splitlines(keepends=True)
        if not lines:
            raise DataFileError(f"'{path}' is empty (expected a CSV header)")
        if header is None:
            header = lines[0]
        elif lines[0] != header:
            raise DataFileError(
                f"'{path}' has the columns {lines[0].strip()!r}, "
                f"expected {header.strip()!r} like '{inputs[0]}'"
            )
        rows += lines[1:]
    if header is None:
        raise ValueError("no CSV files to concatenate")
    with atomic_path(output) as tmp:
        Path(tmp).write_text(header + "".join(rows))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def resolve_path(value: str, basedir: str | Path) -> Path:
    """A table path: relative to the working directory if it exists there, else to the
    workflow's base directory (so ``--directory`` runs find the shipped tables)."""
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    return Path(basedir) / path
