"""Compute estimate of the paper configuration from measured throughput.

    python benchmarks/compute_estimate.py                       # measure here, paper config
    python benchmarks/compute_estimate.py --device cuda --batch 128 --out gpu.json
    python benchmarks/compute_estimate.py --throughput resnet50=2400,vit_base_patch16_224=900

Measures, per architecture of the model table (random weights, 224x224 inputs): extraction
(eval forward, images/s), one fine-tuning step (forward + backward + SGD, images/s) and the
image decode + paper transform (images/s per loader worker, on a 500x375 JPEG), plus the
device's float32 matmul rate (kNN and linear probe on cached features are matmuls). It then
multiplies by the image counts of the data set table and the epochs of the configuration:
device-hours per protocol step and the disk the feature cache and checkpoints take. Hours are
for one device; `--throughput` replaces measured extraction rates (e.g. from a GPU run).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow_scripts import registry  # noqa: E402
from workflow_scripts.backbones import build_backbone  # noqa: E402
from workflow_scripts.datasets.transforms import eval_transform, train_transform  # noqa: E402

EMBEDDING = {"resnet": "avgpool", "vit": "cls"}
PAPER_ARCH_COUNTS = {"resnet50": 17, "vit_base_patch16_224": 8, "beitv2_base_patch16_224": 1}


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def measure_arch(arch: str, device: torch.device, batch: int, repeats: int, train: bool) -> dict:
    embedding = "mean_patch" if arch.startswith("beit") else EMBEDDING[registry.ARCHS[arch]["family"]]
    model = build_backbone(arch, embedding).to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    model.eval()

    def forward():
        with torch.inference_mode():
            model(x)

    out = {"extract_img_s": batch / timed(forward, repeats),
           "params": sum(p.numel() for p in model.parameters())}
    if train:
        head = torch.nn.Linear(registry.ARCHS[arch]["dim"], 1000).to(device)
        params = list(model.parameters()) + list(head.parameters())
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        y = torch.randint(0, 1000, (batch,), device=device)
        model.train()

        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(head(model(x)), y).backward()
            opt.step()

        out["train_img_s"] = batch / timed(step, max(1, repeats // 2))
    return out


def measure_loader(spec: dict, repeats: int = 20) -> dict:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    ev, tr = eval_transform(spec, "none"), train_transform(spec, "none")

    def decode(t):
        return lambda: t(Image.open(io.BytesIO(data)).convert("RGB"))

    return {"eval_decode_img_s": 1 / timed(decode(ev), repeats),
            "train_decode_img_s": 1 / timed(decode(tr), repeats)}


def matmul_gflops(device: torch.device, n: int = 1024) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / timed(lambda: a @ b, 5) / 1e9


def estimate(config: dict, datasets: pd.DataFrame, counts: dict, rates: dict, gflops: float) -> list[dict]:
    n_img = int((datasets["n_train"] + datasets["n_test"]).sum())
    arms = len(config["arms"])
    lin = config["linear"]
    rows = []
    for arch, count in counts.items():
        r, dim = rates[arch], registry.ARCHS[arch]["dim"]
        ext = count * n_img / r["extract_img_s"] / 3600
        knn_flop = sum(2 * t.n_train * t.n_test * dim for t in datasets.itertuples()) * arms
        lin_flop = sum(6 * t.n_train * dim * t.num_classes for t in datasets.itertuples())
        lin_flop *= lin["epochs"] * arms * len(lin["base_lrs"]) * len(lin["seeds"])
        idr = datasets[datasets["role"] == "id"].iloc[0]
        ft = config["finetune"]["epochs"] * idr.n_train if "finetune" in config["protocols"] else 0
        fs = 0
        if "fewshot" in config["protocols"]:
            for pct in config["fewshot"]["percents"]:
                per_class = int(np.floor(pct / 100 * idr.n_train / idr.num_classes))
                fs += config["fewshot"]["epochs"] * per_class * idr.num_classes
        train_rate = r.get("train_img_s")
        rows.append({
            "arch": arch, "models": count,
            "extract_img_s": round(r["extract_img_s"], 2),
            "train_img_s": round(train_rate, 2) if train_rate else None,
            "extraction_h": ext,
            "knn_h": count * knn_flop / (gflops * 1e9) / 3600,
            "linear_h": count * lin_flop / (gflops * 1e9) / 3600,
            "finetune_h": count * arms * ft / train_rate / 3600 if train_rate else None,
            "fewshot_h": count * arms * fs / train_rate / 3600 if train_rate else None,
            "features_gb": count * n_img * dim * 4 / 1e9,
            "checkpoints_gb": count * r["params"] * 4 / 1e9,
        })
    return rows


def markdown(frame: pd.DataFrame) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "-"
        if isinstance(v, float) and v.is_integer() and v < 1000:
            return str(int(v))
        return f"{v:,.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "config" / "paper.yaml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-train", action="store_true", help="skip the fine-tuning step")
    parser.add_argument("--throughput", default="", help="arch=img/s,... replaces measured extraction rates")
    parser.add_argument("--out", help="write the measurements and the estimate as JSON")
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    datasets = pd.read_csv(ROOT / config["datasets_table"], sep="\t")
    models_path = ROOT / config["models_table"]
    if models_path.is_file():
        counts = pd.read_csv(models_path, sep="\t")["arch"].value_counts().to_dict()
    else:
        counts, models_path = dict(PAPER_ARCH_COUNTS), "the paper's 17/8/1 split (no model table)"
    device = torch.device(args.device)
    torch.set_num_threads(torch.get_num_threads())
    given = dict(kv.split("=") for kv in args.throughput.split(",") if kv)
    rates = {}
    for arch in counts:
        rates[arch] = measure_arch(arch, device, args.batch, args.repeats, not args.no_train)
        if arch in given:
            rates[arch]["extract_img_s"] = float(given[arch])
        print(f"{arch}: {rates[arch]}", file=sys.stderr)
    loader = measure_loader(config["transform"])
    gflops = matmul_gflops(device)
    rows = estimate(config, datasets, counts, rates, gflops)
    frame = pd.DataFrame(rows)
    total = frame.drop(columns=["arch", "extract_img_s", "train_img_s"]).sum(numeric_only=True)
    frame = pd.concat([frame, pd.DataFrame([{"arch": "total", **total.to_dict()}])], ignore_index=True)
    host = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    n_img = int((datasets["n_train"] + datasets["n_test"]).sum())
    print(f"Device: {host}; batch {args.batch}; models from {models_path}; {n_img:,} images per "
          f"model over {len(datasets)} data sets; matmul {gflops:.1f} GFLOP/s; decode + transform "
          f"{loader['eval_decode_img_s']:.0f} img/s (eval), {loader['train_decode_img_s']:.0f} img/s "
          "(train) per loader worker\n")
    print(markdown(frame))
    if args.out:
        Path(args.out).write_text(json.dumps({"device": host, "rates": rates, "loader": loader,
                                              "gflops": gflops, "estimate": rows}, indent=2))


if __name__ == "__main__":
    main()
