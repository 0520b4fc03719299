"""Names the workflow knows, importable without torch.

The configuration is validated against these names at Snakefile parse time, before any job
runs; the modules that implement them (``backbones``, ``pretrain``, ``synthetic``) are tested to
agree with this registry.
"""

from __future__ import annotations

# arch -> family (backbone family used by the analysis), input image size, embedding dim,
# embeddings it supports, builder (the name of its constructor in backbones.BUILDERS).
ARCHS: dict[str, dict] = {
    # Demo backbones (README "Demo results"): a ResNet-10 of torchvision BasicBlocks with widths
    # 16/32/64/128 and a 3x3 stride-2 stem; a timm ViT with patch 8, dim 64, depth 4, 2 heads.
    "resnet10_tiny": {
        "family": "resnet",
        "img_size": 32,
        "dim": 128,
        "embeddings": ("avgpool",),
        "builder": "tiny_resnet",
    },
    "vit_tiny_p8": {
        "family": "vit",
        "img_size": 32,
        "dim": 64,
        "embeddings": ("cls", "mean_patch"),
        "builder": "tiny_vit",
    },
    # The paper's backbones.
    "resnet50": {
        "family": "resnet",
        "img_size": 224,
        "dim": 2048,
        "embeddings": ("avgpool",),
        "builder": "torchvision_resnet50",
    },
    "vit_base_patch16_224": {
        "family": "vit",
        "img_size": 224,
        "dim": 768,
        "embeddings": ("cls", "mean_patch"),
        "builder": "timm_vit",
    },
    "beitv2_base_patch16_224": {
        "family": "vit",
        "img_size": 224,
        "dim": 768,
        "embeddings": ("mean_patch",),
        "builder": "timm_beit",
    },
}

# Parameters of each arch's backbone (no classifier head), as backbones.py builds it (a test
# counts them): the static ranker "params" (STATIC_RANKERS).
ARCH_PARAMS: dict[str, int] = {
    "resnet10_tiny": 307_536,
    "vit_tiny_p8": 147_520,
    "resnet50": 23_508_032,
    "vit_base_patch16_224": 85_798_656,
    "beitv2_base_patch16_224": 85_761_984,
}

# Host memory (MB) of one GPU job process, for the SLURM request (--mem). HOST_MB: torch, the
# CUDA libraries and context, a paper-size model with its optimiser state; measured on a CPU
# at 1.1 GB for ResNet-50 + SGD state after imports (0.5 GB), the CUDA share is an assumption
# (not measured: no GPU was available). WORKER_MB: one data-loader worker decoding JPEGs through
# the paper's train transform (measured: 115 MB unique memory) plus the uint8 batches it
# prefetches (2 x 256 x 3 x 224 x 224 bytes = 77 MB), with margin. README "Cluster".
HOST_MB = 6000
WORKER_MB = 300

# Pre-training methods the demo zoo can train inside the workflow -> (paradigm, families it
# runs on). "random" writes the seeded initialisation untouched (a baseline).
METHODS: dict[str, dict] = {
    "random": {"paradigm": "baseline", "families": ("resnet", "vit")},
    "supervised": {"paradigm": "discriminative", "families": ("resnet", "vit")},
    "simclr": {"paradigm": "discriminative", "families": ("resnet", "vit")},
    "byol": {"paradigm": "discriminative", "families": ("resnet", "vit")},
    "simsiam": {"paradigm": "discriminative", "families": ("resnet", "vit")},
    "rotation": {"paradigm": "discriminative", "families": ("resnet", "vit")},
    "mae": {"paradigm": "generative", "families": ("vit",)},
    "simmim": {"paradigm": "generative", "families": ("vit",)},
}

# Model sources (model-table column ``source``): where a row's backbone comes from, one entry
# each: how it is planned (its module workflow_scripts/model_sources/<name>.py checks the row and
# gives the arch facts, job fields and transform at parse time), fetched ("rules": the rules in
# rules/zoo.smk that write results/checkpoints/{model}.safetensors for its rows, in DAG order)
# and loaded ("backbone": the package module whose build_job_backbone(model, drop_path) builds
# the backbone a job loads those weights into). trains_on_id: its models are pre-trained on the
# in-domain set, which must then be a generated one.
SOURCES: dict[str, dict] = {
    "demo": {
        "label": "pre-trained by the workflow",
        "rules": ("pretrain",),
        "backbone": "backbones",
        "trains_on_id": True,
    },
    "checkpoint": {
        "label": "a released checkpoint, downloaded and converted",
        "rules": ("download_checkpoint", "convert_checkpoint"),
        "backbone": "backbones",
    },
    "timm": {
        "label": "a pretrained timm model by name",
        "rules": ("timm_weights",),
        "backbone": "timm_models",
    },
}

