"""Restricted unpickling of checkpoint and data files: tensors and plain data load, no foreign
code runs. A module of its own, imported by the checkpoint conversion and the CIFAR-100
adapter alike, so neither brings the other into its code identity.

``torch.load(weights_only=True)`` refuses any global outside torch's allow-list, so released
training checkpoints that also carry loggers (mmengine's ``HistoryBuffer`` in ``message_hub``),
``argparse.Namespace`` arguments or numpy arrays cannot be read with it. ``restricted_load``
reads them with Python's documented "restricting globals" pattern (``Unpickler.find_class``
overridden), through ``torch.load``'s own loader so that tensors and storages are rebuilt by
torch itself:

* **allowed** globals are returned as they are: torch's weights-only allow-list (tensor and
  storage rebuild functions, dtypes, ``torch.Size``, ``OrderedDict``, ``_codecs.encode``, ...),
  numpy's array/dtype/scalar reconstruction, the plain built-in types and ``collections``'
  ``defaultdict``/``deque``;
* **refused** at once, with an error naming the global: anything from the interpreter, the
  operating system, code loading or ``functools``/``operator`` (``os.system``,
  ``builtins.eval``, ``subprocess.Popen``, ``importlib.import_module``, ...) and any torch or
  numpy name outside the allow-list;
* **every other global** becomes an inert ``Placeholder`` class that records its dotted name.
  The pickle may create instances of it the way it creates plain objects (``NEWOBJ`` + state,
  dict/list items), which only stores what the file holds. *Calling* it -- what a pickle does
  to run a function -- is refused with the global's name, except for a few value types that
  pickle through a call (``datetime``, ``pathlib`` paths), which are recorded, not run.
  ``getattr`` is allowed on a placeholder alone and gives another placeholder: mmengine >= 0.7.3
  pickles each ``HistoryBuffer``'s statistics methods as ``getattr(HistoryBuffer, 'min')``.

Nothing outside the allow-list is ever called. The loaded object is used only for the
sub-dict that a checkpoint format names; the placeholders met are reported (the conversion
sidecar lists them).
"""

from __future__ import annotations

import pickle
import re
import types
from pathlib import Path
from typing import Any

# Top-level modules whose globals are refused outright, before anything else happens: they run
# programs, reach the operating system or the network, load or compile code, or reach into
# objects (functools/operator/types/inspect); torch and numpy names outside the allow-list too.
# Any other unknown global still runs nothing: it becomes a placeholder, and calling one is
# refused.
REFUSED_MODULES = frozenset(
    {
        "__builtin__",
        "__main__",
        "builtins",
        "os",
        "posix",
        "nt",
        "sys",
        "subprocess",
        "_posixsubprocess",
        "commands",
        "pty",
        "shutil",
        "signal",
        "socket",
        "ssl",
        "http",
        "urllib",
        "ftplib",
        "smtplib",
        "webbrowser",
        "importlib",
        "imp",
        "zipimport",
        "pkgutil",
        "runpy",
        "code",
        "codeop",
        "compileall",
        "ctypes",
        "marshal",
        "pickle",
        "_pickle",
        "pickletools",
        "shelve",
        "dill",
        "joblib",
        "multiprocessing",
        "threading",
        "_thread",
        "concurrent",
        "asyncio",
        "functools",
        "_functools",
        "operator",
        "_operator",
        "itertools",
        "types",
        "inspect",
        "gc",
        "io",
        "_io",
        "codecs",
        "_codecs",
        "tempfile",
        "glob",
        "pdb",
        "pydoc",
        "timeit",
        "cProfile",
        "profile",
        "trace",
        "site",
        "sysconfig",
        "platform",
        "setuptools",
        "distutils",
        "pip",
        "venv",
        "ensurepip",
        "numpy",
        "torch",
    }
)

SAFE_BUILTINS = frozenset(
    {
        "bool",
        "bytearray",
        "bytes",
        "complex",
        "dict",
        "float",
        "frozenset",
        "int",
        "list",
        "object",
        "range",
        "set",
        "slice",
        "str",
        "tuple",
    }
)
SAFE_COLLECTIONS = frozenset({"OrderedDict", "Counter", "defaultdict", "deque"})
NUMPY_FUNCTIONS = frozenset({"_reconstruct", "scalar"})
NUMPY_MODULES = frozenset({"numpy.core.multiarray", "numpy._core.multiarray"})

