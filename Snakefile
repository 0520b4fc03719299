# sslbench: which cheap evaluation protocol of a self-supervised model predicts the expensive
# ones and out-of-domain accuracy? One DAG from data and weights to correlations and figures.
# The default configuration (config/config.yaml) is an offline miniature of the whole study.

from snakemake.utils import min_version

min_version("9.27")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/zoo.smk"
include: "rules/features.smk"
include: "rules/probes.smk"
include: "rules/analysis.smk"
include: "rules/figures.smk"


rule all:
    default_target: True
    input:
        all_targets(),