SPLITS = ("train", "test")

# --------------------------------------------------------------------------------------------
# Evaluation protocols, in the order of every table and figure. kind: "frozen" protocols run
# on every data set (cached features or the frozen backbone), "trained" ones fine-tune on the
# in-domain set, "proxy" measures the features without an accuracy. rows: how the accuracy
# table reduces a protocol's per-job rows (workflow_scripts.results.REDUCERS). per_percent: one
# protocol per few-shot subset size, named <name><pct> (fewshot10, fewshot1), ordered by
# decreasing size; label takes {pct}. module: the package module that computes it; rules: the
# rules that do (the per-job one first). probe: a probe on cached features, whose rule
# rules/probes.smk generates (its module's run_job() computes it, settings = config section
# <protocol>), with the job's memory as (feature-array copies, MB on top).
PROTOCOLS: dict[str, dict] = {
    "knn": {
        "kind": "frozen",
        "label": "kNN",
        "rows": "single",
        "module": "knn",
        "rules": ("knn_probe",),
        "probe": {"mem_mb": (3, 1000)},
    },
    "linear": {
        "kind": "frozen",
        "label": "linear",
        "rows": "linear_heads",
        "module": "linear",
        "rules": ("linear_probe",),
        "probe": {"mem_mb": (3, 1500)},
    },
    "linear_online": {
        "kind": "frozen",
        "label": "linear (online)",
        "rows": "linear_heads",
        "module": "online_probe",
        "rules": ("linear_online",),
    },
    # efficient probing on the frozen tokens (workflow_scripts.attentive): the tokens are
    # computed in the job, never cached (a ViT-B's ImageNet tokens would take ~387 GB)
    "attentive": {
        "kind": "frozen",
        "label": "attentive",
        "rows": "probe_runs",
        "module": "attentive",
        "rules": ("attentive_probe",),
    },
    "finetune": {
        "kind": "trained",
        "label": "fine-tune",
        "rows": "subset_seeds",
        "module": "finetune",
        "rules": ("finetune", "collect_trained"),
    },
    "fewshot": {
        "kind": "trained",
        "label": "few-shot {pct}%",
        "rows": "subset_seeds",
        "per_percent": True,
        "module": "finetune",
        "rules": ("finetune", "collect_trained", "fewshot_split"),
    },
    # not an accuracy: the measures of registry.PROXIES (results/tables/proxies.csv)
    "proxies": {
        "kind": "proxy",
        "label": "proxies",
        "module": "proxies",
        "rules": ("proxies", "proxies_table"),
        # the job's train and test features once, plus float64 copies of the <= 25,600-row
        # subsample (~1.7 GB at D = 2048)
        "probe": {"mem_mb": (1, 2500)},
    },
}

# Label-free and transferability proxies of the cached train features (protocol "proxies",
# workflow_scripts.proxies): label and direction (+1: higher predicts better accuracy).
PROXIES: dict[str, dict] = {
    # Garrido et al.: a higher effective rank goes with higher downstream accuracy
    "rankme": {"label": "RankMe", "direction": +1},
    "rankme_d": {"label": "RankMe / D", "direction": +1},
    # alpha-ReQ is not monotone as we read Agrawal et al.: small alpha = near-white features,
    # large alpha = collapsed ones, the best linear accuracy near alpha ~ 1. Trained features
    # mostly lie at alpha >= ~1, where lower alpha goes with better accuracy: -1 (wrong below 1)
    "alpha_req": {"label": "α-ReQ", "direction": -1},
    # You et al.: a higher evidence goes with better transfer
    "logme": {"label": "LogME", "direction": +1},
    # more within-class collapse relative to the spread of the class means is better
    "nc1": {"label": "NC1", "direction": -1},
}

# Keys of a probe's config section that do not change its rows (where it runs; what the
# accuracy table reports): left out of the job's params.
PROBE_RUN_TIME_KEYS = ("device", "report", "report_lr")

# Feature arms, in order: the features as extracted, and after a parameter-free BatchNorm
# (per-dimension standardisation with train-split statistics). label: suffix in figure labels.
ARMS: dict[str, dict] = {"raw": {"label": ""}, "bn": {"label": "BN"}}

