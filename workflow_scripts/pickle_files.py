"""Reading pickle files for people: what the checkpoint inspector and the timm rows' error
messages need beside the restricted unpickler (``safe_pickle``), kept out of that module so
that the checkpoint conversion and the CIFAR-100 adapter, which import it, keep their code
identity (a change here reruns no conversion and no data set job).

* :func:`describe_global`, :func:`runs_code`: how a refusal names a global and whether it is
  code (``os.system`` pickles as ``posix.system``);
* :func:`load_pickle`: a plain pickle (``pickle.dump`` of tensors or arrays) with the
  restricted unpickler; ``torch.storage._load_from_bytes`` -- how ``pickle.dump`` writes a
  tensor's storage, which torch reads with ``torch.load(weights_only=False)`` -- is answered by
  a function that reads those bytes with the same restricted unpickler;
* :func:`container`, :func:`pickle_streams`, :func:`pickle_globals`: a file read without
  loading it (pickletools: nothing is executed or imported);
* :func:`without_unsafe_advice`, :func:`unsupported_globals`: torch's error text without its
  advice to load a refused file in full, and the globals it names (torch 2.14's wording too).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from workflow_scripts.safe_pickle import (
    REFUSED_MODULES,
    RefusedGlobal,
    _module_for,
    _Recorder,
    decide,
    plain,
)

#: the global :func:`load_pickle` answers with :func:`_storage_from_bytes`
STORAGE_FROM_BYTES = "torch.storage._load_from_bytes"


def describe_global(dotted: str) -> str:
    """``dotted`` quoted, with the name a reader knows where the pickle spells it otherwise
    (``os.system`` pickles as ``posix.system``)."""
    module, _, name = dotted.rpartition(".")
    if module in ("posix", "nt"):
        return f"'{dotted}' (os.{name})"
    return f"'{dotted}'"


def refusal(error: RefusedGlobal) -> str:
    """A refusal's text with the global as a reader knows it (``'posix.system' (os.system)``)."""
    return str(error).replace(f"'{error.name}'", describe_global(error.name), 1)


def runs_code(dotted: str) -> bool:
    """Whether a refused global belongs to the modules that run programs or code, reach the
    operating system or reach into objects (``os.system``, ``builtins.eval``, ...): a file that
    needs one is very likely malicious (torch and numpy names outside the allow-list are
    refused too, but are not code of that kind)."""
    top = dotted.split(".", 1)[0]
    return top in REFUSED_MODULES and top not in ("numpy", "torch")


def _storage_from_bytes(data):
    """``torch.storage._load_from_bytes``, how ``pickle.dump`` writes a tensor's storage: torch
    would ``torch.load(weights_only=False)`` the bytes; they are read with the restricted
    unpickler instead (a torch file of one storage; any other global in it is refused)."""
    import io

    import torch

    if not isinstance(data, bytes | bytearray):
        raise RefusedGlobal(
            "torch.storage._load_from_bytes", f"called with {type(data).__name__}, not bytes"
        )
    return torch.load(
        io.BytesIO(bytes(data)),
        map_location="cpu",
        weights_only=False,  # the restricted pickle_module below decides every global
        pickle_module=_module_for(_Recorder()),
    )


def verdict(module: str, name: str) -> tuple[str, str, Any]:
    """``safe_pickle.decide`` for :func:`load_pickle`: the storage global is allowed there."""
    if f"{module}.{name}" == STORAGE_FROM_BYTES:
        return STORAGE_FROM_BYTES, "allowed", _storage_from_bytes
    return decide(module, name)


def load_pickle(path: str | Path) -> tuple[Any, list[str]]:
    """Load a plain pickle (``pickle.dump`` of tensors, numpy arrays, containers; no torch
    container) with the restricted unpickler of :func:`restricted_load`: same verdicts, same
    placeholders, tensors' storages rebuilt without torch's full unpickling. Returns (object,
    sorted dotted names of the placeholders met); ``RefusedGlobal`` names a refused global."""
    recorder = _Recorder()
    restricted = _module_for(recorder).Unpickler

    class PlainUnpickler(restricted):
        def find_class(self, module, name):
            if f"{module}.{name}" == STORAGE_FROM_BYTES:
                return _storage_from_bytes
            return super().find_class(module, name)

    with open(path, "rb") as handle:
        obj = PlainUnpickler(handle, encoding="utf-8").load()
    return obj, sorted(recorder.placeholders)


