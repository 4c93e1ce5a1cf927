"""Rerun committed results from their own config.json and compare them with the files on disk.

``check(result_dir)`` reruns ``results/<name>/`` with the current code (a single run from its
``config.json``; a suite from ``suite.json`` and each member's ``config.json``, through
:func:`toymodels.experiment.run_suite`, which also rebuilds the suite's ``summary.json``) and compares
(:mod:`toymodels.compare`):

* every array of every committed ``*.npz``: same keys, shapes and dtypes, values within tolerance;
* ``summary.json`` and ``metrics.jsonl``: the same keys, list lengths, strings, bools and nulls; numbers
  within tolerance; keys in ``IGNORED_KEYS`` (timings, paths) skipped;
* ``config.json`` as the Config it resolves to, and ``suite.json``, exactly (a renamed field or another
  value is a difference; a field added since, at its default, is not);
* separately, the committed config against the current preset's (``presets.get(name)``): a result from
  an old preset definition is stale even when the current code reproduces it.

**Which tolerance** depends on the machine. XLA compiles for the host CPU, so bit-identity holds on one
machine class only (:mod:`toymodels.machine`). Every run's ``env.json`` records the CPU (model, cores, the
ISA flags XLA uses, ``XLA_FLAGS``) and the jax/jaxlib versions:

* the rerun's machine has the committed ``env.json``'s fingerprint: **exact**, any difference is a stale
  result (the code changed the number, or the file was edited);
* another machine, or an ``env.json`` without a CPU record: the cross-machine tolerance of
  :mod:`toymodels.compare`, widened by the envelope in ``drift.json`` when one was measured for exactly
  these committed files (:mod:`toymodels.drift`). A number beyond it is reported as *beyond the
  cross-machine tolerance*: a stale result or a larger machine difference, which only a rerun on the
  committed machine class can tell apart. The check never advises overwriting committed results.

Not compared: ``env.json`` (the machine), ``drift.json``, the run directory's marker and lock, figures,
and the suites' ``*.md`` tables (printed from ``summary.json``, which is compared, and holding timings).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import machine
from .compare import (  # noqa: F401 - re-exported: the reproduction's public names
    CONFIG_ULPS,
    CROSS_MACHINE_FACTOR,
    IGNORED_KEYS,
    N_WORST,
    NUMBER_ATOL,
    NUMBER_RTOL,
    RATE_TOLERANCE,
    SKIPPED_FILES,
    WEIGHT_ATOL,
    FileReport,
    Mode,
    compare_dirs,
    compare_json,
    compare_npz,
    compared_files,
    jsonable,
    number_tolerance,
    read_json,
    resolved,
)

CHEAP = ("analogy-15deg", "tms-intro")
DRIFT_FILE = "drift.json"


@dataclass
class Report:
    """A committed result directory against its rerun, plus the check of its config against the preset.
    ``machine`` says how it was compared: "same" (exact), "other" (cross-machine tolerance) or "unknown"
    (the committed env.json records no CPU); ``envelope`` whether a measured drift.json widened it."""

    name: str
    files: list[FileReport] = field(default_factory=list)
    preset_diffs: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0
    machine: str = "unknown"
    committed_on: str = ""
    rerun_on: str = ""
    envelope: str = "none"

    @property
    def ok(self) -> bool:
        return not self.error and not self.preset_diffs and all(f.ok for f in self.files)

    @property
    def verdict(self) -> str:
        """"reproduced", "stale" (the config or the code changed: certain) or "beyond-tolerance" (numbers
        moved more than the cross-machine tolerance on another machine: stale or a machine difference)."""
        if self.ok:
            return "reproduced"
        if self.error or self.preset_diffs or self.machine == "same":
            return "stale"
        # a key or an array shape that differs, no machine causes; a string or a list length can (a verdict or
        # a list of barely represented features whose number crossed a threshold on the other machine)
        structural = any(f.structural for f in self.files)
        return "stale" if structural else "beyond-tolerance"


# --- which machine ---------------------------------------------------------------------------------
def _env_files(result_dir: Path) -> list[Path]:
    return [result_dir / "env.json"] if (result_dir / "env.json").is_file() else \
        sorted(result_dir.glob("*/env.json"))


def committed_fingerprint(result_dir: str | Path) -> dict | None:
    """The machine fingerprint of the committed result (a suite: its members', which must agree), or
    None when an env.json is missing, unreadable or records no CPU."""
    from .io import runs

    fps = []
    for p in _env_files(Path(result_dir)):
        try:   # the checked reader: a rerun from elsewhere is untrusted (no link, no FIFO, bounded)
            fps.append(machine.fingerprint(runs.read_json(p)))
        except (OSError, ValueError):
            return None
    if not fps or any(not machine.same_machine(fp, fps[0]) for fp in fps):
        return None
    return fps[0]


def this_fingerprint() -> dict:
    """The fingerprint of the machine (and jax) this process runs on."""
    from .io.runs import env_info

    return machine.fingerprint(env_info())


def results_digest(result_dir: str | Path) -> str:
    """sha256 over the compared committed files (names and bytes): what a drift.json was measured on."""
    result_dir = Path(result_dir)
    h = hashlib.sha256()
    for f in compared_files(result_dir):
        h.update(str(f.relative_to(result_dir)).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def read_envelope(result_dir: str | Path) -> tuple[dict, str]:
    """({file: {path: |Δ|}}, status) from ``drift.json``: status "measured" when it was measured on
    exactly these committed files, "stale" when on others (then it is not used), "none" without one."""
    path = Path(result_dir) / DRIFT_FILE
    if not path.is_file():
        return {}, "none"
    from .io import runs

    try:
        d = runs.read_json(path)
        if d.get("results_sha256") != results_digest(result_dir):
            return {}, "stale"
        return {f: {p: float(v) for p, v in m.items()} for f, m in d["envelope"].items()}, "measured"
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return {}, "stale"


def mode_for(result_dir: str | Path, here: dict | None = None) -> tuple[Mode, Report]:
    """The comparison mode for ``result_dir`` on this machine, and a Report naming both machines."""
    result_dir = Path(result_dir)
    committed, here = committed_fingerprint(result_dir), here or this_fingerprint()
    report = Report(result_dir.name, committed_on=machine.describe(committed), rerun_on=machine.describe(here))
    if machine.same_machine(committed, here):
        report.machine = "same"
        return Mode(exact=True), report
    report.machine = "unknown" if committed is None else "other"
    envelope, report.envelope = read_envelope(result_dir)
    return Mode(envelope=envelope), report


# --- rerun -----------------------------------------------------------------------------------------
def load_committed(result_dir: str | Path):
    """The Config (single run) or presets.Suite (suite.json) that the committed files were written from."""
    from .config import Config
    from .presets import Suite

    result_dir = Path(result_dir)
    if (result_dir / "suite.json").exists():
        s = json.loads((result_dir / "suite.json").read_text())
        members = tuple(Config.from_dict(read_json(result_dir / m / "config.json")) for m in s["members"])
        return Suite(s["suite"], members, tuple(s["plots"]), s.get("notes", ""), s.get("meta", {}), s.get("summary", ""))
    return Config.from_dict(read_json(result_dir / "config.json"))


def preset_diffs(result_dir: str | Path, name: str | None = None, ulps: int = 0) -> list[str]:
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
        _, diffs = compare_json(resolved(path), jsonable(obj.to_dict()), exact=True, ulps=ulps)
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
          echo: Callable[[str], None] = lambda s: None, here: dict | None = None) -> Report:
    """Rerun ``result_dir`` (into ``keep/<name>`` if given, else a temporary directory that is removed)
    and compare it in the mode this machine calls for (:func:`mode_for`); never raises for a failed
    rerun, which is reported instead. ``here`` overrides this machine's fingerprint (tests)."""
    result_dir = Path(result_dir)
    mode, report = mode_for(result_dir, here)
    report.preset_diffs = preset_diffs(result_dir, ulps=0 if mode.exact else CONFIG_ULPS)
    tmp = None if keep else tempfile.mkdtemp(prefix=f"reproduce-{result_dir.name}-")
    out = Path(keep) / result_dir.name if keep else Path(tmp) / result_dir.name
    t0 = time.perf_counter()
    try:
        rerun(result_dir, out, echo, overwrite=keep is not None)
        report.files = compare_dirs(result_dir, out, mode)
    except Exception as e:  # noqa: BLE001 - a stale config or a crash is a failed reproduction, reported
        report.error = f"{type(e).__name__}: {e}"
    finally:
        report.seconds = time.perf_counter() - t0
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def compare_existing(result_dir: str | Path, rerun_dir: str | Path) -> Report:
    r"""Compare a finished rerun (e.g. made on another machine, or by a gallery run) with the committed
    result, in the mode the two ``env.json``\ s call for; nothing is recomputed."""
    result_dir, rerun_dir = Path(result_dir), Path(rerun_dir)
    rerun_fp = committed_fingerprint(rerun_dir)
    mode, report = mode_for(result_dir, rerun_fp)
    if rerun_fp is None:   # the rerun's machine is unknown: never exact
        envelope, report.envelope = read_envelope(result_dir)
        mode, report.machine = Mode(envelope=envelope), "unknown"
    report.rerun_on = machine.describe(rerun_fp)
    report.preset_diffs = preset_diffs(result_dir, ulps=0 if mode.exact else CONFIG_ULPS)
    if not rerun_dir.is_dir():
        report.error = f"no rerun at {rerun_dir}"
        return report
    report.files = compare_dirs(result_dir, rerun_dir, mode)
    return report


_MODE_TEXT = {
    "same": "same machine class as the committed run: compared exactly (bit for bit)",
    "other": "another machine than the committed run's: cross-machine tolerance",
    "unknown": "the committed run's machine is not recorded (env.json has no 'cpu'): cross-machine tolerance",
}
_ENVELOPE_TEXT = {
    "measured": f" widened by {CROSS_MACHINE_FACTOR:g} x the drift measured across XLA CPU targets (drift.json)",
    "stale": " (drift.json was measured on other committed files and is not used: remeasure it with "
             "experiments/reproduce.py --drift)",
    "none": " (no drift.json: base tolerances only)",
}


def explain(r: Report) -> str:
    """What a failed check means, in words; never advice to overwrite the committed files."""
    if r.verdict == "stale" and (r.preset_diffs or r.error):
        return ("STALE: the committed config no longer matches the preset, or the rerun failed. The committed "
                "files were made by other code or another preset definition.")
    if r.verdict == "stale" and r.machine == "same":
        return ("STALE: this machine is the committed run's machine class, where reruns are bit-identical, and "
                "the numbers differ: the current code computes something else than the code that made the "
                "committed files (or a file was edited). Find the change (git log) before deciding which is right.")
    if r.verdict == "stale":
        return ("STALE: a file differs in structure (keys, lengths, strings, shapes), which no machine "
                "difference causes: the code or the committed files changed.")
    return ("BEYOND THE CROSS-MACHINE TOLERANCE: this machine differs from the committed run's "
            f"({r.committed_on}), and some numbers moved more than the derived tolerance. This is either a "
            "stale result or a larger machine difference than the XLA CPU targets showed; rerunning on the "
            "committed machine class tells them apart (there, reruns are exact). Do not replace the committed "
            "results on the strength of this check alone.")


def format_report(reports: list[Report]) -> str:
    """Short text: one line per result and per file (its largest drift), the worst paths of a failing
    file, and what a failure means."""
    lines = []
    for r in reports:
        lines.append(f"{r.name}: {'ok' if r.ok else 'FAIL'} (rerun {r.seconds:.0f} s)")
        lines.append(f"  machine: {_MODE_TEXT[r.machine]}" + ("" if r.machine == "same" else _ENVELOPE_TEXT[r.envelope]))
        if r.machine != "same":
            lines.append(f"    committed on {r.committed_on}")
            lines.append(f"    rerun on     {r.rerun_on}")
        if r.error:
            lines.append(f"  rerun failed: {r.error}")
        if r.preset_diffs:
            lines.append(f"  committed config differs from presets.get({r.name!r}) ({len(r.preset_diffs)}):")
            lines += [f"    {d}" for d in r.preset_diffs[:N_WORST]]
        for f in r.files:
            drift = ("bit-identical" if not f.drift else
                     f"{f.n_moved} of {f.n_compared} numbers moved, max |Δ| {f.max_diff:.2g}")
            lines.append(f"  {'ok  ' if f.ok else 'FAIL'} {f.name:<40} {drift}"
                         + (f", {f.n_diffs} outside tolerance" if f.n_diffs else ""))
            lines += [f"       {p}: {what}" if p else f"       {what}" for p, what in f.worst]
        if not r.ok:
            lines.append(f"  {explain(r)}")
    n_bad = sum(not r.ok for r in reports)
    counts = {v: sum(r.verdict == v for r in reports) for v in ("stale", "beyond-tolerance")}
    lines.append(f"{len(reports) - n_bad} of {len(reports)} reproduced"
                 + "".join(f"; {n} {v}" for v, n in counts.items() if n))
    return "\n".join(lines)


def drift_table(reports: list[Report]) -> dict:
    """{result: {file: {path: |Δ|}}}: every number that moved in each rerun (for --json)."""
    return {r.name: {"machine": r.machine, "verdict": r.verdict,
                     "files": {f.name: {"n_compared": f.n_compared, "n_moved": f.n_moved, "max_abs_diff": f.max_diff,
                                        "n_outside_tolerance": f.n_diffs, "drift": f.drift} for f in r.files}}
            for r in reports}
