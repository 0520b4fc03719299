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
FROZEN_PROTOCOLS = [p for p in PROTOCOLS if registry.PROTOCOLS[p]["kind"] == "frozen"]
PERCENTS = [f"{p:g}" for p in config["fewshot"]["percents"]]
# Trained protocols run on the in-domain set only: finetune, fewshot<pct> per subset size.
TRAINED_PROTOCOLS = [
    name
    for name in registry.protocol_names(PROTOCOLS, config["fewshot"]["percents"])
    if registry.PROTOCOLS[registry.protocol_entry(name)[0]]["kind"] == "trained"
]
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


# Fine-tuning runs: 'finetune' on the whole train split, 'fewshot<pct>' on the configured
# subset seed's subset, 'fewshot<pct>_seed<s>' on an extra seed's. Each (run, arm) is one job
# (one GPU queue entry with its own resume state), or with batch_runs one job per model runs
# them all (the demo: process start-up dominates its tiny runs).
TRAINED_RUNS = {}  # run name -> (protocol, percent or None, subset seed or None)
if "finetune" in PROTOCOLS:
    TRAINED_RUNS["finetune"] = ("finetune", None, None)
for _pct, _seed in FEWSHOT_RUNS:
    _suffix = "" if _seed == config["fewshot"]["seed"] else f"_seed{_seed}"
    TRAINED_RUNS[f"fewshot{_pct}{_suffix}"] = (f"fewshot{_pct}", _pct, _seed)
ARMS = config["arms"]
BATCH_RUNS = config["batch_runs"]


# One job per model covering all of its data sets (fewest process start-ups), or one job per
# (model, data set) (the unit on a GPU cluster, and adding a data set recomputes nothing else).
BATCH_DATASETS = config["batch_datasets"]


wildcard_constraints:
    model="|".join(MODELS),
    dataset="|".join(DATASETS),
    split="train|test",
    pct=r"[0-9]+(\.[0-9]+)?",
    run="|".join(TRAINED_RUNS) or "(?!x)x",
    arm="|".join(registry.ARMS),


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


def mem_mb_extraction(wildcards):
    """Memory (MB) of an extraction job: the process and its loader workers (job_memory_mb)
    plus the job's features once (written through a memory map: its dirty pages count
    against the job until they reach the disk)."""
    return job_memory_mb(wildcards, "features") + mem_mb_features(1, 0)(wildcards)


