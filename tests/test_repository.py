"""Repository hygiene that users and CI rely on: lint, formatting, pinned environments."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_snakemake_lint_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_check_is_clean():
    snakefmt = Path(sys.executable).with_name("snakefmt")
    proc = subprocess.run(
        [str(snakefmt), "--check", "."], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(command):
    """ruff's lint and its formatter (settings in pyproject.toml) have nothing to change."""
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run(
        [str(ruff), *command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
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


# What a rule script may not hold: definitions (functions, classes, lambdas) and statements or
# expressions that decide what runs (branches, loops, exception handling, context managers,
# conditional expressions, short-circuit boolean operators, filtered comprehensions). Its
# orchestration lives in importable, tested package functions; a script only hands them
# Snakemake's inputs, outputs, params and config (a comprehension may build a dict of inputs).
LOGIC = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Lambda,
    ast.If,
    ast.IfExp,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.Try,
    ast.TryStar,
    ast.With,
    ast.AsyncWith,
    ast.Match,
    ast.BoolOp,
)


def test_rule_scripts_are_thin():
    scripts = sorted((ROOT / "workflow_scripts" / "scripts").glob("[a-z]*.py"))
    assert len(scripts) >= 15  # every script but _bootstrap.py
    found = []
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text(), filename=str(script))):
            if isinstance(node, LOGIC):
                found.append(f"{script.name}:{node.lineno} {type(node).__name__}")
            elif isinstance(node, ast.comprehension) and node.ifs:
                found.append(f"{script.name}:{node.ifs[0].lineno} comprehension filter")
    assert not found, "rule scripts hold logic (move it into the package): " + ", ".join(found)
