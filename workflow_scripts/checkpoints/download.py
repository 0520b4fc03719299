"""Download one checkpoint: https/http, Google Drive (gdown), file:// URLs and local paths.

Every attempt streams into a temporary file next to the target while hashing it; the file is
renamed onto the target only when it is complete and, if the table pins a sha256, matches it.
A failed attempt (network error, truncated body) is retried after an exponentially growing
back-off; when all attempts fail nothing is left at the target and the error names the model.
A checksum mismatch is retried only while it may be a corrupted transfer: when the whole file
came (the announced Content-Length, or a local file read to its end) or when a download gives
the same wrong digest as an earlier one, the next download would bring the same bytes, so it
fails at once naming the model, the URL and both digests (issue 28: it was fetched
``retries + 1`` times). TLS certificates are always verified (``verify=True`` on every request;
there is no switch to turn it off). Progress goes to the log through tqdm.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
import urllib.parse
import urllib.request
from pathlib import Path

from workflow_scripts.checkpoints import gdrive_id, url_kind
from workflow_scripts.io import atomic_path, sha256_file

CHUNK = 1 << 20
USER_AGENT = "sslbench-checkpoint-download"


class DownloadError(RuntimeError):
    """A checkpoint could not be fetched (the message names the model and the URL)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the pinned sha256. ``complete``: the whole file came
    (its announced length, or a local file read to its end), so another download brings the
    same bytes."""

    def __init__(self, digest: str, pinned: str, complete: bool, size: int) -> None:
        super().__init__(f"sha256 mismatch: got {digest}, the table pins {pinned}")
        self.digest, self.pinned, self.complete, self.size = digest, pinned, complete, size


class _Permanent(DownloadError):
    """A failure that a retry cannot fix (missing local file, HTTP 404, ...)."""


class _LogStream(io.TextIOBase):
    """File-like sink that turns tqdm's status lines into log records."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log

    def write(self, text: str) -> int:
        line = text.strip("\r\n\x1b[A ")
        if line:
            self.log.info(line)
        return len(text)

    def flush(self) -> None:
        pass