def mem_mb_features(copies, base_mb):
    """Memory (MB) of a job holding ``copies`` float32 N x D feature arrays of its data sets
    (N = train + test images, D = the model's embedding) on top of ``base_mb``."""

    def mem_mb(wildcards):
        dim = registry.ARCHS[STUDY.model(wildcards.model)["arch"]]["dim"]
        return base_mb + -(-copies * job_images(wildcards) * dim * 4 // 2**20)

    return mem_mb


def mem_mb_training(wildcards):
    """Memory (MB) of a job training on images (fine-tuning, the online probe); see
    job_memory_mb()."""
    return job_memory_mb(wildcards, "finetune")


def job_memory_mb(wildcards, rule):
    """Host memory (MB) of a GPU-capable job, per process (x finetune.gpus for fine-tuning):
    the process with torch, CUDA and the model (registry.HOST_MB) plus each loader worker
    (registry.WORKER_MB, measured, README "Cluster") plus, for a demo model, its data set's
    arrays held in memory."""
    arch = STUDY.model(wildcards.model)["arch"]
    section = config["finetune"] if rule == "finetune" else config["features"]
    workers = section.get("workers", 0)
    if registry.ARCHS[arch]["img_size"] < 224:
        return 3000
    per_process = registry.HOST_MB + workers * registry.WORKER_MB
    processes = config["finetune"]["gpus"] if rule == "finetune" else 1
    return processes * per_process


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
    """GPUs of a fine-tuning job: finetune.gpus (data-parallel processes) on a GPU."""
    gpus = gpus_for(config["finetune"]["device"], wildcards.model)
    return gpus * config["finetune"]["gpus"]


def finetune_cpus(wildcards):
    """CPUs of a fine-tuning job: per process the compute threads (threads.finetune) plus its
    data-loader workers (finetune.workers), times the processes (finetune.gpus).
    """
    per_process = threads_of("finetune") + config["finetune"]["workers"]
    return per_process * config["finetune"]["gpus"]


def extraction_cpus(wildcards):
    """CPUs of an extraction job: compute threads plus data-loader workers."""
    return config["features"]["threads"] + config["features"]["workers"]


def per_run(pattern):
    """Output / log pattern of a fine-tuning job: one (run, arm), or with batch_runs every
    run and arm of the model (one log and benchmark per model)."""
    if BATCH_RUNS:
        if pattern.startswith(("logs/", "results/benchmarks/")):
            return pattern.replace("{model}/{run}/{arm}", "{model}")
        return expand(pattern, run=list(TRAINED_RUNS), arm=ARMS, allow_missing=True)
    return pattern


def job_runs(wildcards):
    """The (run, arm) units of a fine-tuning job, in output order, as plain dicts."""
    units = (
        [(r, a) for r in TRAINED_RUNS for a in ARMS]
        if BATCH_RUNS
        else [(wildcards.run, wildcards.arm)]
    )
    units = [(r, a, *TRAINED_RUNS[r]) for r, a in units]
    return [
        {
            "run": run,
            "arm": arm,
            "protocol": protocol,
            "subset_seed": seed,
            "split": None if pct is None else fewshot_split_path(pct, seed),
        }
        for run, arm, protocol, pct, seed in units
    ]


def job_splits(wildcards):
    """Few-shot subset files a fine-tuning job reads (in job_runs order, without repeats)."""
    paths = []
    for unit in job_runs(wildcards):
        _, pct, seed = TRAINED_RUNS[unit["run"]]
        if pct is not None and fewshot_split_path(pct, seed) not in paths:
            paths.append(fewshot_split_path(pct, seed))
    return paths


def job_recipes(wildcards):
    """The recipes of the protocols a fine-tuning job runs: config 'finetune' / 'fewshot'
    without the keys that change no result (they are read at run time)."""
    recipes = {}
    for unit in job_runs(wildcards):
        section = "fewshot" if unit["protocol"].startswith("fewshot") else "finetune"
        recipes[unit["protocol"]] = {
            k: v for k, v in config[section].items() if k not in RUN_TIME_KEYS
        }
    return recipes


# Keys of the finetune section that say where and how fast a job runs, not what it computes.
RUN_TIME_KEYS = ("device", "workers", "gpus", "save_minutes", "percents", "extra_seeds")


def gathered_outputs():
    """With batch_runs, the fine-tuning job's protocol files (the accuracy table's inputs)."""
    if not BATCH_RUNS:
        return []
    return [f"results/probes/{p}/{{model}}/{ID_DATASET}.csv" for p in TRAINED_PROTOCOLS]


def gathered_inputs(model):
    """The per-(run, arm) files of each trained protocol of a model, in TRAINED_PROTOCOLS
    order (what collect_trained, or a batched fine-tuning job, concatenates)."""
    return [trained_outputs(p, model) for p in TRAINED_PROTOCOLS]


def trained_outputs(protocol, model):
    """The per-(run, arm) result files of one trained protocol of a model."""
    return [
        f"results/trained/{model}/{run}/{arm}.csv"
        for run, (p, _, _) in TRAINED_RUNS.items()
        if p == protocol
        for arm in ARMS
    ]


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


# Figures the study has something to show for (registry.FIGURES "requires"), and the options
# of each: config figures.<key> over the last configured arm for its arm options.
FIGURES = [
    name
    for name, entry in registry.FIGURES.items()
    if entry.get("requires", lambda arms, models: True)(ARMS, STUDY.models)
]


def figure_options(name):
    entry = registry.FIGURES[name]
    defaults = {option: ARMS[-1] for option in entry.get("arm_options", ())}
    return defaults | config["figures"][entry["key"]]


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
        *[f for p in TRAINED_PROTOCOLS for m in MODELS for f in trained_outputs(p, m)],
        *probe_results(),
    ]


def all_targets():
    return [
        *stage_outputs(),
        "results/tables/accuracy.csv",
        "results/tables/accuracy.json",
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