# --------------------------------------------------------------------------- static reading

#: the first pickle of torch's legacy format (``torch.serialization.MAGIC_NUMBER``)
TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_LONGS = ("INT", "LONG", "LONG1", "LONG4", "BININT", "BININT1", "BININT2")


def container(path: str | Path) -> str:
    """'torch-zip', 'torch-legacy', 'pickle' (a plain pickle), 'safetensors' or 'unknown',
    from the file's first bytes and its first pickle read with pickletools (nothing runs).
    A file that starts as a zip archive is 'torch-zip' even when it is cut short."""
    import pickletools
    import zipfile

    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04") or zipfile.is_zipfile(path):
        return "torch-zip"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if not head:
        return "unknown"
    magic = False
    with open(path, "rb") as handle:
        try:
            for op, arg, _pos in pickletools.genops(handle):
                magic = magic or (op.name in _LONGS and arg == TORCH_MAGIC)
        except Exception:  # noqa: BLE001 - not a pickle, or a pickle cut short
            protocol = head[1] if len(head) > 1 else 0
            return "pickle" if head[:1] == b"\x80" and 2 <= protocol <= 5 else "unknown"
    return "torch-legacy" if magic else "pickle"


def pickle_streams(path: str | Path, kind: str):
    """Byte streams of the pickles that hold the checkpoint object (``kind``: :func:`container`).
    A damaged file raises (``zipfile.BadZipFile``, ``ValueError``)."""
    import pickletools
    import zipfile

    if kind == "torch-zip":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            for name in names:
                yield archive.read(name)
    elif kind in ("torch-legacy", "pickle"):
        # legacy: magic number, protocol version, sys info, the object; pickle: the object
        with open(path, "rb") as handle:
            for _ in range(4 if kind == "torch-legacy" else 1):
                start = handle.tell()
                for _op in pickletools.genops(handle):
                    pass
                end = handle.tell()
                handle.seek(start)
                yield handle.read(end - start)


def pickle_globals(path: str | Path) -> list[str]:
    """Dotted names of every global the file's pickles reference, in order of appearance, as
    pickled, read with pickletools (opcodes only: nothing is executed or imported). A damaged
    file raises (``zipfile.BadZipFile``, ``ValueError``)."""
    import pickletools

    path = Path(path)
    found: list[str] = []
    for data in pickle_streams(path, container(path)):
        memo: dict[int, Any] = {}
        recent: list[Any] = []  # values pushed by the last opcodes (for STACK_GLOBAL)
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.append(f"{module}.{attr}")
            elif name == "STACK_GLOBAL" and len(recent) >= 2:
                found.append(f"{recent[-2]}.{recent[-1]}")
            if name in (
                "SHORT_BINUNICODE",
                "BINUNICODE",
                "BINUNICODE8",
                "UNICODE",
                "SHORT_BINSTRING",
                "BINSTRING",
                "STRING",
            ):
                recent.append(arg)
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                recent.append(memo.get(arg))
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[arg] = recent[-1] if recent else None
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            else:
                recent.append(None)
            del recent[:-2]
    return list(dict.fromkeys(found))


_NAMED = re.compile(
    r"([Uu]nsupported global: GLOBAL [\w.]+|unsupported GLOBAL [\w.]+(?: whose module [\w.]+ is "
    r"blocked)?)"
)
_ADVICE = ("weights_only", "safe_globals", "trust")


def without_unsafe_advice(message: str, limit: int = 300) -> str:
    """torch's (or timm's) error text without its advice to load the file in full
    (``weights_only=False``, allow-listing the global, "if you trust the source"): the lines
    that carry it keep only the global they name, if any; escape codes removed."""
    kept = []
    for line in plain(message).splitlines():
        line = line.strip()
        if not line:
            continue
        if any(word in line.lower() for word in _ADVICE):
            kept += _NAMED.findall(line)
            continue
        kept.append(line)
    text = " ".join(kept)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unsupported_globals(message: str) -> list[str]:
    """The globals torch's weights-only unpickler names in its refusal message."""
    return list(
        dict.fromkeys(
            re.findall(
                r"(?:[Uu]nsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", plain(message)
            )
        )
    )
