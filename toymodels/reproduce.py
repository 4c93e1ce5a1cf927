"""Rerun committed results from their own config.json and compare them with the files on disk.

``check(result_dir)`` reruns ``results/<name>/`` with the current code (a single run from its
``config.json``; a suite from ``suite.json`` and each member's ``config.json``, through
:func:`toymodels.experiment.run_suite`, which also rebuilds the suite's ``summary.json``) and compares:

* every array of every committed ``*.npz``: same keys, shapes and dtypes, max |Δ| <= ``WEIGHT_ATOL``;
* ``summary.json`` and ``metrics.jsonl``: the same keys, list lengths, strings, bools and nulls; numbers
  within the tolerance of :func:`number_tolerance`; keys in ``IGNORED_KEYS`` (timings, paths) skipped;
* ``config.json`` as the Config it resolves to, and ``suite.json``, exactly (a renamed field or another
  value is a difference; a field added since, at its default, is not);
* separately, the committed config against the current preset's (``presets.get(name)``): a result from
  an old preset definition is stale even when the current code reproduces it.

Not compared: ``env.json`` (the machine), the run directory's marker and lock, figures, and the suites'
``*.md`` tables (printed from ``summary.json``, which is compared, and holding timings).

Tolerances (measured on this project's 2-core CPU, jax 0.10.2, in /tmp with a frozen copy of the code):
two runs of analogy-15deg are bit-identical in every array and every summary number, so on the machine
CI runs on any difference is a change. Weights: ``WEIGHT_ATOL`` = 1e-5, 50x the ~2e-7 that
ENGINEERING.md measures between jax versions and 30x the 3.6e-7 between the committed analogy-15deg (older
code) and the current code; another restart or seed moves weights by O(1). Another CPU code path
(``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2`` or ``AVX``: no FMA) left tms-intro within 3.3e-7 but moved
analogy-15deg by 2.4e-5 (pretrained), 4.5e-5 (fine-tuned) and 4.9e-4 (mid-fine-tuning trajectory):
that is reported as a difference; regenerate results/ on the machine kind CI runs on. Summary and
metrics numbers: ``rtol`` 1e-4, ``atol`` 1e-6 (values that are zero up to float noise, e.g. the std of a
pinned 15° angle, ~4e-7). Rates are counts over a finite evaluation batch: one sample of an 8192 batch
with x_j = 0 is 1.3e-4 of a rate (0.013 pp), and slightly different weights flip one (the no-FMA run
did, in metrics.jsonl), so a number whose key names a rate (``rate``, ``rate_change_pp``, ``fraction_rate_up``,
``..._vs_rate_change_pp``; and ``amplification_removed``) gets ``RATE_TOLERANCE``: about four samples
in its own unit (5e-4 of a rate, 0.05 pp), plus 2% for relative increases and statistics over instances. (Correlations against a pretrained cos that is
constant up to float noise, e.g. a pinned pair, are not written at all: they would be noise.)
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WEIGHT_ATOL = 1e-5
NUMBER_RTOL, NUMBER_ATOL = 1e-4, 1e-6
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
    "devices", "processes",  # experiment.run: the machine the run was sharded over (core.sharding.topology)
})
COMPARED_JSON = ("summary.json", "metrics.jsonl")
EXACT_JSON = ("config.json", "suite.json")
# versions, devices, command line, start time; the run directory's marker (PID, times) and lock
SKIPPED_FILES = ("env.json", ".toymodels-run.json", ".toymodels.lock")
N_WORST = 5
CHEAP = ("analogy-15deg", "tms-intro")


@dataclass
class FileReport:
    """One committed file against its rerun: the largest |Δ| over compared numbers, and the worst
    differences as (path, what) pairs, largest excess over tolerance first."""

    name: str
    ok: bool
    max_diff: float = 0.0
    n_diffs: int = 0
    worst: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Report:
    """A committed result directory against its rerun, plus the check of its config against the preset."""

    name: str
    files: list[FileReport] = field(default_factory=list)
    preset_diffs: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error and not self.preset_diffs and all(f.ok for f in self.files)


# --- comparison ------------------------------------------------------------------------------------
def _fmt_path(path: tuple) -> str:
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


def compare_json(committed, rerun, path: tuple = (), exact: bool = False) -> tuple[float, list]:
    """Walk two JSON values. Returns (max |Δ| over compared numbers, [(excess, path, what), ...]) where
    excess = |Δ| / tolerance (inf for a structural or string difference)."""
    diffs: list = []
    worst = 0.0

    def walk(a, b, p):
        nonlocal worst
        tol = (0.0, 0.0) if exact else number_tolerance(p)
        if tol is None:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(a.keys() ^ b.keys()):
                if exact or number_tolerance(p + (k,)) is not None:
                    diffs.append((math.inf, _fmt_path(p + (k,)),
                                  "missing in the rerun" if k in a else "not in the committed file"))
            for k in a.keys() & b.keys():
                walk(a[k], b[k], p + (k,))
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                diffs.append((math.inf, _fmt_path(p), f"length {len(a)} committed, {len(b)} rerun"))
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, p + (i,))
        elif _is_number(a) and _is_number(b):
            if math.isnan(a) or math.isnan(b):
                if not (math.isnan(a) and math.isnan(b)):
                    diffs.append((math.inf, _fmt_path(p), f"{a!r} committed, {b!r} rerun"))
                return
            d = abs(a - b) if a != b else 0.0  # a != b first: inf - inf
            if d > 0:
                worst = max(worst, d)
            allowed = tol[1] + tol[0] * abs(a)
            if d > allowed:
                diffs.append((d / allowed if allowed else math.inf, _fmt_path(p),
                              f"{a!r} committed, {b!r} rerun (|Δ| {d:.3g} > {allowed:.3g})"))
        elif a != b or type(a) is not type(b):
            diffs.append((math.inf, _fmt_path(p), f"{_short(a)} committed, {_short(b)} rerun"))

    walk(committed, rerun, path)
    diffs.sort(key=lambda d: -d[0])
    return worst, diffs


def _short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."


def compare_npz(committed: Path, rerun: Path, atol: float = WEIGHT_ATOL) -> tuple[float, list]:
    """Every array of ``committed`` against ``rerun``: (max |Δ|, [(excess, key, what), ...])."""
    diffs, worst = [], 0.0
    with np.load(committed) as za, np.load(rerun) as zb:
        for k in sorted(set(za.files) - set(zb.files)):
            diffs.append((math.inf, k, "missing in the rerun"))
        for k in sorted(set(zb.files) - set(za.files)):
            diffs.append((math.inf, k, "not in the committed file"))
        for k in sorted(set(za.files) & set(zb.files)):
            a, b = za[k], zb[k]
            if a.shape != b.shape or a.dtype != b.dtype:
                diffs.append((math.inf, k, f"{a.dtype}{list(a.shape)} committed, {b.dtype}{list(b.shape)} rerun"))
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            if not np.array_equal(np.isnan(a64), np.isnan(b64)):
                diffs.append((math.inf, k, "NaN in different places"))
                continue
            d = np.abs(np.where(np.isnan(a64), 0.0, a64 - b64))
            if d.size and d.max() > 0:
                i = np.unravel_index(np.argmax(d), d.shape)
                worst = max(worst, float(d[i]))
                if d[i] > atol:
                    diffs.append((float(d[i]) / atol, f"{k}[{', '.join(map(str, i))}]",
                                  f"{a64[i]:.8g} committed, {b64[i]:.8g} rerun (|Δ| {d[i]:.3g} > {atol:g}; "
                                  f"{int((d > atol).sum())} of {d.size} elements)"))
    diffs.sort(key=lambda d: -d[0])
    return worst, diffs


def _resolved(path: Path):
    """A result JSON file as compared: a ``config.json`` as the Config it resolves to (so a config field
    added since, with its default, is not a difference: the committed run means the same thing), any
    other file as written."""
    if path.name == "config.json":
        from .config import Config

        return _jsonable(Config.from_dict(_read_json(path)).to_dict())
    return _read_json(path)


def _read_json(path: Path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def _file_report(name: str, worst: float, diffs: list) -> FileReport:
    return FileReport(name, ok=not diffs, max_diff=worst, n_diffs=len(diffs),
                      worst=[(p, what) for _, p, what in diffs[:N_WORST]])


def compare_dirs(committed: str | Path, rerun: str | Path) -> list[FileReport]:
    """Every committed file under ``committed`` (recursively, suites included) against the same path
    under ``rerun``. A committed file the rerun did not write is a difference; files the rerun wrote
    that are not committed are not (results/ keeps only small files)."""
    committed, rerun = Path(committed), Path(rerun)
    out = []
    for f in sorted(p for p in committed.rglob("*") if p.is_file()):
        rel, g = f.relative_to(committed), rerun / f.relative_to(committed)
        if f.name in SKIPPED_FILES or f.suffix == ".md" or {"figures", ".checkpoint"} & set(rel.parts):
            continue
        if not g.is_file():
            out.append(FileReport(str(rel), ok=False, n_diffs=1, worst=[("", "not written by the rerun")]))
        elif f.suffix == ".npz":
            out.append(_file_report(str(rel), *compare_npz(f, g)))
        elif f.name in COMPARED_JSON + EXACT_JSON:
            out.append(_file_report(str(rel), *compare_json(_resolved(f), _resolved(g), exact=f.name in EXACT_JSON)))
        else:
            out.append(FileReport(str(rel), ok=False, n_diffs=1, worst=[("", "unknown result file; not compared")]))
    return out


# --- rerun -----------------------------------------------------------------------------------------
def _jsonable(d) -> object:
    from .io.runs import to_jsonable

    return json.loads(json.dumps(to_jsonable(d)))


def load_committed(result_dir: str | Path):
    """The Config (single run) or presets.Suite (suite.json) that the committed files were written from."""
    from .config import Config
    from .presets import Suite

    result_dir = Path(result_dir)
    if (result_dir / "suite.json").exists():
        s = json.loads((result_dir / "suite.json").read_text())
        members = tuple(Config.from_dict(_read_json(result_dir / m / "config.json")) for m in s["members"])
        return Suite(s["suite"], members, tuple(s["plots"]), s.get("notes", ""), s.get("meta", {}), s.get("summary", ""))
    return Config.from_dict(_read_json(result_dir / "config.json"))


def preset_diffs(result_dir: str | Path, name: str | None = None) -> list[str]:
    """Where the committed config.json (or suite.json and member configs) differ from ``presets.get(name)``
    today; [] when they are equal."""
    from . import presets

    result_dir = Path(result_dir)
    name = name or result_dir.name
    if name not in presets.PRESETS:
        return [f"no preset named {name!r}"]
    cur = presets.get(name)
    pairs = [(result_dir / "config.json", cur)] if not hasattr(cur, "members") else \
        [(result_dir / "suite.json", cur)] + [(result_dir / m.name / "config.json", m) for m in cur.members]
    out = []
    for path, obj in pairs:
        rel = path.relative_to(result_dir)
        if not path.exists():
            out.append(f"{rel}: not committed (the preset has it)")
            continue
        _, diffs = compare_json(_resolved(path), _jsonable(obj.to_dict()), exact=True)
        out += [f"{rel}: {p}: {what.replace('rerun', 'preset')}" for _, p, what in diffs]
    return out


def rerun(result_dir: str | Path, out_dir: str | Path, echo: Callable[[str], None] = lambda s: None,
          overwrite: bool = False) -> Path:
    """Rerun the committed result in ``result_dir`` from its own config files into ``out_dir``."""
    from . import experiment
    from .io import runs

    cfg = load_committed(result_dir)
    with runs.open_run(out_dir, overwrite=overwrite) as run:   # marked, locked; overwrite only our own files
        if hasattr(cfg, "members"):
            return experiment.run_suite(cfg, run.path, progress=False, echo=echo)
        return experiment.run(cfg, run.path, progress=False, echo=echo)


def check(result_dir: str | Path, keep: str | Path | None = None,
          echo: Callable[[str], None] = lambda s: None) -> Report:
    """Rerun ``result_dir`` (into ``keep/<name>`` if given, else a temporary directory that is removed)
    and compare; never raises for a failed rerun, which is reported instead."""
    result_dir = Path(result_dir)
    report = Report(result_dir.name, preset_diffs=preset_diffs(result_dir))
    tmp = None if keep else tempfile.mkdtemp(prefix=f"reproduce-{result_dir.name}-")
    out = Path(keep) / result_dir.name if keep else Path(tmp) / result_dir.name
    t0 = time.perf_counter()
    try:
        rerun(result_dir, out, echo, overwrite=keep is not None)
        report.files = compare_dirs(result_dir, out)
    except Exception as e:  # noqa: BLE001 - a stale config or a crash is a failed reproduction, reported
        report.error = f"{type(e).__name__}: {e}"
    finally:
        report.seconds = time.perf_counter() - t0
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def format_report(reports: list[Report]) -> str:
    """Short text: one line per result and per failing file, with the worst paths."""
    lines = []
    for r in reports:
        lines.append(f"{r.name}: {'ok' if r.ok else 'FAIL'} (rerun {r.seconds:.0f} s)")
        if r.error:
            lines.append(f"  rerun failed: {r.error}")
        if r.preset_diffs:
            lines.append(f"  committed config differs from presets.get({r.name!r}) ({len(r.preset_diffs)}):")
            lines += [f"    {d}" for d in r.preset_diffs[:N_WORST]]
        for f in r.files:
            lines.append(f"  {'ok  ' if f.ok else 'FAIL'} {f.name:<40} max |Δ| {f.max_diff:.2g}"
                         + (f", {f.n_diffs} outside tolerance" if f.n_diffs else ""))
            lines += [f"       {p}: {what}" if p else f"       {what}" for p, what in f.worst]
    n_bad = sum(not r.ok for r in reports)
    lines.append(f"{len(reports) - n_bad} of {len(reports)} reproduced" + (f"; {n_bad} stale" if n_bad else ""))
    return "\n".join(lines)
