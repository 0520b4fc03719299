"""Data sets that fetch themselves: the data set table's download columns, which download jobs
a study needs, the free-space check before them, one archive's job, and ImageNet's official
archives unpacked by the workflow.

A row lists its files in four columns, space-separated and aligned (one entry per file):

* ``download_urls``: where each file is (``http://`` or ``https://``);
* ``download_checksums``: its pinned checksum, ``md5:<hex>`` or ``sha256:<hex>``;
* ``download_bytes``: its size in bytes (the free-space check; the download verifies the
  checksum, not the size);
* ``download_creates``: the path under config ``data_root`` the file becomes. An archive
  (``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz``, ``.zip``) must hold a top-level
  entry of that path's last name: only that entry is moved there (CUB's stray top-level
  ``attributes.txt`` is dropped); any other file is moved there as it is.

An ImageNet row (kind ``imagenet``) lists no URL: the workflow never downloads ImageNet
(registration). Its ``download_checksums`` may pin the three official archives, in the order
``ILSVRC2012_img_train.tar``, ``ILSVRC2012_img_val.tar``, ``ILSVRC2012_devkit_t12.tar.gz``
(empty: the published MD5s of :mod:`~workflow_scripts.datasets.imagenet_archives`).

With config ``data_download: true`` (which states that the user accepts each data set's terms,
README "Run the paper") a download job (:func:`fetch_archive`) runs for every file whose
``download_creates`` path is not there yet; each leaves a record (URL, checksum, size, date)
at :data:`RECORD`. A data set's integrity jobs wait for the records of its files
(:func:`needed_records`): once a record exists the edge stays, and a data set already in place
gets no edge, so neither turning the key on nor off reruns a finished study.

Nothing runs at import time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

#: The download columns of the data set table, in the order the entries are aligned.
COLUMNS = ("download_urls", "download_checksums", "download_bytes", "download_creates")
#: File names unpacked (tar in any compression, zip); any other file is moved as it is.
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
#: The record a download job leaves (its Snakemake output), relative to the working directory.
RECORD = "results/data_downloads/{dataset}/{name}.json"
#: The record of ImageNet's unpacked official archives.
IMAGENET_RECORD = "results/data_downloads/{dataset}/ILSVRC2012.json"
#: Downloads in progress and verified archives waiting to be unpacked, under data_root.
STAGING = ".downloads"
#: The order of an ImageNet row's ``download_checksums`` (imagenet_archives.ARCHIVES names).
IMAGENET_ORDER = ("train", "val", "devkit")
#: A download job's further tries after a network failure or a short body (each resuming) and
#: the first back-off in seconds (doubling): the job retries itself, so the rule needs none
#: (a Snakemake retry reruns every failure, a permanent checksum mismatch too).
RETRIES, BACKOFF = 3, 5.0


class DownloadSpecError(ValueError):
    """A data set row's download columns are inconsistent (the message names the column)."""


class SpaceError(RuntimeError):
    """Too little disk space for the pending downloads (the message says how much is missing)."""


@dataclasses.dataclass(frozen=True)
class Archive:
    """One file of a data set row's download columns."""

    dataset: str
    url: str
    checksum: str
    size: int
    creates: str

    @property
    def name(self) -> str:
        """The file name of the URL (query and fragment left out)."""
        return unquote(PurePosixPath(urlsplit(self.url).path).name)

    @property
    def unpacks(self) -> bool:
        return self.name.lower().endswith(ARCHIVE_SUFFIXES)

    def target(self, data_root: str | Path) -> Path:
        return Path(data_root) / self.creates

    def staged(self, data_root: str | Path) -> Path:
        """Where the file is downloaded to (and its ``.part`` beside it)."""
        return Path(data_root) / STAGING / self.dataset / self.name

    @property
    def record(self) -> str:
        return RECORD.format(dataset=self.dataset, name=self.name)

    def params(self) -> dict:
        return dataclasses.asdict(self)


def _entries(row: dict, column: str) -> list[str]:
    value = row.get(column)
    return [] if value is None else str(value).split()


