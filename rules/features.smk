# Cached feature extraction: backbone in eval mode, eval transform, float [N, D] per split.
# Synthetic sets come from their arrays, real ones through their adapter (file list).


rule extract_features:
    input:
        # weights by the checksum of their sidecar (it holds their sha256): a
        # byte-identical rewrite of a > 1 MB file must not rerun anything
        weights=ancient("results/checkpoints/{model}.safetensors"),
        weights_sidecar="results/checkpoints/{model}.json",
        images=lambda wc: [PLAN.images_of(d, s) for d, s in PLAN.job_pairs(wc)],
        labels=lambda wc: [f"results/labels/{d}/{s}.npy" for d, s in PLAN.job_pairs(wc)],
    output:
        features=PLAN.per_job_pairs("results/features/{model}/{dataset}/{split}.npy"),
        sidecars=PLAN.per_job_pairs("results/features/{model}/{dataset}/{split}.json"),
    log:
        PLAN.per_job_log("logs/extract_features/{model}/{dataset}.log"),
    benchmark:
        PLAN.per_job_log("results/benchmarks/extract_features/{model}/{dataset}.tsv")
    conda:
        "../envs/sslbench.yaml"
    threads: PLAN.extraction_cpus
    resources:
        gpu=PLAN.extraction_gpus,
        # the process, its loader workers and the job's features (memory-mapped)
        mem_mb=PLAN.mem_mb_extraction,
    params:
        model=PLAN.model_row("backbone"),
        datasets=lambda wc: [d for d, _ in PLAN.job_pairs(wc)],
        splits=lambda wc: [s for _, s in PLAN.job_pairs(wc)],
        sources=PLAN.data_sources,
        transform=PLAN.transform_of,  # config 'transform'; a timm row's own spec
        # what changes the features; device, workers, threads, channels_last and log_every
        # (config features section, read at run time) do not rerun anything
        options={k: config["features"][k] for k in ("batch_size", "dtype", "precision")},
        code=PLAN.code("extract_features"),
        numerics=PLAN.numerics,
    script:
        script_path("extract_features")
