"""How the integration tests drive snakemake (helpers; the shared run is in conftest.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "config.yaml"
SMOKE = ROOT / "tests" / "integration" / "smoke.yaml"  # an overlay of DEMO
# The smoke configuration as Snakemake gets it: --configfile files merge in order, nested
# mappings key by key. The Snakefile's own configfile (config/config.yaml) is looked up in the
# --directory, so the demo file is named explicitly.
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


def snakemake(workdir, *args, check=True, snakefile=None, timeout=900, prefix=()):
    """Run snakemake in ``workdir`` on the smoke configuration (unless args bring a configfile).

    Targets and options come first: --configfile and --config swallow the words after them.
    ``prefix`` goes before the interpreter (e.g. ``timeout -s INT``).
    """
    configfile = [] if "--configfile" in args else ["--configfile", *SMOKE_FILES]
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
        cmd, capture_output=True, text=True, cwd=snakefile.parent, timeout=timeout
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
