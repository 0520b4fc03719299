"""Real pre-trained checkpoints: download (``download``) and one-off conversion (``convert``).

A model-table row with ``source = checkpoint`` names a ``url`` and a source ``format``. The
download step fetches the file (``results/downloads/{model}.ckpt``, checked against the row's
``sha256``); the conversion step -- the only place a pickle is ever opened, with torch's
weights-only loader or the restricted one of ``workflow_scripts.safe_pickle`` -- extracts the
backbone and writes ``results/checkpoints/{model}.safetensors``, which every later step loads
strictly. This module holds only names and URL parsing (no torch), so the configuration is
validated against it at Snakefile parse time.
"""

from __future__ import annotations

import re
import urllib.parse

# Source format -> backbone families, layout and extractor: one registration per format in
# ``formats`` (no torch). Every pickled format is read without running code from the file
# (convert.load_checkpoint).
from workflow_scripts.checkpoints.formats import FORMATS  # noqa: F401 - the package's name for it

GDRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")


def gdrive_id(url: str) -> str | None:
    """The file id of a Google Drive link, or None if ``url`` is not one."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in GDRIVE_HOSTS:
        return None
    query = urllib.parse.parse_qs(parts.query)
    if query.get("id"):
        return query["id"][0]
    match = re.search(r"/d/([A-Za-z0-9_-]+)", parts.path)
    return match.group(1) if match else ""


def url_kind(url: str) -> str:
    """'gdrive', 'http', 'file' or 'local'; ValueError for anything else."""
    if "://" not in url:
        if not url.strip():
            raise ValueError("empty URL")
        return "local"
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        found = gdrive_id(url)
        if found == "":
            raise ValueError(f"Google Drive link without a file id: {url}")
        return "gdrive" if found else "http"
    if scheme == "file":
        if not urllib.parse.urlsplit(url).path:
            raise ValueError(f"file URL without a path: {url}")
        return "file"
    raise ValueError(
        f"unsupported URL scheme '{scheme}' in {url} (use https, http, file:// or a local path)"
    )


def conversion_spec(row, settings: dict) -> dict:
    """The keyword arguments of ``convert.convert`` for one model-table row (a mapping) and the
    filled ``checkpoints`` config section: exactly what changes the converted weights."""
    options = {}
    if row["format"] == "moco_v3":
        options["moco_v3_encoder"] = settings["moco_v3_encoder"]
    return {
        "model": row["key"],
        "arch": row["arch"],
        "embedding": row["embedding"],
        "fmt": row["format"],
        "url": row["url"],
        "sha256": row.get("sha256") or None,
        "trusted": bool(row.get("trusted")),
        "options": options,
    }
