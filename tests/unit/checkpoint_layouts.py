"""Fabricated checkpoints in each real source layout (as their sources write them), for the tests.

Written from the upstream code that saved each released file, independently of
workflow_scripts/checkpoints/convert.py: each ``fabricate_<format>(ref)`` wraps a reference state
dict (torchvision/timm names, random values) the way the original training code saved it --
prefixes, nesting, projectors, heads, classifiers left in the backbone, optimizer and scaler
state, argparse Namespaces, mmengine's message hub of HistoryBuffer objects, numpy arrays, mmcls
names, BEiT's shared table, torch's legacy or zip format -- so that a correct conversion must
give back exactly ``ref``. ``PAPER_ROWS`` gives the layout of each row of
config/models_paper.tsv.
"""

from __future__ import annotations

import argparse
import functools
import pickle
import re
import types
from collections import OrderedDict
from collections.abc import Hashable
from http.server import BaseHTTPRequestHandler

import numpy as np
import torch

from workflow_scripts.backbones import build_backbone

EMBEDDING = {
    "resnet10_tiny": "avgpool",
    "resnet50": "avgpool",
    "vit_tiny_p8": "cls",
    "vit_base_patch16_224": "cls",
    "beitv2_base_patch16_224": "mean_patch",
}


@functools.lru_cache(maxsize=None)
def _template_cached(arch: str) -> tuple:
    return tuple(
        (k, torch.empty_like(v))
        for k, v in build_backbone(arch, EMBEDDING[arch]).state_dict().items()
    )


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


def _width(ref: dict) -> int:
    """Embedding width of a reference: the ViT token width or the last ResNet stage's width."""
    if "cls_token" in ref:
        return int(ref["cls_token"].shape[-1])
    return max(int(v.shape[0]) for k, v in ref.items() if k.startswith("layer4") and v.dim() == 1)


# --------------------------------------------------------------------------- upstream pickling
#
# The released files were pickled by code that is not installed here: mmengine's HistoryBuffer
# and numpy 1.x (which names its array reconstructor numpy.core.multiarray._reconstruct). The
# stand-in classes below carry the upstream attributes; UpstreamPickler writes them, and the
# numpy functions, under the upstream global names, byte for byte as the upstream pickle would.


class HistoryBuffer:
    """mmengine.logging.history_buffer.HistoryBuffer as mmengine < 0.7.3 pickles it: a plain
    class (NEWOBJ + BUILD) whose __dict__ is max_length and two numpy arrays."""

    def __init__(self, log_history, count_history, max_length=1000000):
        self.max_length = max_length
        self._log_history = np.array(log_history)  # float64: values are .item()-ed floats
        self._count_history = np.array(count_history)  # int64


class HistoryBufferV073(HistoryBuffer):
    """The same class from mmengine >= 0.7.3 (commit 17c5414d): __getstate__ adds the shared
    statistics_methods dict, whose functions protocol 2 writes as
    __builtin__.getattr(HistoryBuffer, 'min') (their qualname is nested)."""

    def min(self):  # noqa: A003 - upstream's method names
        return self._log_history.min()

    def max(self):  # noqa: A003
        return self._log_history.max()

    def current(self):
        return self._log_history[-1]

    def mean(self):
        return self._log_history.mean()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["statistics_methods"] = {
            "min": HistoryBufferV073.min,
            "max": HistoryBufferV073.max,
            "current": HistoryBufferV073.current,
            "mean": HistoryBufferV073.mean,
        }
        return state


def _upstream_names() -> dict:
    from numpy._core import multiarray

    return {
        HistoryBuffer: ("mmengine.logging.history_buffer", "HistoryBuffer"),
        HistoryBufferV073: ("mmengine.logging.history_buffer", "HistoryBuffer"),
        multiarray._reconstruct: ("numpy.core.multiarray", "_reconstruct"),
        multiarray.scalar: ("numpy.core.multiarray", "scalar"),
    }


class UpstreamPickler(pickle._Pickler):
    """pickle's pure-Python Pickler (protocol 2, as torch.save uses) writing the stand-ins and
    numpy's functions under their upstream global names."""

    def save_global(self, obj, name=None):
        spelled = _upstream_names().get(obj) if isinstance(obj, Hashable) else None
        if spelled is None:
            return super().save_global(obj, name)
        module, qualname = spelled
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("ascii"))
        self.memoize(obj)
        return None