# Value types that pickle through a call (REDUCE); the call is recorded, never made.
RECORDED_CALLS = frozenset(
    {
        "datetime.date",
        "datetime.datetime",
        "datetime.time",
        "datetime.timedelta",
        "datetime.timezone",
        "pathlib.Path",
        "pathlib.PosixPath",
        "pathlib.PurePath",
        "pathlib.PurePosixPath",
        "pathlib.PureWindowsPath",
        "pathlib.WindowsPath",
        "pathlib._local.Path",
        "pathlib._local.PosixPath",
        "pathlib._local.PurePosixPath",
        "pathlib._local.WindowsPath",
        "pathlib._local.PureWindowsPath",
    }
)


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle reaches for a global outside the allow-list; nothing of it has run."""

    def __init__(self, name: str, why: str):
        self.name = name
        super().__init__(
            f"the pickle references '{name}', {why}; it was not loaded and nothing from it ran"
        )


class Placeholder:
    """An inert stand-in for an instance of a class that is not allowed (``dotted`` names it).

    It keeps what the pickle gives it -- constructor arguments (``args``), state (``state``),
    dict items (``items``) and list items (``list_items``) -- and runs nothing."""

    dotted = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        object.__setattr__(obj, "args", args)
        object.__setattr__(obj, "kwargs", kwargs)
        object.__setattr__(obj, "state", None)
        object.__setattr__(obj, "items", {})
        object.__setattr__(obj, "list_items", [])
        return obj

    def __init__(self, *args, **kwargs):
        # Reached only when the pickle *calls* the global (REDUCE / INST), not when it
        # re-creates an object (NEWOBJ): calling is running code.
        if self.dotted not in RECORDED_CALLS:
            raise RefusedGlobal(
                self.dotted, "which the pickle calls and which is outside the allow-list"
            )

    def __setstate__(self, state):
        object.__setattr__(self, "state", state)

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.list_items.append(value)

    def extend(self, values):
        self.list_items.extend(values)

    def __call__(self, *args, **kwargs):
        raise RefusedGlobal(self.dotted, "an instance of which the pickle calls")

    def __reduce__(self):  # never re-pickled as the original class
        raise TypeError(f"placeholder of '{self.dotted}' cannot be pickled")

    def __repr__(self):
        return f"<placeholder {self.dotted}>"


def _numpy_global(module: str, name: str):
    import numpy as np

    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module in NUMPY_MODULES and name in NUMPY_FUNCTIONS:
        from numpy._core import multiarray  # numpy 2 home of numpy.core.multiarray

        return getattr(multiarray, name)
    if module == "numpy.dtypes":
        found = getattr(np.dtypes, name, None)
        if isinstance(found, type) and issubclass(found, np.dtype):
            return found
    return None


def _safe_reconstructor(cls, base, state):
    """``copyreg._reconstructor`` (protocol 0/1 objects) for placeholders and plain bases only."""
    if isinstance(cls, type) and issubclass(cls, Placeholder) and base is object:
        obj = cls.__new__(cls)
        if state is not None:
            obj.__setstate__(state)
        return obj
    raise RefusedGlobal("copyreg._reconstructor", f"called for {cls!r} on base {base!r}")


def plain_global(module: str, name: str):
    """The object for a global of plain data (built-in containers and scalars, ``collections``'
    containers, numpy arrays/dtypes/scalars, ``_codecs.encode`` for protocol-2 bytes), or None.
    Needs no torch."""
    if module == "builtins" and name in SAFE_BUILTINS:
        import builtins

        return getattr(builtins, name)
    if module == "collections" and name in SAFE_COLLECTIONS:
        import collections

        return getattr(collections, name)
    if module == "_codecs" and name == "encode":
        import _codecs

        return _codecs.encode
    if module == "numpy" or module.startswith("numpy."):
        return _numpy_global(module, name)
    return None


def allowed_global(module: str, name: str):
    """The object for a global a checkpoint may use (plain data and torch's weights-only
    allow-list), or None."""
    found = plain_global(module, name)
    if found is not None:
        return found
    if f"{module}.{name}" == "copyreg._reconstructor":
        return _safe_reconstructor
    if module.split(".", 1)[0] == "numpy":
        return None
    from torch import _weights_only_unpickler

    return _weights_only_unpickler._get_allowed_globals().get(f"{module}.{name}")


def _compat(module: str, name: str) -> tuple[str, str]:
    """Python 2 names of protocol 0-2 pickles (``__builtin__``, ``copy_reg``) -> Python 3."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def decide(module: str, name: str) -> tuple[str, str, Any]:
    """How the restricted unpickler takes a global: (dotted name after the Python 2 mapping,
    verdict, object). Verdicts: 'allowed' (the object is returned), 'getattr' (allowed on
    placeholders only), 'refused', 'placeholder'. The inspector reports the same verdicts."""
    module, name = _compat(module, name)
    dotted = f"{module}.{name}"
    if dotted == "builtins.getattr":
        return dotted, "getattr", None
    found = allowed_global(module, name)
    if found is not None:
        return dotted, "allowed", found
    if module.split(".", 1)[0] in REFUSED_MODULES or "." in name:
        return dotted, "refused", None
    return dotted, "placeholder", None


