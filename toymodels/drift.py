"""Measure how far a committed result moves when XLA compiles it for another CPU: the drift envelope.

Two x86 machines run different XLA CPU code when their instruction sets differ (FMA or not, 128-, 256-
or 512-bit vectors), and so round differently. XLA can be told to stop at a lower instruction set
(``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2|AVX|AVX2|AVX512``), so one machine can run the code paths of
the others. :func:`measure` reruns a committed result once per target, each in a fresh process (the
flag is read when XLA starts), compares every rerun with the committed files, and keeps, per number or
array, the largest |Δ| over targets and over the numbers of its kind (:func:`compare.kind_of`): the envelope. It is written to ``results/<name>/drift.json`` with a
sha256 of the committed files it was measured on, and :mod:`toymodels.reproduce` uses it on another
machine, as ``base tolerance + 2 x envelope`` (the derivation is in :mod:`toymodels.compare`).

Checked against a real second machine: the previous release's committed analogy-15deg and tms-intro (made
on another AVX-512 machine) against this release's lie within base + 2 x envelope in every number; before,
one metrics ``rel_error`` (a ratio whose denominator is near 0) failed the fixed tolerance there by 0.0058 vs
0.0041 (docs/reproducibility.md).
"""

from __future__ import annotations

import math
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
    """{file: {kind: max |Δ| over reruns and over the numbers of that kind}} against the committed files
    (nonzero entries only; a kind is a path with its list indices as ``[*]``, :func:`compare.kind_of`)."""
    env: dict[str, dict[str, float]] = {}
    for out in reruns:
        for f in compare.compare_dirs(result_dir, out):
            for path, d in f.drift.items():
                cur, kind = env.setdefault(f.name, {}), compare.kind_of(path)
                cur[kind] = max(cur.get(kind, 0.0), d)
    return {f: {p: round_up(d) for p, d in sorted(m.items())} for f, m in sorted(env.items()) if m}


def round_up(d: float) -> float:
    """``d`` to two significant digits, rounded up: the file stays small and the envelope never shrinks."""
    if d <= 0 or not math.isfinite(d):
        return d
    e = math.floor(math.log10(d)) - 1
    r = float(f"{math.ceil(d / 10.0**e - 1e-9) * 10.0**e:.2g}")
    return r if r >= d else d


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
        "what": "largest |Δ| of each kind of number (its path with list indices as [*]; an array: its largest "
                "element) between the committed files and a rerun with XLA capped at each instruction set; the "
                f"cross-machine tolerance is base + {compare.CROSS_MACHINE_FACTOR:g} x this (toymodels/compare.py)",
        "targets": list(targets),
        "measured_on": reproduce.this_fingerprint(),
        "results_sha256": reproduce.results_digest(result_dir),
        "seconds": round(time.perf_counter() - t0, 1),
        "envelope": envelope,
    }
    if write:
        runs.write_json(result_dir / reproduce.DRIFT_FILE, doc)
    return doc