def _dump(obj, file, protocol=None, **_):
    UpstreamPickler(file, protocol=protocol).dump(obj)


UPSTREAM_PICKLE = types.SimpleNamespace(
    __name__="upstream_pickle", Pickler=UpstreamPickler, dump=_dump
)


def save(obj, path, legacy: bool = False) -> None:
    """torch.save as the upstream code ran it: the zip format (torch >= 1.6) or, for files of
    2020 and MMSelfSup's publish_model.py (_use_new_zipfile_serialization=False), the legacy
    format."""
    torch.save(
        obj, str(path), pickle_module=UPSTREAM_PICKLE, _use_new_zipfile_serialization=not legacy
    )


# --------------------------------------------------------------------------- training extras


def _optimizer_state(n_params: int = 2, *, momentum: bool = False) -> dict:
    """A (small) torch.optim state dict: per-parameter state and one param group."""
    state = {}
    for index in range(n_params):
        if momentum:
            state[index] = {"momentum_buffer": _rand(4, seed=index)}
        else:
            state[index] = {
                "step": torch.tensor(1000.0),
                "exp_avg": _rand(4, seed=index),
                "exp_avg_sq": _rand(4, seed=index + 50).abs(),
            }
    group = {
        "lr": 1.5e-4,
        "weight_decay": 0.05,
        "maximize": False,
        "foreach": None,
        "differentiable": False,
        "fused": None,
        "params": list(range(n_params)),
    }
    if momentum:
        group.update({"momentum": 0.9, "dampening": 0, "nesterov": False})
    else:
        group.update({"betas": (0.9, 0.95), "eps": 1e-8, "amsgrad": False, "capturable": False})
    return {"state": state, "param_groups": [group]}


def _grad_scaler_state() -> dict:
    """torch.cuda.amp.GradScaler.state_dict() (MAE's NativeScalerWithGradNormCount)."""
    return {
        "scale": 65536.0,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 2000,
        "_growth_tracker": 117,
    }


def _mae_args(**extra) -> argparse.Namespace:
    """main_pretrain.py's argparse.Namespace (MAE; MILAN and BEiT-v2 add their own flags)."""
    return argparse.Namespace(
        batch_size=64,
        epochs=400,
        accum_iter=1,
        model="mae_vit_base_patch16",
        input_size=224,
        mask_ratio=0.75,
        norm_pix_loss=False,
        weight_decay=0.05,
        lr=0.0024,
        blr=1.5e-4,
        min_lr=0.0,
        warmup_epochs=40,
        data_path="/datasets01/imagenet_full_size/061417/",
        output_dir="./output_dir",
        log_dir="./output_dir",
        device="cuda",
        seed=0,
        resume="",
        start_epoch=0,
        num_workers=10,
        pin_mem=True,
        world_size=64,
        local_rank=-1,
        dist_on_itp=False,
        dist_url="env://",
        rank=0,
        gpu=0,
        distributed=True,
        dist_backend="nccl",
        **extra,
    )


def _training_state(model: dict, epoch: int, **args) -> dict:
    """util/misc.py::save_model of MAE and MILAN, utils.save_model of BEiT-v2."""
    return {
        "model": model,
        "optimizer": _optimizer_state(),
        "epoch": epoch,
        "scaler": _grad_scaler_state(),
        "args": _mae_args(**args),
    }


def _with_metadata(state: dict) -> OrderedDict:
    """A module state dict as nn.Module.state_dict() returns it (OrderedDict + _metadata)."""
    out = OrderedDict(state)
    prefixes = sorted({k.rsplit(".", 1)[0] if "." in k else "" for k in state} | {""})
    out._metadata = OrderedDict((p, {"version": 1}) for p in prefixes)
    return out


IMAGENET_CLASSES = tuple(f"class_{i:04d}" for i in range(1000))  # the strings' content is moot


