"""Only what changed reruns: a job's code identity is exactly the code it runs.

After the shared smoke run: every job loaded only modules its identity holds (the Python import
system, recorded by each job, is the oracle); for every package module and every registry entry,
an edit that changes code plans exactly the jobs whose identity holds it -- their reason is a
changed param -- plus what consumes their outputs (the oracle: Snakemake's own ``--forcerun``
of those jobs' outputs); a touch, a fresh clone beside a copied results folder and comment or
docstring edits plan nothing; in the paper DAG, an edit of the CUB adapter plans CUB's jobs and
the analysis only. Edits happen in fresh clones of the working tree, never in the repository.
"""

import ast
import concurrent.futures
import json
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from snakerun import (
    ROOT,
    copy_workdir,
    finished_dag,
    fresh_clone,
    job_key,
    jobs,
    planned_jobs,
    smoke_config,
    snakemake,
    trace_dir,
    upstream,
)

pytestmark = pytest.mark.integration

PACKAGE = ROOT / "workflow_scripts"
REGISTRY = "workflow_scripts/registry.py"
# an edit that changes the syntax tree and nothing a job computes
EDIT = "\n_EDITED_BY_THE_TEST = True\n"


def _plan(config):
    from workflow_scripts.config import load_study
    from workflow_scripts.plan import Plan

    return Plan(config, load_study(config, ROOT))


def _code_files(plan, job) -> set[str]:
    return set(plan.job_code_files(job["rule"], SimpleNamespace(**job["wildcards"])))


def _registry_names(files: set[str]) -> set[str]:
    """The registry's top-level names whose statements a job's code identity holds."""
    from workflow_scripts import provenance

    source = (ROOT / REGISTRY).read_text()
    # statement indices of the tree provenance hashes (module docstring dropped)
    tree = provenance._strip_docstrings(source, REGISTRY)
    defined = [provenance._defined(statement) for statement in tree.body]
    used = provenance.registry_names(ROOT / f for f in files if f != REGISTRY)
    if used is None:
        return set().union(*defined)
    return set().union(*(defined[i] for i in provenance.registry_entries(source, used)))


@pytest.fixture(scope="module")
def smoke(smoke_run):
    """The smoke DAG's jobs (rule, wildcards, outputs) with the files each one's identity
    holds; the jobs of rule 'all' and download_checkpoint have none."""
    plan = _plan(smoke_config())
    dag = jobs(snakemake(smoke_run, "-n", "--forceall"))
    ancestors = upstream(dag)
    for job in dag:
        job["files"] = set() if job["rule"] == "all" else _code_files(plan, job)
        job["ancestors"] = ancestors[job_key(job)]
    return {job_key(job): job for job in dag}


def _first(smoke, expected: set[tuple]) -> set[tuple]:
    """The jobs of ``expected`` with none of ``expected`` upstream: Snakemake names a changed
    param as the reason only where no input is about to be updated by another job."""
    return {k for k in expected if not smoke[k]["ancestors"] & expected}


def test_every_job_loads_only_code_its_identity_holds(smoke_run, smoke):
    records = [json.loads(p.read_text()) for p in trace_dir(smoke_run).glob("*/*.json")]
    traced = {job_key(r): set(r["modules"]) for r in records}
    assert set(traced) == {key for key in smoke if key[0] != "all"}  # every job recorded
    for key, loaded in traced.items():
        assert loaded, key
        outside = loaded - smoke[key]["files"]
        assert not outside, f"job {key} ran {sorted(outside)} outside its code identity"


@pytest.fixture(scope="module")
def workers(smoke_run, tmp_path_factory):
    """Two (fresh clone of the working tree, copy of the finished smoke run) pairs, one per
    core; each is checked to plan nothing as it is."""
    base = tmp_path_factory.mktemp("identity")
    pairs = []
    for i in range(2):
        repo = fresh_clone(base / f"repo{i}")
        work = copy_workdir(smoke_run, base / f"work{i}")
        assert planned_jobs(snakemake(work, "-n", snakefile=repo / "Snakefile")) == {}
        pairs.append((repo, work))
    return pairs


def _dry_run(repo: Path, work: Path, *args) -> list[dict]:
    return jobs(snakemake(work, "-n", *args, snakefile=repo / "Snakefile"))


def _edits() -> list[tuple[str, str, str]]:
    """(what, file, text to append) for every package module and every registry entry."""
    edits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if "__pycache__" not in rel and rel != REGISTRY:
            edits.append((rel, rel, EDIT))
    tree = ast.parse((ROOT / REGISTRY).read_text())
    from workflow_scripts.provenance import _defined

    for statement in tree.body:
        for name in sorted(_defined(statement)):
            edits.append((f"registry.{name}", REGISTRY, f"\n{name} = {name}\n"))
    return edits


def _expected(smoke, what: str) -> set[tuple]:
    if what.startswith("registry."):
        name = what.removeprefix("registry.")
        return {k for k, job in smoke.items() if name in _registry_names(job["files"])}
    return {k for k, job in smoke.items() if what in job["files"]}


