"""What every rule script does first: log to the rule's log file and honour its threads."""

from __future__ import annotations

import logging
import sys


def setup(snakemake, torch_threads: bool | int = False) -> logging.Logger:
    """Log INFO to ``snakemake.log[0]`` and warnings to stderr; an uncaught exception goes to
    both with its traceback; set torch threads: the job's threads (``True``) or that many (an
    int: a job whose threads also count its data-loader workers' CPUs)."""
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
    return logger


def named_files(files, name: str) -> list[str]:
    """A named input/output entry of a Snakemake job as a list of paths: [] when the job has
    no such entry, one path when Snakemake stores a single file as a plain string. ``files``:
    the job's input/output, or a plain dict of them."""
    value = files.get(name, []) if isinstance(files, dict) else getattr(files, name, [])
    return [value] if isinstance(value, str) else list(value)
