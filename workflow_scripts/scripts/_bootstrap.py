"""Make the ``workflow_scripts`` package importable from a rule script.

Snakemake puts a script's own directory on ``sys.path`` (not the repository root), so every
thin script starts with ``import _bootstrap``; this works locally, on cluster nodes and in
containers alike, with no environment variable to set.
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
