"""The checkpoint inspector: globals read without executing, structure, the format that fits.

Oracles: the fabricated reference state dicts (their tensor count and size), the layouts'
known formats (checkpoint_layouts.PAPER_ROWS), torch's own refusal of the same files.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoint_layouts import PAPER_ROWS, other, random_reference, save, write  # noqa: E402

from workflow_scripts.checkpoints.inspect import inspect_file, main, render  # noqa: E402

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
    assert proc.returncode == 2, proc.stderr  # a refusal is a failure
    assert "REFUSED      posix.system" in proc.stdout
    assert f"refused, not loaded: '{raw}': the pickle references 'posix.system'" in proc.stdout
    assert "weights_only=False" not in proc.stdout + proc.stderr
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


# --------------------------------------------------------------------------- refusals, damage


class _Payload:
    """Pickles as a call of ``func(*args)``: what a malicious file does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious(name: str, marker: Path):
    import builtins
    import os

    if name == "os.system":
        return _Payload(os.system, f"echo pwned > {marker}"), "posix.system"
    return _Payload(builtins.eval, f"open({str(marker)!r}, 'w').write('pwned')"), "builtins.eval"


def _write(obj, path: Path, how: str) -> None:
    import pickle

    if how == "zip":
        torch.save(obj, path)
    elif how == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:  # a plain pickle: pickle.dump of the object, no torch container
        with open(path, "wb") as handle:
            pickle.dump(obj, handle, protocol=4 if how == "pickle" else 2)


@pytest.mark.parametrize("how", ["zip", "legacy", "pickle", "pickle2"])
@pytest.mark.parametrize("name", ["os.system", "builtins.eval"])
def test_a_refused_file_exits_non_zero_naming_file_and_global(tmp_path, capsys, how, name):
    """Every container: the refusal names the file and the refused global, exits 2, suggests
    no unsafe retry, and nothing from the file runs."""
    marker = tmp_path / "MARKER"
    payload, refused = _malicious(name, marker)
    ref = random_reference("resnet10_tiny", 21)
    raw = tmp_path / f"evil-{how}.pth"
    _write({"state_dict": ref, "hook": payload}, raw, how)
    assert main([str(raw)]) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert f"refused, not loaded: '{raw}': the pickle references '{refused}'" in text, text
    assert "weights_only=False" not in text and "Traceback" not in text
    assert main(["--json", str(raw)]) == 2
    report = json.loads(capsys.readouterr().out)[0]
    assert report["verdict"] == "refused" and report["refused"] == refused
    assert str(raw) in report["error"] and "weights_only=False" not in report["error"]
    proc = _cli(raw)
    assert proc.returncode == 2 and refused in proc.stdout and "Traceback" not in proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize("how", ["legacy", "pickle", "pickle2"])
def test_legacy_files_and_plain_pickles_are_read_like_any_checkpoint(tmp_path, capsys, how):
    """torch's legacy format and a pickle.dump of a dict of tensors / numpy arrays: read by
    the restricted unpickler (no code from the file runs), reported and fitted as usual."""
    ref = random_reference("resnet10_tiny", 22)
    raw = tmp_path / f"plain-{how}.pth"
    _write({"state_dict": ref, "epoch": 3, "meta": {"mean": np.zeros(3)}}, raw, how)
    report = inspect_file(raw)
    assert "error" not in report, report.get("error")
    assert report["container"] == ("torch-legacy" if how == "legacy" else "pickle")
    assert "resnet10_tiny" in [f["arch"] for f in report["fits"]], report["near"]
    nodes = {n["where"]: n for n in report["structure"]}
    assert nodes["ckpt['state_dict']"]["tensors"] == len(ref)
    assert not any(g["as"] == "REFUSED" for g in report["globals"])
    if how != "legacy":  # the tensors' storages come back exact, through the restricted loader
        from workflow_scripts.pickle_files import load_pickle

        loaded, met = load_pickle(raw)
        assert met == [] and all(torch.equal(loaded["state_dict"][k], v) for k, v in ref.items())
    assert main([str(raw)]) == 0
    assert "arch resnet10_tiny (" in capsys.readouterr().out


def test_plain_pickle_of_numpy_arrays(tmp_path):
    import pickle

    ref = random_reference("resnet10_tiny", 23)
    raw = tmp_path / "arrays.pkl"
    with open(raw, "wb") as handle:
        pickle.dump({k: v.numpy() for k, v in ref.items()}, handle)
    report = inspect_file(raw)
    assert report["container"] == "pickle" and "error" not in report
    assert ("torchvision", "resnet10_tiny") in [(f["format"], f["arch"]) for f in report["fits"]]


@pytest.mark.parametrize(
    ("how", "verdict"),
    [
        ("zip", "truncated or damaged torch zip archive"),
        ("legacy", "truncated or damaged torch legacy file"),
        ("pickle", "truncated or damaged pickle"),
    ],
)
def test_a_truncated_file_is_named_damaged(tmp_path, capsys, how, verdict):
    ref = random_reference("resnet10_tiny", 24)
    whole = tmp_path / "whole.pth"
    _write({"state_dict": ref}, whole, how)
    raw = tmp_path / f"cut-{how}.pth"
    data = whole.read_bytes()
    raw.write_bytes(data[: len(data) // 2])
    report = inspect_file(raw)
    assert report["verdict"] == "unreadable"
    assert report["error"].startswith(f"{verdict}: '{raw}'"), report["error"]
    assert "not a torch checkpoint" not in report["error"]
    assert main([str(raw)]) == 2
    assert f"{verdict}: '{raw}'" in capsys.readouterr().out


def test_an_unknown_file_exits_non_zero(tmp_path, capsys):
    raw = tmp_path / "notes.txt"
    raw.write_text("hello, no checkpoint here\n")
    assert main([str(raw)]) == 2
    assert f"'{raw}'" in capsys.readouterr().out
