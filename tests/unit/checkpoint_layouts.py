"""Fabricated checkpoints in each real source layout (shared/spec/paper.md), for the tests.

Written from the published layouts, independently of workflow_scripts/checkpoints/convert.py:
each ``fabricate_<format>(ref)`` wraps a reference state dict (torchvision/timm names, random
values) the way the original training code saved it -- prefixes, nesting, projectors, heads,
optimizer state, numpy arrays, mmcls names, BEiT's shared table -- so that a correct conversion
must give back exactly ``ref``.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import torch

from workflow_scripts.backbones import build_backbone

EMBEDDING = {"resnet10_tiny": "avgpool", "resnet50": "avgpool", "vit_tiny_p8": "cls",
             "vit_base_patch16_224": "cls", "beitv2_base_patch16_224": "mean_patch"}


@functools.lru_cache(maxsize=None)
def _template_cached(arch: str) -> tuple:
    return tuple((k, torch.empty_like(v)) for k, v in build_backbone(arch, EMBEDDING[arch]).state_dict().items())


def _template(arch: str) -> dict:
    """Key -> empty tensor of the backbone's shape and dtype (built once per process)."""
    return dict(_template_cached(arch))


def random_reference(arch: str, seed: int) -> dict:
    """A backbone state dict with every tensor random (BN statistics too).

    BEiT: one relative-position table shared by all blocks (the source stores one) and an
    identity fc_norm (the source has none)."""
    gen = torch.Generator().manual_seed(seed)
    state = _template(arch)
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.randint(1, 10_000, (), generator=gen, dtype=value.dtype)
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(value.shape, generator=gen) * 0.05
    if arch.startswith("beitv2"):
        table = torch.randn(out["blocks.0.attn.relative_position_bias_table"].shape, generator=gen)
        for key in out:
            if key.endswith("relative_position_bias_table"):
                out[key] = table.clone()
        out["fc_norm.weight"] = torch.ones_like(out["fc_norm.weight"])
        out["fc_norm.bias"] = torch.zeros_like(out["fc_norm.bias"])
    return out