# Static rankers (config analysis.static_rankers): orders of the models that need no
# evaluation, the null baselines every protocol and proxy is compared with (correlations.csv
# columns baseline .. beats_baseline; workflow_scripts.static_rankers). Higher ranks first.
# Besides these names, "table:<protocol>:<arm>" is the in-domain top-1 of that (protocol, arm)
# in the results tables (config results_tables).
STATIC_RANKERS: dict[str, dict] = {
    "published_linear": {
        "label": "published linear",
        "description": "the published ImageNet linear top-1: the model table's column "
        "`published_linear`, else a results table's in-domain `linear` (`published`) row",
    },
    "params": {
        "label": "parameters",
        "description": "the backbone's parameter count (registry arch, or timm's model)",
    },
    "pretrain_epochs": {
        "label": "pre-training epochs",
        "description": "the model table's `epochs`; a demo row: steps × its batch size / the "
        "in-domain train images",
    },
    "random": {
        "label": "random",
        "description": "a uniformly random order: its expected coefficient, 0",
    },
}
#: The form of a static ranker read from the results tables.
TABLE_RANKER_PREFIX = "table:"

# Correlation methods (scipy.stats), in order, with their symbols in figures.
CORRELATION_METHODS: dict[str, dict] = {
    "kendall": {"label": "Kendall τ"},
    "spearman": {"label": "Spearman ρ"},
    "pearson": {"label": "Pearson r"},
    "weightedtau": {"label": "weighted τ"},
}


def protocol_entry(name: str) -> tuple[str | None, float | None]:
    """(registry key, subset percent) of a protocol name: ("knn", None), ("fewshot", 10.0)
    for fewshot10; (None, None) for a name the registry does not know."""
    if name in PROTOCOLS and not PROTOCOLS[name].get("per_percent"):
        return name, None
    for key, entry in PROTOCOLS.items():
        if entry.get("per_percent") and name.startswith(key):
            try:
                return key, float(name[len(key) :])
            except ValueError:
                pass
    return None, None


def protocol_names(protocols, percents) -> list[str]:
    """The protocol names the configured ``protocols`` expand to, in table order: a
    per-percent protocol becomes one name per subset size, the largest first."""
    names = []
    for key in PROTOCOLS:
        if key in protocols:
            entry = PROTOCOLS[key]
            pcts = sorted(percents, reverse=True) if entry.get("per_percent") else [None]
            names += [key if pct is None else f"{key}{pct:g}" for pct in pcts]
    return names


def protocol_sort_key(protocol: str) -> tuple[int, float, str]:
    """Sort key of every table and figure: the protocols in registry order (few-shot subsets
    largest first, each proxy where protocol "proxies" stands), then the others alphabetically."""
    if protocol in PROXIES:
        return (list(PROTOCOLS).index("proxies"), list(PROXIES).index(protocol), "")
    key, pct = protocol_entry(protocol)
    if key is None:
        return (len(PROTOCOLS), 0.0, str(protocol))
    return (list(PROTOCOLS).index(key), -(pct or 0.0), "")


def arm_sort_key(arm: str) -> tuple[int, str]:
    """Sort key: the arms in registry order (``raw`` before ``bn``), then others alphabetically."""
    order = list(ARMS)
    return (order.index(arm), "") if arm in order else (len(order), str(arm))


def table_ranker(name: str) -> tuple[str, str] | None:
    """(protocol, arm) of a static ranker ``table:<protocol>:<arm>``; None for another name."""
    if not name.startswith(TABLE_RANKER_PREFIX):
        return None
    protocol, _, arm = name[len(TABLE_RANKER_PREFIX) :].partition(":")
    return protocol, arm


def static_ranker_label(name: str) -> str:
    """Readable name of a static ranker: its label, or ``"<protocol> (<arm>)"`` of a table
    ranker."""
    spec = table_ranker(name)
    if spec is not None:
        return f"{spec[0]} ({spec[1]})"
    return STATIC_RANKERS[name]["label"]


def protocol_label(name: str) -> str:
    """Readable name of a protocol (the name itself when unknown)."""
    key, pct = protocol_entry(name)
    if key is None:
        return str(name)
    return PROTOCOLS[key]["label"].format(pct="" if pct is None else f"{pct:g}")


# --------------------------------------------------------------------------------------------
# Figures: target name (rule and file name; the caption is report/<name>.rst; the figure is
# drawn by plot() of workflow_scripts/figures/<name>.py) -> the result tables it reads
# (results/tables/<input>.csv, passed to plot() in this order; "accuracy" is the analysis table:
# accuracy_merged.csv with results_tables), its config key (figures.<key>: options over the
# schema's defaults), arm_options (options whose default is the last configured arm: BN when it
# runs) and requires (whether the analysis has something to show: a function of a
# plan.FigureContext returning None, or the reason the figure is not drawn; absent = always
# drawn).


