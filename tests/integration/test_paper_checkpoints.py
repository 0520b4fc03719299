"""Every row of config/models_paper.tsv, exactly as shipped, converts a file laid out like its
real release (tests/unit/checkpoint_layouts.py: PAPER_ROWS, derived from the code that saved
each file: mmengine's message hub, MAE-style training state with an argparse Namespace, BYOL's
and ClusterFit's classifiers, NPID's numpy arrays, DenseCL's extracted backbone, torch's legacy
format) on the row's real architecture, to exactly the reference tensors -- and the inspector
names the row's format and arch for it. No row is trusted.

The real files are not downloaded here (no internet): what stays unverified is whether each
release holds exactly these extras; ``python -m workflow_scripts.checkpoints.inspect FILE``
settles it on the real file.
"""

import gc
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from checkpoint_layouts import PAPER_ROWS, embedding_of, other, random_reference, write  # noqa: E402

from workflow_scripts.backbones import load_backbone  # noqa: E402
from workflow_scripts.checkpoints import conversion_spec  # noqa: E402
from workflow_scripts.checkpoints.convert import convert  # noqa: E402
from workflow_scripts.checkpoints.inspect import inspect_file  # noqa: E402
from workflow_scripts.config import load_study  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

HISTORY_BUFFER = "mmengine.logging.history_buffer.HistoryBuffer"
# row -> (how the conversion reads its file, the placeholders it meets)
READ = {
    "npid": ("restricted", []),
    "simsiam": ("restricted", [HISTORY_BUFFER]),
    "barlowtwins": ("restricted", [HISTORY_BUFFER]),
    "maskfeat": ("restricted", [HISTORY_BUFFER]),
    "eva": ("restricted", [HISTORY_BUFFER]),
    "pixmim": ("restricted", [HISTORY_BUFFER]),
    "milan": ("restricted", ["argparse.Namespace"]),
    "beit_v2": ("restricted", ["argparse.Namespace"]),
}


@pytest.fixture(scope="module")
def study():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["models_table"] = str(ROOT / "config" / "models_paper.tsv")
    return load_study(config, ROOT), config


def test_fixture_layouts_cover_the_table(study):
    study, _ = study
    assert list(study.models.index) == list(PAPER_ROWS)
    assert {k: study.model(k)["format"] for k in PAPER_ROWS} == {
        k: v[0] for k, v in PAPER_ROWS.items()
    }
    assert not any(study.model(k).get("trusted") for k in PAPER_ROWS)


@pytest.mark.parametrize("key", list(PAPER_ROWS))
def test_paper_row_converts_its_real_layout_exactly(study, tmp_path, key):
    study, config = study
    row = study.model(key)
    fmt, layout = PAPER_ROWS[key]
    arch = row["arch"]
    ref = random_reference(arch, seed=list(PAPER_ROWS).index(key))
    momentum = other(ref, 99) if fmt == "moco_v3" else None
    raw = tmp_path / f"{key}.ckpt"
    write(raw, fmt, ref, momentum=momentum, vit=row["family"] == "vit", **layout)
    spec = conversion_spec(row, config["checkpoints"])
    assert spec["fmt"] == fmt and spec["trusted"] is False
    weights, sidecar = tmp_path / f"{key}.safetensors", tmp_path / f"{key}.json"
    info = convert(raw, weights, sidecar, **spec)
    assert (info["unpickling"], info["placeholders"]) == READ.get(key, ("weights_only", []))

    from safetensors.torch import load_file

    state = load_file(str(weights))
    assert set(state) == set(ref)
    for name, value in ref.items():
        assert state[name].dtype == value.dtype and torch.equal(state[name], value), name
    del state
    model = load_backbone(weights, arch, row["embedding"])  # strict
    converted = embedding_of(model, arch)
    assert torch.equal(converted, embedding_of(model, arch, ref))
    del model, ref, momentum
    gc.collect()

    report = inspect_file(raw)
    assert {"format": fmt, "arch": arch} in [
        {"format": f["format"], "arch": f["arch"]} for f in report["fits"]
    ], report["near"]
