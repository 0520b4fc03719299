"""What the workflow runs, derived from a loaded configuration: job units, output lists,
resources and the per-job params. Pure (no file is read; nothing runs at import): the
Snakefile builds one :class:`Plan` (``rules/common.smk``: ``PLAN``) and the rules call its
methods as input, params and resource functions; the tests build it from any configuration.
"""

from __future__ import annotations

import dataclasses
import os

import pandas as pd
from snakemake.io import expand

from workflow_scripts import registry, seed_spread
from workflow_scripts.config import Study
from workflow_scripts.datasets import downloads

SPLITS = list(registry.SPLITS)
# T1 models, T2 data sets, T3 accuracies: CSV plus an HTML view for the report.
TABLES = ["models", "datasets", "accuracy"]
# Keys of the finetune / fewshot sections that say where and how fast a job runs, or which
# runs exist, not what a run computes (a job's params leave them out).
RUN_TIME_KEYS = ("device", "workers", "gpus", "save_minutes", "percents", "extra_seeds")
# The columns of a table row that change each step's results: a job's params carry these
# only, so descriptions, notes, published numbers and unknown extra columns reach T1/T2 alone.
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
# The run summary (workflow_scripts/summary.py), printed when a run succeeds.
SUMMARY = ["results/summary.md", "results/summary.html"]
# Host memory (MB) of a demo-size (< 224 px) model's job: torch plus the data set's arrays.
DEMO_JOB_MB = 3000
# Code identity (workflow_scripts.provenance): rule -> its thin script
# (workflow_scripts/scripts/<name>.py) and what its job loads by name at run time, beyond the
# script's imports:
# "source" the module that builds its model's backbone (registry.SOURCES "backbone"),
# "adapters" the adapter of each real data set whose images it reads (datasets.<kind>),
# "method" its model's pre-training method (pretrain.<method>). Generated rules: a feature
# probe (registry.PROTOCOLS "probe") runs feature_probe with its module, a figure
# (registry.FIGURES) plot_figure with figures.<name>. download_checkpoint has no code identity:
# its output is the file whose sha256 the model row pins, whatever code fetched it; the same
# holds for the data set files of download_archive.
JOB_CODE = {
    "download_checkpoint": None,
    "pretrain": ("pretrain", ("method",)),
    "convert_checkpoint": ("convert_checkpoint", ()),
    "timm_weights": ("timm_weights", ()),
    "generate_dataset": ("generate_dataset", ()),
    "download_archive": None,
    "unpack_imagenet": ("unpack_imagenet", ()),
    "check_dataset": ("check_dataset", ("adapters",)),
    "fewshot_split": ("fewshot_split", ()),
    "fewshot_split_extra_seed": ("fewshot_split", ()),
    "extract_features": ("extract_features", ("source", "adapters")),
    "linear_online": ("linear_online", ("source",)),
    "attentive_probe": ("attentive_probe", ("source", "adapters")),
    "finetune": ("finetune", ("source", "adapters")),
    "collect_trained": ("concat_csv", ()),
    "proxies_table": ("concat_csv", ()),
    "accuracy_table": ("accuracy_table", ()),
    "merge_results": ("merge_results", ()),
    "correlations": ("correlations", ()),
    "t1_models": ("make_table", ()),
    "t2_datasets": ("make_table", ()),
    "t3_accuracy": ("make_table", ()),
    "seed_spread": ("seed_spread", ()),
    "summary": ("summary", ()),
}


@dataclasses.dataclass(frozen=True)
class FigureContext:
    """What a figure's ``requires`` (registry.FIGURES) sees: what the analysis will hold,
    known before any job runs."""

    # one row per measurement of this run and of the results tables: model, method, backbone,
    # paradigm, dataset, domain, shift_group, protocol, arm, source (no accuracies)
    measures: pd.DataFrame
    models: pd.DataFrame  # the selected rows of the model table (index: key)
    config: dict
    options: dict  # the figure's options (config figures.<key> over its defaults)