def archives(row: dict) -> list[Archive]:
    """The files of a data set row's download columns (none when the columns are empty).
    Raises :class:`DownloadSpecError` naming the column of an inconsistent entry."""
    from workflow_scripts.fetch import parse_checksum

    cells = {column: _entries(row, column) for column in COLUMNS}
    if row.get("kind") == "imagenet":
        given = [c for c in COLUMNS if cells[c] and c != "download_checksums"]
        if given:
            raise DownloadSpecError(
                f"column '{given[0]}' must be empty for kind 'imagenet': the workflow never "
                "downloads ImageNet (registration); put its three archives into the root folder"
            )
        imagenet_checksums(row)
        return []
    if not any(cells.values()):
        return []
    counts = {column: len(cells[column]) for column in COLUMNS}
    if len(set(counts.values())) != 1:
        listed = ", ".join(f"'{c}' {n}" for c, n in counts.items())
        raise DownloadSpecError(
            f"the download columns list one entry per file, space-separated: {listed} entries"
        )
    files = []
    for url, checksum, size, creates in zip(*cells.values()):
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise DownloadSpecError(f"column 'download_urls': '{url}' is no http(s) URL")
        try:
            parse_checksum(checksum)
        except ValueError as error:
            raise DownloadSpecError(f"column 'download_checksums': {error}") from None
        if not size.isdigit() or int(size) <= 0:
            raise DownloadSpecError(
                f"column 'download_bytes': '{size}' is no positive number of bytes"
            )
        path = PurePosixPath(creates)
        if path.is_absolute() or ".." in path.parts or creates.endswith("/") or "\\" in creates:
            raise DownloadSpecError(
                f"column 'download_creates': '{creates}' must be a relative path under "
                "data_root without '..'"
            )
        files.append(Archive(str(row["key"]), url, checksum, int(size), str(path)))
        if not files[-1].name:
            raise DownloadSpecError(f"column 'download_urls': '{url}' names no file")
    for column, values in (
        ("download_urls", [f.name for f in files]),
        ("download_creates", [f.creates for f in files]),
    ):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise DownloadSpecError(f"column '{column}': '{repeated[0]}' twice in one row")
    return files


def imagenet_checksums(row: dict) -> dict[str, str] | None:
    """An ImageNet row's pins of its three archives by name (train, val, devkit), or None
    (the published MD5s)."""
    from workflow_scripts.fetch import parse_checksum

    entries = _entries(row, "download_checksums")
    if not entries:
        return None
    if len(entries) != len(IMAGENET_ORDER):
        raise DownloadSpecError(
            f"column 'download_checksums': {len(entries)} entries; an ImageNet row pins its "
            "three archives in the order ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, "
            "ILSVRC2012_devkit_t12.tar.gz"
        )
    for entry in entries:
        try:
            parse_checksum(entry)
        except ValueError as error:
            raise DownloadSpecError(f"column 'download_checksums': {error}") from None
    return dict(zip(IMAGENET_ORDER, entries))


# ------------------------------------------------------------------------------------------
# planning: which jobs a study needs (evaluated when the DAG is built)


def needed_records(
    row: dict,
    data_root: str | Path,
    download: bool,
    exists: Callable[[str | Path], bool] = os.path.exists,
) -> list[str]:
    """The download records a data set's integrity jobs wait for: a file's record when it
    exists (the edge stays once made) or when ``download`` is on and the file's
    ``download_creates`` path is not under ``data_root`` yet."""
    return [
        a.record
        for a in archives(row)
        if exists(a.record) or (download and not exists(a.target(data_root)))
    ]


def imagenet_record(
    row: dict, data_root: str | Path, exists: Callable[[str | Path], bool] = os.path.exists
) -> list[str]:
    """[the ImageNet unpack record] when it exists or when the root holds the three official
    archives and neither ``train/`` nor ``val/``; else []."""
    from workflow_scripts.datasets import resolve_root

    record = IMAGENET_RECORD.format(dataset=row["key"])
    if exists(record):
        return [record]
    from workflow_scripts.datasets.imagenet_archives import ARCHIVES

    root = resolve_root(row, data_root)
    if all(exists(root / file) for file, _ in ARCHIVES.values()) and not any(
        exists(root / name) for name in ("train", "val")
    ):
        return [record]
    return []


def pending(rows: list[dict], data_root: str | Path, download: bool, exists=os.path.exists):
    """Params of the files the download jobs of this study will fetch (records needed and
    missing), for the free-space check."""
    return [
        a.params()
        for row in rows
        for a in archives(row)
        if download and not exists(a.record) and not exists(a.target(data_root))
    ]


# ------------------------------------------------------------------------------------------
# jobs


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def space_needed(archive: Archive, data_root: str | Path) -> int:
    """Bytes a file still needs under data_root: what is left to download, plus as much again
    for an archive's unpacked content (image archives barely compress), while both exist."""
    staged = archive.staged(data_root)
    have = 0
    for path in (staged, staged.with_name(staged.name + ".part")):
        if path.is_file():
            have = max(have, path.stat().st_size)
    left = max(archive.size - have, 0)
    return left + (archive.size if archive.unpacks else 0)


