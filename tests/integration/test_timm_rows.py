"""A timm row end to end, offline: rule timm_weights reads the weights from a hub cache in
huggingface_hub's layout (HF_HUB_OFFLINE=1, config timm.cache_dir), extraction and the kNN
probe run on them, and the cached features equal those of the same timm model loaded by
hand."""

import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import load_file
from snakerun import ROOT, snakemake

from tests.hub_cache import REVISION, hub_layout

pytestmark = pytest.mark.integration

ARCH = "vit_tiny_patch16_224.augreg_in21k"  # class token, 192-d
ROW = f"vit_timm\tsupervised\t{ARCH}\t\tdiscriminative\tpooled\ttimm\t\t\t\t\t\t\tpaper\n"


def test_a_timm_row_through_the_workflow(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = timm.create_model(ARCH, pretrained=False)
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.02 * torch.randn_like(param))
    cache = tmp_path / "hub"
    repo = timm.get_pretrained_cfg(ARCH).hf_hub_id
    cached = hub_layout(cache, repo, {k: v.contiguous() for k, v in net.state_dict().items()})
    header = (ROOT / "tests/integration/models_smoke.tsv").read_text().splitlines()[0]
    table = tmp_path / "models.tsv"
    table.write_text(header + "\ttransform\n" + ROW)
    work = tmp_path / "work"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = (
        f"models_table={table}",
        "datasets=[shapes]",
        "protocols=[knn]",
        "arms=[raw]",
        "analysis={min_models: 1}",
    )
    target = "results/probes/knn/vit_timm/shapes.csv"
    snakemake(work, target, "--cores", "2", "--config", *config, f"timm={{cache_dir: {cache}}}")

    sidecar = json.loads((work / "results/checkpoints/vit_timm.json").read_text())
    assert sidecar["hf_hub_id"] == repo and sidecar["hub_revision"] == REVISION
    assert sidecar["source_file"] == str(cached)
    # the oracle: the same timm model, the cached file loaded strictly by hand, fed the demo's
    # images (32 px, no resize or crop) normalised with the configuration's mean and std
    oracle = timm.create_model(ARCH, pretrained=False, num_classes=0, dynamic_img_size=True)
    state = load_file(str(cached))
    oracle.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
    oracle.eval()
    images = np.load(work / "results/data/shapes/test_images.npy")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - 0.5) / 0.25  # config/config.yaml transform: mean 0.5, std 0.25
    with torch.no_grad():
        expected = oracle.forward_head(oracle.forward_features(x), pre_logits=True).numpy()
    got = np.load(work / "results/features/vit_timm/shapes/test.npy")
    assert got.shape == (len(images), 192)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    meta = json.loads((work / "results/features/vit_timm/shapes/test.json").read_text())
    assert meta["transform"]["name"] == "paper"
    rows = pd.read_csv(work / target)
    assert set(rows["arm"]) == {"raw"} and rows["top1"].between(0, 100).all()

    # the offline cache without the file: the job names the row and the repository
    cached.unlink()
    (work / "results/checkpoints/vit_timm.safetensors").unlink()
    proc = snakemake(
        work,
        "results/checkpoints/vit_timm.safetensors",
        "--cores",
        "1",
        "--config",
        *config,
        f"timm={{cache_dir: {cache}}}",
        check=False,
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"model 'vit_timm' (timm '{ARCH}')" in out and repo in out
