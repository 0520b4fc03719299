# sslbench: which cheap evaluation protocol of a self-supervised model predicts the expensive
# ones and out-of-domain accuracy? One DAG from data and weights to correlations and figures.
# The default configuration (config/config.yaml) is an offline miniature of the whole study.

import os

from snakemake.utils import min_version

min_version("9.27")


# The demo configuration, found beside this Snakefile also when the run is in another folder
# (`snakemake -d runs/<name>`: one folder per configuration, README "One folder per run").
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/zoo.smk"
include: "rules/features.smk"
include: "rules/probes.smk"
include: "rules/analysis.smk"
include: "rules/figures.smk"


# demo.seeds: N > 1 runs this workflow again as N - 1 modules, run s with every training seed
# shifted by s (workflow_scripts.seed_spread), its files under results/seeds/<s>/; rule
# seed_spread compares their correlation tables.
for _run in seed_spread.offsets(config):
    _seed_module = f"seed{_run}"
    _seed_rules = f"seed{_run}_"

    module:
        name: _seed_module
        snakefile:
            "Snakefile"
        config:
            seed_spread.shifted_config(config, _run)
        prefix:
            seed_spread.run_prefix(_run)

    use rule * from _seed_module exclude all as _seed_rules*


# Run on the submitting machine even under a cluster executor (profiles/slurm): downloads
# (compute nodes are often offline; download_checkpoint is declared in rules/zoo.smk), the
# few-shot index files, the tables and the figures (rules/figures.smk) -- seconds each, not
# worth a queue wait.
localrules:
    all,
    fewshot_split,
    fewshot_split_extra_seed,
    accuracy_table,
    correlations,
    t1_models,
    t2_datasets,
    t3_accuracy,


# Outputs of an earlier configuration that this one would leave beside its own as if current
# (the merged analysis table after results_tables is emptied) are removed before any job runs.
onstart:
    for stale in PLAN.stale_outputs():
        os.remove(stale)
        print(
            f"removed {stale}: not an output of this configuration (results_tables is empty)"
        )


# A figure job that fails does not take the previous figure away: its last drawn copy is put
# back, dated 1970 so that the next run draws it again (workflow_scripts.kept_figures).
onerror:
    from workflow_scripts import kept_figures

    for kept in kept_figures.restore(PLAN.figure_files()):
        print(
            f"kept the previous {kept}: its job failed; the next run draws it again"
        )


# Every successful run ends with the summary (results/summary.md, rule summary) on screen.
onsuccess:
    from workflow_scripts.housekeeping import remove_empty_state_folders

    remove_empty_state_folders()  # a finished fine-tuning job's state folder
    if not config["demo"]["run"]:
        from workflow_scripts.summary import printable

        text = printable("results/summary.md")
        if text:
            print(f"\n{text}")
            if os.path.realpath(os.getcwd()) != os.path.realpath(workflow.basedir):
                print(f"(paths relative to the run folder {os.getcwd()})")


rule all:
    default_target: True
    input:
        PLAN.all_targets(),
