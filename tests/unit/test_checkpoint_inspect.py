"""The checkpoint inspector: globals read without executing, structure, the format that fits.

Oracles: the fabricated reference state dicts (their tensor count and size), the layouts'
known formats (checkpoint_layouts.PAPER_ROWS), torch's own refusal of the same files.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoint_layouts import PAPER_ROWS, other, random_reference, save, write  # noqa: E402

from workflow_scripts.checkpoints.inspect import inspect_file, render  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = {"resnet50": "resnet10_tiny", "vit_base_patch16_224": "vit_tiny_p8"}
FAMILY_ARCH = {"resnet": "resnet10_tiny", "vit": "vit_tiny_p8"}
# every paper layout but BEiT-v2's (no small BEiT: tests/integration/test_paper_checkpoints.py)
LAYOUTS = {k: v for k, v in PAPER_ROWS.items() if v[0] != "beit_v2"}
VIT_FORMATS = {"timm_vit", "ibot", "mae", "mmselfsup_vit", "beit_v2"}


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "workflow_scripts.checkpoints.inspect", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_inspector_names_the_format_of_every_paper_layout(tmp_path, key):
    fmt, layout = LAYOUTS[key]
    vit = fmt in VIT_FORMATS or key.endswith("vitb16")
    arch = "vit_tiny_p8" if vit else "resnet10_tiny"
    ref = random_reference(arch, 3)
    raw = tmp_path / key
    write(raw, fmt, ref, momentum=other(ref, 4), vit=vit, **layout)
    report = inspect_file(raw)
    fits = [(f["format"], f["arch"]) for f in report["fits"]]
    assert (fmt, arch) in fits, (fits, report["near"])
    assert not any(g["as"] == "REFUSED" for g in report["globals"])
    assert report["container"] == (
        "torch-legacy"
        if fmt
        in {
            "vissl_trunk",
            "npid_numpy",
            "deepcluster",
            "moco_v2",
            "mmselfsup_resnet",
            "mmselfsup_vit",
            "byol_online",
        }
        else "torch-zip"
    )


def test_structure_counts_equal_the_reference(tmp_path):
    ref = random_reference("resnet10_tiny", 5)
    raw = tmp_path / "simsiam.pth"
    write(raw, "mmselfsup_resnet", ref)
    report = inspect_file(raw)
    nodes = {n["where"]: n for n in report["structure"]}
    state = nodes["ckpt['state_dict']"]
    # the backbone plus the four non-backbone tensors the fabricator adds (neck, head, mean, std)
    assert state["kind"] == "state_dict" and state["tensors"] == len(ref) + 4
    extra = 16 * 128 + 8 * 16 + 3 + 3
    assert state["values"] == sum(v.numel() for v in ref.values()) + extra
    hub = nodes["ckpt['message_hub']['log_scalars']"]
    assert "5 x <placeholder mmengine.logging.history_buffer.HistoryBuffer>" in hub["summary"]
    assert report["loaded_with"] == "restricted"
    kinds = {g["name"]: g["as"] for g in report["globals"]}
    assert kinds["mmengine.logging.history_buffer.HistoryBuffer"] == "placeholder"
    assert kinds["numpy.core.multiarray._reconstruct"] == "allowed"
    assert kinds["torch._utils._rebuild_tensor_v2"] == "weights-only"


def test_cli_prints_globals_structure_and_fit(tmp_path):
    ref = random_reference("vit_tiny_p8", 6)
    raw = tmp_path / "milan.pth"
    write(raw, "mae", ref, training_state=True)
    proc = _cli(raw)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "container: torch-zip" in out
    assert "placeholder  argparse.Namespace" in out
    assert "ckpt['model']: state dict," in out
    assert "format mae, arch vit_tiny_p8" in out
    proc = _cli("--json", raw)
    assert json.loads(proc.stdout)[0]["fits"] == inspect_file(raw)["fits"]


def test_cli_reports_code_without_running_it(tmp_path):
    import os

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    ref = random_reference("resnet10_tiny", 7)
    raw = tmp_path / "evil.pth"
    save({"state_dict": {f"backbone.{k}": v for k, v in ref.items()}, "x": Payload()}, raw)
    proc = _cli(raw)
    assert proc.returncode == 0, proc.stderr
    assert "REFUSED      posix.system" in proc.stdout
    assert "not loaded: the pickle references 'posix.system'" in proc.stdout
    assert not marker.exists()


def test_near_misses_list_what_does_not_fit(tmp_path):
    ref = random_reference("resnet10_tiny", 8)
    bad = dict(ref)
    bad["layer5.0.conv1.weight"] = torch.zeros(2, 2)
    del bad["layer4.conv2.weight"]
    raw = tmp_path / "odd.pth"
    torch.save(bad, raw)
    report = inspect_file(raw)
    assert report["fits"] == []
    best = report["near"][0]
    assert (best["format"], best["arch"]) in {
        ("torchvision", "resnet10_tiny"),
        ("deepcluster", "resnet10_tiny"),
    }
    assert best["missing"] == ["layer4.conv2.weight"]
    assert best["unexpected"] == ["layer5.0.conv1.weight"]
    text = render(report)
    assert "no format fits any arch exactly; closest:" in text
    assert "missing: layer4.conv2.weight; unexpected: layer5.0.conv1.weight" in text


def test_safetensors_and_missing_files(tmp_path):
    ref = random_reference("vit_tiny_p8", 9)
    raw = tmp_path / "w.safetensors"
    write(raw, "safetensors", ref)
    report = inspect_file(raw)
    assert report["container"] == "safetensors"
    assert ("safetensors", "vit_tiny_p8") in [(f["format"], f["arch"]) for f in report["fits"]]
    proc = _cli(tmp_path / "absent.pth")
    assert proc.returncode == 2 and "absent.pth: no such file" in proc.stderr
