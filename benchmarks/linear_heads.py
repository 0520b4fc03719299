"""Benchmark: H linear-probe heads trained together vs the same heads trained one by one.

    python benchmarks/linear_heads.py                 # demo-sized features (5,000 x 128)
    python benchmarks/linear_heads.py --n 20000 --dim 2048 --classes 100
    python benchmarks/linear_heads.py --device cuda   # features and heads on the GPU

Both paths run the same code (train_heads), so the results are identical; the separate path
calls it once per head. Prints the wall times and the speed-up; --out writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow_scripts.devices import resolve_device  # noqa: E402
from workflow_scripts.linear_heads import HeadSpec, Recipe, train_heads  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device, "--device")
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(args.classes, args.dim)).astype(np.float32)
    ytr = rng.integers(0, args.classes, args.n)
    yte = rng.integers(0, args.classes, args.n_test)
    xtr = centers[ytr] + rng.normal(size=(args.n, args.dim)).astype(np.float32)
    xte = centers[yte] + rng.normal(size=(args.n_test, args.dim)).astype(np.float32)
    # 8 heads: 2 arms x 4 learning rates, one seed (the paper's default seed 42).
    heads = [HeadSpec(arm, lr, 42) for arm in ("raw", "bn") for lr in (0.03, 0.1, 0.3, 1.0)]
    recipe = Recipe(
        epochs=args.epochs, batch_size=args.batch_size, warmup_epochs=min(5, args.epochs - 1)
    )

    # Warm-up: the first call pays torch's lazy imports (optimiser, gradient clipping).
    train_heads(
        xtr[:64],
        ytr[:64],
        xte[:64],
        yte[:64],
        args.classes,
        heads[:2],
        Recipe(epochs=2, batch_size=32, warmup_epochs=1),
        device=device,
    )
    started = time.perf_counter()
    together, _ = train_heads(xtr, ytr, xte, yte, args.classes, heads, recipe, device=device)
    t_together = time.perf_counter() - started
    started = time.perf_counter()
    separate = [
        train_heads(xtr, ytr, xte, yte, args.classes, [h], recipe, device=device)[0][0]
        for h in heads
    ]
    t_separate = time.perf_counter() - started
    max_diff = max(abs(a["top1"] - b["top1"]) for a, b in zip(together, separate, strict=True))
    result = {
        "n": args.n,
        "dim": args.dim,
        "classes": args.classes,
        "epochs": args.epochs,
        "heads": len(heads),
        "threads": args.threads,
        "device": str(device),
        "together_s": round(t_together, 2),
        "separate_s": round(t_separate, 2),
        "speedup": round(t_separate / t_together, 2),
        "max_top1_difference": max_diff,
    }
    print(
        f"linear heads: {len(heads)} together {t_together:.2f} s, separately {t_separate:.2f} s, "
        f"speed-up {t_separate / t_together:.1f}x, max top-1 difference {max_diff:.2f} points"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
