"""What reruns after a change that should rerun little: the jobs a dry run plans.

Scenarios, each in a fresh clone of this working tree (never in the repository itself) against a
finished run: nothing changed; every file of the clone touched; a fresh clone beside a copy of
the results folder and its .snakemake metadata (modification times kept, as ``cp -a`` does); a
comment and a docstring edit in every module; an edit of the CUB adapter
(``datasets/cub.py``), of the kNN module (``knn.py``) and of one figure's module
(``figures/f3_scatter.py``).

    python benchmarks/rerun_scope.py demo --workdir DIR    # DIR: a finished demo run
    python benchmarks/rerun_scope.py paper --workdir DIR   # DIR: empty; fakes a finished paper
                                                            # DAG first (snakemake --touch, ~3 min)

Prints one line per scenario: the planned jobs (total, without the target rule ``all``) and per
rule. README "How a code change reruns" and the issue notes quote it.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from snakerun import copy_workdir, finished_dag, fresh_clone, jobs, snakemake  # noqa: E402

EDIT = "\n_EDITED = True\n"
CONFIGS = {"demo": "config/config.yaml", "paper": "config/paper.yaml"}


def _plan(repo: Path, work: Path, config: str) -> Counter:
    args = ("-n", "--configfile", str(repo / config))
    return Counter(j["rule"] for j in jobs(snakemake(work, *args, snakefile=repo / "Snakefile")))


def _edit_docs(repo: Path) -> None:
    for path in sorted((repo / "workflow_scripts").rglob("*.py")):
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text), clean=False)
        if doc is not None:
            text = text.replace(doc, doc + " Edited.", 1)
        path.write_text("# a comment\n" + text)


def _append(rel: str):
    def edit(repo: Path) -> None:
        path = repo / rel
        path.write_text(path.read_text() + EDIT)

    return edit


def _touch_all(repo: Path) -> None:
    for path in repo.rglob("*"):
        if path.is_file():
            os.utime(path)


SCENARIOS = {
    "nothing changed": None,
    "every file touched": _touch_all,
    "a fresh clone beside copied results": "copy",
    "a comment and a docstring edit in every module": _edit_docs,
    "the CUB adapter edited (datasets/cub.py)": _append("workflow_scripts/datasets/cub.py"),
    "the kNN module edited (knn.py)": _append("workflow_scripts/knn.py"),
    "one figure's module edited (figures/f3_scatter.py)": _append(
        "workflow_scripts/figures/f3_scatter.py"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=CONFIGS)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    config = CONFIGS[args.study]
    work = args.workdir.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.study == "paper" and not (work / ".snakemake" / "metadata").is_dir():
            work.mkdir(parents=True, exist_ok=True)
            clone = fresh_clone(tmp / "setup")
            dag = finished_dag(
                work, "--configfile", str(clone / config), snakefile=clone / "Snakefile"
            )
            print(f"faked a finished paper DAG of {len(dag)} jobs in {work}")
        for i, (name, change) in enumerate(SCENARIOS.items()):
            repo = fresh_clone(tmp / f"repo{i}")
            target = work
            if change == "copy":
                target = copy_workdir(work, tmp / f"copy{i}")
            elif change is not None:
                change(repo)
            counts = _plan(repo, target, config)
            total = sum(n for rule, n in counts.items() if rule != "all")
            detail = ", ".join(f"{r} {n}" for r, n in sorted(counts.items()) if r != "all")
            print(f"{args.study}: {name}: {total} jobs" + (f" ({detail})" if detail else ""))


if __name__ == "__main__":
    main()
