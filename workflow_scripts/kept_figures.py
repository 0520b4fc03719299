"""The last figure each figure job drew, kept so that a failed job does not take it away.

Snakemake deletes a job's outputs before the job starts and again when it fails, so a figure
job that fails (a bad option, a table it cannot draw) would leave no figure where the previous
run left one. Each figure job therefore copies what it wrote to :data:`FOLDER` (relative to the
run folder); when a run fails, the Snakefile's ``onerror`` puts the kept copy back for each
figure that is now missing (:func:`restore`). The restored file is dated one second after the
epoch (1970; Snakemake skips its time check for an output dated 0), older than any table, and
the failed job left no record of its inputs, so the next run draws that figure again
(Snakemake's mtime trigger): the previous figure is there to look at, never taken for the new
one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from workflow_scripts.io import atomic_path

FOLDER = Path(".snakemake") / "sslbench" / "kept_figures"
#: the time of a restored figure: 1970, older than any input (not 0, which Snakemake's
#: output-time check reads as "no time" and skips)
RESTORED_MTIME = 1


def keep(*paths: str | os.PathLike, folder: Path = FOLDER) -> None:
    """Copy each freshly written figure file to ``folder`` (atomically, same relative path)."""
    for path in map(Path, paths):
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)


def restore(paths, folder: Path = FOLDER) -> list[str]:
    """Put back the kept copy of each of ``paths`` that is missing; return those restored.
    Each restored file is dated :data:`RESTORED_MTIME` (1970), so the next run draws it again."""
    restored = []
    for path in map(Path, paths):
        kept = folder / path
        if path.exists() or not kept.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            shutil.copyfile(kept, tmp)
            os.utime(tmp, (RESTORED_MTIME, RESTORED_MTIME))
        restored.append(str(path))
    return restored
