# Frozen-feature protocols on cached features, each with its BN arm: one rule per registered
# probe (registry.PROTOCOLS[...]["probe"]), run by its module's run_job().


for _protocol, _probe in PLAN.feature_probes.items():

    rule:
        name:
            _probe["rule"]
        input:
            train=PLAN.features_of("train"),
            test=PLAN.features_of("test"),
            train_labels=PLAN.labels_of("train"),
            test_labels=PLAN.labels_of("test"),
        output:
            PLAN.per_job(f"results/probes/{_protocol}/{{model}}/{{dataset}}.csv"),
        log:
            PLAN.per_job_log(f"logs/{_probe['rule']}/{{model}}/{{dataset}}.log"),
        benchmark:
            PLAN.per_job_log(
                f"results/benchmarks/{_probe['rule']}/{{model}}/{{dataset}}.tsv"
            )
        conda:
            "../envs/sslbench.yaml"
        threads: PLAN.threads_of(_probe["rule"])
        resources:
            mem_mb=PLAN.mem_mb_features(*_probe["mem_mb"]),
        params:
            protocol=_protocol,
            module=_probe["module"],
            datasets=PLAN.job_datasets,
            num_classes=PLAN.num_classes,
            arms=config["arms"],
            # the config section without its run-time keys (device is read at run time)
            settings=PLAN.probe_settings(_protocol),
            code=PLAN.code(_probe["rule"]),
            numerics=PLAN.numerics,
        script:
            script_path("feature_probe")


# The faithful probe: augmented images through the frozen backbone every epoch (opt-in).
rule linear_online:
    input:
        # weights by the checksum of their sidecar (it holds their sha256): a
        # byte-identical rewrite of a > 1 MB file must not rerun anything
        weights=ancient("results/checkpoints/{model}.safetensors"),
        weights_sidecar="results/checkpoints/{model}.json",
        train_images=lambda wc: [
            f"results/data/{d}/train_images.npy" for d in PLAN.job_datasets(wc)
        ],
        test_images=lambda wc: [
            f"results/data/{d}/test_images.npy" for d in PLAN.job_datasets(wc)
        ],
        train_labels=PLAN.labels_of("train"),
        test_labels=PLAN.labels_of("test"),
    output:
        PLAN.per_job("results/probes/linear_online/{model}/{dataset}.csv"),
    log:
        PLAN.per_job_log("logs/linear_online/{model}/{dataset}.log"),
    benchmark:
        PLAN.per_job_log("results/benchmarks/linear_online/{model}/{dataset}.tsv")
    conda:
        "../envs/sslbench.yaml"
    threads: PLAN.threads_of("linear_online")
    resources:
        mem_mb=lambda wc: PLAN.job_memory_mb(wc, "linear_online"),
    params:
        model=PLAN.model_row("backbone"),
        datasets=PLAN.job_datasets,
        num_classes=PLAN.num_classes,
        arms=config["arms"],
        # the linear recipe without its run-time keys (the online probe runs on the CPU)
        linear=PLAN.section("linear", leave_out=registry.PROBE_RUN_TIME_KEYS),
        online=PLAN.section("linear_online"),
        mean=config["transform"]["mean"],
        std=config["transform"]["std"],
        code=PLAN.code("linear_online"),
        numerics=PLAN.numerics,
    script:
        script_path("linear_online")