def _mmengine_extras(epoch: int, *, version: str, v073: bool = False) -> dict:
    """meta, message_hub and param_schedulers of mmengine's Runner.save_checkpoint, as
    MMSelfSup's publish_model.py leaves them (it deletes 'optimizer' only)."""
    cfg = "model = dict(type='MaskFeat', backbone=dict(type='MaskFeatViT'))\n"  # pretty_text
    rng = np.random.default_rng(epoch)
    buffer = HistoryBufferV073 if v073 else HistoryBuffer
    scalars = OrderedDict(
        (name, buffer(rng.random(25).tolist(), [1] * 25))
        for name in ("train/lr", "train/data_time", "train/loss", "train/loss_rec", "train/time")
    )
    iters = epoch * 5004
    runtime = OrderedDict(
        cfg=cfg,
        seed=1234567,
        experiment_name="pretrain_20220825_101010",
        mmengine_version=version,
        epoch=epoch,
        iter=iters,
        max_epochs=epoch,
        max_iters=iters,
        dataset_meta={"classes": IMAGENET_CLASSES},
        eta=0.0,
        last_ckpt=f"work_dirs/epoch_{epoch - 1}.pth",
    )
    return {
        "meta": {
            "epoch": epoch,
            "iter": iters,
            "cfg": cfg,
            "seed": 1234567,
            "experiment_name": "pretrain_20220825_101010",
            "time": "20220825_101010",
            "mmengine_version": version,
            "dataset_meta": {"classes": IMAGENET_CLASSES},
        },
        "message_hub": {
            "log_scalars": scalars,
            "runtime_info": runtime,
            "resumed_keys": OrderedDict((k, True) for k in [*scalars, *runtime]),
        },
        "param_schedulers": [
            {
                "start_factor": 1e-4,
                "end_factor": 1.0,
                "total_iters": 10,
                "param_name": "lr",
                "begin": 0,
                "end": 10,
                "by_epoch": True,
                "base_values": [0.05],
                "last_step": 10,
                "_global_step": 10,
                "verbose": False,
                "_last_value": [0.05],
            },
            {
                "T_max": epoch - 10,
                "eta_min": 0.0,
                "eta_min_ratio": None,
                "param_name": "lr",
                "begin": 10,
                "end": epoch,
                "by_epoch": True,
                "base_values": [0.05],
                "last_step": epoch,
                "_global_step": epoch,
                "verbose": False,
                "_last_value": [0.0],
            },
        ],
    }


# --------------------------------------------------------------------------- formats
# Each fabricator returns (object, legacy): what the upstream code torch.saved, and whether it
# wrote torch's legacy (pre-1.6, non-zip) format.


def fabricate_vissl_trunk(ref, leftover_fc=False, **_):
    """A VISSL training checkpoint of 2020 (hooks/log_hooks.py: phase_idx, iteration, loss,
    iteration_num, train_phase_idx, classy_state_dict = ClassyVision's get_classy_state(), no
    'meta'/'type' yet). ``leftover_fc``: a converted file (ClusterFit, via the since-deleted
    convert_sslime_to_vissl_torchvision.py) whose trunk still holds the cluster classifier."""
    width = _width(ref)
    trunk = OrderedDict((f"_feature_blocks.{k}", v) for k, v in ref.items())
    if leftover_fc:
        trunk["_feature_blocks.fc.weight"] = _rand(64, width)  # 16,000 clusters upstream
        trunk["_feature_blocks.fc.bias"] = _rand(64)
    classy = {
        "train": True,
        "base_model": {
            "model": {
                "trunk": trunk,
                "heads": {"0.clf.0.weight": _rand(10, width), "0.clf.0.bias": _rand(10)},
            }
        },
        "meters": {
            "accuracy_list_meter": {
                "name": "accuracy_list_meter",
                "num_meters": 1,
                "topk_values": [1, 5],
            }
        },
        "optimizer": {
            "name": "sgd",
            "num_updates": 500400,
            "options": {"lr": 0.1},
            "optim": _optimizer_state(momentum=True),
        },
        "phase_idx": 209,
        "train_phase_idx": 104,
        "num_updates": 500400,
        "losses": [0.5, 0.4],
        "hooks": {"checkpoint_hook": {}},
        "loss": {},
    }
    return {
        "phase_idx": 209,
        "iteration": 500400,
        "loss": {},
        "iteration_num": 500400,
        "train_phase_idx": 104,
        "classy_state_dict": classy,
    }, True


def fabricate_npid_numpy(ref, **_):
    """VISSL's conversion of the NPID (lemniscate) model: numpy values, '_feature_blocks.'
    prefix, the 128-d embedding fc kept (convert_torchvision_resnet_weights.py, 2020)."""
    state = {f"_feature_blocks.{k}": v.numpy().copy() for k, v in ref.items()}
    state["_feature_blocks.fc.weight"] = np.ones((128, _width(ref)), dtype=np.float32)
    state["_feature_blocks.fc.bias"] = np.zeros(128, dtype=np.float32)
    return {"model_state_dict": state}, True


