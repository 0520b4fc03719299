"""sslbench: the importable logic behind the Snakemake workflow.

Every module here is importable without side effects (no work at import time); the thin
per-rule scripts in ``workflow_scripts/scripts`` only unpack the ``snakemake`` object and call
into these modules, so pytest tests exactly the code the workflow runs.
"""
