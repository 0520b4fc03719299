"""Code identity: the hash of exactly the code a job runs, by content, never by file time.

A job's code is its thin rule script (``workflow_scripts/scripts/<name>.py``), the sibling
modules the script imports (``_bootstrap``), every ``workflow_scripts`` module reachable from
them through import statements -- at module level or inside functions, found by parsing, never
by importing; imports under ``if TYPE_CHECKING:`` do not run and do not count -- the
``__init__.py`` of every package on the way (Python runs them), and the package modules the job
loads by name at run time (a probe, a figure, a data set adapter, a model source, a
pre-training method), which the plan names per job (``Plan.job_code``). Of the registry
(``workflow_scripts/registry.py``) only the top-level entries this code uses count, with the
entries they refer to.

:func:`code_hash` hashes what those files *do*: their syntax trees without docstrings (comments
and layout never reach the tree). So a ``touch``, a fresh clone, a comment or a docstring edit
changes no hash, an edit to a module reruns exactly the jobs whose code includes it, and a
module no job imports (a data set adapter the study does not use) reruns nothing. Rules carry
the hash as their ``code`` param; Snakemake's own time-based script trigger is switched off in
both profiles (``rerun-triggers``), so only this hash decides about code.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "workflow_scripts"
ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / PACKAGE / "scripts"

#: The table of names is hashed per entry: a job depends on the entries its code uses, so
#: registering a figure or a protocol reruns no feature extraction.
REGISTRY = f"{PACKAGE}/registry.py"


def script_file(name: str) -> Path:
    """The thin rule script ``workflow_scripts/scripts/<name>.py``."""
    return SCRIPTS / f"{name}.py"


def _module_file(name: str) -> Path | None:
    """The file Python imports for ``name``: a package's ``__init__.py`` before a module of
    the same name (the order of Python's path finder)."""
    rel = Path(*name.split("."))
    for candidate in (ROOT / rel / "__init__.py", ROOT / rel.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _package_name(path: Path) -> str | None:
    """Dotted name of the package module at ``path`` (None outside the package)."""
    try:
        rel = path.resolve().relative_to(ROOT)
    except ValueError:
        return None
    parts = list(rel.with_suffix("").parts)
    if not parts or parts[0] != PACKAGE:
        return None
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _walk_run(tree: ast.AST):
    """ast.walk without the bodies of ``if TYPE_CHECKING:`` (their else branch runs)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _resolve_relative(path: Path, level: int, module: str | None) -> str | None:
    """The absolute name of ``from <dots><module> import ...`` in the file at ``path``."""
    own = _package_name(path)
    if own is None:
        return None
    package = own.split(".") if path.name == "__init__.py" else own.split(".")[:-1]
    if level - 1 > len(package):
        return None
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(package module names, other top-level names) imported by the file at ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in _walk_run(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve_relative(path, node.level, node.module) if node.level else node.module
            if module:
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in node.names)
    package = {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}
    return package, names - package


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@lru_cache(maxsize=None)
def module_closure(script: str, modules: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The files a job runs: the rule ``script``, the sibling modules it imports, and the
    package modules reachable by imports from it and from ``modules`` (package modules the job
    loads by name, ``"knn"`` = workflow_scripts/knn.py, with their packages' ``__init__``);
    paths relative to the repository root, sorted."""
    script_path = Path(script).resolve()
    todo: list[Path] = [script_path]
    seen: set[Path] = {script_path}

    def add(name: str) -> None:
        for part in _with_parents(name):
            target = _module_file(part)
            if target is not None and target not in seen:
                seen.add(target)
                todo.append(target)

    for name in modules:
        if _module_file(f"{PACKAGE}.{name}") is None:
            raise ValueError(f"no package module '{PACKAGE}.{name}' (loaded by {script})")
        add(f"{PACKAGE}.{name}")
    while todo:
        path = todo.pop()
        package, others = _imports(path)
        for name in package:
            add(name)
        if path == script_path:  # e.g. _bootstrap, beside the script
            for name in others:
                sibling = script_path.parent / f"{name.split('.')[0]}.py"
                if sibling.is_file() and sibling not in seen:
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


def registry_names(paths) -> set[str] | None:
    """Top-level names of the registry that the files at ``paths`` use (``registry.NAME`` or
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


def registry_entries(source: str, names: set[str], filename: str = REGISTRY) -> list[int]:
    """Indices of the top-level statements of the registry ``source`` that define ``names``
    and, transitively, the top-level names those refer to (imports always count)."""
    tree = _strip_docstrings(source, filename)
    defines: dict[str, list[int]] = {}
    for i, stmt in enumerate(tree.body):
        for name in _defined(stmt):
            defines.setdefault(name, []).append(i)
    keep = {i for i, stmt in enumerate(tree.body) if isinstance(stmt, (ast.Import, ast.ImportFrom))}
    todo = [i for n in names for i in defines.get(n, [])]
    while todo:
        i = todo.pop()
        if i in keep:
            continue
        keep.add(i)
        todo += [
            j
            for n in ast.walk(tree.body[i])
            if isinstance(n, ast.Name)
            for j in defines.get(n.id, [])
        ]
    return sorted(keep)


def _entries(source: str, filename: str, names: set[str]) -> str:
    """:func:`behaviour` of the registry statements :func:`registry_entries` selects."""
    tree = _strip_docstrings(source, filename)
    keep = set(registry_entries(source, names, filename))
    tree.body = [stmt for i, stmt in enumerate(tree.body) if i in keep]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


@lru_cache(maxsize=None)
def code_hash(script: str, modules: tuple[str, ...] = ()) -> str:
    """sha256 (first 16 hex digits) over the behaviour (:func:`behaviour`) of the files a job
    runs (:func:`module_closure`: its script, its imports, the ``modules`` it loads by name);
    of the registry, only the entries they use."""
    closure = module_closure(script, tuple(modules))
    used = registry_names(ROOT / rel for rel in closure if rel != REGISTRY)
    digest = hashlib.sha256()
    for rel in closure:
        source = (ROOT / rel).read_text()
        if rel == REGISTRY and used is not None:
            tree = _entries(source, rel, used)
        else:
            tree = behaviour(source, rel)
        digest.update(rel.encode() + b"\0" + tree.encode() + b"\0")
    return digest.hexdigest()[:16]


def clear_caches() -> None:
    """Forget cached closures and hashes (after editing sources in the same process)."""
    code_hash.cache_clear()
    module_closure.cache_clear()
