# Data sets. The demo renders synthetic sets; real ones are listed from their on-disk layout
# and checked against the table. Images and labels in the data set's own order.


rule generate_dataset:
    output:
        train_images="results/data/{dataset}/train_images.npy",
        test_images="results/data/{dataset}/test_images.npy",
        train_labels="results/labels/{dataset}/train.npy",
        test_labels="results/labels/{dataset}/test.npy",
    log:
        "logs/generate_dataset/{dataset}.log",
    wildcard_constraints:
        dataset=keys_regex(PLAN.synthetic),
    conda:
        "../envs/sslbench.yaml"
    params:
        row=PLAN.dataset_row("generate"),
        code=PLAN.code("generate_dataset"),
        numerics=PLAN.numerics,
    script:
        script_path("generate_dataset")


# Data sets that fetch themselves (config data_download; workflow_scripts/datasets/downloads.py):
# one local job per file of a row's download columns (compute nodes are often offline); and
# ImageNet's three official archives, when they are in its root and train/ and val/ are not,
# unpacked by one job. The integrity jobs wait for these records (ancient: a record rewritten
# with the same data reruns no check). Each download job first checks the free disk space under
# data_root against all the study's files still to fetch, and stops naming what is missing.


rule download_archive:
    output:
        "results/data_downloads/{dataset}/{archive}.json",
    log:
        "logs/download_archive/{dataset}/{archive}.log",
    wildcard_constraints:
        dataset=keys_regex(PLAN.downloadable),
        archive=r"[^/]+",
    # the job retries and resumes within itself (datasets.downloads.RETRIES); the SLURM
    # profile's retries would download a file with the wrong checksum again as a whole
    retries: 0
    localrule: True
    conda:
        "../envs/sslbench.yaml"
    params:
        file=PLAN.download_file,
    script:
        script_path("download_archive")


rule unpack_imagenet:
    output:
        "results/data_downloads/{dataset}/ILSVRC2012.json",
    log:
        "logs/unpack_imagenet/{dataset}.log",
    wildcard_constraints:
        dataset=keys_regex(PLAN.imagenet_rows),
    conda:
        "../envs/sslbench.yaml"
    resources:
        mem_mb=2000,
    params:
        row=PLAN.dataset_row("check"),
        checksums=lambda wc: STUDY.dataset(wc.dataset)["download_checksums"],
        code=PLAN.code("unpack_imagenet"),
    script:
        script_path("unpack_imagenet")


# Integrity of one split of a real data set (before any extraction): image count, class count
# and label range against the table; writes the labels, the file list the later steps read,
# and a manifest (count per class, sha256 of the file list). The root (config data_root +
# table root) is read from the config at run time, so moving the data reruns nothing.
rule check_dataset:
    input:
        lambda wc: [ancient(path) for path in download_records(wc)],
    output:
        labels="results/labels/{dataset}/{split}.npy",
        files="results/data/{dataset}/{split}_files.txt",
        manifest="results/data/{dataset}/{split}_manifest.json",
    log:
        "logs/check_dataset/{dataset}/{split}.log",
    wildcard_constraints:
        dataset=keys_regex(PLAN.real),
    conda:
        "../envs/sslbench.yaml"
    params:
        row=PLAN.dataset_row("check"),
        allow_subset=lambda wc: wc.dataset in config["allow_subsets"],
        code=PLAN.code("check_dataset"),
    script:
        script_path("check_dataset")


rule fewshot_split:
    input:
        labels="results/labels/{dataset}/train.npy",
    output:
        "results/splits/{dataset}/fewshot_{pct}.npy",
    log:
        "logs/fewshot_split/{dataset}/{pct}.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        num_classes=lambda wc: STUDY.dataset(wc.dataset)["num_classes"],
        seed=config["fewshot"]["seed"],
        code=PLAN.code("fewshot_split"),
    script:
        script_path("fewshot_split")


use rule fewshot_split as fewshot_split_extra_seed with:
    output:
        "results/splits/{dataset}/fewshot_{pct}_seed{seed}.npy",
    log:
        "logs/fewshot_split/{dataset}/{pct}_seed{seed}.log",
    wildcard_constraints:
        seed="[0-9]+",
    params:
        num_classes=lambda wc: STUDY.dataset(wc.dataset)["num_classes"],
        seed=lambda wc: int(wc.seed),
        code=PLAN.code("fewshot_split_extra_seed"),
