"""Repository hygiene that users and CI rely on: lint, formatting, pinned environments."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_snakemake_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_check_is_clean():
    snakefmt = Path(sys.executable).with_name("snakefmt")
    proc = subprocess.run([str(snakefmt), "--check", "."], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_check_is_clean():
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(ruff), "check", "."], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_conda_env_pins_agree_with_requirements():
    requirements = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert all(requirements.values()) and len(requirements) >= 10
    env = yaml.safe_load((ROOT / "envs" / "sslbench.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == requirements


def test_the_gpu_environment_differs_only_by_faiss_gpu():
    requirements = _pins((ROOT / "requirements.txt").read_text().splitlines())
    gpu = _pins((ROOT / "requirements-gpu.txt").read_text().splitlines())
    assert gpu.pop("faiss-gpu") == requirements.pop("faiss-cpu") and gpu == requirements
    env = yaml.safe_load((ROOT / "envs" / "sslbench-gpu.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == _pins((ROOT / "requirements-gpu.txt").read_text().splitlines())


def test_rule_scripts_are_thin():
    for script in (ROOT / "workflow_scripts" / "scripts").glob("[a-z]*.py"):
        lines = [s for s in script.read_text().splitlines() if s.strip() and not s.strip().startswith("#")]
        assert len(lines) < 45, f"{script.name} holds logic: move it into the package"