def fabricate_deepcluster(ref, **_):
    """SwAV repository (SwAV, SeLa-v2, DeepCluster-v2): the DDP state dict itself (2020)."""
    state = OrderedDict((f"module.{k}", v) for k, v in ref.items())
    state.update(
        {
            "module.projection_head.0.weight": _rand(32, _width(ref)),
            "module.projection_head.0.bias": _rand(32),
            "module.prototypes.weight": _rand(300, 32),
        }
    )
    return state, True


def fabricate_moco_v2(ref, **_):
    """main_moco.py's save_checkpoint (2020): epoch, arch, state_dict (DDP), optimizer."""
    state = OrderedDict((f"module.encoder_q.{k}", v) for k, v in ref.items())
    state.update({f"module.encoder_k.{k}": v for k, v in other(ref, 1).items()})
    width = _width(ref)
    for enc in ("encoder_q", "encoder_k"):
        state.update(
            {
                f"module.{enc}.fc.0.weight": _rand(16, width),
                f"module.{enc}.fc.0.bias": _rand(16),
                f"module.{enc}.fc.2.weight": _rand(8, 16),
                f"module.{enc}.fc.2.bias": _rand(8),
            }
        )
    state.update(
        {"module.queue": _rand(8, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    )
    return {
        "epoch": 800,
        "arch": "resnet50",
        "state_dict": state,
        "optimizer": _optimizer_state(momentum=True),
    }, True


def fabricate_moco_v3(ref, momentum, vit, **_):
    """main_moco.py of MoCo-v3 (2021): epoch, arch, state_dict with both encoders, the
    projectors and the predictor, optimizer and the AMP scaler."""
    projector = "head" if vit else "fc"
    width = _width(ref)
    state = OrderedDict((f"module.base_encoder.{k}", v) for k, v in ref.items())
    state.update({f"module.momentum_encoder.{k}": v for k, v in momentum.items()})
    for enc in ("base_encoder", "momentum_encoder"):
        state.update(
            {
                f"module.{enc}.{projector}.0.weight": _rand(16, width),
                f"module.{enc}.{projector}.1.running_mean": _rand(16),
                f"module.{enc}.{projector}.3.weight": _rand(8, 16),
            }
        )
    state.update(
        {"module.predictor.0.weight": _rand(16, 8), "module.predictor.3.weight": _rand(8, 16)}
    )
    return {
        "epoch": 300,
        "arch": "vit_base" if vit else "resnet50",
        "state_dict": state,
        "optimizer": _optimizer_state(),
        "scaler": _grad_scaler_state(),
    }, False


def fabricate_mmselfsup_resnet(ref, v073=False, **_):
    """MMSelfSup 1.x: mmengine's Runner.save_checkpoint minus 'optimizer', re-saved by
    publish_model.py in the legacy format."""
    state = OrderedDict((f"backbone.{k}", v) for k, v in ref.items())
    state.update(
        {
            "neck.mlp.0.weight": _rand(16, _width(ref)),
            "head.predictor.0.weight": _rand(8, 16),
            "data_preprocessor.mean": torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1),
            "data_preprocessor.std": torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1),
        }
    )
    extras = _mmengine_extras(200, version="0.7.3" if v073 else "0.1.0", v073=v073)
    return {
        "meta": extras["meta"],
        "state_dict": _with_metadata(state),
        "message_hub": extras["message_hub"],
        "param_schedulers": extras["param_schedulers"],
    }, True


def timm_to_mmcls(key: str) -> str:
    """timm ViT name -> mmcls/MMSelfSup name (the inverse of the published renames)."""
    if key.startswith("norm."):
        return "ln1." + key[len("norm.") :]
    key = key.replace("patch_embed.proj.", "patch_embed.projection.")
    match = re.match(r"blocks\.(\d+)\.(.*)", key)
    if match:
        index, rest = match.groups()
        for timm_name, mm_name in (
            ("norm1.", "ln1."),
            ("norm2.", "ln2."),
            ("mlp.fc1.", "ffn.layers.0.0."),
            ("mlp.fc2.", "ffn.layers.1."),
        ):
            if rest.startswith(timm_name):
                rest = mm_name + rest[len(timm_name) :]
        key = f"layers.{index}.{rest}"
    return key


