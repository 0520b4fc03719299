"""How the integration tests drive snakemake (helpers; the shared run is in conftest.py)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "config.yaml"
SMOKE = ROOT / "tests" / "integration" / "smoke.yaml"  # an overlay of DEMO
# The smoke configuration as Snakemake gets it: --configfile files merge in order, nested
# mappings key by key (the Snakefile's own configfile is the demo's, beside it).
SMOKE_FILES = (str(DEMO), str(SMOKE))
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def smoke_config() -> dict:
    """The smoke configuration as one mapping (the demo with smoke.yaml merged over it, as
    Snakemake merges them), e.g. to write an edited copy for a test's own --configfile."""
    import yaml
    from snakemake.utils import update_config

    config = yaml.safe_load(DEMO.read_text())
    update_config(config, yaml.safe_load(SMOKE.read_text()))
    return config


def snakemake(
    workdir,
    *args,
    check=True,
    snakefile=None,
    timeout=900,
    prefix=(),
    env=None,
    configfiles=SMOKE_FILES,
):
    """Run snakemake in ``workdir`` on the smoke configuration (unless args bring a configfile;
    ``configfiles=()``: the Snakefile's own, the demo configuration).

    Targets and options come first: --configfile and --config swallow the words after them.
    ``prefix`` goes before the interpreter (e.g. ``timeout -s INT``); ``env``: variables to
    set on top of this process's environment.
    """
    given = "--configfile" in args or not configfiles
    configfile = [] if given else ["--configfile", *configfiles]
    snakefile = Path(snakefile or ROOT / "Snakefile")
    cmd = [
        *prefix,
        *SNAKEMAKE,
        "-s",
        str(snakefile),
        "--directory",
        str(workdir),
        *args,
        *configfile,
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=snakefile.parent,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def planned_jobs(proc) -> dict[str, int]:
    """Job counts of a (dry) run's 'Job stats' table; {} when nothing is to be done."""
    counts = {}
    lines = (proc.stdout + proc.stderr).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Job stats")]
    if not starts:
        return counts
    for line in lines[starts[0] + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    counts.pop("total", None)
    return counts


def copy_workdir(src: Path, dst: Path) -> Path:
    """A copy of a finished run (results, logs and .snakemake metadata) with its mtimes."""
    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    return dst


def trace_dir(workdir: Path) -> Path:
    """Where the jobs of the run in ``workdir`` record the modules they loaded
    (runtime.TRACE_ENV), beside the run."""
    return Path(workdir).with_name(Path(workdir).name + "_trace")


def jobs(proc) -> list[dict]:
    """The jobs a (dry) run printed: rule, wildcards (a dict), input and output (lists) and
    reason."""
    found, job = [], None
    for line in (proc.stdout + proc.stderr).splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line)
        if match:
            job = {"rule": match.group(1), "wildcards": {}, "input": [], "output": []}
            job["reason"] = ""
            found.append(job)
            continue
        match = re.match(r"^    (input|output|reason|wildcards): (.*)$", line)
        if job is None or match is None:
            continue
        field, value = match.groups()
        if field in ("input", "output"):
            job[field] = value.split(", ")
        elif field == "wildcards":
            job["wildcards"] = dict(item.split("=", 1) for item in value.split(", "))
        else:
            job["reason"] = value
    return found


def job_key(job: dict) -> tuple:
    """A job's identity: (rule, sorted wildcards)."""
    return (job["rule"], tuple(sorted(job["wildcards"].items())))


def upstream(dag: list[dict]) -> dict[tuple, set[tuple]]:
    """Every job's ancestors in ``dag`` (jobs(...) of a --forceall dry run), by job_key."""
    producer = {output: job_key(job) for job in dag for output in job["output"]}
    parents = {job_key(j): {producer[i] for i in j["input"] if i in producer} for j in dag}
    found: dict[tuple, set[tuple]] = {}

    def ancestors(key):
        if key not in found:
            found[key] = set()
            for parent in parents[key]:
                found[key] |= {parent, *ancestors(parent)}
        return found[key]

    for key in parents:
        ancestors(key)
    return found


def source_files(root: Path = ROOT) -> list[str]:
    """The files a clone of this working tree holds: tracked and untracked, not ignored ones
    (relative paths of those that exist)."""
    proc = subprocess.run(
        ["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in proc.stdout.split("\0") if name and (root / name).is_file()]


def fresh_clone(dst: Path, root: Path = ROOT) -> Path:
    """What a fresh clone of this working tree gives: its files in ``dst``, every one with a
    new modification time (no results, no .snakemake)."""
    for name in source_files(root):
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, target)  # contents and mode, not times
    return dst


def finished_dag(workdir: Path, *args, snakefile=None) -> list[dict]:
    """A run of ``args`` (a configuration) that looks finished without running anything: every
    output of the DAG created empty, then ``snakemake --touch --forceall`` records each job's
    metadata (params, code identity) as a real run does. Returns the DAG's jobs."""
    planned = jobs(snakemake(workdir, "-n", "--forceall", *args, snakefile=snakefile))
    for job in planned:
        for output in job["output"]:
            path = Path(workdir) / output
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    snakemake(
        workdir, "--touch", "--forceall", "--cores", "1", *args, snakefile=snakefile, timeout=1800
    )
    return planned
