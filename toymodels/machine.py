"""What machine a run was computed on, as far as XLA's CPU code depends on it.

XLA compiles for the host CPU: the instruction-set features it may use (FMA, AVX2, AVX-512, ...) change
how a sum is rounded, so the same seed gives last-bit differences between x86 machines, and training
amplifies them (the project's engineering notes measured 3.6e-7 on analogy-15deg's weights, 2.3e-3 on an overlap-table
member). Bit-identity therefore holds on one machine class only, and a reproduction check must know
whether it runs on the class that made the committed results. This module reads that class; it is a leaf
(standard library only) and reads nothing but ``/proc/cpuinfo`` and the environment.
"""

from __future__ import annotations

import os
import platform

# The x86 feature flags that select XLA's CPU code paths (LLVM's target features for the host; the
# ``--xla_cpu_max_isa`` flag caps them at SSE4_2, AVX, AVX2, AVX512, ...). Other cpuinfo flags do not
# change generated code and would only make two equivalent machines look different.
XLA_ISA_FLAGS = ("sse4_1", "sse4_2", "avx", "f16c", "fma", "avx2", "avx512f", "avx512dq", "avx512cd",
                 "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
                 "amx_tile", "amx_bf16", "amx_int8")
# Environment variables that change what XLA compiles or how many threads split a reduction.
XLA_ENV = ("XLA_FLAGS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION", "JAX_PLATFORMS", "OMP_NUM_THREADS")
_CPUINFO_LIMIT = 1 << 20   # a few KB per core; never read an unbounded file


# cpuinfo fields that name the micro-architecture (LLVM picks its host CPU, e.g. znver4, from vendor, family
# and model); a virtual machine's "model name" alone can be as vague as "AMD EPYC".
_ID_FIELDS = {"vendor_id": "vendor", "cpu family": "family", "model": "model_id", "stepping": "stepping"}


def _cpuinfo() -> tuple[str, list[str], dict]:
    """(model name, sorted XLA-relevant ISA flags, {vendor, family, model_id, stepping}) from the first
    processor in /proc/cpuinfo."""
    model, flags, ids = platform.processor() or platform.machine(), set(), {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read(_CPUINFO_LIMIT)
    except OSError:
        return model, [], {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in _ID_FIELDS and _ID_FIELDS[key] not in ids:
            ids[_ID_FIELDS[key]] = value.strip()
        elif key in ("flags", "Features"):
            flags = set(value.split())
            break   # the first processor's block is enough: all cores of one machine agree
    return model, sorted(f for f in XLA_ISA_FLAGS if f in flags), ids


def cpu_info() -> dict:
    """The CPU as XLA sees it, for ``env.json``: model, architecture, core count, the ISA flags XLA may
    use, and the environment that changes XLA's code (``XLA_FLAGS`` incl. ``--xla_cpu_max_isa``)."""
    model, isa, ids = _cpuinfo()
    return {
        "model": model,
        **ids,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "isa": isa,
        "env": {k: os.environ[k] for k in XLA_ENV if k in os.environ},
    }


CPU_KEYS = ("model", "machine", "cores", "isa", "env")
CPU_ID_KEYS = tuple(_ID_FIELDS.values())   # recorded since 0.2.1: compared when both records have them
LIBRARIES = ("jax", "jaxlib", "numpy", "flax", "optax")


def fingerprint(env: dict) -> dict | None:
    """The part of an ``env.json`` that decides bit-identity: the CPU (model, vendor/family/model id/
    stepping where recorded, architecture, cores, ISA flags, XLA environment) and the versions of the
    libraries that compute (jax, jaxlib, numpy, flax, optax). None for an ``env.json`` written before the
    CPU was recorded (the machine is then unknown)."""
    cpu = env.get("cpu") if isinstance(env, dict) else None
    if not isinstance(cpu, dict):
        return None
    return {"cpu": {k: cpu.get(k) for k in CPU_KEYS + CPU_ID_KEYS if k in CPU_KEYS or k in cpu},
            **{lib: env.get(lib) for lib in LIBRARIES}}


def same_machine(a: dict | None, b: dict | None) -> bool:
    """Whether two fingerprints name one machine class: every recorded field equal; the micro-architecture
    ids count where both records have them (an older env.json has only the model name and ISA flags)."""
    if a is None or b is None:
        return False
    ca, cb = a["cpu"], b["cpu"]
    shared = set(CPU_KEYS) | (set(ca) & set(cb))
    return (all(ca.get(k) == cb.get(k) for k in shared)
            and all(a.get(lib) == b.get(lib) for lib in LIBRARIES))


def describe(fp: dict | None) -> str:
    """One line naming a fingerprint, e.g. 'AMD EPYC, 2 cores, avx512f.., jax 0.10.2'."""
    if fp is None:
        return "an unrecorded machine (env.json has no 'cpu')"
    cpu = fp["cpu"]
    top = next((f for f in ("amx_tile", "avx512f", "avx2", "avx", "sse4_2") if f in (cpu.get("isa") or [])), "no AVX")
    flags = cpu.get("env", {}).get("XLA_FLAGS")
    return (f"{cpu.get('model')} ({cpu.get('machine')}, {cpu.get('cores')} cores, up to {top}"
            + ("" if "fma" in (cpu.get("isa") or []) else ", no FMA") + ")"
            + (f", XLA_FLAGS={flags!r}" if flags else "") + f", jax {fp.get('jax')}/jaxlib {fp.get('jaxlib')}")
