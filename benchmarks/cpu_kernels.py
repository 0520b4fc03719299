"""Which CPU ops give different bits under different instruction sets, and what pinning costs.

Runs the ops the demo's models use (ResNet-10: convolution, BatchNorm, ReLU, pooling; ViT:
linear layers, LayerNorm, GELU, softmax attention; both: reductions, cross-entropy, AdamW) in
a fresh process per kernel setting, on fixed inputs, one thread, and prints which outputs
(forward and gradients) differ in bits from the host's default. Then it pre-trains one demo
ResNet for a few steps under each setting and compares the weights, and times the steps.

    python benchmarks/cpu_kernels.py [--steps 20] [--images results/data/shapes/train_images.npy]

Settings (environment variables the kernels read when the process starts):

* ``default``: nothing set; the host's best instruction set (AVX-512 here).
* ``onednn_avx2``: ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN: convolutions, pooling, BatchNorm).
* ``aten_avx2``: ``ATEN_CPU_CAPABILITY=avx2`` (torch's own vectorised kernels: element-wise,
  reductions, softmax, LayerNorm).
* ``mkl_avx2``: ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (MKL's GEMM: linear layers, matmul).
* ``all_avx2``: the three: an AVX2 machine, emulated.
* ``pinned`` / ``pinned_under_avx2``: the workflow's pins (workflow_scripts.numerics) on this
  host, and on top of the emulated AVX2 machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

AVX2 = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
SETTINGS = {
    "default": {},
    "onednn_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "aten_avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "mkl_avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "all_avx2": AVX2,
}


def _digest(tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def run_ops() -> dict:
    """Output and gradient digests of each op on fixed inputs (this process's settings)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    out: dict[str, str] = {}

    def probe(name, fn, *inputs):
        inputs = [t.clone().requires_grad_(True) for t in inputs]
        y = fn(*inputs)
        out[f"{name} forward"] = _digest(y)
        y.backward(torch.ones_like(y) if y.dim() else None)
        for i, t in enumerate(inputs):
            out[f"{name} grad[{i}]"] = _digest(t.grad)

    x = torch.randn(128, 16, 32, 32, generator=g)
    w = torch.randn(32, 16, 3, 3, generator=g) * 0.1
    probe("conv2d 3x3", lambda a, b: F.conv2d(a, b, padding=1), x, w)
    probe("batch_norm (train)", lambda a: F.batch_norm(a, None, None, training=True), x)
    probe("relu", F.relu, x)
    probe("max_pool2d", lambda a: F.max_pool2d(a, 3, 2, 1), x)
    probe("adaptive_avg_pool2d", lambda a: F.adaptive_avg_pool2d(a, 1), x)
    t = torch.randn(128, 17, 64, generator=g)
    wl = torch.randn(192, 64, generator=g) * 0.1
    probe("linear", lambda a, b: F.linear(a, b), t, wl)
    probe("layer_norm", lambda a: F.layer_norm(a, (64,)), t)
    probe("gelu", F.gelu, t)
    q = torch.randn(128, 2, 17, 32, generator=g)
    probe("softmax attention", lambda a: F.scaled_dot_product_attention(a, a, a), q)
    probe("sum", lambda a: a.sum(), x)
    probe("mean over dim", lambda a: a.mean(dim=(2, 3)), x)
    logits = torch.randn(128, 10, generator=g)
    labels = torch.randint(0, 10, (128,), generator=g)
    probe("cross_entropy", lambda a: F.cross_entropy(a, labels), logits)
    # AdamW on fixed parameters and gradients
    p = torch.nn.Parameter(torch.randn(4096, generator=g))
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.05)
    for _ in range(3):
        p.grad = torch.randn(4096, generator=g)
        opt.step()
    out["adamw step"] = _digest(p.data)
    return out


def run_pretrain(images: str, steps: int) -> dict:
    """A demo SimCLR ResNet pre-trained ``steps`` steps: digest of its weights and seconds."""
    import time

    import numpy as np
    import torch

    from workflow_scripts.pretrain.loop import pretrain

    torch.set_num_threads(1)
    data = np.load(images)[:2000]
    hp = {
        "batch_size": 128,
        "lr": 0.002,
        "weight_decay": 0.05,
        "warmup_fraction": 0.1,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "temperature": 0.2,
        "proj_hidden": 256,
        "proj_dim": 64,
    }
    started = time.perf_counter()
    backbone, _ = pretrain(
        arch="resnet10_tiny",
        embedding="avgpool",
        method="simclr",
        images=data,
        labels=np.zeros(len(data), dtype=np.int64),
        num_classes=10,
        steps=steps,
        seed=0,
        hp=hp,
        log_every=10**9,
    )
    seconds = time.perf_counter() - started
    state = backbone.state_dict()
    digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state)))
    return {
        "weights": digest.hexdigest()[:16],
        "seconds_per_step": seconds / steps,
    }


def child(mode: str, images: str, steps: int) -> None:
    sys.path.insert(0, str(ROOT))
    if os.environ.get("SSLBENCH_PIN_PROBE"):
        from workflow_scripts import numerics

        numerics.apply_in_process(json.loads(os.environ["SSLBENCH_PIN_PROBE"]))
    result = run_ops() if mode == "ops" else run_pretrain(images, steps)
    print(json.dumps(result))


def spawn(mode: str, env: dict, images: str, steps: int, pins: dict | None) -> dict:
    full = {**os.environ, **env}
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        full[key] = "1"
    if pins is not None:
        from workflow_scripts import numerics

        full.update(numerics.environment(pins))
        full["SSLBENCH_PIN_PROBE"] = json.dumps(pins)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--images", images, "--steps", str(steps)],
        env=full,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=["ops", "pretrain"])
    parser.add_argument("--images", default="results/data/shapes/train_images.npy")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-pretrain", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.images, args.steps)
        return
    sys.path.insert(0, str(ROOT))
    settings = {name: (env, None) for name, env in SETTINGS.items()}
    try:
        from workflow_scripts.numerics import DEMO_PINS
    except ImportError:
        DEMO_PINS = None
    if DEMO_PINS is not None:
        settings["pinned"] = ({}, DEMO_PINS)
        settings["pinned_under_avx2"] = (AVX2, DEMO_PINS)
    ops = {
        name: spawn("ops", env, args.images, args.steps, pins)
        for name, (env, pins) in settings.items()
    }
    names = list(settings)
    print("op / gradient".ljust(34) + " ".join(n[:17].rjust(17) for n in names[1:]))
    for op, ref in ops["default"].items():
        marks = ["differs" if ops[n][op] != ref else "same" for n in names[1:]]
        print(op.ljust(34) + " ".join(m.rjust(17) for m in marks))
    if args.no_pretrain or not Path(args.images).exists():
        return
    print(f"\nSimCLR ResNet-10, {args.steps} steps of batch 128, one thread:")
    runs = {
        n: spawn("pretrain", env, args.images, args.steps, pins)
        for n, (env, pins) in settings.items()
    }
    for name, run in runs.items():
        same = run["weights"] == runs["default"]["weights"]
        print(
            f"  {name:<18} weights {run['weights']} ({'=' if same else '≠'} default)"
            f"  {1000 * run['seconds_per_step']:.0f} ms/step"
        )
    if "pinned" not in runs:
        return
    print(
        "  pinned vs pinned_under_avx2: "
        + (
            "identical"
            if runs["pinned"]["weights"] == runs["pinned_under_avx2"]["weights"]
            else "DIFFER"
        )
    )


if __name__ == "__main__":
    main()