def canonical(value):
    """``value`` with every mapping's keys sorted, recursively: Snakemake compares params by
    their repr, so a configuration whose keys are merely reordered must give the same params."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return type(value)(canonical(item) for item in value)
    return value


def keys_regex(keys) -> str:
    """Wildcard constraint matching exactly ``keys`` (nothing if empty)."""
    return "|".join(keys) if keys else "(?!x)x"


class Plan:
    """The study a configuration describes, as lists of jobs and their needs."""

    def __init__(self, config: dict, study: Study) -> None:
        self.config = config
        self.study = study
        self.models = study.model_keys
        # no model (models: []): no data, model or probe job, only the analysis of the
        # results tables
        self.datasets = study.dataset_keys if self.models else []
        self.id_dataset = study.id_dataset
        self.arms = config["arms"]
        protocols = config["protocols"]
        fewshot = config["fewshot"]
        self.frozen_protocols = [p for p in protocols if registry.PROTOCOLS[p]["kind"] == "frozen"]
        # label-free proxies of the cached train features (results/tables/proxies.csv)
        self.proxies = "proxies" in protocols and bool(self.models)
        self.percents = [f"{p:g}" for p in fewshot["percents"]]
        # trained protocols run on the in-domain set only: finetune, fewshot<pct> per size
        self.trained_protocols = [
            name
            for name in registry.protocol_names(protocols, fewshot["percents"])
            if registry.PROTOCOLS[registry.protocol_entry(name)[0]]["kind"] == "trained"
        ]
        # few-shot subsets: the configured seed (the authors' 42) plus optional extra subset
        # seeds, whose runs give a mean and sd per (model, protocol, arm)
        self.fewshot_seeds = [fewshot["seed"], *fewshot["extra_seeds"]]
        fewshot_runs = (
            [(pct, seed) for pct in self.percents for seed in self.fewshot_seeds]
            if "fewshot" in protocols
            else []
        )
        # Fine-tuning runs: 'finetune' on the whole train split, 'fewshot<pct>' on the
        # configured subset seed's subset, 'fewshot<pct>_seed<s>' on an extra seed's. Each
        # (run, arm) is one job (one GPU queue entry with its own resume state), or with
        # batch_runs one job per model runs them all (the demo: process start-up dominates).
        # run name -> (protocol, percent or None, subset seed or None)
        self.trained_runs: dict[str, tuple] = {}
        if "finetune" in protocols:
            self.trained_runs["finetune"] = ("finetune", None, None)
        for pct, seed in fewshot_runs:
            suffix = "" if seed == fewshot["seed"] else f"_seed{seed}"
            self.trained_runs[f"fewshot{pct}{suffix}"] = (f"fewshot{pct}", pct, seed)
        self.batch_runs = config["batch_runs"]
        # one job per model covering all of its data sets (fewest process start-ups), or one
        # job per (model, data set) (the unit on a GPU cluster; adding a data set recomputes
        # nothing else)
        self.batch_datasets = config["batch_datasets"]
        # synthetic data sets are rendered (generate_dataset), real ones listed from their
        # folders and checked (check_dataset); real roots are checked by that job, not here:
        # a dry run plans the whole study before any data is on disk
        self.synthetic = [d for d in self.datasets if study.dataset(d)["kind"] == "synthetic"]
        self.real = [d for d in self.datasets if d not in self.synthetic]
        # data sets the workflow can fetch (config data_download; the table's download
        # columns) and ImageNet rows, whose official archives a job unpacks
        self.downloadable = [d for d in self.real if downloads.archives(study.dataset(d))]
        self.imagenet_rows = [d for d in self.real if study.dataset(d)["kind"] == "imagenet"]
        # the zoo by model source (registry.SOURCES; workflow_scripts.model_sources)
        self.models_by_source = {
            source: [m for m in self.models if study.model(m)["source"] == source]
            for source in registry.SOURCES
        }
        self.download_settings = {
            k: config["checkpoints"][k] for k in ("retries", "backoff", "timeout")
        }
        # probes on cached features: one generated rule each (rules/probes.smk)
        self.feature_probes = {
            name: {"rule": entry["rules"][0], "module": entry["module"], **entry["probe"]}
            for name, entry in registry.PROTOCOLS.items()
            if "probe" in entry
        }
        # published ImageNet linear numbers in the model table: T1 and F8 compare them
        published = study.models.get("published_linear")
        self.published = published is not None and bool(published.notna().any())
        # the arm a figure shows unless told: the last configured one (BN when it runs), or
        # without it in the analysis (a results table alone) the analysis' first arm
        held = list(dict.fromkeys(study.measures["arm"]))
        self.default_arm = self.arms[-1] if self.arms[-1] in held or not held else held[0]
        # external result tables (config results_tables): source name -> path
        self.results_tables = {name: str(path) for name, path in study.results_tables.items()}
        # the accuracy table the correlations, T3 and the figures read: this run's, or merged
        # with the results tables (rule merge_results)
        self.analysis_table = (
            "results/tables/accuracy_merged.csv"
            if self.results_tables
            else "results/tables/accuracy.csv"
        )
        # the figures the analysis has something to show for (registry.FIGURES "requires"),
        # and why each other one is not drawn
        self.skipped_figures: dict[str, str] = {}
        for name, entry in registry.FIGURES.items():
            context = FigureContext(
                measures=study.measures,
                models=study.models,
                config=config,
                options=self.figure_options(name),
            )
            reason = entry["requires"](context) if "requires" in entry else None
            if reason is not None:
                self.skipped_figures[name] = reason
        self.figures = [name for name in registry.FIGURES if name not in self.skipped_figures]

    # ----------------------------------------------------------------------------------------
    # data sets and splits

    def fewshot_split_path(self, pct, seed) -> str:
        """Subset file of the in-domain set: fewshot_{pct}.npy for the configured seed,
        fewshot_{pct}_seed{seed}.npy for an extra seed."""
        suffix = "" if seed == self.config["fewshot"]["seed"] else f"_seed{seed}"
        return f"results/splits/{self.id_dataset}/fewshot_{pct}{suffix}.npy"

    def images_of(self, dataset, split) -> str:
        """A split's images: the rendered uint8 array (synthetic) or the file list the
        integrity job wrote (real; read through workflow_scripts.datasets.loader)."""
        if dataset in self.synthetic:
            return f"results/data/{dataset}/{split}_images.npy"
        return f"results/data/{dataset}/{split}_files.txt"

    def data_source(self, dataset) -> dict:
        """What a script needs to read a data set's images (workflow_scripts.sources)."""
        row = self.study.dataset(dataset)
        keys = ("key", "kind", "root", "variant", "num_classes")
        return {k: row[k] for k in keys} | {"preprocessing": row["preprocessing"] or "none"}

    def data_sources(self, wildcards) -> dict:
        """data_source() of each data set of an extraction job."""
        return {d: self.data_source(d) for d in self.job_datasets(wildcards)}

    def model_fields(self, key, use) -> dict:
        """The columns of a model row a step's params carry (MODEL_COLUMNS[use]), plus what its
        source adds: the backbone fields of a job that loads it, the table columns."""
        row = self.study.model(key)
        fields = {column: row.get(column) for column in MODEL_COLUMNS[use]}
        if use == "backbone":
            fields |= self.source_of(key).backbone_fields(row, self.config)
        elif use == "table":
            fields |= self.source_of(key).table_fields(row)
        return fields

    def dataset_fields(self, key, use) -> dict:
        row = self.study.dataset(key)
        return {column: row.get(column) for column in DATASET_COLUMNS[use]}

    def download_file(self, wildcards) -> dict:
        """Params of a download job: the row's file named ``wildcards.archive``."""
        files = {f.name: f for f in downloads.archives(self.study.dataset(wildcards.dataset))}
        if wildcards.archive not in files:
            raise ValueError(
                f"data set '{wildcards.dataset}' downloads no file '{wildcards.archive}' "
                f"(its download_urls name: {', '.join(files) or 'none'})"
            )
        return files[wildcards.archive].params()

    def model_row(self, use):
        return lambda wildcards: self.model_fields(wildcards.model, use)

    def dataset_row(self, use):
        return lambda wildcards: self.dataset_fields(wildcards.dataset, use)

    # ----------------------------------------------------------------------------------------
    # per-(model, data set) jobs: extraction and the frozen probes

    def per_job(self, pattern):
        """Output pattern of a per-(model, data set) rule: with batch_datasets one job per
        model, so {dataset} becomes the list of all data sets; else the pattern as is."""
        if self.batch_datasets:
            return expand(pattern, dataset=self.datasets, allow_missing=True)
        return pattern

    def per_job_log(self, pattern) -> str:
        """Log / benchmark pattern of such a rule ({dataset} = 'all' when batched)."""
        return pattern.replace("{dataset}", "all") if self.batch_datasets else pattern

    def job_datasets(self, wildcards) -> list[str]:
        """Data sets a per-(model, data set) job covers."""
        return [wildcards.dataset] if hasattr(wildcards, "dataset") else self.datasets

    def job_pairs(self, wildcards) -> list[tuple[str, str]]:
        """(data set, split) pairs of a feature-extraction job, in output order."""
        return [(d, s) for d in self.job_datasets(wildcards) for s in SPLITS]

    def per_job_pairs(self, pattern) -> list[str]:
        """Outputs of a feature-extraction job, in the order of job_pairs()."""
        datasets = self.datasets if self.batch_datasets else ["{dataset}"]
        return [
            pattern.replace("{dataset}", d).replace("{split}", s) for d in datasets for s in SPLITS
        ]

    def probe_settings(self, protocol) -> dict:
        """A feature probe's params: its config section without the keys that change no row
        (registry.PROBE_RUN_TIME_KEYS), sorted (Snakemake compares params in key order)."""
        section = self.config[protocol]
        return canonical(
            {k: v for k, v in section.items() if k not in registry.PROBE_RUN_TIME_KEYS}
        )

    @property
    def numerics(self) -> dict:
        """Config section ``numerics`` (the pinned CPU kernels), the param of every job whose
        numbers depend on them: a change of pins reruns those."""
        return self.section("numerics")

    def section(self, name, leave_out=()) -> dict:
        """A config section as a param: keys sorted (:func:`canonical`), ``leave_out`` keys
        (those that change no result) left out."""
        return canonical({k: v for k, v in self.config[name].items() if k not in leave_out})

    def num_classes(self, wildcards) -> list[int]:
        return [self.study.dataset(d)["num_classes"] for d in self.job_datasets(wildcards)]

    def features_of(self, split):
        def inputs(wildcards):
            return [
                f"results/features/{wildcards.model}/{d}/{split}.npy"
                for d in self.job_datasets(wildcards)
            ]

        return inputs

    def labels_of(self, split):
        def inputs(wildcards):
            return [f"results/labels/{d}/{split}.npy" for d in self.job_datasets(wildcards)]

        return inputs

    # ----------------------------------------------------------------------------------------
    # resources

    def threads_of(self, rule) -> int:
        """Threads of a rule's jobs (config key threads.<rule>): they set the torch / faiss
        thread count inside the job and the CPUs a cluster job asks for."""
        return self.config["threads"][rule]

    def job_images(self, wildcards) -> int:
        """Train + test images of the data sets a job covers (0 where the table has none)."""
        return sum(
            int(self.study.dataset(d)[split] or 0)
            for d in self.job_datasets(wildcards)
            for split in ("n_train", "n_test")
        )

    def mem_mb_features(self, copies, base_mb):
        """Memory (MB) of a job holding ``copies`` float32 N x D feature arrays of its data
        sets (N = train + test images, D = the model's embedding) on top of ``base_mb``."""

        def mem_mb(wildcards):
            dim = self.arch_spec(wildcards.model)["dim"]
            return base_mb + -(-copies * self.job_images(wildcards) * dim * 4 // 2**20)

        return mem_mb

    def mem_mb_extraction(self, wildcards) -> int:
        """Memory (MB) of an extraction job: the process and its loader workers
        (job_memory_mb) plus the job's features once (written through a memory map: its
        dirty pages count against the job until they reach the disk)."""
        return self.job_memory_mb(wildcards, "features") + self.mem_mb_features(1, 0)(wildcards)

    def mem_mb_training(self, wildcards) -> int:
        """Memory (MB) of a job training on images (fine-tuning); see job_memory_mb()."""
        return self.job_memory_mb(wildcards, "finetune")

    def job_memory_mb(self, wildcards, rule) -> int:
        """Host memory (MB) of a GPU-capable job, per process (x finetune.gpus for
        fine-tuning): the process with torch, CUDA and the model (registry.HOST_MB) plus each
        loader worker (registry.WORKER_MB, measured, README "Cluster"); a demo model's job
        (data set arrays in memory) DEMO_JOB_MB."""
        section = self.config["finetune"] if rule == "finetune" else self.config["features"]
        if self.arch_spec(wildcards.model)["img_size"] < 224:
            return DEMO_JOB_MB
        per_process = registry.HOST_MB + section["workers"] * registry.WORKER_MB
        # a timm row's model beyond the paper-size one HOST_MB allows for (0 for other rows)
        per_process += self.arch_spec(wildcards.model).get("extra_mb", {}).get(rule, 0)
        processes = self.config["finetune"]["gpus"] if rule == "finetune" else 1
        return processes * per_process

    def gpus_for(self, device, model) -> int:
        """GPUs of a torch job: 1 with device cuda, or with auto for the paper-size backbones
        (224-pixel archs); the demo's tiny backbones stay on CPU slots."""
        if device == "cpu":
            return 0
        return int(device != "auto" or self.arch_spec(model)["img_size"] >= 224)

    def attentive_gpus(self, wildcards) -> int:
        return self.gpus_for(self.config["attentive"]["device"], wildcards.model)

    def attentive_memory_mb(self, wildcards) -> int:
        """Host memory (MB) of an attentive_probe job: the extraction process's
        (job_memory_mb) plus one data set's tokens at a time, train (its train_percent subset)
        and test, in attentive.TOKEN_DTYPE -- the largest of the job's data sets."""
        import numpy as np

        from workflow_scripts.attentive import TOKEN_DTYPE, token_shape

        row = self.study.model(wildcards.model)
        tokens, dim = token_shape(row["arch"], self.arch_spec(wildcards.model))
        itemsize = np.dtype(TOKEN_DTYPE).itemsize
        share = min(1.0, self.config["attentive"]["train_percent"] / 100)
        images = max(
            share * int(self.study.dataset(d)["n_train"]) + int(self.study.dataset(d)["n_test"])
            for d in self.job_datasets(wildcards)
        )
        tokens_mb = images * tokens * dim * itemsize / 1e6
        return self.job_memory_mb(wildcards, "attentive_probe") + int(np.ceil(tokens_mb))

    def extraction_gpus(self, wildcards) -> int:
        return self.gpus_for(self.config["features"]["device"], wildcards.model)

    def finetune_gpus(self, wildcards) -> int:
        """GPUs of a fine-tuning job: finetune.gpus (data-parallel processes) on a GPU."""
        gpus = self.gpus_for(self.config["finetune"]["device"], wildcards.model)
        return gpus * self.config["finetune"]["gpus"]

    def finetune_cpus(self, wildcards) -> int:
        """CPUs of a fine-tuning job: per process the compute threads (threads.finetune) plus
        its data-loader workers (finetune.workers), times the processes (finetune.gpus)."""
        per_process = self.threads_of("finetune") + self.config["finetune"]["workers"]
        return per_process * self.config["finetune"]["gpus"]

    def extraction_cpus(self, wildcards) -> int:
        """CPUs of an extraction job: compute threads plus data-loader workers."""
        return self.config["features"]["threads"] + self.config["features"]["workers"]

    # ----------------------------------------------------------------------------------------
    # fine-tuning jobs

    def per_run(self, pattern):
        """Output / log pattern of a fine-tuning job: one (run, arm), or with batch_runs every
        run and arm of the model (one log and benchmark per model)."""
        if self.batch_runs:
            if pattern.startswith(("logs/", "results/benchmarks/")):
                return pattern.replace("{model}/{run}/{arm}", "{model}")
            return expand(pattern, run=list(self.trained_runs), arm=self.arms, allow_missing=True)
        return pattern

    def _job_units(self, wildcards) -> list[tuple[str, str]]:
        """The (run, arm) units of a fine-tuning job, in output order."""
        if self.batch_runs:
            return [(r, a) for r in self.trained_runs for a in self.arms]
        return [(wildcards.run, wildcards.arm)]

    def job_runs(self, wildcards) -> list[dict]:
        """The (run, arm) units of a fine-tuning job, in output order, as plain dicts."""
        units = self._job_units(wildcards)
        return [
            {
                "run": run,
                "arm": arm,
                "protocol": protocol,
                "subset_seed": seed,
                "split": None if pct is None else self.in_run(self.fewshot_split_path(pct, seed)),
            }
            for run, arm in units
            for protocol, pct, seed in [self.trained_runs[run]]
        ]

    def job_splits(self, wildcards) -> list[str]:
        """Few-shot subset files a fine-tuning job reads (in job_runs order, no repeats)."""
        splits = [
            self.fewshot_split_path(pct, seed)
            for run, _ in self._job_units(wildcards)
            for _, pct, seed in [self.trained_runs[run]]
            if pct is not None
        ]
        return list(dict.fromkeys(splits))

    def job_recipes(self, wildcards) -> dict:
        """The recipes of the protocols a fine-tuning job runs: config 'finetune' / 'fewshot'
        without the keys that change no result (they are read at run time)."""
        recipes = {}
        for unit in self.job_runs(wildcards):
            section = "fewshot" if unit["protocol"].startswith("fewshot") else "finetune"
            recipes[unit["protocol"]] = {
                k: v for k, v in self.config[section].items() if k not in RUN_TIME_KEYS
            }
        return canonical(recipes)

    def trained_outputs(self, protocol, model) -> list[str]:
        """The per-(run, arm) result files of one trained protocol of a model."""
        return [
            f"results/trained/{model}/{run}/{arm}.csv"
            for run, (p, _, _) in self.trained_runs.items()
            if p == protocol
            for arm in self.arms
        ]

    def gathered_inputs(self, model) -> list[list[str]]:
        """The per-(run, arm) files of each trained protocol of a model, in trained_protocols
        order (what a batched fine-tuning job concatenates: a param, so in_run)."""
        return [
            [self.in_run(f) for f in self.trained_outputs(p, model)] for p in self.trained_protocols
        ]

    def state_dir(self, wildcards) -> str:
        """Resume state of a model's fine-tuning jobs (not an output: a param, so in_run)."""
        return self.in_run(f"results/state/finetune/{wildcards.model}")

    def in_run(self, path: str) -> str:
        """A path a job's params name: under results/seeds/<run>/ in a run of demo.seeds
        (Snakemake prefixes the module's inputs, outputs and logs, not its params)."""
        return seed_spread.run_path(self.config["demo"]["run"], path)

    def gathered_outputs(self) -> list[str]:
        """With batch_runs, the fine-tuning job's protocol files (the accuracy table's
        inputs)."""
        if not self.batch_runs:
            return []
        return [
            f"results/probes/{p}/{{model}}/{self.id_dataset}.csv" for p in self.trained_protocols
        ]

    # ----------------------------------------------------------------------------------------
    # the zoo: each model by its source (registry.SOURCES, workflow_scripts.model_sources)

    def source_of(self, model):
        """The module of a model's source (``workflow_scripts.model_sources.<source>``)."""
        from workflow_scripts import model_sources

        return model_sources.load(self.study.model(model)["source"])

    def models_for_rule(self, rule) -> list[str]:
        """The models whose source writes their weights with ``rule`` (rules/zoo.smk)."""
        return [
            m
            for source, entry in registry.SOURCES.items()
            if rule in entry["rules"]
            for m in self.models_by_source[source]
        ]

    def weights_spec(self, wildcards) -> dict:
        """What the weights rule of a model needs from its row and the config (its rerun
        trigger): pre-training hyper-parameters, the conversion spec, the timm file."""
        row = self.study.model(wildcards.model)
        return canonical(self.source_of(wildcards.model).weights_spec(row, self.config))

    def checkpoint_source(self, wildcards) -> str | dict:
        """The download rule's source param: the row's url, and for a local file (a path or
        file:// URL) also the sha256 of its bytes, so a file replaced at the same path is
        copied and converted again (``local_files``). A download URL's param is the url alone:
        the checksum of what arrives is the pin's business (column sha256)."""
        from workflow_scripts import local_files

        url = self.study.model(wildcards.model)["url"]
        if local_files.url_path(url) is None:
            return url
        return {"url": url, "sha256": local_files.url_sha256(url)}

    def stale_outputs(self) -> list[str]:
        """Files an earlier configuration of this run folder wrote that this one would leave
        beside its own as if they were current: the merged analysis table once config
        results_tables is empty (the Snakefile's onstart removes them)."""
        merged = "results/tables/accuracy_merged.csv"
        return [merged] if not self.results_tables and os.path.exists(merged) else []

    def results_table_sources(self, wildcards=None) -> dict:
        """Rule merge_results' tables param: each results table's path and the sha256 of its
        bytes, so a table replaced by one with an older time (``cp -p``, ``mv``) still merges
        again (``local_files``)."""
        from workflow_scripts import local_files

        return {
            name: {"path": path, "sha256": local_files.sha256(path)}
            for name, path in self.results_tables.items()
        }

    def arch_spec(self, model) -> dict:
        """The arch facts planning needs ("dim": the row's embedding width, "img_size",
        "extra_mb"): the registry's, or for a timm row timm's own (no download)."""
        return self.source_of(model).arch_spec(self.study.model(model), self.config)

    def transform_of(self, wildcards) -> dict:
        """The eval/train transform of a model's jobs (config 'transform', or a timm row's
        named spec, maybe timm's own: transform 'model')."""
        row = self.study.model(wildcards.model)
        return canonical(self.source_of(wildcards.model).transform_spec(row, self.config))

    # ----------------------------------------------------------------------------------------
    # code identity (workflow_scripts.provenance)

    def job_code(self, rule, wildcards) -> tuple[str, tuple[str, ...]] | None:
        """(thin script, package modules loaded by name) of one job of ``rule``: what it
        runs (JOB_CODE); None for a rule without a code identity."""
        probes = {probe["rule"]: probe["module"] for probe in self.feature_probes.values()}
        if rule in probes:
            return "feature_probe", (probes[rule],)
        if rule in registry.FIGURES:
            return "plot_figure", (f"figures.{rule}",)
        if JOB_CODE[rule] is None:
            return None
        script, loads = JOB_CODE[rule]
        modules: list[str] = []
        if "method" in loads:
            from workflow_scripts.pretrain import method_module

            modules.append(method_module(self.study.model(wildcards.model)["method"]))
        if "source" in loads:  # the module that builds its backbone
            modules.append(
                registry.SOURCES[self.study.model(wildcards.model)["source"]]["backbone"]
            )
        if "adapters" in loads:
            from workflow_scripts.datasets import adapter_module

            kinds = {self.study.dataset(d)["kind"] for d in self.image_datasets(rule, wildcards)}
            modules += [adapter_module(kind) for kind in sorted(kinds - {"synthetic"})]
        return script, tuple(m for m in modules if m is not None)

    def image_datasets(self, rule, wildcards) -> list[str]:
        """The data sets whose images a job of ``rule`` reads."""
        if rule == "finetune":
            return [self.id_dataset]
        return self.job_datasets(wildcards)

    def job_code_files(self, rule, wildcards) -> tuple[str, ...]:
        """The files a job runs (provenance.module_closure), relative to the repository."""
        from workflow_scripts import provenance

        code = self.job_code(rule, wildcards)
        if code is None:
            return ()
        return provenance.module_closure(str(provenance.script_file(code[0])), code[1])

    def code(self, rule):
        """The ``code`` param of ``rule``: per job, the hash of the code it runs."""
        from workflow_scripts import provenance

        def code(wildcards) -> str:
            script, modules = self.job_code(rule, wildcards)
            return provenance.code_hash(str(provenance.script_file(script)), modules)

        return code

    # ----------------------------------------------------------------------------------------
    # figures and targets

    def figure_options(self, name) -> dict:
        """Options of a registered figure: config figures.<key> over the last configured arm
        for its arm options (BN when it runs)."""
        entry = registry.FIGURES[name]
        defaults = {option: self.default_arm for option in entry.get("arm_options", ())}
        return canonical(defaults | self.config["figures"][entry["key"]])

    def table_path(self, name) -> str:
        """A figure input (registry.FIGURES "inputs"): results/tables/<name>.csv, where
        "accuracy" is the analysis table."""
        return self.analysis_table if name == "accuracy" else f"results/tables/{name}.csv"

    def probe_results(self) -> list[str]:
        """Every per-job result file the accuracy table collects."""
        frozen = expand(
            "results/probes/{protocol}/{model}/{dataset}.csv",
            protocol=self.frozen_protocols,
            model=self.models,
            dataset=self.datasets,
        )
        trained = expand(
            "results/probes/{protocol}/{model}/{dataset}.csv",
            protocol=self.trained_protocols,
            model=self.models,
            dataset=self.id_dataset,
        )
        return frozen + trained

    def proxy_results(self) -> list[str]:
        """The per-job proxy files results/tables/proxies.csv collects (none without the
        protocol)."""
        if not self.proxies:
            return []
        return expand(
            "results/probes/proxies/{model}/{dataset}.csv", model=self.models, dataset=self.datasets
        )

    def stage_outputs(self) -> list[str]:
        """Every file the tables are built from, stage by stage (data, labels, weights, cached
        features, per-job results). They are targets of the default rule because Snakemake
        does not rebuild a missing intermediate file while its consumers exist: a failed or
        killed rerun deletes its outputs, and the next run would then report success over
        stale tables. As targets, a missing one is rebuilt and whatever it changes downstream
        reruns."""
        features = expand(
            "results/features/{model}/{dataset}/{split}.npy",
            model=self.models,
            dataset=self.datasets,
            split=SPLITS,
        )
        return [
            *[self.images_of(d, s) for d in self.datasets for s in SPLITS],
            *expand("results/labels/{dataset}/{split}.npy", dataset=self.datasets, split=SPLITS),
            *expand(
                "results/checkpoints/{model}.{ext}", model=self.models, ext=["safetensors", "json"]
            ),
            *(features if self.frozen_protocols or self.proxies else []),
            *self.proxy_results(),
            *[
                f
                for p in self.trained_protocols
                for m in self.models
                for f in self.trained_outputs(p, m)
            ],
            *self.probe_results(),
        ]

    @property
    def seed_runs(self) -> list[int]:
        """The runs of demo.seeds: 0 (this configuration) and each further one."""
        return [0, *seed_spread.offsets(self.config)]

    def seed_run_correlations(self) -> list[str]:
        """The correlation table of every run of demo.seeds, in run order."""
        return [
            seed_spread.run_path(run, "results/tables/correlations.csv") for run in self.seed_runs
        ]

    def figure_files(self) -> list[str]:
        """The PNG and PDF of every figure this configuration draws."""
        return expand("results/figures/{figure}.{ext}", figure=self.figures, ext=["png", "pdf"])

    def all_targets(self) -> list[str]:
        figures = self.figure_files()
        if not self.models:  # the results tables alone: the analysis, T3, the figures
            return [
                self.analysis_table,
                "results/tables/correlations.csv",
                "results/tables/accuracy.html",
                *figures,
                *SUMMARY,
            ]
        return [
            *self.stage_outputs(),
            "results/tables/accuracy.json",
            *([self.analysis_table] if self.results_tables else []),
            "results/tables/correlations.csv",
            *(["results/tables/proxies.csv"] if self.proxies else []),
            *expand("results/tables/{table}.{ext}", table=TABLES, ext=["csv", "html"]),
            *[
                self.fewshot_split_path(pct, seed)
                for pct in self.percents
                for seed in self.fewshot_seeds
            ],
            *figures,
            *(
                expand("results/tables/seed_spread.{ext}", ext=["csv", "html"])
                if len(self.seed_runs) > 1
                else []
            ),
            *SUMMARY,
        ]