def _id_pairs(c) -> str | None:
    """Drawn with two or more in-domain (protocol, arm) measurements."""
    pairs = c.measures.loc[c.measures["domain"] == "id", ["protocol", "arm"]].drop_duplicates()
    if len(pairs) < 2:
        return "fewer than two in-domain (protocol, arm) measurements to correlate"
    return None


def _ood(c) -> str | None:
    """Drawn with an out-of-domain data set."""
    return None if (c.measures["domain"] == "ood").any() else "no out-of-domain data set"


def _shift_groups(c) -> str | None:
    """Drawn with an out-of-domain data set that has a shift group."""
    ood = c.measures[c.measures["domain"] == "ood"]
    if not ood["shift_group"].fillna("").astype(str).ne("").any():
        return "no out-of-domain data set with a shift group"
    return None


def _scatter_axes(c) -> str | None:
    """Drawn with the in-domain (x) and out-of-domain (y) accuracies its options name."""
    o, m = c.options, c.measures
    has = set(m[["domain", "protocol", "arm"]].itertuples(index=False, name=None))
    for axis, domain, where in (("x", "id", "in-domain"), ("y", "ood", "out-of-domain")):
        protocol, arm = o[f"{axis}_protocol"], o[f"{axis}_arm"]
        if (domain, protocol, arm) not in has:
            keys = f"figures.f3.{axis}_protocol, {axis}_arm"
            return f"no {where} {protocol} ({arm}) accuracy ({keys})"
    return None


def _both_arms(c) -> str | None:
    """Drawn with both feature arms, raw and bn."""
    if {"raw", "bn"} <= set(c.measures["arm"]):
        return None
    return "needs both feature arms, raw and bn"


def _proxies(c) -> str | None:
    """Drawn with protocol proxies."""
    if "proxies" in c.config["protocols"] and len(c.models):
        return None
    return "protocol proxies is not run"


def _published(c) -> str | None:
    """Drawn when model rows have published_linear numbers (the paper study)."""
    models = c.models
    if "published_linear" in models and bool(models["published_linear"].notna().any()):
        return None
    return "the model table has no published_linear number"


def _paradigm_or_backbone_pairs(c) -> str | None:
    """Drawn with two paradigms within the ViT backbone, or one method on two backbones."""
    models = c.measures.groupby("model")[["method", "backbone", "paradigm"]].first()
    vit_paradigms = set(models.loc[models["backbone"] == "vit", "paradigm"])
    shared_methods = (
        models.dropna(subset=["method"]).groupby("method")["backbone"].nunique() >= 2
    ).any()
    if not ({"discriminative", "generative"} <= vit_paradigms or bool(shared_methods)):
        return "neither two paradigms on the ViT backbone nor one method on two backbones"
    if c.options["arm"] not in set(c.measures["arm"]):
        return f"no accuracy in arm {c.options['arm']!r} (figures.f6.arm)"
    return None


def _static_rankers(c) -> str | None:
    """Drawn with static rankers to compare with (analysis.static_rankers)."""
    if c.config["analysis"]["static_rankers"]:
        return None
    return "no static rankers (analysis.static_rankers is empty)"


FIGURES: dict[str, dict] = {
    "f1_id_protocols": {
        "key": "f1",
        "inputs": ("correlations",),
        "requires": _id_pairs,
    },
    "f2_id_vs_ood": {
        "key": "f2",
        "inputs": ("correlations",),
        "requires": _ood,
    },
    "f3_scatter": {
        "key": "f3",
        "inputs": ("accuracy",),
        "arm_options": ("x_arm", "y_arm"),
        "requires": _scatter_axes,
    },
    "f4_bn_effect": {
        "key": "f4",
        "inputs": ("accuracy", "correlations"),
        "requires": _both_arms,
    },
    "f5_shift_groups": {
        "key": "f5",
        "inputs": ("correlations",),
        "requires": _shift_groups,
    },
    "f6_paradigm_backbone": {
        "key": "f6",
        "inputs": ("accuracy",),
        "arm_options": ("arm",),
        "requires": _paradigm_or_backbone_pairs,
    },
    "f7_proxies": {
        "key": "f7",
        "inputs": ("correlations",),
        "requires": _proxies,
    },
    "f8_published": {
        "key": "f8",
        "inputs": ("models",),
        "requires": _published,
    },
    "f9_baselines": {
        "key": "f9",
        "inputs": ("correlations",),
        "requires": _static_rankers,
    },
}
