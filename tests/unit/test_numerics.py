"""Pinned CPU numerics (workflow_scripts/numerics.py): the environment a pinned job gets, the
check that refuses a job without it, and, in fresh processes, that the pins give the same bits
whether the host offers AVX-512 or an emulated AVX2 machine, while without them the bits
differ (so the comparison can fail)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from workflow_scripts import numerics, runtime

ROOT = Path(__file__).resolve().parents[2]
#: An AVX2 machine as the libraries see one: their own caps, not the workflow's pins.
AVX2_MACHINE = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
PINS = numerics.DEMO_PINS

# A few steps of the demo's ResNet and ViT (convolution, BatchNorm, attention, GELU,
# cross-entropy, AdamW): the digest of the weights, and the capability torch chose.
TRAIN = """
import hashlib, json, sys
import torch
sys.path.insert(0, {root!r})
from workflow_scripts.backbones import build_backbone
torch.set_num_threads(1)
torch.manual_seed(0)
out = {{"capability": torch.backends.cpu.get_cpu_capability()}}
for arch, emb in (("resnet10_tiny", "avgpool"), ("vit_tiny_p8", "cls")):
    net = build_backbone(arch, emb)
    head = torch.nn.Linear(net.embed_dim, 10)
    opt = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(32, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(head(net(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = net.state_dict()
    out[arch] = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
print(json.dumps(out))
"""


def _train(env: dict) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in numerics.ISAS["avx2"]}
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN.format(root=str(ROOT))],
        env=full,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs():
    return {
        "host": _train({}),
        "avx2 machine": _train(AVX2_MACHINE),
        "pinned": _train(numerics.environment(PINS)),
        "pinned on the avx2 machine": _train({**AVX2_MACHINE, **numerics.environment(PINS)}),
    }


def test_pinned_runs_give_the_same_bits_on_both_machines(runs):
    assert runs["pinned"]["capability"] == "AVX2"
    for arch in ("resnet10_tiny", "vit_tiny_p8"):
        assert runs["pinned"][arch] == runs["pinned on the avx2 machine"][arch], arch
        assert runs["pinned"][arch] == runs["avx2 machine"][arch], arch


def test_without_pins_the_machines_differ(runs):
    if runs["host"]["capability"] != "AVX512":
        pytest.skip(
            f"the host's best kernels are {runs['host']['capability']}, not AVX-512: no second "
            "instruction set to tell apart here"
        )
    assert runs["host"]["resnet10_tiny"] != runs["avx2 machine"]["resnet10_tiny"]


def test_environment_and_its_check():
    env = numerics.environment(PINS)
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["FAISS_OPT_LEVEL"] == "avx2" and env["OPENBLAS_CORETYPE"] == "Haswell"
    assert "X86_V4" in env["NPY_DISABLE_CPU_FEATURES"].split()
    assert numerics.environment({"pin": False, "cpu_isa": "avx2"}) == {}
    numerics.check_environment(PINS, env)  # complete: no error
    numerics.check_environment({"pin": False, "cpu_isa": "avx2"}, {})
    wrong = {**env, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    del wrong["FAISS_OPT_LEVEL"]
    with pytest.raises(numerics.NumericsError) as error:
        numerics.check_environment(PINS, wrong)
    message = str(error.value)
    assert "ONEDNN_MAX_CPU_ISA='AVX512_CORE' (pinned: 'AVX2')" in message
    assert "FAISS_OPT_LEVEL=None (pinned: 'avx2')" in message
    assert "ATEN_CPU_CAPABILITY" not in message


def test_a_pinned_job_without_the_environment_stops(tmp_path, monkeypatch):
    for key in numerics.ISAS["avx2"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # setup() replaces it
    job = SimpleNamespace(
        log=[str(tmp_path / "job.log")],
        params=SimpleNamespace(numerics=PINS),
        rule="knn_probe",
        wildcards={},
        threads=1,
    )
    with pytest.raises(numerics.NumericsError, match="start jobs through snakemake"):
        runtime.setup(job)
    job.params = SimpleNamespace(numerics={"pin": False, "cpu_isa": "avx2"})
    runtime.setup(job)  # unpinned: nothing to check


def test_the_workflow_passes_the_pins_to_its_jobs():
    """Every rule whose numbers depend on the kernels carries config section numerics as a
    param (a change of pins reruns them), and the Snakefile sets the environment."""
    from workflow_scripts.plan import Plan
    from workflow_scripts.config import load_study
    import yaml

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    plan = Plan(config, load_study(config, ROOT))
    assert plan.numerics == {"cpu_isa": "avx2", "pin": True}
    rules = "".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))
    assert rules.count("numerics=PLAN.numerics") == 8
    common = (ROOT / "rules" / "common.smk").read_text()
    assert 'os.environ.update(numerics.environment(config["numerics"]))' in common
