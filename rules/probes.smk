# Frozen-feature protocols on cached features, each with its BN arm.


rule knn_probe:
    input:
        train=features_of("train"),
        test=features_of("test"),
        train_labels=labels_of("train"),
        test_labels=labels_of("test"),
    output:
        per_job("results/probes/knn/{model}/{dataset}.csv"),
    log:
        per_job_log("logs/knn_probe/{model}/{dataset}.log"),
    benchmark:
        per_job_log("results/benchmarks/knn_probe/{model}/{dataset}.tsv")
    conda:
        "../envs/sslbench.yaml"
    threads: 1
    params:
        datasets=job_datasets,
        num_classes=num_classes,
        k=config["knn"]["k"],
        arms=config["arms"],
        code=code("knn_probe"),
    script:
        script_path("knn_probe")


rule linear_probe:
    input:
        train=features_of("train"),
        test=features_of("test"),
        train_labels=labels_of("train"),
        test_labels=labels_of("test"),
    output:
        per_job("results/probes/linear/{model}/{dataset}.csv"),
    log:
        per_job_log("logs/linear_probe/{model}/{dataset}.log"),
    benchmark:
        per_job_log("results/benchmarks/linear_probe/{model}/{dataset}.tsv")
    conda:
        "../envs/sslbench.yaml"
    threads: 1
    params:
        datasets=job_datasets,
        num_classes=num_classes,
        arms=config["arms"],
        linear={
            k: v
            for k, v in config["linear"].items()
            if k not in ("report", "report_lr")
        },
        code=code("linear_probe"),
    script:
        script_path("linear_probe")
