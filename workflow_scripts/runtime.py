"""What every rule script does first: log to the rule's log file and honour its threads."""

from __future__ import annotations

import logging
import os
import sys

#: Environment variable naming a folder: each job then records there, when it exits, the
#: package modules it loaded (``<rule>/<wildcards>.json``), so that a test can compare what a
#: job ran with its code identity (``workflow_scripts.provenance``).
TRACE_ENV = "SSLBENCH_TRACE_MODULES"


def setup(snakemake, torch_threads: bool | int = False) -> logging.Logger:
    """Log INFO to ``snakemake.log[0]`` and warnings to stderr; an uncaught exception goes to
    both with its traceback; set torch threads: the job's threads (``True``) or that many (an
    int: a job whose threads also count its data-loader workers' CPUs). A job with the param
    ``numerics`` (config section) checks that its process carries the pinned environment and,
    with torch, turns on its deterministic algorithms (:mod:`workflow_scripts.numerics`)."""
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    handlers: list[logging.Handler] = [console]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        handlers=handlers,
        force=True,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    logging.captureWarnings(True)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its AVX2 probe is noise
    if torch_threads is not False:
        import torch

        count = snakemake.threads if torch_threads is True else torch_threads
        torch.set_num_threads(max(1, int(count)))
    pins = getattr(getattr(snakemake, "params", None), "numerics", None)
    if pins:
        from workflow_scripts import numerics

        numerics.check_environment(pins)
        if torch_threads is not False:
            numerics.apply_in_process(pins)
    logger = logging.getLogger(f"sslbench.{snakemake.rule}")
    logger.info(
        "rule %s, wildcards %s, threads %s",
        snakemake.rule,
        dict(snakemake.wildcards),
        snakemake.threads,
    )

    def log_uncaught(kind, value, traceback):
        # the job's error, with its traceback, in the rule's log (which outlives the job on a
        # cluster) as well as on stderr
        logger.error("%s: %s", kind.__name__, value, exc_info=(kind, value, traceback))

    sys.excepthook = log_uncaught
    if os.environ.get(TRACE_ENV):
        import atexit

        atexit.register(trace_modules, os.environ[TRACE_ENV], snakemake)
    return logger


def loaded_package_files() -> list[str]:
    """The files of the modules under ``workflow_scripts/`` this process has imported (the
    package's and the scripts' ``_bootstrap``), relative to the repository root, sorted."""
    from pathlib import Path

    package = Path(__file__).resolve().parent
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().is_relative_to(package):
            files.add(str(Path(path).resolve().relative_to(package.parent)))
    return sorted(files)


def trace_modules(folder: str, snakemake) -> None:
    """Write what :data:`TRACE_ENV` asks for: this job's rule, wildcards and loaded package
    modules, to ``<folder>/<rule>/<wildcards>.json``."""
    import json
    from pathlib import Path

    wildcards = dict(snakemake.wildcards)
    name = ",".join(f"{k}={v}" for k, v in sorted(wildcards.items())) or "job"
    path = Path(folder) / snakemake.rule / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"rule": snakemake.rule, "wildcards": wildcards, "modules": loaded_package_files()}
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def named_files(files, name: str) -> list[str]:
    """A named input/output entry of a Snakemake job as a list of paths: [] when the job has
    no such entry, one path when Snakemake stores a single file as a plain string. ``files``:
    the job's input/output, or a plain dict of them."""
    value = files.get(name, []) if isinstance(files, dict) else getattr(files, name, [])
    return [value] if isinstance(value, str) else list(value)
