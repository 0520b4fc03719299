"""Code identity (workflow_scripts.provenance, Plan.job_code): a job's hash covers exactly the
code it runs -- its script, what that imports (packages' __init__ included, TYPE_CHECKING
imports not), what it loads by name -- by content, and nothing else."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from workflow_scripts import provenance
from workflow_scripts.config import load_study
from workflow_scripts.plan import Plan

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throw-away workflow_scripts package under tmp_path, made the hashed root."""
    pkg = tmp_path / "workflow_scripts"
    (pkg / "scripts").mkdir(parents=True)
    (pkg / "sub").mkdir()
    files = {
        "__init__.py": "",
        "scripts/_bootstrap.py": "import sys\n",
        "scripts/job.py": "import _bootstrap\nfrom workflow_scripts.sub import leaf\n",
        "sub/__init__.py": "from workflow_scripts import heavy\n",
        "sub/leaf.py": (
            "from typing import TYPE_CHECKING\n"
            "from . import sibling\n"
            "if TYPE_CHECKING:\n    from workflow_scripts import typed_only\n"
            "def lazy():\n    from workflow_scripts import inner\n"
        ),
        "sub/sibling.py": "A = 1\n",
        "heavy.py": "H = 1\n",
        "inner.py": "I = 1\n",
        "typed_only.py": "T = 1\n",
        "unused.py": "U = 1\n",
        "byname.py": "B = 1\n",
        # a module and a package of the same name: Python imports the package
        "both.py": "X = 1\n",
        "both/__init__.py": "Y = 1\n",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    provenance.clear_caches()
    yield pkg
    provenance.clear_caches()


def test_the_closure_is_what_python_runs(package):
    closure = provenance.module_closure(str(package / "scripts" / "job.py"), ("byname",))
    assert set(closure) == {
        "workflow_scripts/scripts/job.py",  # the thin script itself
        "workflow_scripts/scripts/_bootstrap.py",  # its sibling import
        "workflow_scripts/__init__.py",
        "workflow_scripts/sub/__init__.py",  # the package of leaf, run before it
        "workflow_scripts/heavy.py",  # imported by that __init__
        "workflow_scripts/sub/leaf.py",
        "workflow_scripts/sub/sibling.py",  # a relative import
        "workflow_scripts/inner.py",  # imported inside a function
        "workflow_scripts/byname.py",  # loaded by name
    }
    # under TYPE_CHECKING nothing runs; a module nobody imports does not count
    both = provenance.module_closure(str(package / "scripts" / "job.py"), ("both",))
    assert "workflow_scripts/both/__init__.py" in both and "workflow_scripts/both.py" not in both


def test_the_hash_follows_content_only(package):
    script = str(package / "scripts" / "job.py")
    before = provenance.code_hash(script)

    def again():
        provenance.clear_caches()
        return provenance.code_hash(script)

    for rel in ("unused.py", "typed_only.py"):  # not run by the job
        (package / rel).write_text("changed = True\n")
        assert again() == before, rel
    (package / "sub" / "leaf.py").write_text(
        '"""A docstring."""\n# a comment\n' + (package / "sub" / "leaf.py").read_text()
    )
    assert again() == before  # documentation only
    for rel in ("scripts/job.py", "scripts/_bootstrap.py", "sub/__init__.py", "inner.py"):
        path = package / rel
        original = path.read_text()
        path.write_text(original + "\nEDITED = 1\n")
        assert again() != before, rel
        path.write_text(original)
        assert again() == before, rel


def test_a_redefined_registry_entry_counts_every_definition():
    source = "A = 1\nB = A\nA = 2\nC = 3\n"
    # B refers to A: both definitions of A are kept, C is not
    assert provenance.registry_entries(source, {"B"}) == [0, 1, 2]


def _plan(name, **overrides):
    config = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    config.update(overrides)
    return Plan(config, load_study(config, ROOT))


def _files(plan, rule, **wildcards):
    return set(plan.job_code_files(rule, SimpleNamespace(**wildcards)))


def test_paper_jobs_run_their_own_adapter_source_and_probe_only():
    plan = _plan("paper")
    cub = _files(plan, "extract_features", model="dino_vitb16", dataset="cub")
    assert "workflow_scripts/datasets/cub.py" in cub
    assert "workflow_scripts/datasets/imagenet.py" not in cub
    assert "workflow_scripts/scripts/extract_features.py" in cub
    # a checkpoint row's backbone is a registry arch: no timm, no model-source planning module
    assert not any(f.startswith("workflow_scripts/model_sources/") for f in cub)
    assert "workflow_scripts/timm_models.py" not in cub
    assert "workflow_scripts/datasets/cub.py" in _files(
        plan, "check_dataset", dataset="cub", split="train"
    )
    finetune = _files(plan, "finetune", model="dino_vitb16", run="finetune", arm="raw")
    assert "workflow_scripts/datasets/imagenet.py" in finetune
    assert "workflow_scripts/datasets/cub.py" not in finetune
    knn = _files(plan, "knn_probe", model="dino_vitb16", dataset="cub")
    assert "workflow_scripts/knn.py" in knn and "workflow_scripts/probing.py" in knn
    # cached features need no data set adapter, no extraction, no other probe
    assert (
        not {
            "workflow_scripts/datasets/__init__.py",
            "workflow_scripts/features.py",
            "workflow_scripts/linear.py",
            "workflow_scripts/proxies.py",
        }
        & knn
    )
    f3 = _files(plan, "f3_scatter")
    others = {f"workflow_scripts/figures/{n}.py" for n in ("f1_id_protocols", "f4_bn_effect")}
    assert "workflow_scripts/figures/f3_scatter.py" in f3 and not others & f3
    # no job runs the planning modules
    for files in (cub, finetune, knn, f3, _files(plan, "accuracy_table")):
        assert not {"workflow_scripts/config.py", "workflow_scripts/plan.py"} & files


def test_demo_jobs_run_their_own_method_and_no_adapter():
    plan = _plan("config")
    byol = _files(plan, "pretrain", model="byol_resnet")
    assert "workflow_scripts/pretrain/byol.py" in byol
    assert "workflow_scripts/pretrain/simclr.py" not in byol
    # random: the seeded initialisation, no method module at all
    random = _files(plan, "pretrain", model="random_vit")
    assert {f for f in random if f.startswith("workflow_scripts/pretrain/")} == {
        "workflow_scripts/pretrain/__init__.py",
        "workflow_scripts/pretrain/loop.py",
    }
    # generated data sets: no adapter
    extraction = _files(plan, "extract_features", model="byol_resnet")
    adapters = {f"workflow_scripts/datasets/{kind}.py" for kind in ("cub", "imagenet", "pascal")}
    assert not adapters & extraction
    # the same code, the same hash: jobs of one rule that run the same files share it
    code = plan.code("extract_features")
    assert code(SimpleNamespace(model="byol_resnet")) == code(SimpleNamespace(model="mae_vit"))
    pretrain = plan.code("pretrain")
    assert pretrain(SimpleNamespace(model="byol_resnet")) != pretrain(
        SimpleNamespace(model="simclr_resnet")
    )
