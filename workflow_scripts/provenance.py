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
def module_closure(script: str, modules: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Package files reachable by imports from ``script`` and the package ``modules`` it
    loads by name (``"knn"`` = workflow_scripts/knn.py; included), relative paths, sorted."""
    loaded = []
    for name in modules:
        target = _module_file(f"{PACKAGE}.{name}")
        if target is None:
            raise ValueError(f"no package module '{PACKAGE}.{name}' (loaded by {script})")
        loaded.append(target)
    seen: set[Path] = set(loaded)
    todo = [Path(script).resolve(), *loaded]
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


def _strip_docstrings(source: str, filename: str) -> ast.Module:
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        if isinstance(node, _DOCUMENTED) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def behaviour(source: str, filename: str = "<source>") -> str:
    """The syntax tree of ``source`` without docstrings, as text: equal for two sources that
    differ only in comments, docstrings or layout."""
    tree = _strip_docstrings(source, filename)
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


#: The table of names (workflow_scripts/registry.py) is hashed per entry: a job depends on the
#: entries its code uses, so registering a figure or a protocol reruns no feature extraction.
REGISTRY = f"{PACKAGE}/registry.py"


def _registry_names(paths) -> set[str] | None:
    """Top-level names of the registry that the modules at ``paths`` use (``registry.NAME`` or
    ``from workflow_scripts.registry import NAME``); None when one uses the module object
    otherwise (then all of it counts)."""
    names: set[str] = set()
    for path in paths:
        tree = ast.parse(Path(path).read_text(), filename=str(path))
        attribute_bases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == f"{PACKAGE}.registry":
                names.update(alias.name for alias in node.names)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "registry"
            ):
                names.add(node.attr)
                attribute_bases.add(id(node.value))
        if any(
            isinstance(node, ast.Name) and node.id == "registry" and id(node) not in attribute_bases
            for node in ast.walk(tree)
        ):
            return None
    return names


def _defined(statement: ast.stmt) -> set[str]:
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    targets = getattr(statement, "targets", None) or [getattr(statement, "target", None)]
    return {n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)}


def _entries(source: str, filename: str, names: set[str]) -> str:
    """:func:`behaviour` of the top-level statements defining ``names`` and, transitively, the
    top-level names they refer to (imports always count)."""
    tree = _strip_docstrings(source, filename)
    defines = {name: i for i, stmt in enumerate(tree.body) for name in _defined(stmt)}
    keep = {i for i, stmt in enumerate(tree.body) if isinstance(stmt, (ast.Import, ast.ImportFrom))}
    todo = [defines[n] for n in names if n in defines]
    while todo:
        i = todo.pop()
        if i in keep:
            continue
        keep.add(i)
        todo += [
            defines[n.id]
            for n in ast.walk(tree.body[i])
            if isinstance(n, ast.Name) and n.id in defines
        ]
    tree.body = [stmt for i, stmt in enumerate(tree.body) if i in keep]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


@lru_cache(maxsize=None)
def code_hash(script: str, modules: tuple[str, ...] = ()) -> str:
    """sha256 (first 16 hex digits) over the behaviour (:func:`behaviour`) of the package
    modules ``script`` imports and ``modules`` it loads by name (:func:`module_closure`); of
    the registry, only the entries they use."""
    closure = module_closure(script, tuple(modules))
    used = _registry_names([script, *(ROOT / rel for rel in closure if rel != REGISTRY)])
    digest = hashlib.sha256()
    for rel in closure:
        source = (ROOT / rel).read_text()
        if rel == REGISTRY and used is not None:
            tree = _entries(source, rel, used)
        else:
            tree = behaviour(source, rel)
        digest.update(rel.encode() + b"\0" + tree.encode() + b"\0")
    return digest.hexdigest()[:16]


def _git_commit(root: Path) -> dict | None:
    """HEAD of the repository at ``root`` and whether its tracked files differ (None without
    git or outside a checkout)."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
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


def run_manifest(
    config: dict, tables: dict[str, Path], devices: dict[str, list[str]], root: Path = ROOT
) -> dict:
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
        "tables": {
            name: {"path": str(path), "sha256": _sha256(path)} for name, path in tables.items()
        },
        "devices": devices,
    }
