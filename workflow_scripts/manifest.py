"""The run manifest: what made a results table (code, packages, configuration, tables,
devices, date), written beside the accuracy table (rule accuracy_table)."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git_commit(root: Path) -> dict | None:
    """HEAD of the repository at ``root`` and whether its tracked files differ (None without
    git or outside a checkout)."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "modified": bool(status.stdout.strip())}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pinned_versions(requirements: Path) -> dict[str, dict[str, str | None]]:
    """Per package pinned in ``requirements`` (``name==version`` lines): the pin and the version
    installed in this environment (None when missing)."""
    from importlib import metadata

    out = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" not in line:
            continue
        name, pin = (part.strip() for part in line.split("==", 1))
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        out[name] = {"pinned": pin, "installed": installed}
    return out


def run_manifest(
    config: dict, tables: dict[str, Path], devices: dict[str, list[str]], root: Path = ROOT
) -> dict:
    """What made a results table: code (git commit, or None), the pinned packages as installed,
    Snakemake and Python, the configuration (sha256 of its sorted JSON, defaults included),
    the model and data set tables (sha256 of the files), the devices each protocol ran on and
    the date (UTC)."""
    import datetime
    import json
    import platform
    from importlib import metadata

    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return {
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git": _git_commit(root),
        "python": platform.python_version(),
        "snakemake": metadata.version("snakemake"),
        "packages": pinned_versions(root / "requirements.txt"),
        "config_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "tables": {
            name: {"path": str(path), "sha256": _sha256(path)} for name, path in tables.items()
        },
        "devices": devices,
    }
