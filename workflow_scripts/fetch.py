"""Fetch a public data set archive: a resumable HTTP download with progress, a pinned checksum,
a free-space check, and an atomic, path-checked unpack.

* :func:`download` streams into ``<target>.part`` and resumes it with an HTTP ``Range`` request
  after an interruption (a server that ignores the range starts over), in the same call after a
  back-off (``retries``) or in the next one. Only when the whole file has the pinned checksum
  (``md5:<hex>`` or ``sha256:<hex>``, :func:`parse_checksum`) is it renamed to ``target``; a
  mismatch deletes the partial file and names the archive, the URL and both checksums. A
  mismatch is permanent (no further download) when the whole file came in one response with its
  announced Content-Length, or when a download repeats the wrong checksum of an earlier one;
  resumed bytes, or a body of unknown length, get one download from the start to confirm.
  TLS certificates are always verified.
* :func:`check_space` refuses to start when a folder's file system lacks the bytes needed.
* :func:`unpack` extracts a tar (any compression) or zip archive into a hidden folder beside
  the destination and moves its top-level entries into place only when the extraction finished:
  nothing half-unpacked is ever under the name the adapters read. Entries with absolute paths or
  ``..`` components, and links, devices or files that would land outside, are refused (tar:
  Python's ``data`` extraction filter; zip: checked here, as ``zipfile`` would silently rewrite
  them).

Nothing runs at import time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import time
import zipfile
from pathlib import Path, PurePosixPath

from workflow_scripts.checkpoints.download import CHUNK, progress_bar

ALGORITHMS = ("md5", "sha256")
USER_AGENT = "sslbench-data-download"


class FetchError(RuntimeError):
    """An archive could not be fetched or unpacked (the message names it)."""


class _Transient(FetchError):
    """A failure another try may fix (a network error, a short body, HTTP 5xx, 408, 429)."""


def parse_checksum(text: str) -> tuple[str, str]:
    """``"md5:<32 hex>"`` or ``"sha256:<64 hex>"`` -> (algorithm, lower-case hex digest)."""
    algorithm, _, digest = str(text).partition(":")
    lengths = {"md5": 32, "sha256": 64}
    digest = digest.strip().lower()
    if (
        algorithm not in lengths
        or len(digest) != lengths[algorithm]
        or set(digest) - set("0123456789abcdef")
    ):
        raise ValueError(f"checksum '{text}' is not md5:<32 hex digits> or sha256:<64 hex digits>")
    return algorithm, digest


def file_digest(path: str | Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_space(folder: str | Path, needed: int, what: str) -> None:
    """Raise unless the file system of ``folder`` (or its nearest existing parent) has
    ``needed`` bytes free; the message gives needed, free and missing in GB."""
    probe = Path(folder).resolve()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        gb = 1e9
        raise FetchError(
            f"{what}: needs {needed / gb:.2f} GB under '{folder}', {free / gb:.2f} GB are free: "
            f"{(needed - free) / gb:.2f} GB missing"
        )


def _transfer(url: str, part: Path, *, what: str, timeout: float, log) -> bool:
    """One GET into ``part``, resuming it with a Range request when it holds bytes. Returns
    whether the whole file came in this response with its announced Content-Length (no bytes
    of an earlier try, no content encoding): a checksum mismatch of that is permanent. Raises
    :class:`_Transient` (the partial file kept) or :class:`FetchError` (HTTP 4xx, TLS)."""
    import requests

    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with requests.get(
            url, stream=True, timeout=(timeout, timeout), verify=True, headers=headers
        ) as response:
            if response.status_code == 416 and offset:  # the part file is already whole
                return False
            response.raise_for_status()
            resumed = bool(offset) and response.status_code == 206
            if offset and not resumed:
                log.info("%s: the server ignored the range; starting over", what)
                offset = 0
            length = response.headers.get("Content-Length")
            if response.headers.get("Content-Encoding", "identity") not in ("", "identity"):
                length = None  # the length counts the encoded bytes
            total = offset + int(length) if length and length.isdigit() else None
            mode = "ab" if resumed else "wb"
            with open(part, mode) as handle, progress_bar(total, what, log) as bar:
                bar.update(offset)
                for chunk in response.iter_content(CHUNK):
                    handle.write(chunk)
                    bar.update(len(chunk))
            if total is not None and part.stat().st_size != total:
                raise _Transient(
                    f"{what}: {url} ended after {part.stat().st_size} of {total} bytes; "
                    "the next try resumes"
                )
            return not resumed and total is not None
    except requests.RequestException as error:
        status = getattr(error.response, "status_code", None)
        permanent = isinstance(error, requests.exceptions.SSLError) or (
            status is not None and 400 <= status < 500 and status not in (408, 425, 429)
        )
        kept = part.stat().st_size if part.exists() else 0
        raise (FetchError if permanent else _Transient)(
            f"{what}: {url} failed ({type(error).__name__}: {error}); "
            + ("not retried" if permanent else f"{kept} bytes kept, the next try resumes")
        ) from error


def download(
    url: str,
    target: str | Path,
    checksum: str,
    *,
    what: str,
    timeout: float = 60.0,
    retries: int = 0,
    backoff: float = 5.0,
    log: logging.Logger | None = None,
    sleep=time.sleep,
) -> Path:
    """Fetch ``url`` to ``target`` (resuming ``<target>.part``) and verify ``checksum``.
    An existing ``target`` with the checksum is kept. ``retries``: further tries after a
    network failure or a short body (each resuming, after ``backoff`` seconds doubling each
    time) or after a mismatch that may not be permanent. Raises :class:`FetchError`: a network
    failure keeps the partial file for the next try, a checksum mismatch deletes it; a
    mismatch of the whole file with its announced length, or of the same wrong checksum twice,
    is raised at once (another download brings the same bytes)."""
    log = log or logging.getLogger(__name__)
    algorithm, expected = parse_checksum(checksum)
    target = Path(target)
    if target.is_file() and file_digest(target, algorithm) == expected:
        log.info("%s: %s is there with its %s", what, target, algorithm)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    attempts = retries + 1
    wrong: set[str] = set()  # the checksums of earlier, mismatching tries
    attempt = 0
    while True:
        attempt += 1
        try:
            whole = _transfer(url, part, what=what, timeout=timeout, log=log)
        except _Transient as error:
            if attempt == attempts:
                raise
            error_text = str(error)
        else:
            found = file_digest(part, algorithm)
            if found == expected:
                os.replace(part, target)
                log.info("%s: %s (%s %s)", what, target, algorithm, found)
                return target
            size = part.stat().st_size
            part.unlink()
            error_text = (
                f"{what}: {url} has {algorithm} {found} ({size} bytes), the data set table "
                f"pins {expected}; the download was deleted"
            )
            if whole or found in wrong:
                why = (
                    "the same checksum twice"
                    if found in wrong
                    else "the whole file came with its announced length"
                )
                raise FetchError(
                    f"{error_text} ({why}): a permanent mismatch, not downloaded again; check "
                    "the data set table's URL and checksum"
                )
            if attempt == attempts:
                raise FetchError(error_text)
            wrong.add(found)  # resumed bytes or an unknown length: one download to confirm
        delay = backoff * 2 ** (attempt - 1)
        log.warning("%s (try %d/%d); trying again in %.1f s", error_text, attempt, attempts, delay)
        sleep(delay)


def _zip_members(archive: zipfile.ZipFile, what: str) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    for info in members:
        path = PurePosixPath(info.filename.replace("\\", "/"))
        mode = info.external_attr >> 16
        if path.is_absolute() or ".." in path.parts or (mode & 0o170000) == 0o120000:
            raise FetchError(
                f"{what}: zip entry '{info.filename}' would be written outside the destination "
                "(absolute path, '..' or a link): refused"
            )
    return members


def unpack(
    archive: str | Path, destination: str | Path, *, what: str, keep: str | None = None
) -> list[str]:
    """Extract ``archive`` (tar in any compression, or zip) into ``destination``; return the
    top-level names it added. The entries appear there only once the whole archive is out; a
    top-level name that already exists is an error (nothing is overwritten). ``keep``: the one
    top-level entry the archive must hold, the only one moved into place (an archive without it
    is the wrong layout: an error naming what it holds)."""
    archive, destination = Path(archive), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    staging = destination / f".unpacking-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)  # what a killed unpack left
    staging.mkdir()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                handle.extractall(staging, members=_zip_members(handle, what))
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as handle:
                try:
                    handle.extractall(staging, filter="data")
                except tarfile.FilterError as error:
                    raise FetchError(f"{what}: tar entry refused: {error}") from error
        else:
            raise FetchError(f"{what}: '{archive}' is neither a tar nor a zip archive")
        names = sorted(os.listdir(staging))
        if keep is not None:
            if keep not in names:
                raise FetchError(
                    f"{what}: '{archive.name}' unpacks to {', '.join(names) or 'nothing'}, not "
                    f"'{keep}' (the data set table's download_creates): a different file or layout"
                )
            names = [keep]
        taken = [name for name in names if (destination / name).exists()]
        if taken:
            raise FetchError(
                f"{what}: '{destination / taken[0]}' exists already; move it away to unpack "
                f"'{archive.name}' again"
            )
        for name in names:
            os.replace(staging / name, destination / name)
        return names
    finally:
        shutil.rmtree(staging, ignore_errors=True)