def _device(path: Path) -> tuple[int, Path]:
    probe = path.resolve()
    while not probe.exists():
        probe = probe.parent
    return probe.stat().st_dev, probe


def check_space(files: list[dict], data_root: str | Path, log: logging.Logger) -> dict:
    """Before a download: the free space of each file system under data_root against what the
    pending files need (:func:`space_needed`). Raises
    :class:`SpaceError` listing each file's size and what is missing; returns
    {folder: (needed, free)}."""
    groups: dict[int, dict] = {}
    for params in files:
        archive = Archive(**params)
        device, probe = _device(archive.target(data_root).parent)
        group = groups.setdefault(device, {"probe": probe, "needed": 0, "files": []})
        group["needed"] += space_needed(archive, data_root)
        group["files"].append(archive)
    report = {}
    short = []
    for group in groups.values():
        free = shutil.disk_usage(group["probe"]).free
        report[str(group["probe"])] = (group["needed"], free)
        log.info(
            "data_download: %d file(s) to fetch need %s under '%s' (%s free)",
            len(group["files"]),
            _gb(group["needed"]),
            group["probe"],
            _gb(free),
        )
        if free < group["needed"]:
            listing = "; ".join(
                f"{a.dataset} {a.name} {_gb(a.size)}"
                for a in sorted(group["files"], key=lambda a: -a.size)
            )
            short.append(
                f"'{group['probe']}' needs {_gb(group['needed'])} (each download, and as much "
                f"again while an archive is unpacked), {_gb(free)} are free: "
                f"{_gb(group['needed'] - free)} missing ({listing})"
            )
    if short:
        raise SpaceError(
            "not enough disk space for the data set downloads: "
            + " | ".join(short)
            + "; free space, point config data_root at a larger disk, or select fewer data sets"
        )
    return report


def fetch_archive(
    params: dict,
    data_root: str | Path,
    log: logging.Logger,
    pending: list[dict] | None = None,
    *,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """One download job: fetch a file of a data set row (resuming, ``retries`` times after a
    network failure or a short body; a permanent checksum mismatch is not fetched again: see
    :func:`workflow_scripts.fetch.download`), verify its pinned checksum, unpack it (or move
    it) to its ``download_creates`` path; return the record. A path that exists already is left
    alone and recorded as found in place. ``pending``: every file of the study still to fetch
    (:func:`pending`), whose free space is checked first (:func:`check_space`); without it,
    this file's alone."""
    from workflow_scripts import fetch

    archive = Archive(**params)
    target = archive.target(data_root)
    what = f"data set '{archive.dataset}', {archive.name}"
    record = {
        "dataset": archive.dataset,
        "url": archive.url,
        "checksum": archive.checksum,
        "bytes": archive.size,
        "creates": archive.creates,
        "data_root": str(data_root),
    }
    if target.exists():
        log.info("%s: '%s' is there already; nothing downloaded", what, target)
        return record | {"status": "found in place", "date": _now()}
    staged = archive.staged(data_root)
    check_space(pending if pending is not None else [archive.params()], data_root, log)
    fetch.download(
        archive.url,
        staged,
        archive.checksum,
        what=what,
        retries=retries,
        backoff=backoff,
        log=log,
        sleep=sleep,
    )
    if archive.unpacks:
        log.info("%s: unpacking into '%s'", what, target.parent)
        fetch.unpack(staged, target.parent, what=what, keep=target.name)
        staged.unlink()
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    log.info("%s: '%s' in place", what, target)
    return record | {"status": "downloaded", "date": _now()}


def unpack_imagenet(row: dict, data_root: str | Path, log: logging.Logger) -> dict:
    """The ImageNet unpack job: the three official archives under the row's root, checked
    against the row's pins (or the published MD5s) and unpacked into train/ and val/."""
    from workflow_scripts.datasets import resolve_root
    from workflow_scripts.datasets import imagenet_archives

    root = resolve_root(row, data_root)
    checksums = imagenet_checksums(row)
    counts = imagenet_archives.unpack(root, log=log, checksums=checksums)
    return {
        "dataset": row["key"],
        "root": str(root),
        "archives": {
            name: {
                "file": imagenet_archives.ARCHIVES[name][0],
                "checksum": (checksums or {}).get(name)
                or f"md5:{imagenet_archives.ARCHIVES[name][1]}",
            }
            for name in IMAGENET_ORDER
        },
        "counts": counts,
        "status": "unpacked",
        "date": _now(),
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