# The attentive probe (efficient probing, workflow_scripts.attentive): the frozen tokens of
# each data set's splits are computed in the job from its images (never cached), then one
# probe per (arm, seed) trains on them.
rule attentive_probe:
    input:
        # weights by the checksum of their sidecar (it holds their sha256): a
        # byte-identical rewrite of a > 1 MB file must not rerun anything
        weights=ancient("results/checkpoints/{model}.safetensors"),
        weights_sidecar="results/checkpoints/{model}.json",
        train_images=lambda wc: [
            PLAN.images_of(d, "train") for d in PLAN.job_datasets(wc)
        ],
        test_images=lambda wc: [
            PLAN.images_of(d, "test") for d in PLAN.job_datasets(wc)
        ],
        train_labels=PLAN.labels_of("train"),
        test_labels=PLAN.labels_of("test"),
    output:
        PLAN.per_job("results/probes/attentive/{model}/{dataset}.csv"),
    log:
        PLAN.per_job_log("logs/attentive_probe/{model}/{dataset}.log"),
    benchmark:
        PLAN.per_job_log("results/benchmarks/attentive_probe/{model}/{dataset}.tsv")
    conda:
        "../envs/sslbench.yaml"
    threads: PLAN.threads_of("attentive_probe")
    resources:
        gpu=PLAN.attentive_gpus,
        mem_mb=PLAN.attentive_memory_mb,
    params:
        model=PLAN.model_row("backbone"),
        datasets=PLAN.job_datasets,
        num_classes=PLAN.num_classes,
        arms=config["arms"],
        sources=PLAN.data_sources,
        transform=PLAN.transform_of,
        # what changes the tokens (config features; they are held in float16 whatever its
        # dtype); its device and workers are read at run time
        options={k: config["features"][k] for k in ("batch_size", "precision")},
        settings=PLAN.probe_settings("attentive"),
        code=PLAN.code("attentive_probe"),
        numerics=PLAN.numerics,
    script:
        script_path("attentive_probe")


# Trained protocols on the in-domain set: one job per (model, run, arm) -- run = finetune or
# fewshot<pct>[_seed<s>] -- or one job per model with batch_runs; resume state lives in
# results/state (not an output). A local rule gathers each protocol's rows into the file the
# accuracy table reads.
if PLAN.trained_protocols:

    rule finetune:
        input:
            # weights by the checksum of their sidecar (it holds their sha256): a
            # byte-identical rewrite of a > 1 MB file must not rerun anything
            weights=ancient("results/checkpoints/{model}.safetensors"),
            weights_sidecar="results/checkpoints/{model}.json",
            train_images=PLAN.images_of(PLAN.id_dataset, "train"),
            train_labels=f"results/labels/{PLAN.id_dataset}/train.npy",
            test_images=PLAN.images_of(PLAN.id_dataset, "test"),
            test_labels=f"results/labels/{PLAN.id_dataset}/test.npy",
            splits=PLAN.job_splits,
        output:
            runs=PLAN.per_run("results/trained/{model}/{run}/{arm}.csv"),
            # batch_runs: the job also gathers each protocol's rows (no extra jobs)
            gathered=PLAN.gathered_outputs(),
        log:
            PLAN.per_run("logs/finetune/{model}/{run}/{arm}.log"),
        benchmark:
            PLAN.per_run("results/benchmarks/finetune/{model}/{run}/{arm}.tsv")
        conda:
            "../envs/sslbench.yaml"
        threads: PLAN.finetune_cpus
        resources:
            gpu=PLAN.finetune_gpus,
            mem_mb=PLAN.mem_mb_training,
        params:
            model=PLAN.model_row("backbone"),
            dataset=PLAN.id_dataset,
            runs=PLAN.job_runs,
            gathered=lambda wc: (
                PLAN.gathered_inputs(wc.model) if PLAN.batch_runs else []
            ),
            # what changes a result (precision and compile included); device, workers, gpus
            # and save_minutes are read at run time
            recipes=PLAN.job_recipes,
            num_classes=STUDY.dataset(PLAN.id_dataset)["num_classes"],
            source=PLAN.data_source(PLAN.id_dataset),
            transform=PLAN.transform_of,
            state_dir=PLAN.state_dir,
            code=PLAN.code("finetune"),
            numerics=PLAN.numerics,
        script:
            script_path("finetune")


if PLAN.trained_protocols and not PLAN.batch_runs:

    rule collect_trained:
        input:
            lambda wc: PLAN.trained_outputs(wc.protocol, wc.model),
        output:
            f"results/probes/{{protocol}}/{{model}}/{PLAN.id_dataset}.csv",
        log:
            "logs/collect_trained/{protocol}/{model}.log",
        wildcard_constraints:
            protocol=keys_regex(PLAN.trained_protocols),
        localrule: True
        conda:
            "../envs/sslbench.yaml"
        params:
            code=PLAN.code("collect_trained"),
        script:
            script_path("concat_csv")
