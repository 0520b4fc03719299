# The model zoo. The demo pre-trains every model inside the workflow, one job per model,
# with a fixed seed and step budget; the result is the backbone as safetensors.


rule pretrain:
    input:
        images=f"results/data/{ID_DATASET}/train_images.npy",
        labels=f"results/labels/{ID_DATASET}/train.npy",
    output:
        weights="results/checkpoints/{model}.safetensors",
        sidecar="results/checkpoints/{model}.json",
    log:
        "logs/pretrain/{model}.log",
    benchmark:
        "results/benchmarks/pretrain/{model}.tsv"
    conda:
        "../envs/sslbench.yaml"
    threads: 1
    params:
        row=model_row,
        hp=pretrain_hp,
        num_classes=STUDY.dataset(ID_DATASET)["num_classes"],
        code=code("pretrain"),
    script:
        script_path("pretrain")
