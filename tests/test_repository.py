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


def _table_rows(text: str):
    """(line number, number of cells) of each Markdown table row outside code blocks, grouped
    into tables (consecutive rows)."""
    import re

    tables, current, fenced = [], [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        row = not fenced and line.lstrip().startswith("|")
        if row:
            current.append((number, len(re.findall(r"(?<!\\)\|", line.strip())) - 1))
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


@pytest.mark.parametrize("doc", ["README.md", "config/README.md"])
def test_markdown_tables_have_as_many_cells_in_every_row(doc):
    """A row with a stray '|' renders shifted or not at all (GitHub drops the table)."""
    bad = [
        f"{doc}:{number}: {cells} cells, the header has {table[0][1]}"
        for table in _table_rows((ROOT / doc).read_text())
        for number, cells in table
        if cells != table[0][1]
    ]
    assert not bad, "\n".join(bad)


def test_table_rows_are_counted_like_github():
    text = "| a | b |\n|---|---|\n| x \\| y | z |\n\n```\n| not | a | table |\n```\n| c |\n"
    assert _table_rows(text) == [[(1, 2), (2, 2), (3, 2)], [(8, 1)]]
