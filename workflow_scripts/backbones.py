"""Backbones and their embeddings.

``build_backbone(arch, embedding)`` returns a module mapping normalised images [B, 3, H, W] to
embeddings [B, D]:

* ResNets: global-average-pooled output of the last stage (torchvision ``resnet50`` without
  ``fc``; the demo's ResNet-10 is assembled from torchvision ``BasicBlock``s).
* ViTs (timm): ``cls`` = CLS token after the final LayerNorm; ``mean_patch`` = mean of the patch
  tokens through a fresh ``fc_norm`` LayerNorm (the paper's BEiT-v2 embedding).

The state dict of the returned module is what ``results/checkpoints/{model}.safetensors`` holds
and what is loaded with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from workflow_scripts import registry


class TinyResNet(nn.Module):
    """ResNet-10: 3x3 stride-2 stem, one torchvision BasicBlock per stage, GAP embedding.

    Module names follow torchvision (conv1, bn1, layer1..layer4) so the same conversion and
    loading code paths serve it and ``resnet50``.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            downsample = None
            if stride != 1 or inplanes != width:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width)
                )
            setattr(self, f"layer{index + 1}", BasicBlock(inplanes, width, stride, downsample))
            inplanes = width
        self.num_features = inplanes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.forward_maps(x)), 1)


class TorchvisionResNet50(nn.Module):
    """torchvision ``resnet50`` with ``fc`` removed (2048-d GAP embedding)."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        del net.fc
        self.net = net
        self.num_features = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return torch.flatten(n.avgpool(x), 1)

    # Keep torchvision's parameter names at the top level of the state dict.
    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        return self.net.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        return self.net.load_state_dict(state_dict, strict=strict, assign=assign)


# The builders: (arch, embedding, drop_path) -> a randomly initialised backbone. Each arch in
# registry.ARCHS names its builder there ("builder"), so a new backbone is one builder here and
# one registry entry.
_POOL = {"cls": "token", "mean_patch": "avg"}  # embedding -> timm's global_pool


def _tiny_resnet(arch: str, embedding: str, drop_path: float) -> nn.Module:
    return TinyResNet()


def _torchvision_resnet50(arch: str, embedding: str, drop_path: float) -> nn.Module:
    return TorchvisionResNet50()


def _tiny_vit(arch: str, embedding: str, drop_path: float) -> nn.Module:
    """The demo ViT (timm): patch 8 on 32 px, dim 64, depth 4, 2 heads, MLP ratio 2."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=64,
        depth=4,
        num_heads=2,
        mlp_ratio=2.0,
        num_classes=0,
        global_pool=_POOL[embedding],
        fc_norm=(embedding == "mean_patch"),
        drop_path_rate=drop_path,
    )


def _timm_vit(arch: str, embedding: str, drop_path: float) -> nn.Module:
    """A timm ViT by its timm name; ``mean_patch`` adds the fresh ``fc_norm``."""
    import timm

    return timm.create_model(
        arch,
        pretrained=False,
        num_classes=0,
        global_pool=_POOL[embedding],
        fc_norm=(embedding == "mean_patch"),
        drop_path_rate=drop_path,
    )


def _timm_beit(arch: str, embedding: str, drop_path: float) -> nn.Module:
    """A timm BEiT by its timm name (its own ``fc_norm`` with mean pooling)."""
    import timm

    return timm.create_model(
        arch,
        pretrained=False,
        num_classes=0,
        global_pool=_POOL[embedding],
        drop_path_rate=drop_path,
    )


BUILDERS: dict[str, Callable[[str, str, float], nn.Module]] = {
    "tiny_resnet": _tiny_resnet,
    "torchvision_resnet50": _torchvision_resnet50,
    "tiny_vit": _tiny_vit,
    "timm_vit": _timm_vit,
    "timm_beit": _timm_beit,
}


def build_backbone(arch: str, embedding: str, drop_path: float = 0.0) -> nn.Module:
    """A randomly initialised backbone of a registry arch (``registry.ARCHS``) whose
    ``forward`` returns the embedding.

    ``drop_path``: stochastic-depth rate of the last ViT block (timm's linear schedule over
    the blocks); it has no parameters, so weights load the same with or without it. Other
    model sources build their own (``workflow_scripts.model_sources``)."""
    spec = registry.ARCHS.get(arch)
    if spec is None:
        raise ValueError(f"unknown arch '{arch}' (known: {', '.join(registry.ARCHS)})")
    if embedding not in spec["embeddings"]:
        raise ValueError(
            f"embedding '{embedding}' is not available for arch '{arch}' "
            f"(choose from {', '.join(spec['embeddings'])})"
        )
    model = BUILDERS[spec["builder"]](arch, embedding, drop_path)
    model.embed_dim = spec["dim"]
    return model


def family(arch: str) -> str:
    return registry.ARCHS[arch]["family"]


def save_weights(
    model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write the backbone's state dict as safetensors, atomically and deterministically."""
    from workflow_scripts.io import save_safetensors

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_safetensors(path, state, metadata)


def load_weights(model: nn.Module, path: str | Path, arch: str) -> nn.Module:
    """Load the safetensors file ``path`` into ``model`` with every key matched (strict);
    eval mode."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"weights '{path}' do not fit arch '{arch}': missing keys {result.missing_keys}, "
            f"unexpected keys {result.unexpected_keys}"
        )
    return model.eval()


def build_job_backbone(model: dict, drop_path: float = 0.0) -> nn.Module:
    """:func:`build_backbone` of a job's ``model`` param (sources ``demo`` and
    ``checkpoint``: ``registry.SOURCES[...]["backbone"]``)."""
    return build_backbone(model["arch"], model["embedding"], drop_path)


def load_job_backbone(path: str | Path, model: dict, drop_path: float = 0.0) -> nn.Module:
    """The backbone of a job's ``model`` param (plan ``model_fields(.., "backbone")``: key,
    method, arch, embedding and what its source adds), built by the module its source names
    (``registry.SOURCES[source]["backbone"]``: this one or ``timm_models``, imported by name)
    and loaded from ``path``."""
    import importlib

    loader = importlib.import_module(
        f"workflow_scripts.{registry.SOURCES[model['source']]['backbone']}"
    )
    backbone = loader.build_job_backbone(model, drop_path)
    return load_weights(backbone, path, model["arch"])


def load_backbone(
    path: str | Path,
    arch: str,
    embedding: str,
    drop_path: float = 0.0,
    source: str = "demo",
    input_size: int | None = None,
) -> nn.Module:
    """:func:`load_job_backbone` from its parts: a registry arch (sources ``demo`` and
    ``checkpoint``) or, with ``source="timm"``, a timm name fed ``input_size`` pixels."""
    model = {"source": source, "arch": arch, "embedding": embedding, "input_size": input_size}
    return load_job_backbone(path, model, drop_path)