def fabricate_mmselfsup_vit(ref, v073=False, **_):
    """MMSelfSup 1.x ViT (MaskFeat, EVA, PixMIM): mmcls names, the pre-training's extra
    modules, and mmengine's meta/message_hub/param_schedulers (legacy format)."""
    width = ref["cls_token"].shape[-1]
    state = OrderedDict((f"backbone.{timm_to_mmcls(k)}", v) for k, v in ref.items())
    state.update(
        {
            "backbone.mask_token": _rand(1, 1, width),
            "neck.decoder_pred.weight": _rand(16, width),
            "target_generator.hog.weight_x": _rand(1, 1, 3, 3),
            "data_preprocessor.mean": _rand(3, 1, 1),
        }
    )
    extras = _mmengine_extras(300, version="0.7.3" if v073 else "0.3.0", v073=v073)
    return {
        "meta": extras["meta"],
        "state_dict": _with_metadata(state),
        "message_hub": extras["message_hub"],
        "param_schedulers": extras["param_schedulers"],
    }, True


def fabricate_byol_online(ref, **_):
    """The BYOL PyTorch port's release (its 'legacy codebase'): the networks saved one by one,
    each a DDP state dict; the online backbone is a torchvision ResNet-50 that still holds
    the ImageNet classifier fc (its converter keeps the first 318 of 320 tensors)."""
    width = _width(ref)

    def backbone(values):
        out = OrderedDict((f"module.{k}", v) for k, v in values.items())
        out["module.fc.weight"] = _rand(1000, width)
        out["module.fc.bias"] = _rand(1000)
        return out

    return {
        "online_backbone": backbone(ref),
        "online_projection": {"module.net.0.weight": _rand(16, width)},
        "predictor": {"module.net.0.weight": _rand(16, 16)},
        "target_backbone": backbone(other(ref, 2)),
        "target_projection": {"module.net.0.weight": _rand(16, width)},
        "optimizer": _optimizer_state(momentum=True),
        "epoch": 300,
    }, True


def fabricate_torchvision(ref, **_):
    return OrderedDict(ref), False


def fabricate_timm_vit(ref, **_):
    return OrderedDict(ref), False


def fabricate_extracted_backbone(ref, author="DenseCL", **_):
    """tools/extract_backbone_weights.py of DenseCL (author 'DenseCL'), OpenSelfSup and
    MMSelfSup: {'state_dict': backbone names with 'backbone.' cut off, 'author': ...}."""
    return {"state_dict": dict(ref), "author": author}, False


def fabricate_ibot(ref, **_):
    state = OrderedDict(ref)
    state.update(
        {
            "head.mlp.0.weight": _rand(16, 8),
            "head.last_layer.weight_g": _rand(100, 1),
            "head.last_layer2.weight_v": _rand(100, 8),
        }
    )
    return {"state_dict": state}, False


def fabricate_mae(ref, training_state=True, **_):
    """``training_state`` False: MAE's released encoder ({'model': encoder}). True: a raw
    save_model checkpoint (MILAN's release): the whole model with the decoder (MILAN's
    Block_fordecoder: attn.q/attn.kv) and mask_token, optimizer, epoch, scaler, args."""
    if not training_state:
        return {"model": OrderedDict(ref)}, False
    width = _width(ref)
    state = OrderedDict(ref)
    state.update(
        {
            "mask_token": _rand(1, 1, 16),
            "decoder_embed.weight": _rand(16, width),
            "decoder_embed.bias": _rand(16),
            "decoder_pos_embed": _rand(1, 5, 16),
            "decoder_blocks.0.norm1.weight": _rand(16),
            "decoder_blocks.0.attn.q.weight": _rand(16, 16),
            "decoder_blocks.0.attn.kv.weight": _rand(32, 16),
            "decoder_blocks.0.mlp.fc1.weight": _rand(32, 16),
            "decoder_norm.weight": _rand(16),
            "decoder_pred.weight": _rand(width, 16),
            "decoder_pred.bias": _rand(width),
        }
    )
    return _training_state(
        state, 399, use_clip=True, average_targets=1, attn_mask=True, change_decoder=True
    ), False


