"""Compare a committed result directory with a rerun of it, number by number.

Three ways to compare, chosen by :func:`toymodels.reproduce.check` from the machines involved:

* **exact** (the rerun runs on the machine class that made the committed files, same jax/jaxlib): every
  number and array element must be bit-identical; any |Δ| > 0 means the code or the files changed.
* **across machines, with a measured envelope** (``drift.json`` beside the committed files): a number at
  ``path`` may move by ``base(path) + CROSS_MACHINE_FACTOR * envelope(path)``, where ``envelope(path)`` is
  the largest |Δ| that path showed when the same run was recomputed under every XLA CPU target
  (``--xla_cpu_max_isa`` = SSE4_2, AVX, AVX2, AVX512: with and without FMA, 128/256/512-bit vectors).
  Why 2: machine B's code path lies within the envelope of some target T, and T within the envelope of
  the committed run C, so |B − C| ≤ |B − T| + |T − C| ≤ 2 · envelope (triangle inequality). A path that no
  target moved gets the base tolerance only.
* **across machines, no envelope**: the base tolerances below.

Base tolerances (measured on this project's 2-core CPU, jax 0.10.2): weights ``WEIGHT_ATOL`` = 1e-5, 50x
the ~2e-7 that ENGINEERING.md measures between jax versions; another restart or seed moves weights by
O(1). Summary and metrics numbers: ``rtol`` 1e-4, ``atol`` 1e-6 (values that are zero up to float noise,
e.g. the std of a pinned 15° angle, ~4e-7). Rates are counts over a finite evaluation batch: one sample of
an 8192 batch with x_j = 0 is 1.3e-4 of a rate (0.013 pp), and slightly different weights flip one, so a
number whose key names a rate (``rate``, ``rate_change_pp``, ``fraction_rate_up``,
``..._vs_rate_change_pp``; and ``amplification_removed``) gets ``RATE_TOLERANCE``: about four samples in
its own unit (5e-4 of a rate, 0.05 pp), plus 2% for relative increases and statistics over instances.

Every comparison also returns the **drift map**: each compared path's |Δ| (numbers; for an array, its
largest element |Δ|), which ``experiments/reproduce.py --json`` reports for every preset and
:mod:`toymodels.drift` turns into an envelope.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WEIGHT_ATOL = 1e-5
NUMBER_RTOL, NUMBER_ATOL = 1e-4, 1e-6
CROSS_MACHINE_FACTOR = 2.0
# Config files are compared exactly, but a preset's numbers are computed on the host (np.logspace, powers):
# numpy's SIMD kernels for pow/exp/log are chosen by CPU and agree to a few ulp, not bit for bit (tms-phase's
# importance 0.6309573444801934 on one AVX-512 machine is ...932 on another). Across machines a config
# float may therefore differ by CONFIG_ULPS ulp; on the committed machine class, by none.
CONFIG_ULPS = 4
# (rtol, atol) of a rate-derived number, by its unit: about four evaluation samples (one is 1.3e-4 of a rate
# at an 8192 batch) as a fraction or in percent / percentage points; a relative increase in percent
# (one sample is 0.5 points at a 2.4% base rate); statistics over instances (correlations, the fraction of
# instances whose rate rose, the share of the amplification removed).
RATE_TOLERANCE = {"fraction": (0.0, 5e-4), "pp": (0.0, 0.05), "rel": (0.02, 1.0), "stat": (0.02, 0.05)}
# Keys whose values measure time or name this machine's paths: never compared. Grepped from what
# experiment.run, finetune.summarize, defences.measure_overhead and the suite summaries write.
IGNORED_KEYS = frozenset({
    "train_seconds", "wall_seconds", "instance_steps_per_second",  # experiment.run, finetune.summarize
    "elapsed_s",  # metrics.jsonl rows
    "pretrained_from",  # experiment.run with finetune.from_run: an absolute path
    # defences.measure_overhead (summary rows' "overhead") and the regularisation-cost suite summary
    "ratio_median", "ratios", "step_ms", "step_ms_median", "reference_step_ms", "reference_step_ms_median",
    "extra_ms_median",
    "seconds",  # audit: the crosscoder diff's wall time per variant
    "devices", "processes",  # experiment.run: the devices and jax.distributed processes (the machine, not the result)
})
COMPARED_JSON = ("summary.json", "metrics.jsonl")
EXACT_JSON = ("config.json", "suite.json")
# differences no machine causes: a key or an array that one side lacks, another shape or dtype
STRUCTURAL = ("missing in the rerun", "not in the committed file", "shape/dtype: ")
# versions, devices, command line, start time; the run directory's marker (PID, times) and lock; the
# measured drift envelope (about the results, not one)
SKIPPED_FILES = ("env.json", ".toymodels-run.json", ".toymodels.lock", "drift.json")
N_WORST = 5


@dataclass
class Mode:
    """How strictly to compare: ``exact`` (same machine class), else base tolerances widened by
    ``CROSS_MACHINE_FACTOR`` x the measured ``envelope`` ({file: {path: |Δ|}}, may be empty)."""

    exact: bool = False
    envelope: dict = field(default_factory=dict)

    def allowed(self, file: str, path: str, base: float) -> float:
        if self.exact:
            return 0.0
        return base + CROSS_MACHINE_FACTOR * float(self.envelope.get(file, {}).get(kind_of(path), 0.0))


def kind_of(path: str) -> str:
    """A number's kind: its path with every list index as ``[*]`` (``[102].rel_error[7][0]`` ->
    ``[*].rel_error[*][*]``). The envelope is kept per kind, not per number: one rerun per target is one
    sample of each number's drift, but thousands of samples of its kind's (a metric over steps and
    instances), so the kind's maximum is a far steadier bound; and drift.json stays small."""
    return re.sub(r"\[\d+\]", "[*]", path)