def progress_bar(total: int | None, desc: str, log: logging.Logger):
    """A tqdm byte counter whose status lines go to ``log`` (at most every 10 s)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        ascii=True,
        file=_LogStream(log),
        mininterval=10.0,
        dynamic_ncols=False,
        ncols=100,
    )


def _copy_stream(chunks, fh, digest, bar) -> int:
    size = 0
    for chunk in chunks:
        if chunk:
            fh.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
            size += len(chunk)
    return size


def _fetch_http(url: str, tmp: Path, model: str, timeout: float, log) -> tuple[str, bool]:
    """(sha256, whether the body had its announced Content-Length)."""
    import requests

    digest = hashlib.sha256()
    try:
        with requests.get(
            url,
            stream=True,
            timeout=(timeout, timeout),
            verify=True,
            headers={"User-Agent": USER_AGENT},
            allow_redirects=True,
        ) as response:
            status = response.status_code
            if 400 <= status < 500 and status not in (408, 425, 429):
                raise _Permanent(f"HTTP {status} {response.reason} for {url}")
            response.raise_for_status()
            expected = response.headers.get("Content-Length")
            expected = int(expected) if expected and expected.isdigit() else None
            if response.headers.get("Content-Encoding", "identity") not in ("", "identity"):
                expected = None  # the length counts encoded bytes
            with open(tmp, "wb") as fh, progress_bar(expected, model, log) as bar:
                size = _copy_stream(response.iter_content(CHUNK), fh, digest, bar)
    except requests.exceptions.SSLError as error:
        raise _Permanent(f"TLS verification failed for {url}: {error}") from error
    except requests.RequestException as error:
        raise DownloadError(f"{type(error).__name__}: {error}") from error
    if expected is not None and size != expected:
        raise DownloadError(f"truncated download: {size} of {expected} bytes from {url}")
    return digest.hexdigest(), expected is not None


def _fetch_gdrive(url: str, tmp: Path, model: str, timeout: float, log) -> tuple[str, bool]:
    """(sha256, False): gdown checks no length."""
    import gdown

    file_id = gdrive_id(url)
    bar = progress_bar(None, model, log)

    def progress(done: int, total: int | None) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        with open(tmp, "wb") as fh, bar:
            # gdown handles the "file too large to scan" confirm page; verify stays on.
            gdown.download(
                id=file_id,
                output=fh,
                quiet=True,
                verify=True,
                use_cookies=False,
                progress=progress,
                timeout=timeout,
            )
    except Exception as error:  # gdown raises several of its own and requests' errors
        raise DownloadError(
            f"Google Drive file {file_id}: {type(error).__name__}: {error}"
        ) from error
    return sha256_file(tmp), False


def _local_source(url: str, kind: str) -> Path:
    if kind == "file":
        parts = urllib.parse.urlsplit(url)
        return Path(urllib.request.url2pathname(parts.path))
    return Path(url).expanduser()


def _fetch_local(url: str, kind: str, tmp: Path, model: str, log) -> tuple[str, bool]:
    """(sha256, True): the file was read to its end."""
    source = _local_source(url, kind)
    if not source.is_file():
        raise _Permanent(f"local checkpoint '{source}' does not exist")
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(tmp, "wb") as fh:
        with progress_bar(source.stat().st_size, model, log) as bar:
            _copy_stream(iter(lambda: src.read(CHUNK), b""), fh, digest, bar)
    return digest.hexdigest(), True


def download(
    url: str,
    target: str | Path,
    *,
    model: str,
    sha256: str | None = None,
    retries: int = 3,
    backoff: float = 5.0,
    timeout: float = 60.0,
    log: logging.Logger | None = None,
    sleep=time.sleep,
) -> str:
    """Fetch ``url`` to ``target``; return the sha256 of the bytes written.

    Raises :class:`DownloadError` (naming ``model`` and ``url``) after ``retries + 1`` failed
    attempts, or at once for a permanent failure (HTTP 4xx, TLS, a missing local file, a
    sha256 mismatch of a complete transfer or one that repeats its wrong digest); ``target``
    then does not exist.
    """
    log = log or logging.getLogger(__name__)
    try:
        kind = url_kind(url)
    except ValueError as error:
        raise DownloadError(f"model '{model}': {error}") from None
    pinned = sha256.lower() if sha256 else None
    attempts = retries + 1
    last: Exception | None = None
    wrong: set[str] = set()  # the wrong digests of earlier attempts
    for attempt in range(1, attempts + 1):
        log.info("model %s: attempt %d/%d: %s (%s)", model, attempt, attempts, url, kind)
        started = time.perf_counter()
        try:
            with atomic_path(target) as tmp:
                if kind == "http":
                    digest, complete = _fetch_http(url, tmp, model, timeout, log)
                elif kind == "gdrive":
                    digest, complete = _fetch_gdrive(url, tmp, model, timeout, log)
                else:
                    digest, complete = _fetch_local(url, kind, tmp, model, log)
                if pinned and digest != pinned:
                    raise ChecksumError(digest, pinned, complete, tmp.stat().st_size)
            seconds = time.perf_counter() - started
            size = Path(target).stat().st_size
            log.info(
                "model %s: %d bytes in %.1f s, sha256 %s%s",
                model,
                size,
                seconds,
                digest,
                " (matches the pinned value)" if pinned else "",
            )
            return digest
        except _Permanent as error:
            raise DownloadError(f"model '{model}': cannot download {url}: {error}") from None
        except (DownloadError, OSError) as error:
            if isinstance(error, ChecksumError):
                if error.complete or error.digest in wrong:
                    why = (
                        "the same digest twice"
                        if error.digest in wrong
                        else f"the whole file came ({error.size} bytes)"
                    )
                    raise DownloadError(
                        f"model '{model}': cannot download {url}: {error} ({why}): a permanent "
                        "mismatch, not downloaded again; check the URL and the row's sha256"
                    ) from None
                wrong.add(error.digest)  # maybe a corrupted transfer: one more confirms
            last = error
            log.warning("model %s: attempt %d/%d failed: %s", model, attempt, attempts, error)
            if attempt < attempts:
                delay = backoff * 2 ** (attempt - 1)
                log.info("model %s: retrying in %.1f s", model, delay)
                sleep(delay)
    raise DownloadError(
        f"model '{model}': cannot download {url} after {attempts} attempt(s): {last}"
    )


def pin_message(table: str | Path, model: str, digest: str) -> str:
    """The table row of ``model`` with its sha256 filled in, ready to paste into ``table``."""
    lines = Path(table).read_text().splitlines() if Path(table).is_file() else []
    header = lines[0].split("\t") if lines else []
    text = (
        f"model '{model}' has no pinned sha256; pin it by setting column 'sha256' of row "
        f"'{model}' in {table} to {digest}"
    )
    if "sha256" not in header or "key" not in header:
        return text
    for line in lines[1:]:
        cells = line.split("\t")
        if cells and cells[header.index("key")] == model:
            cells += [""] * (len(header) - len(cells))
            cells[header.index("sha256")] = digest
            return text + ". The row to pin:\n" + "\t".join(cells)
    return text


def run_job(
    url: str,
    raw: str | Path,
    sha256_path: str | Path,
    *,
    model: str,
    sha256: str | None,
    table: str | Path,
    log: logging.Logger,
    **settings,
) -> str:
    """One download_checkpoint job: fetch ``url`` to ``raw`` (``settings``: retries, backoff,
    timeout), write ``sha256_path`` (``<digest>  <model>.ckpt``) and, when the table row pins
    no sha256, log the row of ``table`` with the digest filled in. Returns the digest."""
    digest = download(url, raw, model=model, sha256=sha256, log=log, **settings)
    with atomic_path(sha256_path) as tmp:
        tmp.write_text(f"{digest}  {model}.ckpt\n")
    if not sha256:
        log.warning(pin_message(table, model, digest))
    return digest