def test_each_module_and_registry_entry_reruns_exactly_the_jobs_that_run_it(smoke, workers):
    """For every package module and registry entry: the plan is the jobs whose code identity
    holds it plus what consumes their outputs (Snakemake's --forcerun of their outputs), no
    more; those of them with no such job upstream give a changed param as their reason."""
    edits = _edits()
    assert len(edits) > 100

    def run(worker: int, batch: list) -> list[str]:
        repo, work = workers[worker]
        failures, oracles = [], {}
        for what, rel, text in batch:
            path = repo / rel
            original = path.read_text()
            path.write_text(original + text)
            try:
                planned = _dry_run(repo, work)
            finally:
                path.write_text(original)
            expected = _expected(smoke, what)
            triggered = {job_key(j) for j in planned if "Params have changed" in j["reason"]}
            first = _first(smoke, expected)
            if triggered != first or not expected <= {job_key(j) for j in planned}:
                failures.append(
                    f"{what}: params changed for {sorted(triggered - first)} unexpectedly, "
                    f"not for {sorted(first - triggered)}; expected {sorted(expected)}"
                )
                continue
            key = frozenset(expected)
            if key not in oracles:
                outputs = sorted(o for k in expected for o in smoke[k]["output"])
                oracles[key] = (
                    Counter(j["rule"] for j in _dry_run(repo, work, "--forcerun", *outputs))
                    if outputs
                    else Counter()
                )
            if Counter(j["rule"] for j in planned) != oracles[key]:
                failures.append(f"{what}: plans {Counter(j['rule'] for j in planned)}")
        return failures

    batches = [edits[0::2], edits[1::2]]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        failures = [f for result in pool.map(run, (0, 1), batches) for f in result]
    assert not failures, "\n".join(failures)
    # the cases the design promises, by name
    cub, knn = _expected(smoke, "workflow_scripts/datasets/cub.py"), set()
    knn = _expected(smoke, "workflow_scripts/knn.py")
    assert cub == set() and {k[0] for k in knn} == {"knn_probe"}
    f3 = _expected(smoke, "workflow_scripts/figures/f3_scatter.py")
    assert {k[0] for k in f3} == {"f3_scatter"}


def test_comment_and_docstring_edits_everywhere_plan_nothing(workers):
    repo, work = workers[0]
    originals = {}
    for path in sorted((repo / "workflow_scripts").rglob("*.py")):
        originals[path] = text = path.read_text()
        tree = ast.parse(text)
        doc = ast.get_docstring(tree, clean=False)
        if doc is not None:  # a changed module docstring
            text = text.replace(doc, doc + " Edited.", 1)
        path.write_text("# a new first comment\n" + text + "\n# and a last one\n")
    try:
        assert planned_jobs(snakemake(work, "-n", snakefile=repo / "Snakefile")) == {}
    finally:
        for path, text in originals.items():
            path.write_text(text)


def test_touching_every_file_and_a_fresh_clone_beside_copied_results_plan_nothing(
    smoke_run, tmp_path
):
    """A clone made after the run (every source newer than every result) next to a copy of
    the results folder and its .snakemake metadata (times kept, as cp -a does): nothing to do;
    then every file of the clone and of the results touched: still nothing."""
    repo = fresh_clone(tmp_path / "clone")
    work = copy_workdir(smoke_run, tmp_path / "results")
    assert planned_jobs(snakemake(work, "-n", snakefile=repo / "Snakefile")) == {}
    for path in repo.rglob("*"):
        if path.is_file():
            os.utime(path)
    assert planned_jobs(snakemake(work, "-n", snakefile=repo / "Snakefile")) == {}


# the paper study on four of its models: every rule and every real data set, minutes to fake
PAPER_MODELS = "models=[jigsaw,simclr,dino_vitb16,mae]"


def test_the_cub_adapter_edit_reruns_only_cubs_jobs_in_the_paper_dag(tmp_path):
    repo = fresh_clone(tmp_path / "repo")
    work = tmp_path / "paper"
    work.mkdir()
    args = ("--configfile", str(ROOT / "config" / "paper.yaml"), "--config", PAPER_MODELS)
    dag = finished_dag(work, *args, snakefile=repo / "Snakefile")
    ancestors = upstream(dag)
    assert planned_jobs(snakemake(work, "-n", *args, snakefile=repo / "Snakefile")) == {}
    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    config["models"] = ["jigsaw", "simclr", "dino_vitb16", "mae"]
    plan = _plan(config)
    cub = "workflow_scripts/datasets/cub.py"
    expected = {job_key(j) for j in dag if j["rule"] != "all" and cub in _code_files(plan, j)}
    # CUB's integrity jobs, its extraction and attentive probe (both read its images) per
    # model; nothing of any other data set
    assert Counter(k[0] for k in expected) == {
        "check_dataset": 2,
        "extract_features": 4,
        "attentive_probe": 4,
    }
    assert all(dict(k[1])["dataset"] == "cub" for k in expected)
    adapter = repo / cub
    adapter.write_text(adapter.read_text() + EDIT)
    planned = jobs(snakemake(work, "-n", *args, snakefile=repo / "Snakefile"))
    triggered = {job_key(j) for j in planned if "Params have changed" in j["reason"]}
    assert triggered == {k for k in expected if not ancestors[k] & expected}
    assert expected <= {job_key(j) for j in planned}
    outputs = [o for j in dag if job_key(j) in expected for o in j["output"]]
    oracle = jobs(
        snakemake(work, "-n", "--forcerun", *outputs, *args, snakefile=repo / "Snakefile")
    )
    assert Counter(j["rule"] for j in planned) == Counter(j["rule"] for j in oracle)
    # downstream of CUB's features: its probes and the analysis, no other data set's job
    datasets = {j["wildcards"].get("dataset") for j in planned} - {None}
    assert datasets == {"cub"}
    assert "finetune" not in {j["rule"] for j in planned}
