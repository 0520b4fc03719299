"""Throughput of every stage of the paper study on one GPU, in at most ~5 minutes.

    python benchmarks/gpu_throughput.py --out results/gpu             # H100/H200, ~3-5 min
    python benchmarks/gpu_throughput.py --out results/gpu --compile   # + torch.compile (bf16)
    python benchmarks/gpu_throughput.py --smoke --out /tmp/gt         # CPU, tiny sizes (CI)
    python benchmarks/compute_estimate.py --rates results/gpu/gpu_throughput.json

Measures, with the project's own modules (random weights and synthetic data: throughput, not
accuracy), and writes ``<out>/gpu_throughput.json`` after every section plus a summary on stdout:

* ``forward``: extraction images/s and peak GPU memory of ``resnet50`` and
  ``vit_base_patch16_224`` (``backbones.build_backbone``) per precision fp32 / tf32 / bf16
  (``workflow_scripts.precision``: ``configure`` + ``autocast``), as ``features.extract`` runs a
  batch: uint8 crops normalised on the device (``transforms.normalize_batch``), ResNets
  channels-last with cuDNN autotuning on CUDA, features copied back to the host.
* ``train``: one fine-tuning step as ``finetune.finetune`` takes it -- ``Classifier`` +
  ``param_groups`` + SGD (momentum 0.9), forward under autocast, float32 cross-entropy, the
  per-step finiteness check, gradient-norm clip 0.5; label smoothing 0.1, drop-path 0.2 and
  layer decay for the ViT -- at batch 256, per precision.
* ``loader``: images/s of the project's DataLoader path (``datasets.loader.ImageList`` +
  ``make_loader`` over ``datasets.transforms.eval_transform`` / ``train_transform``, called as
  the workflow calls them) with 1 worker (the per-worker rate), 8 and N workers, on generated
  photo-like 500x375 JPEGs (smooth colour fields, edges and texture, 70-100 KB; white-noise
  JPEGs decode far slower than photographs and would understate the loader).
* ``determinism``: two identical 3-step fine-tuning runs per (arch, precision): bitwise equal?
* ``knn``: ImageNet-size search, 1,281,167 x 2048 train vs 50,000 queries, float32 without
  TF32: the raw distance matmul + top-(k + margin) on the device, and the project's
  ``knn.knn_scores(search="torch", device=...)`` end to end where it has that option.
* ``linear``: one linear-probe epoch at ImageNet scale (raw + BN heads, 1000 classes, batch
  1024) with ``linear_heads.train_heads(device=...)`` (on the CPU in a checkout without ``device``).
* ``compile`` (only with ``--compile``): bf16 training step and forward under torch.compile,
  compile time and speed-up over eager.

A global time budget (``--budget``, seconds since the start, default 280) skips what would not
fit, and a section still running 10 s after it is cut (recorded as an error); a skipped part is
recorded as ``{"skipped": reason}``. ``--smoke`` runs every section on
the CPU with tiny sizes (batch 1, ResNet at 64 pixels, 24 JPEGs, an 8,192 x 512 kNN) so CI can
check that the script runs; its rates mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import gc
import inspect
import io
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

from workflow_scripts import precision as P

T0 = time.perf_counter()
ARCHS = (("resnet50", "avgpool"), ("vit_base_patch16_224", "cls"))
PRECISIONS = P.PRECISIONS  # fp32, tf32, bf16
SPEC = {
    "resize": 256,
    "crop": 224,
    "interpolation": "bilinear",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
KNN_K = 20
LINEAR_CLASSES, LINEAR_BATCH = 1000, 1024

# Sizes: the real run and the CPU smoke run.
SIZES = {
    "gpu": {
        "batch": 256,
        "warmup": 3,
        "iters": 10,
        "train_warmup": 2,
        "train_iters": 8,
        "det_steps": 3,
        "n_jpeg": 512,
        "loader_batch": 64,
        "loader_1": 384,
        "loader_n_per_worker": 256,
        "knn_train": 1_281_167,
        "knn_test": 50_000,
        "knn_dim": 2048,
        "linear_test": 50_000,
    },
    "smoke": {
        "batch": 1,
        "warmup": 0,
        "iters": 1,
        "train_warmup": 0,
        "train_iters": 1,
        "det_steps": 1,
        "n_jpeg": 24,
        "loader_batch": 8,
        "loader_1": 24,
        "loader_n_per_worker": 24,
        "knn_train": 8192,
        "knn_test": 512,
        "knn_dim": 2048,
        "linear_test": 512,
    },
}
# Expected seconds of each section on an H100 (a section starts only if it fits the budget).
NEEDS_GPU = {
    "forward": 30,
    "train": 50,
    "loader": 30,
    "knn": 30,
    "linear": 25,
    "determinism": 40,
    "compile": 90,
}


class Run:
    """Arguments, device, sizes and the results being written."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        cuda = torch.cuda.is_available() and not args.smoke and args.device != "cpu"
        self.dev = torch.device("cuda" if cuda else "cpu")
        self.smoke = args.smoke or not cuda
        self.size = dict(SIZES["smoke" if self.smoke else "gpu"])
        if args.batch:
            self.size["batch"] = args.batch
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.cpus = cpus or 1
        self.workers = args.workers or (2 if self.smoke else max(2, min(self.cpus - 2, 32)))
        self.res: dict = {"meta": {}}
        self.out = Path(args.out)
        self.in_section = False

    # ---------------------------------------------------------------------------------------

    def now(self) -> float:
        return time.perf_counter() - T0

    def left(self) -> float:
        return self.args.budget - self.now()

    def log(self, msg: str) -> None:
        print(f"[{self.now():6.1f}s] {msg}", flush=True)

    def save(self) -> None:
        self.res["meta"]["elapsed_s"] = round(self.now(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "gpu_throughput.json.tmp"
        tmp.write_text(json.dumps(self.res, indent=2, default=str))
        tmp.replace(self.out / "gpu_throughput.json")

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def free(self) -> None:
        gc.collect()
        if self.dev.type == "cuda":
            torch.cuda.empty_cache()

    def reset_peak(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float | None:
        if self.dev.type != "cuda":
            return None
        return round(torch.cuda.max_memory_allocated() / 1e9, 2)

    def need(self, name: str) -> float:
        return 0.0 if self.smoke else NEEDS_GPU[name]

    def section(self, name: str, fn) -> None:
        if self.left() < self.need(name):
            self.res[name] = {
                "skipped": f"time budget: {self.now():.0f}s used of "
                f"{self.args.budget:.0f}s, section needs ~{self.need(name)}s"
            }
            self.log(f"{name}: skipped (budget)")
            self.save()
            return
        self.log(f"{name} ...")
        started = time.perf_counter()
        self.in_section = True
        try:
            result = fn()
        except Exception as error:  # noqa: BLE001 -- a failed section is a finding too
            result = {"error": repr(error)[:1000]}
        finally:
            self.in_section = False
        result["_seconds"] = round(time.perf_counter() - started, 1)
        self.res[name] = result
        self.log(f"{name}: {json.dumps(result, default=str)[:400]}")
        self.free()
        self.save()

    def timeit(self, fn, warmup: int, iters: int) -> float:
        """Seconds per call after ``warmup`` calls."""
        for _ in range(warmup):
            fn()
        self.sync()
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        self.sync()
        return (time.perf_counter() - start) / iters

    # ---------------------------------------------------------------------------------------
    # how the workflow runs a backbone on this device

    def channels_last(self, arch: str) -> bool:
        return self.dev.type == "cuda" and arch.startswith("resnet")

    def configure(self, prec: str, arch: str | None = None) -> None:
        """precision.configure with cuDNN benchmark for the ResNets on CUDA (as the workflow)."""
        P.configure(prec, self.dev, benchmark=bool(arch and self.channels_last(arch)))

    def images(self, arch: str, batch: int, seed: int = 1) -> torch.Tensor:
        """A batch as the loader ships it to the device: uint8 crops (normalised on the device
        by ``prepare``), or normalised floats where the transforms have no uint8 output. 224
        pixels; 64 for a ResNet in a smoke run (a ViT-B/16 takes 224 only)."""
        side = 64 if self.smoke and arch.startswith("resnet") else 224
        gen = torch.Generator(device=self.dev).manual_seed(seed)
        if normalize_batch() is None:
            return torch.randn(batch, 3, side, side, device=self.dev, generator=gen)
        return torch.randint(
            0, 256, (batch, 3, side, side), dtype=torch.uint8, device=self.dev, generator=gen
        )

    def prepare(self, x: torch.Tensor, arch: str) -> torch.Tensor:
        """What extraction and fine-tuning do to a batch on the device before the model."""
        norm = normalize_batch()
        if norm is not None and x.dtype == torch.uint8:
            x = norm(x, SPEC)
        if self.channels_last(arch):
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def same_as_fp32(self, prec: str) -> bool:
        """TF32 is a CUDA feature: on a CPU ``tf32`` runs exactly the ``fp32`` code."""
        return self.dev.type != "cuda" and P.effective(prec, self.dev) == "fp32" and prec != "fp32"


def normalize_batch():
    """``datasets.transforms.normalize_batch`` (uint8 batches normalised on the device), or None
    in a checkout whose transforms still normalise per image."""
    from workflow_scripts.datasets import transforms

    return getattr(transforms, "normalize_batch", None)


# ------------------------------------------------------------------------------------------------
# environment


def environment(run: Run) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(run.dev),
        "smoke": run.smoke,
        "cpus": run.cpus,
        "budget_s": run.args.budget,
        "sizes": run.size,
        "loader_workers": run.workers,
        "precisions": list(PRECISIONS),
        "uint8_batches": normalize_batch() is not None,
    }
    for mod in ("torchvision", "timm", "PIL", "faiss"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as error:  # noqa: BLE001
            info[mod] = f"absent ({type(error).__name__})"
    if run.dev.type == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "gpu_mem_gb": round(props.total_memory / 1e9, 1),
            "sms": props.multi_processor_count,
        }
    else:
        info["gpu"] = None
    return info


# ------------------------------------------------------------------------------------------------
# extraction forward and fine-tuning step


def forward(run: Run) -> dict:
    """features.extract's per-batch work: prepare, forward under autocast, features to host."""
    s = run.size
    out: dict = {"batch": s["batch"]}
    for arch, emb in ARCHS:
        # the backbone of the fine-tuning model (drop-path is inactive in eval mode)
        model = copy.deepcopy(classifier(arch, emb).backbone).eval().to(run.dev)
        if run.channels_last(arch):
            model = model.to(memory_format=torch.channels_last)
        x = run.images(arch, s["batch"])
        rows: dict = {}
        for prec in PRECISIONS:
            if run.same_as_fp32(prec) and "img_s" in rows.get("fp32", {}):
                rows[prec] = {**rows["fp32"], "effective": "fp32", "note": "same run as fp32"}
                continue
            if run.left() < (0 if run.smoke else 4):
                rows[prec] = {"skipped": "time budget"}
                continue
            run.configure(prec, arch)
            run.reset_peak()

            def step(model=model, x=x, prec=prec, arch=arch):
                with torch.inference_mode(), P.autocast(prec, run.dev):
                    return model(run.prepare(x, arch)).float().cpu()

            sec = run.timeit(step, s["warmup"], s["iters"])
            rows[prec] = {
                "img_s": round(s["batch"] / sec, 1),
                "ms_per_batch": round(1000 * sec, 2),
                "peak_mem_gb": run.peak_gb(),
                "effective": P.effective(prec, run.dev),
                "channels_last": run.channels_last(arch),
            }
        out[arch] = rows
        del model, x
        run.free()
    return out


_MODELS: dict = {}


def classifier(arch: str, emb: str):
    """The fine-tuning model of ``finetune.finetune`` (raw arm; drop-path 0.2 for a ViT), on
    the CPU, seeded; built once (callers copy it)."""
    from workflow_scripts.backbones import build_backbone
    from workflow_scripts.finetune import Classifier

    if arch not in _MODELS:
        torch.manual_seed(0)
        vit = not arch.startswith("resnet")
        _MODELS[arch] = Classifier(build_backbone(arch, emb, 0.2 if vit else 0.0), 1000, "raw")
    return _MODELS[arch]


def trainer(run: Run, arch: str, base, prec: str, *, compiled: bool = False):
    """(model, step, counters): one step of ``finetune.finetune`` on a fixed batch, for a copy
    of the CPU model ``base``: prepare, forward under autocast, float32 cross-entropy (label
    smoothing 0.1 for a ViT), the finiteness check (a host sync), backward, clip 0.5, SGD."""
    from workflow_scripts.finetune import FinetuneRecipe, is_vit, param_groups

    batch = run.size["batch"]
    model = copy.deepcopy(base).to(run.dev)
    if run.channels_last(arch):
        model = model.to(memory_format=torch.channels_last)
    groups = param_groups(model, FinetuneRecipe(epochs=100, batch_size=max(2, batch)))
    opt = torch.optim.SGD(
        [{"params": g["params"], "lr": g["lr"]} for g in groups],
        lr=groups[0]["lr"],
        momentum=0.9,
        weight_decay=0.0,
    )
    net = torch.compile(model, backend=run.args.compile_backend) if compiled else model
    x = run.images(arch, batch)
    gen = torch.Generator(device=run.dev).manual_seed(2)
    y = torch.randint(0, 1000, (batch,), device=run.dev, generator=gen)
    smoothing = 0.1 if is_vit(model.backbone) else 0.0
    counters = {"nonfinite": 0}
    model.train()

    def step():
        xb = run.prepare(x, arch)
        with P.autocast(prec, run.dev):
            logits = net(xb)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        if not bool(torch.isfinite(loss)):
            counters["nonfinite"] += 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()

    return model, step, counters


def train(run: Run) -> dict:
    s = run.size
    out: dict = {
        "batch": s["batch"],
        "recipe": "Classifier(raw) + param_groups + SGD(momentum 0.9) + isfinite check + "
        "clip_grad_norm 0.5; ViT: drop-path 0.2, label smoothing 0.1, layer "
        "decay 0.65",
    }
    for arch, emb in ARCHS:
        base = classifier(arch, emb)
        rows: dict = {}
        for prec in PRECISIONS:
            if run.same_as_fp32(prec) and "img_s" in rows.get("fp32", {}):
                rows[prec] = {**rows["fp32"], "effective": "fp32", "note": "same run as fp32"}
                continue
            if run.left() < (0 if run.smoke else 10):
                rows[prec] = {"skipped": "time budget"}
                continue
            run.configure(prec, arch)
            run.free()
            run.reset_peak()
            model, step, counters = trainer(run, arch, base, prec)
            sec = run.timeit(step, s["train_warmup"], s["train_iters"])
            rows[prec] = {
                "img_s": round(s["batch"] / sec, 1),
                "ms_per_step": round(1000 * sec, 1),
                "peak_mem_gb": run.peak_gb(),
                "nonfinite_steps": counters["nonfinite"],
                "effective": P.effective(prec, run.dev),
                "channels_last": run.channels_last(arch),
            }
            del model, step
        out[arch] = rows
    return out


def determinism(run: Run) -> dict:
    """Two identical short fine-tuning runs (same weights, data, seeds): bitwise equal?"""
    steps = run.size["det_steps"]
    out: dict = {
        "steps": steps,
        "batch": run.size["batch"],
        "note": "both runs in one process (cuDNN's benchmark choices are cached); a "
        "resumed job is a new process",
    }
    for arch, emb in ARCHS:
        base = classifier(arch, emb)
        rows: dict = {}
        for prec in PRECISIONS:
            if run.same_as_fp32(prec) and "bitwise_equal" in rows.get("fp32", {}):
                rows[prec] = {**rows["fp32"], "note": "same run as fp32"}
                continue
            if run.left() < (0 if run.smoke else 6):
                rows[prec] = {"skipped": "time budget"}
                continue
            run.configure(prec, arch)
            states = []
            for _ in range(2):
                model, step, _ = trainer(run, arch, base, prec)
                torch.manual_seed(123)  # drop-path draws
                for _ in range(steps):
                    step()
                run.sync()
                states.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
                del model, step
                run.free()
            equal = all(torch.equal(a, states[1][k]) for k, a in states[0].items())
            diff = max(
                float((a.double() - states[1][k].double()).abs().max())
                for k, a in states[0].items()
                if a.numel()
            )
            rows[prec] = {
                "bitwise_equal": equal,
                "max_abs_weight_diff": diff,
                "cudnn_benchmark": run.channels_last(arch),
            }
        out[arch] = rows
    return out


def compiled(run: Run) -> dict:
    """bf16 + torch.compile (finetune.compile / the fast scenario): training step and forward
    per arch; the first call's time is the compile time."""
    s = run.size
    out: dict = {"backend": run.args.compile_backend, "precision": "bf16"}
    for arch, emb in ARCHS[::-1]:  # the ViT first: the more informative one
        row: dict = {}
        if run.left() < (0 if run.smoke else 40):
            out[arch] = {"skipped": "time budget"}
            continue
        run.configure("bf16", arch)
        model, step, _ = trainer(run, arch, classifier(arch, emb), "bf16", compiled=True)
        start = time.perf_counter()
        step()
        run.sync()
        row["train_compile_s"] = round(time.perf_counter() - start, 1)
        sec = run.timeit(step, 1, s["train_iters"])
        row["train_img_s"] = round(s["batch"] / sec, 1)
        del model, step
        run.free()
        if run.left() >= (0 if run.smoke else 25):
            net = copy.deepcopy(classifier(arch, emb).backbone).eval().to(run.dev)
            if run.channels_last(arch):
                net = net.to(memory_format=torch.channels_last)
            cnet = torch.compile(net, backend=run.args.compile_backend)
            x = run.images(arch, s["batch"])

            def fwd(cnet=cnet, x=x, arch=arch):
                with torch.inference_mode(), P.autocast("bf16", run.dev):
                    return cnet(run.prepare(x, arch)).float().cpu()

            start = time.perf_counter()
            fwd()
            run.sync()
            row["forward_compile_s"] = round(time.perf_counter() - start, 1)
            row["forward_img_s"] = round(s["batch"] / run.timeit(fwd, 1, s["iters"]), 1)
            del net, cnet, x
        else:
            row["forward"] = {"skipped": "time budget"}
        eager_t = run.res.get("train", {}).get(arch, {}).get("bf16", {}).get("img_s")
        eager_f = run.res.get("forward", {}).get(arch, {}).get("bf16", {}).get("img_s")
        if eager_t and "train_img_s" in row:
            row["train_speedup_vs_eager"] = round(row["train_img_s"] / eager_t, 3)
        if eager_f and "forward_img_s" in row:
            row["forward_speedup_vs_eager"] = round(row["forward_img_s"] / eager_f, 3)
        out[arch] = row
        run.free()
    return out


# ------------------------------------------------------------------------------------------------
# data loader


def photo_like_jpeg(seed: int, size: tuple[int, int] = (500, 375)) -> bytes:
    """A JPEG with a photograph's statistics: smooth colour fields at several scales, a few
    solid shapes (edges), fine texture and mild sensor noise; 70-100 KB at quality 90 for
    500x375 (ImageNet's mean file is ~110 KB). Not white noise, which compresses several times
    worse and decodes much slower than real photographs."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    img = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((4, 90.0), (16, 40.0), (64, 15.0), (160, 40.0), (250, 25.0)):
        small = rng.uniform(-1, 1, (max(2, cells * h // w), cells, 3)).astype(np.float32)
        up = Image.fromarray(((small + 1) * 127.5).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        img += (np.asarray(up, np.float32) / 127.5 - 1) * amp
    img += 128 + rng.normal(0, 8, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        box = [x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 150))]
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_jpegs(root: Path, n: int, processes: int) -> list[str]:
    """n photo-like JPEGs in an ImageNet-style folder layout under ``root``; relative paths."""
    sizes = [(500, 375), (500, 333), (375, 500), (400, 300)]
    jobs = [(i, sizes[i % 4]) for i in range(n)]
    if processes > 1:
        from multiprocessing import get_context

        with get_context("fork").Pool(processes) as pool:
            blobs = pool.starmap(photo_like_jpeg, jobs)
    else:
        blobs = [photo_like_jpeg(*job) for job in jobs]
    items = []
    for i, blob in enumerate(blobs):
        rel = f"train/n{i % 10:08d}/n{i % 10:08d}_{i:05d}.JPEG"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
        items.append(rel)
    return items


def loader_rate(run: Run, root: Path, items: list[str], transform, n: int, workers: int) -> dict:
    """Steady images/s of the project's DataLoader: from the arrival of batch ``workers`` (each
    worker has delivered one batch, so start-up is over) to the last batch."""
    from workflow_scripts.datasets.loader import ImageList, make_loader

    batch = run.size["loader_batch"]
    n = max(n, batch * (workers + 2))
    data = ImageList("imagenet", root, (items * math.ceil(n / len(items)))[:n], transform)
    loader = make_loader(data, batch, workers, pin_memory=run.dev.type == "cuda")
    start = time.perf_counter()
    first = mark = None
    seen = after = 0
    dtype = None
    for i, xb in enumerate(loader):
        t = time.perf_counter()
        seen += len(xb)
        dtype = str(xb.dtype)
        if first is None:
            first = t - start
        if i == workers:
            mark = t
        elif mark is not None:
            after += len(xb)
    total = time.perf_counter() - start
    steady = after / max(time.perf_counter() - mark, 1e-9) if mark is not None and after else None
    return {
        "workers": workers,
        "images": seen,
        "img_s": round(steady or seen / total, 1),
        "img_s_incl_startup": round(seen / total, 1),
        "first_batch_s": round(first, 2),
        "batch": batch,
        "dtype": dtype,
    }


def loader(run: Run) -> dict:
    from workflow_scripts.datasets.common import load_rgb
    from workflow_scripts.datasets.transforms import eval_transform, train_transform

    s = run.size
    root = Path(tempfile.mkdtemp(prefix="gpu_throughput_jpeg_"))
    try:
        items = make_jpegs(root, s["n_jpeg"], min(16, run.cpus))
        sizes = [(root / it).stat().st_size for it in items]
        # as the workflow's loaders build them: uint8 crops where the transforms can stop there
        # (normalised on the device), normalised floats otherwise
        kwargs = (
            {"normalize": False}
            if "normalize" in inspect.signature(eval_transform).parameters
            else {}
        )
        transforms = {
            "eval": eval_transform(SPEC, "none", **kwargs),
            "train": train_transform(SPEC, "none", **kwargs),
        }
        out: dict = {
            "jpeg_kb_mean": round(float(np.mean(sizes)) / 1024, 1),
            "n_files": len(items),
            "workers_max": run.workers,
            "cpus": run.cpus,
            "transform_kwargs": kwargs,
            "preprocessing": "none",
            "spec": SPEC,
        }
        # in one process with one thread, no DataLoader: the pure per-image cost
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        files = [root / it for it in items[: min(len(items), 64 if not run.smoke else 12)]]
        for name, tf in transforms.items():
            tf(load_rgb(files[0]))
            start = time.perf_counter()
            for f in files:
                tf(load_rgb(f))
            out[f"{name}_in_process_img_s"] = round(len(files) / (time.perf_counter() - start), 1)
        torch.set_num_threads(threads)
        counts = sorted({1, run.workers} | ({8} if 8 < run.workers else set()))
        per_worker = {}
        for name, tf in transforms.items():
            rows = {}
            for w in counts:
                if run.left() < (0 if run.smoke else 5):
                    rows[str(w)] = {"skipped": "time budget"}
                    continue
                n = s["loader_1"] if w == 1 else s["loader_n_per_worker"] * w
                rows[str(w)] = loader_rate(run, root, items, tf, n, w)
                if w > 1 and "img_s" in rows.get("1", {}):
                    rows[str(w)]["scaling_vs_1_worker"] = round(
                        rows[str(w)]["img_s"] / (w * rows["1"]["img_s"]), 3
                    )
            out[name] = rows
            if "img_s" in rows.get("1", {}):
                per_worker[name] = rows["1"]["img_s"]
        out["per_worker_img_s"] = per_worker
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# kNN and linear probe at ImageNet scale

FEATURES: dict = {}


def knn_search_api(device: torch.device, cpus: int):
    """(name, function, keyword arguments) of a torch/device search in workflow_scripts.knn, or
    None while it has none."""
    from workflow_scripts import knn

    for name in ("knn_scores", "evaluate_knn"):
        fn = getattr(knn, name, None)
        if fn is None:
            continue
        params = inspect.signature(fn).parameters
        if "search" in params or "device" in params:
            kwargs = {}
            if "search" in params:
                kwargs["search"] = "torch"
            if "device" in params:
                kwargs["device"] = str(device)
            if "threads" in params:  # the workflow's threads.knn_probe (re-rank threads)
                kwargs["threads"] = max(1, min(8, cpus))
            if name == "evaluate_knn":
                kwargs["arms"] = ("raw",)
            return name, fn, kwargs
    return None


def knn_section(run: Run) -> dict:
    s = run.size
    n_train, n_test, dim = s["knn_train"], s["knn_test"], s["knn_dim"]
    P.configure("fp32", run.dev)  # exact search: float32 without TF32
    gen = torch.Generator(device=run.dev).manual_seed(0)
    xb = torch.randn(n_train, dim, device=run.dev, generator=gen)
    xq = torch.randn(n_test, dim, device=run.dev, generator=gen)
    yb = torch.randint(0, LINEAR_CLASSES, (n_train,), device=run.dev, generator=gen)
    FEATURES.update(train=xb, labels=yb)
    run.sync()
    api = knn_search_api(run.dev, run.cpus)
    out = {"n_train": n_train, "n_test": n_test, "dim": dim, "k": KNN_K, "arms_timed": 1}
    raw = raw_knn_search(run, xb, xq)
    out |= {
        "raw_search_s": round(raw, 3),
        "raw_search_tflops": round(2.0 * n_train * n_test * dim / raw / 1e12, 4),
    }
    if api is not None:
        name, fn, kwargs = api
        train_np, test_np, labels_np = xb.cpu().numpy(), xq.cpu().numpy(), yb.cpu().numpy()
        args = (train_np, labels_np, test_np)
        if name == "evaluate_knn":
            args += (np.zeros(n_test, dtype=np.int64),)
        run.sync()
        start = time.perf_counter()
        fn(*args, k=KNN_K, num_classes=LINEAR_CLASSES, **kwargs)
        run.sync()
        sec = time.perf_counter() - start
        shown = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
        out["method"] = f"workflow_scripts.knn.{name}({shown})"
        out["includes"] = (
            "input checks, host->device copies, the device search, the exact "
            "float64 re-rank and the class votes"
        )
    else:
        sec = raw
        out["method"] = (
            "raw float32 distance matmul (|x|^2 - 2 q.x) + top-(k+margin) on the "
            "device: workflow_scripts.knn has no torch/device search"
        )
        out["includes"] = "distance matmul + topk only (no exact re-rank, no votes)"
    flops = 2.0 * n_train * n_test * dim
    out |= {
        "seconds": round(sec, 3),
        "queries_s": round(n_test / sec, 1),
        "effective_tflops": round(flops / sec / 1e12, 4),
        "precision": "fp32 (no TF32)",
    }
    return out


def raw_knn_search(run: Run, xb: torch.Tensor, xq: torch.Tensor, chunk: int = 1024) -> float:
    """Seconds of the candidate search alone: distances + top-(k + margin) per query block."""
    margin = KNN_K + max(8, KNN_K)
    norms = xb.pow(2).sum(1)
    torch.addmm(norms[:4096].unsqueeze(0), xq[:chunk], xb[:4096].T, alpha=-2.0)  # warm-up
    run.sync()
    start = time.perf_counter()
    norms = xb.pow(2).sum(1)
    cand = torch.empty(len(xq), margin, dtype=torch.long, device=run.dev)
    for i in range(0, len(xq), chunk):
        d = torch.addmm(norms.unsqueeze(0), xq[i : i + chunk], xb.T, alpha=-2.0)
        cand[i : i + chunk] = d.topk(margin, dim=1, largest=False).indices
    run.sync()
    return time.perf_counter() - start


def _heads():
    from workflow_scripts.linear_heads import HeadSpec

    return [HeadSpec("raw", 0.1, 42), HeadSpec("bn", 0.1, 42)]


def linear_section(run: Run) -> dict:
    from workflow_scripts.linear_heads import Recipe, train_heads

    s = run.size
    P.configure("fp32", run.dev)
    x, y = FEATURES.get("train"), FEATURES.get("labels")
    if x is None:
        gen = torch.Generator(device=run.dev).manual_seed(0)
        x = torch.randn(s["knn_train"], s["knn_dim"], device=run.dev, generator=gen)
        y = torch.randint(0, LINEAR_CLASSES, (len(x),), device=run.dev, generator=gen)
    gen = torch.Generator(device=run.dev).manual_seed(1)
    xt = torch.randn(s["linear_test"], x.shape[1], device=run.dev, generator=gen)
    yt = torch.randint(0, LINEAR_CLASSES, (len(xt),), device=run.dev, generator=gen)
    n_train, dim = x.shape
    out = {
        "n_train": n_train,
        "n_test": len(xt),
        "dim": dim,
        "classes": LINEAR_CLASSES,
        "heads": 2,
        "batch": LINEAR_BATCH,
        "steps": n_train // LINEAR_BATCH,
        "precision": "fp32 (no TF32)",
    }
    # train_heads(device=...) runs on the device; without that keyword (an older checkout) it
    # runs on the CPU, and the row says so
    has_device = "device" in inspect.signature(train_heads).parameters
    kwargs = {"device": str(run.dev)} if has_device else {}
    arrays = [t.cpu().numpy() for t in (x, y, xt, yt)]
    recipe = Recipe(epochs=1, batch_size=LINEAR_BATCH, warmup_epochs=0)
    run.sync()
    start = time.perf_counter()
    train_heads(
        arrays[0], arrays[1], arrays[2], arrays[3], LINEAR_CLASSES, _heads(), recipe, **kwargs
    )
    run.sync()
    sec = time.perf_counter() - start
    shown = f", device={str(run.dev)!r}" if has_device else " (CPU: no device= keyword)"
    out["method"] = f"workflow_scripts.linear_heads.train_heads(epochs=1{shown})"
    out["ran_on"] = str(run.dev) if has_device else "cpu"
    out["includes"] = "input checks, host->device copies, train steps, one test evaluation"
    out |= {
        "epoch_s": round(sec, 3),
        "samples_s": round(n_train / sec, 1),
        "ms_per_step": round(1000 * sec / max(1, n_train // LINEAR_BATCH), 3),
    }
    FEATURES.clear()
    return out


# ------------------------------------------------------------------------------------------------


def summary(res: dict) -> list[str]:
    lines = []
    meta = res.get("meta", {})
    lines.append(
        f"device: {meta.get('gpu') or meta.get('device')}, smoke={meta.get('smoke')}, "
        f"{meta.get('elapsed_s')} s"
    )

    def rate(section, arch, prec, key="img_s"):
        row = res.get(section, {}).get(arch, {}).get(prec, {})
        if key in row:
            extra = f" ({row['peak_mem_gb']} GB)" if row.get("peak_mem_gb") is not None else ""
            value = row[key]
            return (f"{value:>9,.0f}" if value >= 10 else f"{value:>9.3g}") + extra
        return f"{'skipped' if 'skipped' in row else '-':>9}"

    for section, what in (("forward", "extraction forward img/s"), ("train", "fine-tuning img/s")):
        if "error" in res.get(section, {}) or "skipped" in res.get(section, {}):
            lines.append(f"{what}: {res[section]}")
            continue
        lines.append(f"{what} (peak GPU memory), batch {res.get(section, {}).get('batch')}:")
        for arch, _ in ARCHS:
            lines.append(
                f"  {arch:<22}" + "  ".join(f"{p}:{rate(section, arch, p)}" for p in PRECISIONS)
            )

    def failed(name: str) -> bool:
        sec = res.get(name, {})
        if "skipped" in sec or "error" in sec or not sec:
            lines.append(f"{name}: {sec.get('skipped') or sec.get('error') or 'not run'}")
            return True
        return False

    ld = res.get("loader", {})
    if not failed("loader"):
        for name in ("eval", "train"):
            rows = ld.get(name, {})
            parts = [f"{w} worker(s) {r['img_s']:,.0f}" for w, r in rows.items() if "img_s" in r]
            lines.append(
                f"loader {name} transform ({ld['jpeg_kb_mean']} KB JPEGs): "
                + ", ".join(parts)
                + " img/s"
            )
    if not failed("knn"):
        kn = res["knn"]
        lines.append(
            f"kNN {kn['n_train']:,} x {kn['n_test']:,} x {kn['dim']}: {kn['seconds']} s "
            f"per arm ({kn['method']}); search alone {kn['raw_search_s']} s = "
            f"{kn['raw_search_tflops']} TFLOP/s"
        )
    if not failed("linear"):
        li = res["linear"]
        lines.append(
            f"linear epoch {li['n_train']:,} x {li['dim']} -> {li['classes']}, 2 heads: "
            f"{li['epoch_s']} s ({li['method']})"
        )
    if not failed("determinism"):
        det = res["determinism"]
        for arch, _ in ARCHS:
            rows = det.get(arch, {})
            lines.append(
                f"bitwise-equal reruns {arch}: "
                + ", ".join(
                    f"{p}={rows[p].get('bitwise_equal', rows[p].get('skipped'))}" for p in rows
                )
            )
    if "compile" in res:
        lines.append(f"compile: {json.dumps(res['compile'])}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        default=os.environ.get("OUT") or "gpu_throughput_out",
        help="folder for gpu_throughput.json",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="wall-time budget in seconds from the start (default 280; 1200 with "
        "--smoke, where nothing should be skipped)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="CPU, tiny sizes: checks that every section runs"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile (bf16; ~90 s more: raise --budget to ~400)",
    )
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend (default inductor)"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="N of the N-worker loader runs (default: CPUs - 2; smoke: 2)",
    )
    parser.add_argument("--batch", type=int, default=0, help="override the batch (default 256)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    if args.budget is None:
        args.budget = 1200.0 if args.smoke else 280.0
    run = Run(args)
    run.log(f"device {run.dev}, smoke={run.smoke}, budget {args.budget:.0f}s, out {run.out}")
    run.res["meta"] = environment(run)
    if run.smoke and not args.smoke:
        run.res["meta"]["note"] = "no CUDA device: ran the smoke sizes on the CPU"
    run.save()
    # hard stop a little after the budget: a section that overruns is cut and recorded as an
    # error; the remaining sections are then skipped by the budget check
    if hasattr(signal, "SIGALRM"):

        def overrun(signum, frame):
            if run.in_section:
                raise TimeoutError(f"hard time limit: budget {args.budget:.0f}s + 10s")

        signal.signal(signal.SIGALRM, overrun)
        signal.alarm(max(1, int(args.budget + 10 - run.now())))
    run.section("forward", lambda: forward(run))
    run.section("train", lambda: train(run))
    run.section("loader", lambda: loader(run))
    run.section("determinism", lambda: determinism(run))
    run.section("knn", lambda: knn_section(run))
    run.section("linear", lambda: linear_section(run))
    if args.compile:
        run.section("compile", lambda: compiled(run))
    if hasattr(signal, "SIGALRM"):
        signal.alarm(0)
    P.configure("fp32", run.dev)
    run.res["meta"]["total_s"] = round(run.now(), 1)
    run.save()
    print("\n".join(summary(run.res)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
