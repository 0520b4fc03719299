# Tables: T1 models, T2 data sets, T3 the tidy accuracy table, and the rank correlations
# across models. T1-T3 each have an HTML view in the report.


rule accuracy_table:
    input:
        PLAN.probe_results(),
    output:
        table=in_report(
            "results/tables/accuracy.csv",
            caption="../report/t3_accuracy.rst",
            category="Tables",
            labels={"table": "T3 accuracy", "file": "CSV (download)"},
        ),
        # what made the table: code, packages, configuration, tables, devices, date
        manifest=in_report(
            "results/tables/accuracy.json",
            caption="../report/run_manifest.rst",
            category="Tables",
            labels={"table": "Run manifest", "file": "JSON"},
        ),
    log:
        "logs/accuracy_table.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        models=[PLAN.model_fields(m, "table") for m in PLAN.models],
        datasets=[PLAN.dataset_fields(d, "table") for d in PLAN.datasets],
        report=config["linear"]["report"],
        report_lr=config["linear"]["report_lr"],
        code=PLAN.code("accuracy_table"),
    script:
        script_path("accuracy_table")


# The proxies of every (model, data set), one tidy table (protocol proxies).
rule proxies_table:
    input:
        PLAN.proxy_results(),
    output:
        in_report(
            "results/tables/proxies.csv",
            caption="../report/proxies.rst",
            category="Tables",
            labels={"table": "Proxies", "file": "CSV (download)"},
        ),
    log:
        "logs/proxies_table.log",
    localrule: True
    conda:
        "../envs/sslbench.yaml"
    params:
        code=PLAN.code("proxies_table"),
    script:
        script_path("concat_csv")


# With results_tables: this run's accuracies (none with models: []) and the external tables
# in one analysis table, with a source column.
rule merge_results:
    input:
        computed=["results/tables/accuracy.csv"] if PLAN.models else [],
        tables=list(PLAN.results_tables.values()),
    output:
        in_report(
            "results/tables/accuracy_merged.csv",
            caption="../report/accuracy_merged.rst",
            category="Tables",
            labels={"table": "Analysis table", "file": "CSV (download)"},
        ),
    log:
        "logs/merge_results.log",
    localrule: True
    conda:
        "../envs/sslbench.yaml"
    params:
        # path and sha256 of each table (a replaced table merges again, whatever its time)
        tables=PLAN.results_table_sources,
        code=PLAN.code("merge_results"),
    script:
        script_path("merge_results")


rule correlations:
    input:
        accuracy=PLAN.analysis_table,
        proxies=["results/tables/proxies.csv"] if PLAN.proxies else [],
    output:
        in_report(
            "results/tables/correlations.csv",
            caption="../report/correlations.rst",
            category="Tables",
            labels={"table": "Correlations", "file": "CSV (download)"},
        ),
    log:
        "logs/correlations.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        analysis=PLAN.section("analysis"),
        # analysis.static_rankers' values: ranker -> model -> value
        rankers=canonical(STUDY.ranker_values),
        code=PLAN.code("correlations"),
        numerics=PLAN.numerics,
    script:
        script_path("correlations")


rule t1_models:
    input:
        # with published linear numbers, T1 sets this run's beside them
        accuracy=["results/tables/accuracy.csv"] if PLAN.published else [],
    output:
        csv=in_report(
            "results/tables/models.csv",
            caption="../report/t1_models.rst",
            category="Tables",
            labels={"table": "T1 models", "file": "CSV (download)"},
        ),
        html=in_report(
            "results/tables/models.html",
            caption="../report/t1_models.rst",
            category="Tables",
            labels={"table": "T1 models", "file": "HTML (view)"},
        ),
    log:
        "logs/tables/t1_models.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        table="models",
        title="T1: models",
        rows=[STUDY.model(m) for m in PLAN.models],
        code=PLAN.code("t1_models"),
    script:
        script_path("make_table")


rule t2_datasets:
    input:
        train=expand("results/labels/{dataset}/train.npy", dataset=PLAN.datasets),
        test=expand("results/labels/{dataset}/test.npy", dataset=PLAN.datasets),
    output:
        csv=in_report(
            "results/tables/datasets.csv",
            caption="../report/t2_datasets.rst",
            category="Tables",
            labels={"table": "T2 data sets", "file": "CSV (download)"},
        ),
        html=in_report(
            "results/tables/datasets.html",
            caption="../report/t2_datasets.rst",
            category="Tables",
            labels={"table": "T2 data sets", "file": "HTML (view)"},
        ),
    log:
        "logs/tables/t2_datasets.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        table="datasets",
        title="T2: data sets",
        dataset_keys=PLAN.datasets,
        rows=[STUDY.dataset(d) for d in PLAN.datasets],
        code=PLAN.code("t2_datasets"),
    script:
        script_path("make_table")


rule t3_accuracy:
    input:
        csv=PLAN.analysis_table,
    output:
        html=in_report(
            "results/tables/accuracy.html",
            caption="../report/t3_accuracy.rst",
            category="Tables",
            labels={"table": "T3 accuracy", "file": "HTML (view)"},
        ),
    log:
        "logs/tables/t3_accuracy.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        table="accuracy",
        title="T3: top-1 / top-5 accuracy per model, data set, protocol and arm",
        code=PLAN.code("t3_accuracy"),
    script:
        script_path("make_table")


# demo.seeds: the correlation tables of every run (results/ and results/seeds/<s>/, the
# Snakefile's modules) side by side, each correlation's spread across the seeds.
rule seed_spread:
    input:
        runs=PLAN.seed_run_correlations(),
    output:
        csv=in_report(
            "results/tables/seed_spread.csv",
            caption="../report/seed_spread.rst",
            category="Tables",
            labels={"table": "Seed spread", "file": "CSV (download)"},
        ),
        html=in_report(
            "results/tables/seed_spread.html",
            caption="../report/seed_spread.rst",
            category="Tables",
            labels={"table": "Seed spread", "file": "HTML (view)"},
        ),
    log:
        "logs/seed_spread.log",
    localrule: True
    conda:
        "../envs/sslbench.yaml"
    params:
        runs=PLAN.seed_runs,
        id_dataset=PLAN.id_dataset,
        code=PLAN.code("seed_spread"),
    script:
        script_path("seed_spread")


# What a reader looks at first: the in-domain top-1 per model and protocol, the headline
# correlations with intervals, the figures drawn or skipped, where the files are
# (workflow_scripts/summary.py); printed when a run succeeds (Snakefile, onsuccess).
rule summary:
    input:
        accuracy=PLAN.analysis_table,
        correlations="results/tables/correlations.csv",
    output:
        md="results/summary.md",
        html=in_report(
            "results/summary.html",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "Run summary", "file": "HTML (view)"},
        ),
    log:
        "logs/summary.log",
    localrule: True
    conda:
        "../envs/sslbench.yaml"
    params:
        id_dataset=PLAN.id_dataset,
        drawn=PLAN.figures,
        skipped=PLAN.skipped_figures,
        files=run_summary.files(PLAN.all_targets()),
        code=PLAN.code("summary"),
    script:
        script_path("summary")
