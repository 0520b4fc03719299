"""What the Snakefile's handlers tidy in the run folder, outside any job (so no job's code
identity includes it): the fine-tuning state folders a finished run left empty.

A fine-tuning job keeps its resumable state in ``results/state/finetune/<model>/`` (under
``results/seeds/<s>/`` for a run of ``demo.seeds``) and deletes the file when it completes;
the folders stay. After a successful run, :func:`remove_empty_state_folders` removes each
such folder that is empty, deepest first, never the ``state/finetune`` folder itself and
never a folder that still holds a state (a job that failed or was stopped resumes from it).
"""

from __future__ import annotations

import os
from pathlib import Path

#: the state folders' root, relative to a run's results/ (plan.state_dir)
STATE_ROOT = Path("state") / "finetune"


def state_roots(results: str | os.PathLike = "results") -> list[Path]:
    """results/state/finetune and each demo.seeds run's, those that exist."""
    results = Path(results)
    candidates = [results / STATE_ROOT]
    candidates += sorted((results / "seeds").glob(f"*/results/{STATE_ROOT.as_posix()}"))
    return [root for root in candidates if root.is_dir()]


def remove_empty_state_folders(results: str | os.PathLike = "results") -> list[str]:
    """Remove the empty folders below each state root (deepest first); return them."""
    removed = []
    for root in state_roots(results):
        for folder, _subfolders, _files in sorted(os.walk(root), reverse=True):
            if Path(folder) == root:
                continue
            try:
                os.rmdir(folder)  # only an empty folder goes
            except OSError:
                continue
            removed.append(folder)
    return removed