@dataclass
class FileReport:
    """One committed file against its rerun: the largest |Δ| over compared numbers, the worst
    differences as (path, what) pairs (largest excess over tolerance first), and the drift map."""

    name: str
    ok: bool
    max_diff: float = 0.0
    n_diffs: int = 0
    worst: list[tuple[str, str]] = field(default_factory=list)
    n_compared: int = 0
    n_moved: int = 0
    drift: dict[str, float] = field(default_factory=dict)
    structural: bool = False   # some difference is one no machine causes (:data:`STRUCTURAL`)


def fmt_path(path: tuple) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".") or "<root>"


def number_tolerance(path: tuple) -> tuple[float, float] | None:
    """``(rtol, atol)`` for the number at ``path`` (a tuple of keys and list indices), or None if ignored."""
    keys = [k for k in path if isinstance(k, str)]
    if any(k in IGNORED_KEYS for k in keys):
        return None
    tokens = [set(k.split("_")) for k in keys]
    if not any("rate" in t or "amplification" in t for t in tokens):
        return NUMBER_RTOL, NUMBER_ATOL
    last = tokens[-1] if tokens else set()
    if last & {"pearson", "spearman", "fraction", "amplification"} or "correlations" in keys:
        unit = "stat"
    elif any("rel" in t for t in tokens):
        unit = "rel"
    elif any(t & {"pp", "pct"} for t in tokens):
        unit = "pp"
    else:
        unit = "fraction"
    return RATE_TOLERANCE[unit]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare_json(committed, rerun, path: tuple = (), exact: bool = False, mode: Mode | None = None,
                 file: str = "", drift: dict | None = None, ulps: int = 0) -> tuple[float, list]:
    """Walk two JSON values. Returns (max |Δ| over compared numbers, [(excess, path, what), ...]) where
    excess = |Δ| / tolerance (inf for a structural or string difference). ``exact`` compares every number
    exactly (config files); ``mode`` sets the tolerance of the numbers of ``file``; each nonzero |Δ| is
    recorded in ``drift`` (path -> |Δ|) when given; ``ulps`` lets an exactly compared float differ by that
    many units in the last place (:data:`CONFIG_ULPS`, across machines)."""
    diffs: list = []
    worst = 0.0
    mode = mode or Mode()

    def walk(a, b, p):
        nonlocal worst
        tol = (0.0, 0.0) if exact else number_tolerance(p)
        if tol is None:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(a.keys() ^ b.keys()):
                if exact or number_tolerance(p + (k,)) is not None:
                    diffs.append((math.inf, fmt_path(p + (k,)),
                                  "missing in the rerun" if k in a else "not in the committed file"))
            for k in a.keys() & b.keys():
                walk(a[k], b[k], p + (k,))
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                diffs.append((math.inf, fmt_path(p), f"length {len(a)} committed, {len(b)} rerun"))
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, p + (i,))
        elif _is_number(a) and _is_number(b):
            if math.isnan(a) or math.isnan(b):
                if not (math.isnan(a) and math.isnan(b)):
                    diffs.append((math.inf, fmt_path(p), f"{a!r} committed, {b!r} rerun"))
                return
            d = abs(a - b) if a != b else 0.0  # a != b first: inf - inf
            if d > 0:
                worst = max(worst, d)
                if drift is not None:
                    drift[fmt_path(p)] = d
            allowed = (ulps * math.ulp(abs(a)) if isinstance(a, float) else 0.0) if exact else \
                mode.allowed(file, fmt_path(p), tol[1] + tol[0] * abs(a))
            if d > allowed:
                diffs.append((d / allowed if allowed else math.inf, fmt_path(p),
                              f"{a!r} committed, {b!r} rerun (|Δ| {d:.3g} > {allowed:.3g})"))
        elif a != b or type(a) is not type(b):
            diffs.append((math.inf, fmt_path(p), f"{_short(a)} committed, {_short(b)} rerun"))

    walk(committed, rerun, path)
    diffs.sort(key=lambda d: -d[0])
    return worst, diffs


def _short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."


