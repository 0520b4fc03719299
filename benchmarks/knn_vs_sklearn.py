"""Benchmark: workflow_scripts.knn.knn_predict (faiss) against scikit-learn's brute-force kNN.

Times ``knn_predict`` and ``KNeighborsClassifier(n_neighbors=k, weights="distance",
algorithm="brute", n_jobs=threads)`` fit + predict on the same clustered float32 Gaussian
features, with BLAS/OpenMP limited to ``--threads`` for both, checks that the predictions are
identical and prints a one-line summary (optionally a JSON file with ``--out``).

    /work/venv/bin/python benchmarks/knn_vs_sklearn.py [--n-train 20000 --n-test 5000 ...]

``--search torch`` times the torch candidate search (matmul + topk) instead of faiss, on
``--device`` (cpu, cuda, cuda:N or auto = CUDA when visible; a CUDA device implies torch).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow_scripts.knn import knn_predict  # noqa: E402


def make_data(
    n_train: int, n_test: int, dim: int, classes: int, seed: int, center_scale: float = 0.15
):
    """Gaussian clusters: class centres ~ N(0, center_scale^2 I), samples = centre + N(0, I)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, center_scale, size=(classes, dim)).astype(np.float32)
    y_tr = rng.integers(0, classes, n_train)
    y_te = rng.integers(0, classes, n_test)
    x_tr = centers[y_tr] + rng.standard_normal((n_train, dim), dtype=np.float32)
    x_te = centers[y_te] + rng.standard_normal((n_test, dim), dtype=np.float32)
    return x_tr, y_tr, x_te, y_te


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-test", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="timed runs (after an untimed warm-up); the minimum is reported",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--search",
        choices=("auto", "faiss", "torch"),
        default="auto",
        help="candidate search of knn_predict (auto: faiss on the CPU, torch on CUDA)",
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--out", type=Path, default=None, help="optional JSON output file")
    args = ap.parse_args(argv)

    import faiss  # noqa: F401  (imported up front, like sklearn: imports are not timed)
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits

    device = args.device
    if device != "cpu" or args.search == "torch":
        import torch  # noqa: F401  (not timed either)

        from workflow_scripts.devices import resolve_device

        device = resolve_device(device, "--device")
    name = "torch" if args.search == "torch" or str(device) != "cpu" else "faiss"
    run = {"device": device, "search": args.search}

    x_tr, y_tr, x_te, y_te = make_data(args.n_train, args.n_test, args.dim, args.classes, args.seed)

    # Wall-clock and process CPU time (all threads); the CPU time is the steadier figure on a
    # shared machine.
    t_faiss, t_sk, c_faiss, c_sk = [], [], [], []
    with threadpool_limits(limits=args.threads):
        # untimed warm-up of both (thread pools, BLAS buffers) on a small slice
        n_w = min(args.n_train, max(args.k, 1000))
        knn_predict(
            x_tr[:n_w],
            y_tr[:n_w],
            x_te[:64],
            k=args.k,
            num_classes=args.classes,
            threads=args.threads,
            **run,
        )
        KNeighborsClassifier(
            n_neighbors=args.k, weights="distance", algorithm="brute", n_jobs=args.threads
        ).fit(x_tr[:n_w], y_tr[:n_w]).predict(x_te[:64])
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            pred = knn_predict(
                x_tr, y_tr, x_te, k=args.k, num_classes=args.classes, threads=args.threads, **run
            )
            t_faiss.append(time.perf_counter() - t0)
            c_faiss.append(time.process_time() - c0)

            t0, c0 = time.perf_counter(), time.process_time()
            clf = KNeighborsClassifier(
                n_neighbors=args.k, weights="distance", algorithm="brute", n_jobs=args.threads
            )
            pred_sk = clf.fit(x_tr, y_tr).predict(x_te)
            t_sk.append(time.perf_counter() - t0)
            c_sk.append(time.process_time() - c0)

    mismatches = int((pred != pred_sk).sum())
    identical = mismatches == 0
    tf, ts = min(t_faiss), min(t_sk)
    cf, cs = min(c_faiss), min(c_sk)
    median_speedup = float(np.median(t_sk) / np.median(t_faiss))
    acc = 100.0 * float((pred == y_te).mean())
    print(
        f"data: n_train={args.n_train} n_test={args.n_test} dim={args.dim} "
        f"classes={args.classes} k={args.k} threads={args.threads} seed={args.seed} "
        f"search={name} device={device}; "
        f"top-1 {acc:.2f}%; mismatches: {mismatches}"
    )
    print(
        f"per repeat (wall s): {name} "
        + ", ".join(f"{t:.2f}" for t in t_faiss)
        + "; sklearn "
        + ", ".join(f"{t:.2f}" for t in t_sk)
        + f"; speed-up of the medians {median_speedup:.2f}x"
    )
    print(
        f"knn: {name} {tf:.2f} s, sklearn {ts:.2f} s, speed-up {ts / tf:.2f}x, "
        f"predictions identical: {identical}"
    )
    print(
        f"cpu time: {name} {cf:.2f} s, sklearn {cs:.2f} s, speed-up {cs / cf:.2f}x; "
        f"load average {_loadavg()}"
    )

    if args.out is not None:
        record = {
            "n_train": args.n_train,
            "n_test": args.n_test,
            "dim": args.dim,
            "classes": args.classes,
            "k": args.k,
            "threads": args.threads,
            "repeats": args.repeats,
            "seed": args.seed,
            "search": name,
            "device": str(device),
            f"{name}_seconds": t_faiss,
            "sklearn_seconds": t_sk,
            f"{name}_cpu_seconds": c_faiss,
            "sklearn_cpu_seconds": c_sk,
            "speedup": ts / tf,
            "median_speedup": median_speedup,
            "cpu_speedup": cs / cf,
            "load_average": _loadavg(),
            "mismatches": mismatches,
            "identical": identical,
            "top1": acc,
            "python": platform.python_version(),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
