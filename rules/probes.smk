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
    threads: threads_of("knn_probe")
    resources:
        mem_mb=mem_mb_features(3, 1000),
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
    threads: threads_of("linear_probe")
    resources:
        mem_mb=mem_mb_features(3, 1500),
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


# The faithful probe: augmented images through the frozen backbone every epoch (opt-in).
rule linear_online:
    input:
        # weights by the checksum of their sidecar (it holds their sha256): a
        # byte-identical rewrite of a > 1 MB file must not rerun anything
        weights=ancient("results/checkpoints/{model}.safetensors"),
        weights_sidecar="results/checkpoints/{model}.json",
        train_images=lambda wc: [
            f"results/data/{d}/train_images.npy" for d in job_datasets(wc)
        ],
        test_images=lambda wc: [
            f"results/data/{d}/test_images.npy" for d in job_datasets(wc)
        ],
        train_labels=labels_of("train"),
        test_labels=labels_of("test"),
    output:
        per_job("results/probes/linear_online/{model}/{dataset}.csv"),
    log:
        per_job_log("logs/linear_online/{model}/{dataset}.log"),
    benchmark:
        per_job_log("results/benchmarks/linear_online/{model}/{dataset}.tsv")
    conda:
        "../envs/sslbench.yaml"
    threads: threads_of("linear_online")
    resources:
        mem_mb=lambda wc: job_memory_mb(wc, "linear_online"),
    params:
        model=model_row("backbone"),
        datasets=job_datasets,
        num_classes=num_classes,
        arms=config["arms"],
        linear={
            k: v
            for k, v in config["linear"].items()
            if k not in ("report", "report_lr")
        },
        online=config["linear_online"],
        mean=config["transform"]["mean"],
        std=config["transform"]["std"],
        code=code("linear_online"),
    script:
        script_path("linear_online")


# Trained protocols on the in-domain set: one job per (model, run, arm) -- run = finetune or
# fewshot<pct>[_seed<s>] -- or one job per model with batch_runs; resume state lives in
# results/state (not an output). A local rule gathers each protocol's rows into the file the
# accuracy table reads.
if TRAINED_PROTOCOLS:

    rule finetune:
        input:
            # weights by the checksum of their sidecar (it holds their sha256): a
            # byte-identical rewrite of a > 1 MB file must not rerun anything
            weights=ancient("results/checkpoints/{model}.safetensors"),
            weights_sidecar="results/checkpoints/{model}.json",
            train_images=images_of(ID_DATASET, "train"),
            train_labels=f"results/labels/{ID_DATASET}/train.npy",
            test_images=images_of(ID_DATASET, "test"),
            test_labels=f"results/labels/{ID_DATASET}/test.npy",
            splits=job_splits,
        output:
            runs=per_run("results/trained/{model}/{run}/{arm}.csv"),
            # batch_runs: the job also gathers each protocol's rows (no extra jobs)
            gathered=gathered_outputs(),
        log:
            per_run("logs/finetune/{model}/{run}/{arm}.log"),
        benchmark:
            per_run("results/benchmarks/finetune/{model}/{run}/{arm}.tsv")
        conda:
            "../envs/sslbench.yaml"
        threads: finetune_cpus
        resources:
            gpu=finetune_gpus,
            mem_mb=mem_mb_training,
        params:
            model=model_row("backbone"),
            dataset=ID_DATASET,
            runs=job_runs,
            gathered=lambda wc: gathered_inputs(wc.model) if BATCH_RUNS else [],
            # what changes a result (precision and compile included); device, workers, gpus
            # and save_minutes are read at run time
            recipes=job_recipes,
            num_classes=STUDY.dataset(ID_DATASET)["num_classes"],
            source=data_source(ID_DATASET),
            transform=config["transform"],
            state_dir=lambda wc: f"results/state/finetune/{wc.model}",
            code=code("finetune"),
        script:
            script_path("finetune")


if TRAINED_PROTOCOLS and not BATCH_RUNS:

    rule collect_trained:
        input:
            lambda wc: trained_outputs(wc.protocol, wc.model),
        output:
            f"results/probes/{{protocol}}/{{model}}/{ID_DATASET}.csv",
        log:
            "logs/collect_trained/{protocol}/{model}.log",
        wildcard_constraints:
            protocol=keys_regex(TRAINED_PROTOCOLS),
        localrule: True
        conda:
            "../envs/sslbench.yaml"
        script:
            script_path("collect_trained")