def fabricate_beit_v2(ref, **_):
    """BEiT-v2's utils.save_model: model (with the MIM head, the CLS-pretraining layers and the
    shared relative position bias), optimizer, epoch, scaler, args."""
    from timm.models.beit import gen_relative_position_index

    width = ref["cls_token"].shape[-1]
    tables = [k for k in ref if k.endswith("relative_position_bias_table")]
    state = OrderedDict(
        (k, v) for k, v in ref.items() if k not in tables and not k.startswith("fc_norm.")
    )
    state["rel_pos_bias.relative_position_bias_table"] = ref[tables[0]].clone()
    state["rel_pos_bias.relative_position_index"] = gen_relative_position_index((14, 14))
    state.update(
        {
            "norm.weight": _rand(width) + 1,
            "norm.bias": _rand(width),
            "mask_token": _rand(1, 1, width),
            "lm_head.weight": _rand(8192, width),
            "lm_head.bias": _rand(8192),
            "cls_pt_layers.0.norm1.weight": _rand(width),
            "cls_pt_layers.0.attn.qkv.weight": _rand(3 * width, width),
        }
    )
    return _training_state(
        state,
        1599,
        shared_lm_head=True,
        early_layers=9,
        head_layers=2,
        tokenizer_model="vqkd_encoder_base_decoder_3x768x12_clip",
    ), False


FABRICATORS = {
    name[len("fabricate_") :]: fn for name, fn in globals().items() if name.startswith("fabricate_")
}

# Every row of config/models_paper.tsv -> (its format, the layout of its released file), from
# the code that wrote each file (see the fabricators' docstrings).
PAPER_ROWS: dict[str, tuple[str, dict]] = {
    "jigsaw": ("vissl_trunk", {}),
    "rotnet": ("vissl_trunk", {}),
    "npid": ("npid_numpy", {}),
    "sela_v2": ("deepcluster", {}),
    "npid_plusplus": ("vissl_trunk", {}),
    "pirl": ("vissl_trunk", {}),
    "clusterfit": ("vissl_trunk", {"leftover_fc": True}),
    "deepcluster_v2": ("deepcluster", {}),
    "swav": ("deepcluster", {}),
    "simclr": ("vissl_trunk", {}),
    "moco_v2": ("moco_v2", {}),
    "simsiam": ("mmselfsup_resnet", {}),
    "byol": ("byol_online", {}),
    "dino_r50": ("torchvision", {}),
    "barlowtwins": ("mmselfsup_resnet", {}),
    "densecl": ("extracted_backbone", {}),
    "moco_v3_r50": ("moco_v3", {}),
    "dino_vitb16": ("timm_vit", {}),
    "ibot": ("ibot", {}),
    "moco_v3_vitb16": ("moco_v3", {}),
    "mae": ("mae", {"training_state": False}),
    "maskfeat": ("mmselfsup_vit", {}),
    "beit_v2": ("beit_v2", {}),
    "milan": ("mae", {"training_state": True}),
    "eva": ("mmselfsup_vit", {}),
    "pixmim": ("mmselfsup_vit", {}),
}


def write(
    path, fmt: str, ref: dict, momentum: dict | None = None, vit: bool = False, **layout
) -> None:
    """Save a fabricated checkpoint the way its source did (torch.save in the zip or legacy
    format through UpstreamPickler, or safetensors)."""
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in ref.items()}, str(path))
        return
    obj, legacy = FABRICATORS[fmt](ref, momentum=momentum, vit=vit, **layout)
    save(obj, path, legacy=legacy)


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
    """``with LoopbackServer(dir) as srv:`` serves ``dir`` on http://127.0.0.1:<free port>/
    (or, with ``handler``, whatever that request handler class serves)."""

    def __init__(self, directory=None, handler=None):
        self.directory = directory
        self.hits: list[str] = []
        self.handler = handler

    def __enter__(self):
        import threading
        from http.server import ThreadingHTTPServer

        self.server = ThreadingHTTPServer(
            ("127.0.0.1", 0), self.handler or _Handler.make(self.directory, self.hits)
        )
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class RangeServer(LoopbackServer):
    """Serves ``files`` (name -> bytes). ``cut[name] = n``: the next response of ``name`` sends
    its full Content-Length but only ``n`` bytes, then closes. ``ranges``: honour Range."""

    def __init__(self, files):
        self.files, self.cut, self.ranges, self.requests = files, {}, True, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                name = self.path.lstrip("/")
                outer.requests.append((name, self.headers.get("Range")))
                body = outer.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                wanted = self.headers.get("Range")
                if wanted and outer.ranges:
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    status = 206
                chunk = body[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(chunk)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                limit = outer.cut.pop(name, None)
                self.wfile.write(chunk if limit is None else chunk[:limit])
                if limit is not None:
                    self.wfile.flush()
                    self.close_connection = True

        super().__init__(handler=Handler)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
