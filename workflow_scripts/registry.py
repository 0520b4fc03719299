"""Names the workflow knows, importable without torch.

The configuration is validated against these names at Snakefile parse time, before any job
runs; the modules that implement them (``backbones``, ``pretrain``, ``synthetic``) are tested to
agree with this registry.
"""

from __future__ import annotations

# arch -> family (backbone family used by the analysis), input image size, embedding dim,
# embeddings it supports, builder (the name of its constructor in backbones.BUILDERS).
ARCHS: dict[str, dict] = {
    # Demo backbones (shared/spec/demo.md): a ResNet-10 of torchvision BasicBlocks with widths
    # 16/32/64/128 and a 3x3 stride-2 stem; a timm ViT with patch 8, dim 64, depth 4, 2 heads.
    "resnet10_tiny": {
        "family": "resnet", "img_size": 32, "dim": 128, "embeddings": ("avgpool",),
        "builder": "tiny_resnet",
    },
    "vit_tiny_p8": {
        "family": "vit", "img_size": 32, "dim": 64, "embeddings": ("cls", "mean_patch"),
        "builder": "tiny_vit",
    },
    # The paper's backbones.
    "resnet50": {
        "family": "resnet", "img_size": 224, "dim": 2048, "embeddings": ("avgpool",),
        "builder": "torchvision_resnet50",
    },
    "vit_base_patch16_224": {
        "family": "vit", "img_size": 224, "dim": 768, "embeddings": ("cls", "mean_patch"),
        "builder": "timm_vit",
    },
    "beitv2_base_patch16_224": {
        "family": "vit", "img_size": 224, "dim": 768, "embeddings": ("mean_patch",),
        "builder": "timm_beit",
    },
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

SPLITS = ("train", "test")
