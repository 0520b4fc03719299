"""Pinned numerics end to end (config numerics): the smoke study run again on an emulated AVX2
machine (the libraries' own instruction-set caps, as on a machine without AVX-512) gives the
same bytes as the shared pinned run; run without the pins on this host it does not, which shows
the comparison can fail."""

import hashlib
import subprocess
import sys

import pytest
import yaml
from snakerun import smoke_config, snakemake

pytestmark = pytest.mark.integration

AVX2_MACHINE = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "FAISS_OPT_LEVEL": "avx2",
}
TABLES = ("accuracy.csv", "proxies.csv", "correlations.csv")


def digests(workdir) -> dict[str, str]:
    """sha256 of the result tables and of every pre-trained checkpoint."""
    files = [workdir / "results/tables" / name for name in TABLES]
    files += sorted((workdir / "results/checkpoints").glob("*.safetensors"))
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def host_capability() -> str:
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_pinned_smoke_is_the_same_on_an_avx2_machine(smoke_run, tmp_path):
    emulated = tmp_path / "avx2"
    snakemake(emulated, "--cores", "2", env=AVX2_MACHINE)
    assert digests(emulated) == digests(smoke_run)


def test_unpinned_smoke_on_this_host_differs(smoke_run, tmp_path):
    if host_capability() != "AVX512":
        pytest.skip("this host's best kernels are not AVX-512: its unpinned run is the pinned one")
    config = smoke_config()
    config["numerics"] = {"pin": False}
    path = tmp_path / "unpinned.yaml"
    path.write_text(yaml.safe_dump(config))
    unpinned = tmp_path / "unpinned"
    snakemake(unpinned, "--cores", "2", "--configfile", str(path))
    pinned, free = digests(smoke_run), digests(unpinned)
    assert free["accuracy.csv"] != pinned["accuracy.csv"]
    # a trained ResNet's weights move (oneDNN's convolutions), an untrained one's do not
    assert free["simclr_resnet.safetensors"] != pinned["simclr_resnet.safetensors"]
    assert free["random_resnet.safetensors"] == pinned["random_resnet.safetensors"]  # untrained
