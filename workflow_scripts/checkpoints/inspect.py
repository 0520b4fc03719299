"""Inspect a checkpoint file before adding it to a models table.

    python -m workflow_scripts.checkpoints.inspect FILE [FILE ...] [--json]

For each file it prints

* the container (torch zip, torch legacy, plain pickle, safetensors) and the file's sha256;
* every global the pickle references, read with ``pickletools`` without executing anything,
  each marked as torch's loader would take it (``weights-only``), as the restricted unpickler
  would (``allowed``, ``placeholder``) or ``REFUSED`` (the file reaches for code: converting
  it needs ``trusted``);
* the nested structure down to the state dicts (tensor count, number of values, a few example
  names and shapes per state dict), loaded as the conversion loads it (weights-only, else
  restricted; never in full);
* which ``format`` of the models table fits, and for which ``arch``: every format's extractor
  is tried and its result compared, name by name and shape by shape, with each backbone
  (built on torch's meta device, so no weights are allocated); if none fits, the closest
  candidates with what is missing, unexpected or misshaped.

A plain pickle (``pickle.dump`` of tensors, numpy arrays, containers) is read by the same
restricted unpickler. A file that needs a refused global is reported as refused, naming the
file and the global (nothing from it runs); a file that cannot be read -- not a checkpoint, or
truncated or damaged -- names the file and what it is. Either way the command exits with 2
(0 when every file was read).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workflow_scripts.checkpoints import FORMATS
from workflow_scripts.io import sha256_file

# container() and pickle_globals() read a file without loading it (pickletools: nothing is
# executed or imported); they live with the restricted unpickler, whose verdicts they report.
from workflow_scripts.pickle_files import container, pickle_globals

MAX_KEYS = 12  # keys shown per mapping
MAX_DEPTH = 5
EXAMPLES = 4  # tensor names shown per state dict


# --------------------------------------------------------------------------- static reading

#: the verdict on a file that cannot be read, by container
DAMAGED = {
    "torch-zip": "truncated or damaged torch zip archive",
    "torch-legacy": "truncated or damaged torch legacy file",
    "pickle": "truncated or damaged pickle",
    "safetensors": "truncated or damaged safetensors file",
}


def classify_global(dotted: str) -> str:
    """'weights-only', 'allowed', 'placeholder' or 'REFUSED': what torch's weights-only loader,
    else the restricted unpickler (``pickle_files.verdict``), does with the global."""
    from torch import _weights_only_unpickler

    from workflow_scripts.pickle_files import verdict as decide

    module, _, name = dotted.rpartition(".")
    dotted, verdict, _ = decide(module, name)
    if dotted in _weights_only_unpickler._get_allowed_globals():
        return "weights-only"
    return {"getattr": "allowed", "refused": "REFUSED"}.get(verdict, verdict)


# --------------------------------------------------------------------------- structure


def _is_array(value) -> bool:
    import numpy as np
    import torch

    return isinstance(value, torch.Tensor | np.ndarray)


def _is_state_dict(value) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) for k in value)
        and sum(_is_array(v) for v in value.values()) >= max(1, len(value) // 2)
    )


def _shape(value) -> tuple:
    return tuple(int(d) for d in value.shape)


def _numel(value) -> int:
    import math

    return int(math.prod(_shape(value)))


def _leaf(value) -> str:
    from workflow_scripts.safe_pickle import Placeholder

    if isinstance(value, Placeholder):
        return f"<placeholder {value.dotted}>"
    if _is_array(value):
        return f"{type(value).__name__} {_shape(value)} {value.dtype}"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, bool | int | float | type(None)):
        return repr(value)
    if isinstance(value, list | tuple | set):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def _placeholder_summary(value) -> str:
    attributes = list(value.state) if isinstance(value.state, Mapping) else []
    return f"<placeholder {value.dotted}>" + (
        f" with {', '.join(map(str, attributes[:6]))}" if attributes else ""
    )


def structure(obj, where: str = "ckpt", depth: int = 0) -> list[dict]:
    """One entry per container down to the state dicts: where, kind and a summary (the plain
    values of a mapping in one line; placeholders with their attribute names)."""
    from workflow_scripts.safe_pickle import Placeholder

    if _is_state_dict(obj):
        arrays = {k: v for k, v in obj.items() if _is_array(v)}
        others = [k for k in obj if k not in arrays]
        return [
            {
                "where": where,
                "kind": "state_dict",
                "tensors": len(arrays),
                "values": sum(_numel(v) for v in arrays.values()),
                "numpy": sum(not hasattr(v, "is_floating_point") for v in arrays.values()),
                "examples": [f"{k} {_shape(v)}" for k, v in list(arrays.items())[:EXAMPLES]],
                "non_tensor_keys": [str(k) for k in others[:EXAMPLES]],
            }
        ]
    if isinstance(obj, Placeholder):
        return [{"where": where, "kind": "placeholder", "summary": _placeholder_summary(obj)}]
    if not isinstance(obj, Mapping):
        return [{"where": where, "kind": "value", "summary": _leaf(obj)}]
    nested = [(k, v) for k, v in obj.items() if isinstance(v, Mapping | Placeholder)]
    plain = [f"{k}={_leaf(v)}" for k, v in obj.items() if not isinstance(v, Mapping | Placeholder)]
    summary = ", ".join(plain)
    node = {
        "where": where,
        "kind": type(obj).__name__,
        "keys": len(obj),
        "summary": summary if len(summary) <= 110 else summary[:107] + "...",
    }
    kinds = {v.dotted for _, v in nested if isinstance(v, Placeholder)}
    if nested and len(kinds) == 1 and all(isinstance(v, Placeholder) for _, v in nested):
        node["summary"] = (
            f"{len(nested)} x {_placeholder_summary(nested[0][1])} "
            f"(keys {', '.join(str(k) for k, _ in nested[:4])}"
            f"{', ...' if len(nested) > 4 else ''})"
        )
        return [node]
    out = [node]
    if depth >= MAX_DEPTH:
        return out
    for index, (key, value) in enumerate(nested):
        if index == MAX_KEYS:
            out.append(
                {
                    "where": f"{where}[...]",
                    "kind": "value",
                    "summary": f"{len(nested) - MAX_KEYS} more nested entries",
                }
            )
            break
        out += structure(value, f"{where}[{key!r}]", depth + 1)
    return out


# --------------------------------------------------------------------------- formats


def _backbone_shapes(arch: str) -> dict[str, tuple]:
    import torch

    from workflow_scripts import registry
    from workflow_scripts.backbones import build_backbone

    embedding = registry.ARCHS[arch]["embeddings"][0]
    with torch.device("meta"):
        model = build_backbone(arch, embedding)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def fitting_formats(obj, *, safetensors: bool) -> tuple[list[dict], list[dict]]:
    """(fits, near misses): each {format, arch, tensors[, missing, unexpected, shapes]}."""
    from workflow_scripts import registry
    from workflow_scripts.checkpoints.convert import extract

    fits, misses = [], []
    shapes_of: dict[str, dict] = {}
    for fmt, spec in FORMATS.items():
        if (fmt == "safetensors") != safetensors:
            continue
        try:
            state, _dropped, _added = extract(obj, fmt)
        except Exception:  # noqa: BLE001 - a format that does not apply
            continue
        for arch, arch_spec in registry.ARCHS.items():
            if arch_spec["family"] not in spec["families"]:
                continue
            if arch not in shapes_of:
                shapes_of[arch] = _backbone_shapes(arch)
            expected = shapes_of[arch]
            missing = [
                k for k in expected if k not in state and not k.endswith("num_batches_tracked")
            ]
            unexpected = [k for k in state if k not in expected]
            shapes = [
                f"{k} {_shape(state[k])} != {expected[k]}"
                for k in expected
                if k in state and _shape(state[k]) != expected[k]
            ]
            entry = {"format": fmt, "arch": arch, "tensors": len(state)}
            if not (missing or unexpected or shapes):
                fits.append(entry)
            else:
                entry.update(missing=missing, unexpected=unexpected, shapes=shapes)
                misses.append(entry)
    misses.sort(key=lambda e: len(e["missing"]) + len(e["unexpected"]) + len(e["shapes"]))
    return fits, misses[:3]


# --------------------------------------------------------------------------- report


def _load(path: Path, kind: str) -> tuple[Any, str]:
    """(object, how) as the conversion loads a torch file (weights-only, else restricted); a
    plain pickle with the restricted unpickler alone. Never in full: ``RefusedGlobal`` names
    a global the file needs outside the allow-list."""
    import pickle

    from workflow_scripts.pickle_files import load_pickle
    from workflow_scripts.safe_pickle import restricted_load

    if kind == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), "safetensors"
    if kind == "pickle":
        return load_pickle(path)[0], "restricted"
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True), "weights_only"
    except pickle.UnpicklingError:
        return restricted_load(path)[0], "restricted"


def inspect_file(path: str | Path) -> dict:
    """Everything the command prints, as a dict. ``verdict``: 'read', 'refused' (the file
    needs a global outside the allow-list: ``refused`` names it; nothing from it ran) or
    'unreadable' (not a checkpoint, or damaged); ``error`` says why, naming the file."""
    import zipfile

    from workflow_scripts.pickle_files import refusal, without_unsafe_advice
    from workflow_scripts.safe_pickle import RefusedGlobal

    path = Path(path)
    kind = container(path)
    report: dict[str, Any] = {
        "file": str(path),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "container": kind,
    }

    def failed(verdict: str, message: str) -> dict:
        report["verdict"], report["error"] = verdict, message
        return report

    def damaged(error: Exception) -> dict:
        detail = without_unsafe_advice(str(error)) or "no detail"
        return failed("unreadable", f"{DAMAGED[kind]}: '{path}' ({type(error).__name__}: {detail})")

    if kind == "unknown":
        return failed(
            "unreadable",
            f"not a checkpoint: '{path}' is neither a torch file (zip or legacy), a pickle nor a "
            "safetensors file",
        )
    if kind == "safetensors":
        report["globals"] = []
    else:
        try:
            globals_ = pickle_globals(path)
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as error:
            return damaged(error)
        report["globals"] = [{"name": g, "as": classify_global(g)} for g in globals_]
        if kind == "torch-zip" and not globals_:
            with zipfile.ZipFile(path) as archive:
                if not any(n.endswith("data.pkl") for n in archive.namelist()):
                    return failed(
                        "unreadable",
                        f"not a torch checkpoint: '{path}' is a zip archive without data.pkl",
                    )
    try:
        obj, report["loaded_with"] = _load(path, kind)
    except RefusedGlobal as error:
        report["refused"] = error.name
        return failed("refused", f"refused, not loaded: '{path}': {refusal(error)}")
    except Exception as error:  # noqa: BLE001 - the file cannot be read: say so, naming it
        return damaged(error)
    report["verdict"] = "read"
    report["structure"] = structure(obj)
    report["fits"], report["near"] = fitting_formats(obj, safetensors=kind == "safetensors")
    return report


def _listing(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def render(report: dict) -> str:
    lines = [
        f"{report['file']}: {report['bytes']:,} bytes, sha256 {report['sha256']}",
        f"  container: {report['container']}",
    ]
    if report.get("globals") is not None and report["container"] != "safetensors":
        lines.append("  pickle globals (read with pickletools; nothing executed):")
        for entry in report["globals"]:
            lines.append(f"    {entry['as']:<12} {entry['name']}")
    if "error" in report:
        lines.append(f"  {report['error']}")
        return "\n".join(lines)
    lines.append(f"  loaded with: {report['loaded_with']}")
    if report["container"] == "pickle":
        lines.append(
            "  note: a plain pickle; the conversion reads torch.save files and safetensors: "
            "re-save the weights as one of them to use them in a models table"
        )
    lines.append("  structure:")
    for node in report["structure"]:
        if node["kind"] == "state_dict":
            extra = f", {node['numpy']} numpy arrays" if node["numpy"] else ""
            lines.append(
                f"    {node['where']}: state dict, {node['tensors']} tensors, "
                f"{node['values']:,} values{extra}; e.g. {', '.join(node['examples'])}"
            )
            if node["non_tensor_keys"]:
                lines.append(
                    f"      non-tensor entries: {', '.join(map(str, node['non_tensor_keys']))}"
                )
        elif "keys" in node:
            summary = f": {node['summary']}" if node["summary"] else ""
            lines.append(f"    {node['where']}: {node['kind']} of {node['keys']} keys{summary}")
        else:
            lines.append(f"    {node['where']}: {node['summary']}")
    if report["fits"]:
        lines.append("  fits (format -> arch):")
        for entry in report["fits"]:
            lines.append(
                f"    format {entry['format']}, arch {entry['arch']} ({entry['tensors']} tensors)"
            )
    else:
        lines.append("  no format fits any arch exactly; closest:")
        for entry in report["near"]:
            parts = [
                f"{name}: {_listing(entry[name])}"
                for name in ("missing", "unexpected", "shapes")
                if entry[name]
            ]
            lines.append(f"    format {entry['format']}, arch {entry['arch']}: {'; '.join(parts)}")
        if not report["near"]:
            lines.append("    (no format's layout applies)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workflow_scripts.checkpoints.inspect",
        description="Show a checkpoint's globals, structure and the models-table format that "
        "fits it, without running code from the file.",
    )
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args(argv)
    reports = []
    status = 0
    for path in args.files:
        if not path.is_file():
            print(f"{path}: no such file", file=sys.stderr)
            status = 2
            continue
        report = inspect_file(path)
        reports.append(report)
        if "error" in report:  # refused or unreadable
            status = 2
        if not args.json:
            print(render(report))
    if args.json:
        print(json.dumps(reports, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
