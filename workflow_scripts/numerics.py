"""Pinned CPU numerics (config section ``numerics``): the same bits on every x86-64 machine.

The CPU libraries pick their kernels when a process starts, by the machine's best instruction
set: oneDNN (torch's convolutions, GELU), torch's own vectorised kernels (softmax and
cross-entropy gradients, reductions), MKL, numpy's SIMD loops and the OpenBLAS of numpy and
scipy, and faiss. Kernels of different vector widths sum in different orders, so a demo ResNet
trained on an AVX-512 machine differs in the last bits after one step, and by points of accuracy
after training, from the same run on an AVX2 machine (``benchmarks/cpu_kernels.py`` shows which
ops differ here: oneDNN's convolution forward and input gradient and GELU forward; torch's
softmax-attention and cross-entropy gradients; MKL's GEMM does not on this AMD host).

With ``numerics.pin`` each job starts with every library capped at ``numerics.cpu_isa``
(:func:`environment`: environment variables the libraries read when they load, so the
Snakefile sets them for the jobs it starts, before any of them imports torch), runs torch with
``use_deterministic_algorithms`` (:func:`apply_in_process`) and the thread count of its rule.
A machine without that instruction set cannot run the pinned kernels: turn the pins off there.

The GPU study leaves them off: they do not reach GPU kernels, and they would slow the CPU work
beside them. Nothing runs at import time.
"""

from __future__ import annotations

#: Instruction-set caps, per ``numerics.cpu_isa``: the values each library expects.
ISAS: dict[str, dict[str, str]] = {
    "avx2": {
        # oneDNN (convolutions, pooling, some element-wise ops): the most it may use
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        # torch's own vectorised kernels (ATen's CPU dispatch)
        "ATEN_CPU_CAPABILITY": "avx2",
        # MKL: the AVX2 code path, results reproducible across processors (CNR, strict)
        "MKL_CBWR": "AVX2,STRICT",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        # the OpenBLAS of numpy and scipy: its Haswell (AVX2) kernels
        "OPENBLAS_CORETYPE": "Haswell",
        # numpy's own SIMD loops: no dispatch beyond AVX2 (x86-64-v3)
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512F AVX512CD AVX512_KNL AVX512_KNM "
        "AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR",
        # faiss: its AVX2 build
        "FAISS_OPT_LEVEL": "avx2",
    },
}

#: The demo's pins (config.yaml), for benchmarks and tests.
DEMO_PINS = {"pin": True, "cpu_isa": "avx2"}


def environment(numerics: dict) -> dict[str, str]:
    """The environment variables of config section ``numerics`` (none when not pinned)."""
    if not numerics.get("pin"):
        return {}
    return dict(ISAS[numerics["cpu_isa"]])


class NumericsError(RuntimeError):
    """A pinned job runs without the pinned environment."""


def check_environment(numerics: dict, environ=None) -> None:
    """Raise :class:`NumericsError` naming each variable of :func:`environment` that this
    process lacks or holds another value of (a job started outside the workflow, or by a
    cluster that does not pass the environment on): its numbers would not be the pinned ones."""
    import os

    environ = os.environ if environ is None else environ
    wrong = {k: environ.get(k) for k, v in environment(numerics).items() if environ.get(k) != v}
    if wrong:
        expected = environment(numerics)
        raise NumericsError(
            "numerics.pin is on, but this process has "
            + ", ".join(f"{k}={v!r} (pinned: {expected[k]!r})" for k, v in wrong.items())
            + "; start jobs through snakemake, which sets them (or set numerics.pin: false)"
        )


def apply_in_process(numerics: dict) -> None:
    """What a pinned job sets inside its process: torch's deterministic algorithms (an op
    without a deterministic implementation warns). The thread count is the rule's
    (:func:`workflow_scripts.runtime.setup`)."""
    if not numerics.get("pin"):
        return
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