class _Recorder:
    def __init__(self):
        self.placeholders: dict[str, type] = {}

    def placeholder(self, dotted: str) -> type:
        if dotted not in self.placeholders:
            self.placeholders[dotted] = type(
                dotted.rsplit(".", 1)[-1],
                (Placeholder,),
                {"dotted": dotted, "__module__": __name__},
            )
        return self.placeholders[dotted]


def _module_for(recorder: _Recorder) -> types.SimpleNamespace:
    """A ``pickle_module`` for ``torch.load`` whose Unpickler restricts globals."""

    def safe_getattr(obj, name, *default):
        if isinstance(obj, Placeholder) or (isinstance(obj, type) and issubclass(obj, Placeholder)):
            return recorder.placeholder(f"{obj.dotted}.{name}")
        raise RefusedGlobal(
            "builtins.getattr",
            f"called on {type(obj).__name__} (only placeholders may be looked into)",
        )

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if not isinstance(module, str) or not isinstance(name, str):
                raise RefusedGlobal(repr((module, name)), "which is not a plain name")
            dotted, verdict, found = decide(module, name)
            if verdict == "getattr":
                return safe_getattr
            if verdict == "allowed":
                return found
            if verdict == "refused":
                raise RefusedGlobal(
                    dotted,
                    "which is outside the allow-list (tensors, storages, "
                    "plain containers, numbers, strings, numpy arrays)",
                )
            return recorder.placeholder(dotted)

    def load(file, **kwargs):
        return RestrictedUnpickler(file, **kwargs).load()

    return types.SimpleNamespace(
        __name__="sslbench_restricted_pickle",
        Unpickler=RestrictedUnpickler,
        load=load,
        UnpicklingError=pickle.UnpicklingError,
    )


def restricted_load(path: str | Path) -> tuple[Any, list[str]]:
    """Load a torch checkpoint (zip or legacy format) with restricted globals.

    Returns (object, sorted dotted names of the placeholders met). Raises ``RefusedGlobal``
    (a ``pickle.UnpicklingError``) naming the first refused global."""
    import torch

    recorder = _Recorder()
    obj = torch.load(
        str(path), map_location="cpu", weights_only=False, pickle_module=_module_for(recorder)
    )
    return obj, sorted(recorder.placeholders)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(text: str) -> str:
    """``text`` without terminal escape codes."""
    return _ANSI.sub("", text)


def unsupported_globals(message: str) -> list[str]:
    """The globals torch's weights-only unpickler names in its refusal message."""
    return list(
        dict.fromkeys(re.findall(r"[Uu]nsupported global: GLOBAL ([\w.]+)", plain(message)))
    )


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise RefusedGlobal(repr((module, name)), "which is not a plain name")
        module, name = _compat(module, name)
        found = plain_global(module, name)
        if found is None:
            raise RefusedGlobal(
                f"{module}.{name}",
                "which a data file may not reference (plain "
                "containers, bytes, str, numbers and numpy "
                "arrays only)",
            )
        return found


def load_data_pickle(file, *, encoding: str = "bytes"):
    """Unpickle a data set file (CIFAR's batches) from an open binary ``file``: plain
    containers, bytes, str, numbers and numpy arrays only. Any other global -- a class, a
    function -- is refused with ``RefusedGlobal`` naming it; nothing else is ever imported or
    called. Needs no torch."""
    return _DataUnpickler(file, encoding=encoding).load()