def other(ref: dict, seed: int) -> dict:
    """Different values of the same shapes (an unrelated encoder in the same file)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in ref.items():
        if not value.is_floating_point():
            out[key] = value.clone() + 1
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(value.shape, generator=gen) * 0.05
    return out


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def fabricate_vissl_trunk(ref, **_):
    return {
        "classy_state_dict": {
            "base_model": {"model": {
                "trunk": {f"_feature_blocks.{k}": v for k, v in ref.items()},
                "heads": {"0.clf.0.weight": _rand(10, 4), "0.clf.0.bias": _rand(10)},
            }, "meta": {}},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
        },
        "phase_idx": 104, "iteration": 1000, "loss": {}, "type": "checkpoint",
    }


def fabricate_npid_numpy(ref, **_):
    state = {f"_feature_blocks.{k}": v.numpy().copy() for k, v in ref.items()}
    state["_feature_blocks.fc.weight"] = np.ones((128, 4), dtype=np.float32)
    state["_feature_blocks.fc.bias"] = np.zeros(128, dtype=np.float32)
    return {"model_state_dict": state, "epoch": 200}


def fabricate_deepcluster(ref, **_):
    state = {f"module.{k}": v for k, v in ref.items()}
    state.update({"module.projection_head.0.weight": _rand(32, 8),
                  "module.projection_head.0.bias": _rand(32),
                  "module.prototypes.weight": _rand(300, 8)})
    return state


def fabricate_moco_v2(ref, **_):
    state = {f"module.encoder_q.{k}": v for k, v in ref.items()}
    state.update({f"module.encoder_k.{k}": v for k, v in other(ref, 1).items()})
    for enc in ("encoder_q", "encoder_k"):
        state.update({f"module.{enc}.fc.0.weight": _rand(16, 8), f"module.{enc}.fc.0.bias": _rand(16),
                      f"module.{enc}.fc.2.weight": _rand(8, 16), f"module.{enc}.fc.2.bias": _rand(8)})
    state.update({"module.queue": _rand(8, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    return {"epoch": 800, "arch": "resnet50", "state_dict": state, "optimizer": {"state": {}}}


def fabricate_moco_v3(ref, momentum, vit, **_):
    projector = "head" if vit else "fc"
    state = {f"module.base_encoder.{k}": v for k, v in ref.items()}
    state.update({f"module.momentum_encoder.{k}": v for k, v in momentum.items()})
    for enc in ("base_encoder", "momentum_encoder"):
        state.update({f"module.{enc}.{projector}.0.weight": _rand(16, 8),
                      f"module.{enc}.{projector}.1.running_mean": _rand(16),
                      f"module.{enc}.{projector}.3.weight": _rand(8, 16)})
    state.update({"module.predictor.0.weight": _rand(16, 8), "module.predictor.3.weight": _rand(8, 16)})
    return {"epoch": 300, "arch": "vit_base" if vit else "resnet50", "state_dict": state,
            "optimizer": {"state": {}}, "scaler": {"scale": 1024.0}}


def fabricate_mmselfsup_resnet(ref, **_):
    state = {f"backbone.{k}": v for k, v in ref.items()}
    state.update({"neck.mlp.0.weight": _rand(16, 8), "head.predictor.0.weight": _rand(8, 16),
                  "data_preprocessor.mean": torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1),
                  "data_preprocessor.std": torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)})
    return {"meta": {"epoch": 200, "mmengine_version": "0.4.0", "seed": 0}, "state_dict": state}


def timm_to_mmcls(key: str) -> str:
    """timm ViT name -> mmcls/MMSelfSup name (the inverse of the published renames)."""
    if key.startswith("norm."):
        return "ln1." + key[len("norm."):]
    key = key.replace("patch_embed.proj.", "patch_embed.projection.")
    match = re.match(r"blocks\.(\d+)\.(.*)", key)
    if match:
        index, rest = match.groups()
        for timm_name, mm_name in (("norm1.", "ln1."), ("norm2.", "ln2."),
                                   ("mlp.fc1.", "ffn.layers.0.0."), ("mlp.fc2.", "ffn.layers.1.")):
            if rest.startswith(timm_name):
                rest = mm_name + rest[len(timm_name):]
        key = f"layers.{index}.{rest}"
    return key


def fabricate_mmselfsup_vit(ref, **_):
    width = ref["cls_token"].shape[-1]
    state = {f"backbone.{timm_to_mmcls(k)}": v for k, v in ref.items()}
    state.update({"backbone.mask_token": _rand(1, 1, width),
                  "neck.decoder_pred.weight": _rand(16, width),
                  "target_generator.hog.weight_x": _rand(1, 1, 3, 3),
                  "data_preprocessor.mean": _rand(3, 1, 1)})
    return {"meta": {"epoch": 300}, "state_dict": state}


def fabricate_byol_online(ref, **_):
    return {"online_backbone": {f"module.{k}": v for k, v in ref.items()},
            "online_projector": {"module.net.0.weight": _rand(16, 8)},
            "target_backbone": {f"module.{k}": v for k, v in other(ref, 2).items()},
            "epoch": 300}


def fabricate_torchvision(ref, **_):
    return dict(ref)


fabricate_timm_vit = fabricate_torchvision


def fabricate_ibot(ref, **_):
    state = dict(ref)
    state.update({"head.mlp.0.weight": _rand(16, 8), "head.last_layer.weight_g": _rand(100, 1),
                  "head.last_layer2.weight_v": _rand(100, 8)})
    return {"state_dict": state}


def fabricate_mae(ref, **_):
    width = ref["cls_token"].shape[-1]
    state = dict(ref)
    state.update({"mask_token": _rand(1, 1, width), "decoder_embed.weight": _rand(16, width),
                  "decoder_blocks.0.norm1.weight": _rand(16), "decoder_pos_embed": _rand(1, 5, 16),
                  "decoder_pred.weight": _rand(48, 16)})
    return {"model": state, "optimizer": {"state": {}}, "epoch": 1599}


def fabricate_beit_v2(ref, **_):
    from timm.models.beit import gen_relative_position_index

    width = ref["cls_token"].shape[-1]
    tables = [k for k in ref if k.endswith("relative_position_bias_table")]
    state = {k: v for k, v in ref.items() if k not in tables and not k.startswith("fc_norm.")}
    state["rel_pos_bias.relative_position_bias_table"] = ref[tables[0]].clone()
    state["rel_pos_bias.relative_position_index"] = gen_relative_position_index((14, 14))
    state.update({"norm.weight": _rand(width) + 1, "norm.bias": _rand(width),
                  "mask_token": _rand(1, 1, width), "lm_head.weight": _rand(8192, width),
                  "lm_head.bias": _rand(8192), "cls_pt_layers.0.norm1.weight": _rand(width),
                  "cls_pt_layers.0.attn.qkv.weight": _rand(3 * width, width)})
    return {"model": state, "epoch": 1599}


FABRICATORS = {name[len("fabricate_"):]: fn for name, fn in globals().items()
               if name.startswith("fabricate_")}


def write(path, fmt: str, ref: dict, momentum: dict | None = None, vit: bool = False) -> None:
    """Save a fabricated checkpoint the way its source did (torch.save, or safetensors)."""
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in ref.items()}, str(path))
        return
    torch.save(FABRICATORS[fmt](ref, momentum=momentum, vit=vit), str(path))


def embedding_of(model, arch: str, state: dict | None = None, seed: int = 0) -> torch.Tensor:
    """The embedding of a fixed random input through ``model`` (``arch``), after loading
    ``state`` into it strictly if given."""
    from workflow_scripts import registry

    if state is not None:
        model.load_state_dict(state, strict=True)
    size = registry.ARCHS[arch]["img_size"]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


class _Handler:
    """Factory of a quiet SimpleHTTPRequestHandler over ``directory`` that counts requests and
    serves '/truncated' with a Content-Length larger than its body."""

    @staticmethod
    def make(directory, hits):
        import functools as ft
        from http.server import SimpleHTTPRequestHandler

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                hits.append(self.path)
                if self.path == "/truncated":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b"x" * 10)
                    self.close_connection = True
                    return
                super().do_GET()

        return ft.partial(Handler, directory=str(directory))


class LoopbackServer:
    """``with LoopbackServer(dir) as srv:`` serves ``dir`` on http://127.0.0.1:<free port>/."""

    def __init__(self, directory):
        self.directory = directory
        self.hits: list[str] = []

    def __enter__(self):
        import threading
        from http.server import ThreadingHTTPServer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler.make(self.directory, self.hits))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
