# Cached feature extraction: backbone in eval mode, eval transform, float [N, D] per split.


rule extract_features:
    input:
        weights="results/checkpoints/{model}.safetensors",
        images=lambda wc: [f"results/data/{d}/{s}_images.npy" for d, s in job_pairs(wc)],
        labels=lambda wc: [f"results/labels/{d}/{s}.npy" for d, s in job_pairs(wc)],
    output:
        features=per_job_pairs("results/features/{model}/{dataset}/{split}.npy"),
        sidecars=per_job_pairs("results/features/{model}/{dataset}/{split}.json"),
    log:
        per_job_log("logs/extract_features/{model}/{dataset}.log"),
    benchmark:
        per_job_log("results/benchmarks/extract_features/{model}/{dataset}.tsv")
    conda:
        "../envs/sslbench.yaml"
    threads: 1
    params:
        model=model_row,
        datasets=lambda wc: [d for d, _ in job_pairs(wc)],
        splits=lambda wc: [s for _, s in job_pairs(wc)],
        transform=config["transform"],
        batch_size=config["features"]["batch_size"],
        dtype=config["features"]["dtype"],
        code=code("extract_features"),
    script:
        script_path("extract_features")
