# The model zoo: the rules of each model source (registry.SOURCES "rules";
# workflow_scripts.model_sources). A row with source 'demo' is pre-trained inside the workflow
# (one job per model, fixed seed and step budget); a row with source 'checkpoint' is downloaded
# (a local rule: cluster compute nodes are often offline) and converted once; a 'timm' row's
# weights come through timm. Either way the result is the backbone as safetensors, the only
# form later steps read.


localrules:
    download_checkpoint,
    timm_weights,


rule pretrain:
    input:
        images=f"results/data/{PLAN.id_dataset}/train_images.npy",
        labels=f"results/labels/{PLAN.id_dataset}/train.npy",
    output:
        weights="results/checkpoints/{model}.safetensors",
        sidecar="results/checkpoints/{model}.json",
    log:
        "logs/pretrain/{model}.log",
    benchmark:
        "results/benchmarks/pretrain/{model}.tsv"
    wildcard_constraints:
        model=keys_regex(PLAN.models_for_rule("pretrain")),
    conda:
        "../envs/sslbench.yaml"
    threads: PLAN.threads_of("pretrain")
    resources:
        mem_mb=3000,
    params:
        row=PLAN.model_row("pretrain"),
        hp=PLAN.weights_spec,
        num_classes=STUDY.dataset(PLAN.id_dataset)["num_classes"],
        code=PLAN.code("pretrain"),
        numerics=PLAN.numerics,
    script:
        script_path("pretrain")


rule download_checkpoint:
    output:
        raw="results/downloads/{model}.ckpt",
        sha256="results/downloads/{model}.ckpt.sha256",
    log:
        "logs/download_checkpoint/{model}.log",
    wildcard_constraints:
        model=keys_regex(PLAN.models_for_rule("download_checkpoint")),
    # the job retries within itself (checkpoints.retries); a profile's retries would repeat
    # a permanent failure (a wrong checksum) as a whole
    retries: 0
    conda:
        "../envs/sslbench.yaml"
    params:
        model=lambda wc: wc.model,
        # the row's url; for a local file also the sha256 of its bytes (a replaced file reruns)
        source=PLAN.checkpoint_source,
        sha256=lambda wc: STUDY.model(wc.model)["sha256"],
        settings=PLAN.download_settings,
    script:
        script_path("download_checkpoint")


rule convert_checkpoint:
    input:
        # the download by the checksum of its sha256 file: a byte-identical re-download (new
        # mtime, > 1 MB) reruns nothing, different bytes re-convert
        raw=ancient("results/downloads/{model}.ckpt"),
        raw_sha256="results/downloads/{model}.ckpt.sha256",
    output:
        weights="results/checkpoints/{model}.safetensors",
        sidecar="results/checkpoints/{model}.json",
    log:
        "logs/convert_checkpoint/{model}.log",
    benchmark:
        "results/benchmarks/convert_checkpoint/{model}.tsv"
    wildcard_constraints:
        model=keys_regex(PLAN.models_for_rule("convert_checkpoint")),
    conda:
        "../envs/sslbench.yaml"
    threads: 1
    resources:
        # a ViT-B checkpoint with optimiser state, unpickled, plus the converted copy
        mem_mb=8000,
    params:
        spec=PLAN.weights_spec,
        code=PLAN.code("convert_checkpoint"),
    script:
        script_path("convert_checkpoint")


# A row with source 'timm' (any pretrained timm model by name): timm loads the hub weights
# (cache: config timm.cache_dir; HF_HUB_OFFLINE=1 honoured) or the row's local file and the
# backbone is written as safetensors. A local rule: compute nodes are often offline.
rule timm_weights:
    output:
        weights="results/checkpoints/{model}.safetensors",
        sidecar="results/checkpoints/{model}.json",
    log:
        "logs/timm_weights/{model}.log",
    wildcard_constraints:
        model=keys_regex(PLAN.models_for_rule("timm_weights")),
    retries: 1
    conda:
        "../envs/sslbench.yaml"
    params:
        spec=PLAN.weights_spec,
        code=PLAN.code("timm_weights"),
    script:
        script_path("timm_weights")
