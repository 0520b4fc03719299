"""Source hashes that make Snakemake rerun a rule when a helper module it imports changes.

Snakemake reruns a job when its own script changes but not when a module the script imports
changes. :func:`code_hash` follows the ``workflow_scripts`` imports of a rule script
transitively (by parsing, never importing) and hashes what those files *do*: their syntax trees
without docstrings (comments never reach the tree), so editing a comment or a docstring reruns
nothing, while any change of code reruns the rules that import it. Rules carry it as a param.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "workflow_scripts"
ROOT = Path(__file__).resolve().parent.parent


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}


@lru_cache(maxsize=None)
def module_closure(script: str) -> tuple[str, ...]:
    """Package files reachable by imports from ``script`` (relative paths, sorted)."""
    seen: set[Path] = set()
    todo = [Path(script).resolve()]
    while todo:
        path = todo.pop()
        for name in _imports(path):
            target = _module_file(name)
            if target and target not in seen:
                seen.add(target)
                todo.append(target)
        # modules loaded by name at run time (pre-training methods) count for their package
        if path.name == "__init__.py" and path.parent.name == "pretrain":
            for sibling in sorted(path.parent.glob("*.py")):
                if sibling not in seen:
                    seen.add(sibling)
                    todo.append(sibling)
    return tuple(sorted(str(p.relative_to(ROOT)) for p in seen))


_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def behaviour(source: str, filename: str = "<source>") -> str:
    """The syntax tree of ``source`` without docstrings, as text: equal for two sources that
    differ only in comments, docstrings or layout."""
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        if isinstance(node, _DOCUMENTED) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


@lru_cache(maxsize=None)
def code_hash(script: str) -> str:
    """sha256 (first 16 hex digits) over the behaviour (:func:`behaviour`) of the package
    modules ``script`` imports."""
    digest = hashlib.sha256()
    for rel in module_closure(script):
        tree = behaviour((ROOT / rel).read_text(), rel)
        digest.update(rel.encode() + b"\0" + tree.encode() + b"\0")
    return digest.hexdigest()[:16]


def _git_commit(root: Path) -> dict | None:
    """HEAD of the repository at ``root`` and whether its tracked files differ (None without
    git or outside a checkout)."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=30)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "modified": bool(status.stdout.strip())}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pinned_versions(requirements: Path) -> dict[str, dict[str, str | None]]:
    """Per package pinned in ``requirements`` (``name==version`` lines): the pin and the version
    installed in this environment (None when missing)."""
    from importlib import metadata

    out = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" not in line:
            continue
        name, pin = (part.strip() for part in line.split("==", 1))
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        out[name] = {"pinned": pin, "installed": installed}
    return out


def run_manifest(config: dict, tables: dict[str, Path], devices: dict[str, list[str]],
                 root: Path = ROOT) -> dict:
    """What made a results table: code (git commit, or None), the pinned packages as installed,
    Snakemake and Python, the configuration (sha256 of its sorted JSON, defaults included),
    the model and data set tables (sha256 of the files), the devices each protocol ran on and
    the date (UTC)."""
    import datetime
    import json
    import platform
    from importlib import metadata

    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return {
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git": _git_commit(root),
        "python": platform.python_version(),
        "snakemake": metadata.version("snakemake"),
        "packages": pinned_versions(root / "requirements.txt"),
        "config_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "tables": {name: {"path": str(path), "sha256": _sha256(path)}
                   for name, path in tables.items()},
        "devices": devices,
    }
