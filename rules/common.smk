# Configuration validation and the plan of the study (workflow_scripts.plan: job units,
# outputs, resources, params). No rules here.

import os
import sys

# The Snakefile imports the workflow_scripts package from the repository root (the scripts
# find it through workflow_scripts/scripts/_bootstrap.py).
sys.path.insert(0, workflow.basedir)

from workflow_scripts import numerics, registry, seed_spread
from workflow_scripts import summary as run_summary
from workflow_scripts.config import ConfigError, load_study
from workflow_scripts.datasets import downloads
from workflow_scripts.plan import Plan, canonical, keys_regex

try:
    STUDY = load_study(config, basedir=workflow.basedir)
except ConfigError as error:
    raise WorkflowError(str(error)) from None

PLAN = Plan(config, STUDY)
# numerics.pin: every job this run starts loads its CPU libraries capped at numerics.cpu_isa
# (environment variables they read when they load; workflow_scripts/numerics.py)
os.environ.update(numerics.environment(config["numerics"]))
if STUDY.ranker_notes:
    logger.info("static rankers left out: " + "; ".join(STUDY.ranker_notes))
if PLAN.skipped_figures:
    logger.info(
        "figures not drawn: "
        + "; ".join(f"{name} ({why})" for name, why in PLAN.skipped_figures.items())
    )


wildcard_constraints:
    model=keys_regex(PLAN.models),
    dataset=keys_regex(PLAN.datasets),
    split="|".join(registry.SPLITS),
    pct=r"[0-9]+(\.[0-9]+)?",
    run=keys_regex(PLAN.trained_runs),
    arm="|".join(registry.ARMS),


def script_path(name):
    """Path of a thin per-step script, relative to this file."""
    return f"../workflow_scripts/scripts/{name}.py"


def in_report(path, **kwargs):
    """report(path, ...) in this study; in a further run of demo.seeds (a module, its own
    tables under results/seeds/<run>/) the plain path: the report holds one study, and the
    seed_spread table compares the runs."""
    return path if config["demo"]["run"] else report(path, **kwargs)


def download_records(wildcards):
    """What a data set's integrity jobs wait for (rules/data.smk): the records of its download
    jobs, or of ImageNet's unpacked archives (workflow_scripts.datasets.downloads)."""
    row = STUDY.dataset(wildcards.dataset)
    if row["kind"] == "imagenet":
        return downloads.imagenet_record(row, config["data_root"])
    return downloads.needed_records(row, config["data_root"], config["data_download"])
