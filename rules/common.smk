# Configuration validation, tables and input functions. No rules here.

import os
import sys

# The Snakefile imports the workflow_scripts package from the repository root (the scripts
# find it through workflow_scripts/scripts/_bootstrap.py).
sys.path.insert(0, workflow.basedir)

from workflow_scripts import registry
from workflow_scripts.checkpoints import conversion_spec
from workflow_scripts.config import ConfigError, load_study
from workflow_scripts.provenance import code_hash

try:
    STUDY = load_study(config, basedir=workflow.basedir)
except ConfigError as error:
    raise WorkflowError(str(error)) from None

MODELS = STUDY.model_keys
DATASETS = STUDY.dataset_keys
ID_DATASET = STUDY.id_dataset
SPLITS = ["train", "test"]
PROTOCOLS = config["protocols"]
FROZEN_PROTOCOLS = [p for p in PROTOCOLS if p in ("knn", "linear", "linear_online")]
PERCENTS = [f"{p:g}" for p in config["fewshot"]["percents"]]
# Trained protocols run on the in-domain set only: finetune, fewshot<pct> per subset size.
TRAINED_PROTOCOLS = (["finetune"] if "finetune" in PROTOCOLS else []) + (
    [f"fewshot{pct}" for pct in PERCENTS] if "fewshot" in PROTOCOLS else []
)
# Few-shot subsets: the configured seed (the authors' 42) plus optional extra subset seeds,
# whose runs give a mean and sd per (model, protocol, arm).
FEWSHOT_SEEDS = [config["fewshot"]["seed"], *config["fewshot"].get("extra_seeds", [])]
FEWSHOT_RUNS = (
    [(pct, seed) for pct in PERCENTS for seed in FEWSHOT_SEEDS]
    if "fewshot" in PROTOCOLS
    else []
)


def fewshot_split_path(pct, seed):
    """Subset file of the in-domain set: fewshot_{pct}.npy for the configured seed,
    fewshot_{pct}_seed{seed}.npy for an extra seed."""
    suffix = "" if seed == config["fewshot"]["seed"] else f"_seed{seed}"
    return f"results/splits/{ID_DATASET}/fewshot_{pct}{suffix}.npy"


# One job per model covering all of its data sets (fewest process start-ups), or one job per
# (model, data set) (the unit on a GPU cluster, and adding a data set recomputes nothing else).
BATCH_DATASETS = config["batch_datasets"]


wildcard_constraints:
    model="|".join(MODELS),
    dataset="|".join(DATASETS),
    split="train|test",
    pct=r"[0-9]+(\.[0-9]+)?",


def script_path(name):
    """Path of a thin per-step script, relative to this file."""
    return f"../workflow_scripts/scripts/{name}.py"


def code(name):
    """Hash of the package modules a step's script imports (a change reruns the step)."""
    return code_hash(
        os.path.join(workflow.basedir, "workflow_scripts", "scripts", f"{name}.py")
    )


def per_job(pattern):
    """Output/log pattern of a per-(model, data set) rule.

    Batched: one job per model, so {dataset} becomes the list of all data sets (outputs) or
    'all' (logs, benchmarks). Unbatched: the pattern as is.
    """
    if BATCH_DATASETS:
        return expand(pattern, dataset=DATASETS, allow_missing=True)
    return pattern


def per_job_log(pattern):
    return pattern.replace("{dataset}", "all") if BATCH_DATASETS else pattern


def job_datasets(wildcards):
    """Data sets a per-(model, data set) job covers."""
    return [wildcards.dataset] if hasattr(wildcards, "dataset") else DATASETS


# Synthetic data sets are rendered (generate_dataset), real ones listed from their folders
# and checked (check_dataset); constraints built from the table give each label file one
# producer. Real roots are checked by the integrity job, not here: a dry run plans the whole
# study before any data is on disk.
SYNTHETIC = [d for d in DATASETS if STUDY.dataset(d)["kind"] == "synthetic"]
REAL = [d for d in DATASETS if d not in SYNTHETIC]


def keys_regex(keys):
    """Wildcard constraint matching exactly ``keys`` (nothing if empty)."""
    return "|".join(keys) if keys else "(?!x)x"


def images_of(dataset, split):
    """A split's images: the rendered uint8 array (synthetic) or the file list the
    integrity job wrote (real; read through workflow_scripts.datasets.loader)."""
    if dataset in SYNTHETIC:
        return f"results/data/{dataset}/{split}_images.npy"
    return f"results/data/{dataset}/{split}_files.txt"


