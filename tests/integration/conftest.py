"""Shared by the integration tests: ONE local smoke run per session.

The local run (`smoke_run`) is the reference every integration test reads; tests that change
files work on a copy (`snakerun.copy_workdir`), so the run itself stays complete and untouched.
"""

import time

import pytest

from snakerun import snakemake, trace_dir

from workflow_scripts.runtime import TRACE_ENV


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke configuration run locally once (2 cores); its wall time in wall_seconds.txt,
    what it printed on stdout in stdout.txt, the modules each job loaded in
    snakerun.trace_dir(workdir) (runtime.TRACE_ENV)."""
    workdir = tmp_path_factory.mktemp("smoke")
    start = time.monotonic()
    proc = snakemake(workdir, "--cores", "2", env={TRACE_ENV: str(trace_dir(workdir))})
    (workdir / "wall_seconds.txt").write_text(f"{time.monotonic() - start:.1f}\n")
    (workdir / "stdout.txt").write_text(proc.stdout)  # what the run printed (the summary)
    return workdir