def compare_npz(committed: Path, rerun: Path, atol: float = WEIGHT_ATOL, mode: Mode | None = None,
                file: str = "", drift: dict | None = None, moved: list | None = None) -> tuple[float, list]:
    """Every array of ``committed`` against ``rerun``: (max |Δ|, [(excess, key, what), ...]); each array's
    largest element |Δ| goes into ``drift`` (key -> |Δ|) when nonzero, and the number of elements that
    moved is added to ``moved[0]``."""
    diffs, worst = [], 0.0
    mode = mode or Mode()
    za, zb = _npz(committed), _npz(rerun)
    for k in sorted(set(za) - set(zb)):
        diffs.append((math.inf, k, "missing in the rerun"))
    for k in sorted(set(zb) - set(za)):
        diffs.append((math.inf, k, "not in the committed file"))
    for k in sorted(set(za) & set(zb)):
        a, b = za[k], zb[k]
        if a.shape != b.shape or a.dtype != b.dtype:
            diffs.append((math.inf, k, f"shape/dtype: {a.dtype}{list(a.shape)} committed, {b.dtype}{list(b.shape)} rerun"))
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if not np.array_equal(np.isnan(a64), np.isnan(b64)):
            diffs.append((math.inf, k, "NaN in different places"))
            continue
        d = np.abs(np.where(np.isnan(a64), 0.0, a64 - b64))
        if moved is not None:
            moved[0] += int(np.count_nonzero(d))
        if d.size and d.max() > 0:
            i = np.unravel_index(np.argmax(d), d.shape)
            worst = max(worst, float(d[i]))
            if drift is not None:
                drift[k] = float(d[i])
            allowed = mode.allowed(file, k, atol)
            if d[i] > allowed:
                diffs.append((float(d[i]) / allowed if allowed else math.inf, f"{k}[{', '.join(map(str, i))}]",
                              f"{a64[i]:.8g} committed, {b64[i]:.8g} rerun (|Δ| {d[i]:.3g} > {allowed:.3g}; "
                              f"{int((d > allowed).sum())} of {d.size} elements)"))
    diffs.sort(key=lambda d: -d[0])
    return worst, diffs


def resolved(path: Path):
    """A result JSON file as compared: a ``config.json`` as the Config it resolves to (so a config field
    added since, with its default, is not a difference: the committed run means the same thing), any
    other file as written."""
    if path.name == "config.json":
        from .config import Config

        return jsonable(Config.from_dict(read_json(path)).to_dict())
    return read_json(path)


def jsonable(d) -> object:
    from .io.runs import to_jsonable

    return json.loads(json.dumps(to_jsonable(d)))


def read_json(path: Path):
    """A result's JSON (or JSON lines) through the run readers (:mod:`toymodels.io.safe`: no link, no FIFO,
    bounded size and depth): a rerun made elsewhere is untrusted input."""
    from .io import runs

    if path.suffix == ".jsonl":
        return runs.read_metrics(path)
    return runs.read_json(path)


def _npz(path: Path) -> dict:
    from .io import runs

    return runs.read_npz(path)


def _count(v) -> int:
    if isinstance(v, dict):
        return sum(_count(x) for x in v.values())
    if isinstance(v, list):
        return sum(_count(x) for x in v)
    return 1


def compared_files(committed: Path) -> list[Path]:
    """The committed files a reproduction compares (recursively, suites included)."""
    return sorted(p for p in committed.rglob("*") if p.is_file()
                  and not (p.name in SKIPPED_FILES or p.suffix == ".md"
                           or {"figures", ".checkpoint"} & set(p.relative_to(committed).parts)))


def compare_dirs(committed: str | Path, rerun: str | Path, mode: Mode | None = None) -> list[FileReport]:
    """Every committed file under ``committed`` against the same path under ``rerun``. A committed file
    the rerun did not write is a difference; files the rerun wrote that are not committed are not
    (results/ keeps only small files)."""
    committed, rerun = Path(committed), Path(rerun)
    out = []
    for f in compared_files(committed):
        rel = str(f.relative_to(committed))
        g = rerun / rel
        drift: dict[str, float] = {}
        if not g.is_file():
            out.append(FileReport(rel, ok=False, n_diffs=1, worst=[("", "not written by the rerun")], structural=True))
            continue
        moved = [0]
        if f.suffix == ".npz":
            worst, diffs = compare_npz(f, g, mode=mode, file=rel, drift=drift, moved=moved)
            n = sum(v.size for v in _npz(f).values())
        elif f.name in COMPARED_JSON + EXACT_JSON:
            a = resolved(f)
            worst, diffs = compare_json(a, resolved(g), exact=f.name in EXACT_JSON, mode=mode, file=rel, drift=drift,
                                        ulps=0 if (mode or Mode()).exact else CONFIG_ULPS)
            n = _count(a)
            moved = [len(drift)]
        else:
            out.append(FileReport(rel, ok=False, n_diffs=1, worst=[("", "unknown result file; not compared")],
                                  structural=True))
            continue
        out.append(FileReport(rel, ok=not diffs, max_diff=worst, n_diffs=len(diffs),
                              worst=[(p, what) for _, p, what in diffs[:N_WORST]], n_compared=n, n_moved=moved[0],
                              drift=drift, structural=any(what.startswith(STRUCTURAL) for _, _, what in diffs)))
    return out