def threads_of(rule):
    """Threads of a rule's jobs (config key threads.<rule>, default 1): they set the torch /
    faiss thread count inside the job and the CPUs a cluster job asks for."""
    return config.get("threads", {}).get(rule, 1)


def job_images(wildcards):
    """Train + test images of the data sets a job covers (0 where the table has no count)."""
    return sum(
        int(STUDY.dataset(d)[split] or 0)
        for d in job_datasets(wildcards)
        for split in ("n_train", "n_test")
    )


def mem_mb_features(copies, base_mb):
    """Memory (MB) of a job holding ``copies`` float32 N x D feature arrays of its data sets
    (N = train + test images, D = the model's embedding) on top of ``base_mb``."""

    def mem_mb(wildcards):
        dim = registry.ARCHS[STUDY.model(wildcards.model)["arch"]]["dim"]
        return base_mb + -(-copies * job_images(wildcards) * dim * 4 // 2**20)

    return mem_mb


def mem_mb_training(wildcards):
    """Memory (MB) of a fine-tuning job: a paper-size backbone (224-pixel input) with its
    optimiser state, activations of a 256-image batch and loader workers; or a demo model
    plus its in-memory image array."""
    arch = STUDY.model(wildcards.model)["arch"]
    return 32000 if registry.ARCHS[arch]["img_size"] >= 224 else 3000


def gpus_for(device, model):
    """GPUs of a torch job: 1 with device cuda, or with auto for the paper-size backbones
    (224-pixel archs); the demo's tiny backbones stay on CPU slots."""
    if device == "cpu":
        return 0
    arch = STUDY.model(model)["arch"]
    return int(device != "auto" or registry.ARCHS[arch]["img_size"] >= 224)


def extraction_gpus(wildcards):
    return gpus_for(config["features"]["device"], wildcards.model)


def finetune_gpus(wildcards):
    return gpus_for(config["finetune"].get("device", "auto"), wildcards.model)


def data_source(dataset):
    """What a script needs to read a data set's images (workflow_scripts.sources)."""
    row = STUDY.dataset(dataset)
    keys = ("key", "kind", "root", "variant", "num_classes")
    return {k: row[k] for k in keys} | {"preprocessing": row["preprocessing"] or "none"}


def data_sources(wildcards):
    """data_source() of each data set of an extraction job."""
    return {d: data_source(d) for d in job_datasets(wildcards)}


# The columns of a table row that change each step's results: a job's params carry these only,
# so descriptions, notes, published numbers and unknown extra columns reach T1/T2 alone.
MODEL_COLUMNS = {
    "pretrain": ("key", "method", "arch", "embedding", "seed", "steps"),
    # extraction, fine-tuning, the online probe
    "backbone": ("key", "method", "arch", "embedding"),
    "table": ("key", "method", "family", "arch", "paradigm"),  # columns of T3
}
DATASET_COLUMNS = {
    "generate": ("key", "generator", "variant", "n_train", "n_test", "seed"),
    "check": ("key", "kind", "root", "variant", "num_classes", "n_train", "n_test"),
    "table": ("key", "role", "shift_group"),  # columns of T3
}


def model_fields(key, use):
    row = STUDY.model(key)
    return {column: row.get(column) for column in MODEL_COLUMNS[use]}


def dataset_fields(key, use):
    row = STUDY.dataset(key)
    return {column: row.get(column) for column in DATASET_COLUMNS[use]}


def model_row(use):
    return lambda wildcards: model_fields(wildcards.model, use)


def dataset_row(use):
    return lambda wildcards: dataset_fields(wildcards.dataset, use)


def num_classes(wildcards):
    return [STUDY.dataset(d)["num_classes"] for d in job_datasets(wildcards)]


def features_of(split):
    def inputs(wildcards):
        return [
            f"results/features/{wildcards.model}/{d}/{split}.npy"
            for d in job_datasets(wildcards)
        ]

    return inputs


def labels_of(split):
    def inputs(wildcards):
        return [f"results/labels/{d}/{split}.npy" for d in job_datasets(wildcards)]

    return inputs


def probe_results():
    """Every per-job result file the accuracy table collects."""
    frozen = expand(
        "results/probes/{protocol}/{model}/{dataset}.csv",
        protocol=FROZEN_PROTOCOLS,
        model=MODELS,
        dataset=DATASETS,
    )
    trained = expand(
        "results/probes/{protocol}/{model}/{dataset}.csv",
        protocol=TRAINED_PROTOCOLS,
        model=MODELS,
        dataset=ID_DATASET,
    )
    return frozen + trained


# F4 compares the two arms, so it is built only when both run. F6 compares paradigms within
# the ViT backbone and the same method across backbones: built when either comparison exists.
_VIT_PARADIGMS = set(STUDY.models.loc[STUDY.models["family"] == "vit", "paradigm"])
_SHARED_METHODS = (STUDY.models.groupby("method")["family"].nunique() >= 2).any()
FIGURES = (
    ["f1_id_protocols", "f2_id_vs_ood", "f3_scatter"]
    + (["f4_bn_effect"] if set(config["arms"]) == {"raw", "bn"} else [])
    + ["f5_shift_groups"]
    + (
        ["f6_paradigm_backbone"]
        if {"discriminative", "generative"} <= _VIT_PARADIGMS or _SHARED_METHODS
        else []
    )
)
# T1 models, T2 data sets, T3 accuracies: CSV plus an HTML view for the report.
TABLES = ["models", "datasets", "accuracy"]


def stage_outputs():
    """Every file the tables are built from, stage by stage (data, labels, weights, cached
    features, per-job results). They are targets of the default rule because Snakemake does
    not rebuild a missing intermediate file while its consumers exist: a failed or killed
    rerun deletes its outputs, and the next run would then report success over stale tables.
    As targets, a missing one is rebuilt and whatever it changes downstream reruns."""
    features = expand(
        "results/features/{model}/{dataset}/{split}.npy",
        model=MODELS,
        dataset=DATASETS,
        split=SPLITS,
    )
    return [
        *[images_of(d, s) for d in DATASETS for s in SPLITS],
        *expand("results/labels/{dataset}/{split}.npy", dataset=DATASETS, split=SPLITS),
        *expand(
            "results/checkpoints/{model}.{ext}",
            model=MODELS,
            ext=["safetensors", "json"],
        ),
        *(features if FROZEN_PROTOCOLS else []),
        *probe_results(),
    ]


def all_targets():
    return [
        *stage_outputs(),
        "results/tables/accuracy.csv",
        "results/tables/correlations.csv",
        *expand("results/tables/{table}.{ext}", table=TABLES, ext=["csv", "html"]),
        *[fewshot_split_path(pct, seed) for pct in PERCENTS for seed in FEWSHOT_SEEDS],
        *expand("results/figures/{figure}.{ext}", figure=FIGURES, ext=["png", "pdf"]),
    ]


def job_pairs(wildcards):
    """(data set, split) pairs of a feature-extraction job, in output order."""
    return [(d, s) for d in job_datasets(wildcards) for s in SPLITS]


def per_job_pairs(pattern):
    """Outputs of a feature-extraction job, in the order of job_pairs()."""
    datasets = DATASETS if BATCH_DATASETS else ["{dataset}"]
    return [
        pattern.replace("{dataset}", d).replace("{split}", s)
        for d in datasets
        for s in SPLITS
    ]


def pretrain_hp(wildcards):
    """Pre-training hyper-parameters of one model: the shared ones plus its method's own."""
    cfg = config["pretrain"]
    method = STUDY.model(wildcards.model)["method"]
    hp = {k: v for k, v in cfg.items() if k != "methods"}
    hp.update(cfg["methods"].get(method, {}))
    hp.update(mean=config["transform"]["mean"], std=config["transform"]["std"])
    return hp


# The zoo: rows pre-trained by the workflow vs downloaded checkpoints. The two rules writing
# results/checkpoints/{model}.safetensors are told apart by these wildcard constraints.
DEMO_MODELS = [m for m in MODELS if STUDY.model(m)["source"] == "demo"]
CHECKPOINT_MODELS = [m for m in MODELS if STUDY.model(m)["source"] == "checkpoint"]
DEMO_MODELS_RE = keys_regex(DEMO_MODELS)
CHECKPOINT_MODELS_RE = keys_regex(CHECKPOINT_MODELS)
CHECKPOINT_SETTINGS = config["checkpoints"]
DOWNLOAD_SETTINGS = {
    k: CHECKPOINT_SETTINGS[k] for k in ("retries", "backoff", "timeout")
}


def checkpoint_spec(wildcards):
    """What the conversion of one checkpoint row needs (its rerun trigger)."""
    return conversion_spec(STUDY.model(wildcards.model), CHECKPOINT_SETTINGS)
