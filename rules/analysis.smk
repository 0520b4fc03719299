# Tidy accuracy table and rank correlations across models.


rule accuracy_table:
    input:
        probe_results(),
    output:
        "results/tables/accuracy.csv",
    log:
        "logs/accuracy_table.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        models=[STUDY.model(m) for m in MODELS],
        datasets=[STUDY.dataset(d) for d in DATASETS],
        report=config["linear"]["report"],
        report_lr=config["linear"]["report_lr"],
        code=code("accuracy_table"),
    script:
        script_path("accuracy_table")


rule correlations:
    input:
        "results/tables/accuracy.csv",
    output:
        "results/tables/correlations.csv",
    log:
        "logs/correlations.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        analysis=config["analysis"],
        code=code("correlations"),
    script:
        script_path("correlations")
