"""Measure how far a committed result moves when XLA compiles it for another CPU: the drift envelope.

Two x86 machines run different XLA CPU code when their instruction sets differ (FMA or not, 128-, 256-
or 512-bit vectors), and so round differently. XLA can be told to stop at a lower instruction set
(``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2|AVX|AVX2|AVX512``), so one machine can run the code paths of
the others. :func:`measure` reruns a committed result once per target, each in a fresh process (the
flag is read when XLA starts), compares every rerun with the committed files, and keeps, per number or
array, the largest |Δ| over targets: the envelope. It is written to ``results/<name>/drift.json`` with a
sha256 of the committed files it was measured on, and :mod:`toymodels.reproduce` uses it on another
machine, as ``base tolerance + 2 x envelope`` (the derivation is in :mod:`toymodels.compare`).

Measured on this project's 2-core AMD EPYC (AVX-512), analogy-15deg: SSE4_2 and AVX (no FMA) moved the
weights by up to 1.1e-6 and one metrics ``rel_error`` (a ratio whose denominator is near 0) by 0.023;
AVX2 and AVX512 moved them by at most 2.4e-7. A second AVX-512 machine (the committed run's) differed from
this one by 3.6e-7 in the weights and 0.006 in that ``rel_error``: inside the envelope.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import compare, reproduce

TARGETS = ("SSE4_2", "AVX", "AVX2", "AVX512")
_WORKER = "import sys; from toymodels import reproduce; reproduce.rerun(sys.argv[1], sys.argv[2])"


def rerun_on_target(result_dir: Path, out: Path, isa: str, timeout: float | None = None) -> None:
    """Rerun ``result_dir`` into ``out`` in a subprocess whose XLA stops at instruction set ``isa``."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_cpu_max_isa")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_cpu_max_isa={isa}"])
    proc = subprocess.run([sys.executable, "-c", _WORKER, str(result_dir), str(out)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"rerun of {result_dir.name} with --xla_cpu_max_isa={isa} failed: {tail[0]}")


def envelope_of(result_dir: Path, reruns: list[Path]) -> dict:
    """{file: {path: max |Δ| over reruns}} against the committed files (nonzero entries only)."""
    env: dict[str, dict[str, float]] = {}
    for out in reruns:
        for f in compare.compare_dirs(result_dir, out):
            for path, d in f.drift.items():
                cur = env.setdefault(f.name, {})
                cur[path] = max(cur.get(path, 0.0), d)
    # two significant digits, rounded up: the file stays small and the envelope never shrinks
    return {f: {p: float(f"{d * 1.005:.2g}") for p, d in sorted(m.items())} for f, m in sorted(env.items()) if m}


def measure(result_dir: str | Path, targets: tuple[str, ...] = TARGETS, echo=print, write: bool = True) -> dict:
    """Rerun ``result_dir`` under each XLA CPU target, write ``drift.json`` beside it (if ``write``) and
    return it: the envelope, the targets, the machine it was measured on, and the committed files' sha256."""
    from .io import runs

    result_dir = Path(result_dir)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"drift-{result_dir.name}-") as tmp:
        outs = []
        for isa in targets:
            echo(f"  {result_dir.name}: rerun with --xla_cpu_max_isa={isa}")
            out = Path(tmp) / isa / result_dir.name
            rerun_on_target(result_dir, out, isa)
            outs.append(out)
        envelope = envelope_of(result_dir, outs)
    doc = {
        "what": "largest |Δ| of each number (an array: its largest element) between the committed files and "
                "a rerun with XLA capped at each instruction set; the cross-machine tolerance is "
                f"base + {compare.CROSS_MACHINE_FACTOR:g} x this (toymodels/compare.py)",
        "targets": list(targets),
        "measured_on": reproduce.this_fingerprint(),
        "results_sha256": reproduce.results_digest(result_dir),
        "seconds": round(time.perf_counter() - t0, 1),
        "envelope": envelope,
    }
    if write:
        runs.write_json(result_dir / reproduce.DRIFT_FILE, doc)
    return doc
