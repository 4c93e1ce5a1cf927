"""Issue 16: a run directory is untrusted input. The catalogue of :mod:`test_bad_inputs` (one stderr line,
exit 2, no traceback, nothing that existed modified) extended with each class the red-team pass found:
symbolic links (lock, sub-directories, metrics, figures, checkpoints, suite members), data loss
(--overwrite, audit --out), crafted files (deep JSON and TOML, npz members that are not arrays or that
lie about their size, datetimes), FIFOs (which used to hang), late validation (long names, days of
compute) and --resume with a changed config.

Every case also has ``outside/``, a directory beside the run directories that links point into: the
snapshot compared before and after covers it byte for byte, with modification times and link targets
(:func:`snapshot`), so a file outside the run directory that is created, rewritten (even with the same
bytes), truncated or deleted fails the case. Signals are :func:`test_signals_*` (real processes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_bad_inputs import MEMORY, ROOT, check_error, copy_run, expand

from toymodels import cli
from toymodels.io import budget, runs, safe


def snapshot(d: Path) -> dict:
    """Every path under ``d`` without following links: kind, bytes (regular files), mtime, link target."""
    out = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = Path(root) / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[str(p.relative_to(d))] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[str(p.relative_to(d))] = ("file", p.read_bytes(), st.st_mtime_ns)
            else:
                out[str(p.relative_to(d))] = (stat.S_IFMT(st.st_mode),)
    return out


def outside(d: Path) -> Path:
    """Files that are not the run's: links in the cases point here."""
    o = d / "outside"
    (o / "sub").mkdir(parents=True, exist_ok=True)
    for name in ("secret.txt", "metrics.jsonl", "config.json", "summary.json", "weights.npz"):
        (o / name).write_text("the user's own file\n")
    (o / "sub" / "summary.json").write_text("mine\n")
    return o


def mark(run: Path, status: str) -> Path:
    """Give a copied run a marker listing every file in it (as a finished or killed run has)."""
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and not p.is_symlink())
    (run / runs.MARKER).write_text(json.dumps({"toymodels": "0", "status": status, "pid": 1, "started_utc": "",
                                               "files": files}))
    return run


def intro_run(d: Path, status: str, **edits) -> Path:
    """A marked run directory whose config.json is tms-intro's (for --resume against the preset)."""
    r = d / "run"
    r.mkdir()
    cfg = cli.resolve("tms-intro", [f"{k}={v}" for k, v in edits.items()])
    (r / "config.json").write_text(json.dumps(cfg.to_dict()))
    return mark(r, status)


def setup(fn):
    """A case setup: ``fn(d, trained)`` after ``outside/`` exists."""
    def run(d: Path, trained: Path):
        outside(d)
        fn(d, trained)
    return run


def link(rel: str, target: str, status: str | None = "complete", intro: bool = False):
    """The trained run copied to d/run (``intro``: a tms-intro run for --resume), ``rel`` replaced by a link
    to ``outside/<target>``, marked."""
    def fn(d: Path, trained: Path):
        r = intro_run(d, "complete") if intro else copy_run(d, trained)
        p = r / rel
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
        p.parent.mkdir(parents=True, exist_ok=True)
        if status is not None:
            mark(r, status)
        p.symlink_to(d / "outside" / target)
    return setup(fn)


def fifo(rel: str, status: str | None = None, intro: bool = False):
    def fn(d: Path, trained: Path):
        r = intro_run(d, "complete") if intro else copy_run(d, trained)
        (r / rel).unlink(missing_ok=True)
        os.mkfifo(r / rel)
        if status is not None:
            mark(r, status)
    return setup(fn)


def crafted(rel: str, data: bytes | None = None, how=None):
    def fn(d: Path, trained: Path):
        r = copy_run(d, trained)
        if how is not None:
            how(r / rel)
        else:
            (r / rel).write_bytes(data)
    return setup(fn)


def deep(n: int = 5000) -> bytes:
    return ("[" * n + "]" * n).encode()


def npz_with_text_member(p: Path) -> None:
    with zipfile.ZipFile(p, "a") as z:
        z.writestr("notes.txt", "not an array")


def npz_lying_header(p: Path) -> None:
    """A member whose .npy header declares 4 TB in a few bytes (numpy would allocate it before reading)."""
    with zipfile.ZipFile(p, "a") as z:
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
        header += " " * (63 - len(header) % 64) + "\n"
        z.writestr("extra.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 16)


def npz_big_extra(p: Path) -> None:
    """An extra array larger than the bound (the bound is lowered to 64 KB for the case)."""
    arrays = dict(np.load(p))
    np.savez_compressed(p, **arrays, extra=np.zeros(40_000, np.float32))


def not_deletable(d: Path, trained: Path) -> None:
    """A marked run whose manifest lists a directory (not a regular file toymodels wrote)."""
    r = copy_run(d, trained)
    (r / "member").mkdir()
    (r / "member" / "mine.txt").write_text("mine")
    mark(r, "complete")
    m = json.loads((r / runs.MARKER).read_text())
    (r / runs.MARKER).write_text(json.dumps({**m, "files": m["files"] + ["member"]}))


def hard_lock(run: Path) -> None:
    (run / runs.LOCK).unlink(missing_ok=True)
    os.link(run.parent / "outside" / "secret.txt", run / runs.LOCK)


def lock_link_only(d: Path, trained: Path) -> None:
    (d / "L").mkdir()
    (d / "L" / runs.LOCK).symlink_to(d / "outside" / "secret.txt")


def suite_with_link(d: Path, trained: Path) -> None:
    copy_run(d, trained)
    (d / "s").mkdir()
    shutil.copytree(trained, d / "s" / "a")
    (d / "s" / "b").symlink_to(d / "run")
    (d / "s" / "suite.json").write_text(json.dumps({"members": ["a", "b"], "plots": []}))


def audit_md(d: Path, trained: Path) -> None:
    copy_run(d, trained)
    (d / "mine").mkdir()
    (d / "mine" / "audit.md").write_text("my notes\n")


def checkpoint_without_config(d: Path, trained: Path) -> None:
    r = intro_run(d, "running")
    (r / "config.json").unlink()
    (r / ".checkpoint").mkdir()
    (r / ".checkpoint" / "pretrain.npz").write_bytes(b"PK")


RUN = ["run", "tms-intro", "--quiet"]
CASES = [
    # --- symbolic links: nothing is written, deleted or read through one --------------------------------
    ("link-lock-only", [*RUN, "--out", "{d}/L"], "--out=", ("symbolic link",), setup(lock_link_only)),
    ("hardlink-lock", [*RUN, "--out", "{d}/run", "--overwrite"], "--out=", ("hard link",),
     setup(lambda d, t: hard_lock(mark(copy_run(d, t), "complete")))),
    ("link-member-overwrite", [*RUN, "--out", "{d}/run", "--overwrite"], "--out=", ("symbolic link",),
     link("member", "sub")),
    ("link-metrics-overwrite", [*RUN, "--out", "{d}/run", "--overwrite"], "--out=", ("metrics.jsonl",),
     link("metrics.jsonl", "metrics.jsonl")),
    ("link-metrics-resume", [*RUN, "--out", "{d}/run", "--resume"], "--out=", ("metrics.jsonl",),
     link("metrics.jsonl", "metrics.jsonl", "running", intro=True)),
    ("link-checkpoint-resume", [*RUN, "--out", "{d}/run", "--resume"], "--out=", (".checkpoint",),
     link(".checkpoint", "sub", "running", intro=True)),
    ("link-figures-plot", ["plot", "{d}/run"], "{d}/run/figures/", ("outside the run directory",),
     link("figures", "sub", None)),
    ("link-figures-plot-marked", ["plot", "{d}/run"], "RUN_DIR=", ("figures", "symbolic link"),
     link("figures", "sub")),
    ("link-config-plot", ["plot", "{d}/run"], "{d}/run/config.json:", ("symbolic link",),
     link("config.json", "config.json", None)),
    ("link-suite-member-plot", ["plot", "{d}/s"], "{d}/s/b:", ("symbolic link",), setup(suite_with_link)),
    ("link-from-run-weights", ["run", "analogy-15deg", "finetune.from_run={d}/run", "--out", "{d}/o", "--quiet"],
     "finetune.from_run=", ("symbolic link",), link("weights.npz", "weights.npz", None)),
    # --- data loss ---------------------------------------------------------------------------------------
    ("overwrite-not-deletable", [*RUN, "--out", "{d}/run", "--overwrite"], "--out=", ("deletes nothing",),
     setup(not_deletable)),
    ("audit-out-user-file", ["audit", "{d}/run", "--out", "{d}/mine"], "--out=", ("audit.md",), setup(audit_md)),
    ("audit-out-a-file", ["audit", "{d}/run", "--out", "{d}/outside/secret.txt"], "--out=", ("not a directory",),
     setup(lambda d, t: copy_run(d, t))),
    # --- FIFOs: refused, never opened for a blocking read --------------------------------------------------
    ("fifo-summary-plot", ["plot", "{d}/run"], "{d}/run/summary.json:", ("FIFO",), fifo("summary.json")),
    ("fifo-weights-plot", ["plot", "{d}/run"], "{d}/run/weights.npz:", ("FIFO",), fifo("weights.npz")),
    ("fifo-metrics-plot", ["plot", "{d}/run"], "{d}/run/metrics.jsonl:", ("FIFO",), fifo("metrics.jsonl")),
    ("fifo-config-from-run", ["run", "analogy-15deg", "finetune.from_run={d}/run", "--out", "{d}/o", "--quiet"],
     "finetune.from_run=", ("FIFO",), fifo("config.json")),
    ("fifo-config-resume", [*RUN, "--out", "{d}/run", "--resume"], "{d}/run/config.json:", ("FIFO",),
     fifo("config.json", "running", intro=True)),
    ("fifo-marker", [*RUN, "--out", "{d}/run", "--overwrite"], "marker=", ("FIFO",), fifo(runs.MARKER)),
    ("fifo-toml", ["run", "{d}/c.toml", "--quiet"], "{d}/c.toml=", ("regular file",),
     setup(lambda d, t: os.mkfifo(d / "c.toml"))),
    # --- crafted files: one line, no RecursionError or numpy allocation ----------------------------------
    ("deep-summary", ["plot", "{d}/run"], "{d}/run/summary.json:", ("deeper",), crafted("summary.json", deep())),
    ("deep-config", ["plot", "{d}/run"], "{d}/run/config.json:", ("deeper",), crafted("config.json", deep())),
    ("deep-metrics", ["plot", "{d}/run"], "{d}/run/metrics.jsonl:", ("line 1",), crafted("metrics.jsonl", deep())),
    ("deep-marker", [*RUN, "--out", "{d}/run", "--overwrite"], "marker=", ("deeper",), crafted(runs.MARKER, deep())),
    ("deep-toml", ["run", "{d}/c.toml", "--quiet"], "{d}/c.toml=", ("deep",),
     setup(lambda d, t: (d / "c.toml").write_bytes(b"x = " + deep(3000)))),
    ("deep-override", ["show", "tms-intro", "name=" + "[" * 3000 + "]" * 3000], "name=", ("deeper",), None),
    ("override-newline", ["show", "tms-intro", "train.steps=5\nseed=3"], "train.steps=", ("line break",), None),
    ("npz-text-member", ["plot", "{d}/run"], "{d}/run/weights.npz:", ("notes.txt",),
     crafted("weights.npz", how=npz_with_text_member)),
    ("npz-lying-header", ["plot", "{d}/run"], "{d}/run/weights.npz:", ("declares",),
     crafted("weights.npz", how=npz_lying_header)),
    ("npz-too-big", ["plot", "{d}/run"], "{d}/run/weights.npz:", ("more than",),
     crafted("weights.npz", how=npz_big_extra)),
    ("toml-datetime-meta", ["run", "{d}/c.toml", "--out", "{d}/new", "--quiet"], "meta.when=", ("datetime",),
     setup(lambda d, t: (d / "c.toml").write_text("name = \"dt\"\n[meta]\nwhen = 2024-01-01T00:00:00Z\n"))),
    # --- late validation: refused before the run directory exists -------------------------------------------
    ("long-name", [*RUN, "name=" + "n" * 250, "--out", "{d}/new"], "name=", ("bytes",), None),
    ("compute-days", [*RUN, "train.steps=10000000", "data.batch_size=100000", "--out", "{d}/new"], "train.steps=",
     ("days",), None),
    # --- --resume with another config ------------------------------------------------------------------------
    ("resume-changed-override", [*RUN, "train.steps=7", "--out", "{d}/run", "--resume"], "train.steps=7",
     ("differs", "--overwrite"), setup(lambda d, t: intro_run(d, "running"))),
    ("resume-complete-changed", [*RUN, "seed=5", "--out", "{d}/run", "--resume"], "seed=5", ("differs",),
     setup(lambda d, t: intro_run(d, "complete"))),
    ("resume-config-deleted", [*RUN, "--out", "{d}/run", "--resume"], "--resume=", ("config.json is missing",),
     setup(checkpoint_without_config)),
    ("resume-corrupt-config", [*RUN, "--out", "{d}/run", "--resume"], "{d}/run/config.json:", ("JSON",),
     setup(lambda d, t: (intro_run(d, "running") / "config.json").write_text("{\"name\": "))),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_run_directory(case, tmp_path, trained_run, capsys, monkeypatch):
    _id, argv, start, contains, fn = case
    monkeypatch.setattr(budget, "available_memory", lambda: MEMORY)
    monkeypatch.setattr(safe, "MAX_NPZ_BYTES", 64 * 1024)   # npz-too-big: a small file over a small bound
    outside(tmp_path)
    if fn is not None:
        fn(tmp_path, trained_run[1])
    before = snapshot(tmp_path)
    t0 = time.perf_counter()
    try:
        code = cli.main([expand(a, tmp_path) for a in argv])
    except SystemExit as e:
        code = e.code
    _out, err = capsys.readouterr()
    check_error(code, err, expand(start, tmp_path), [expand(c, tmp_path) for c in contains])
    assert snapshot(tmp_path) == before, "a refused command created, changed or deleted a file"
    assert time.perf_counter() - t0 < 60, "refused only after compute"


def test_no_file_outside_the_run_directory_changes_in_any_case(tmp_path, trained_run, monkeypatch, capsys):
    """All the cases one after another in one directory tree, and a sibling tree of the user's files that
    nothing names: byte for byte, mtimes and links the same at the end."""
    monkeypatch.setattr(budget, "available_memory", lambda: MEMORY)
    home = tmp_path / "home"
    outside(home)
    before = snapshot(home)
    for i, (_id, argv, _start, _c, fn) in enumerate(CASES):
        d = tmp_path / f"case{i}"
        d.mkdir()
        outside(d)
        if fn is not None:
            fn(d, trained_run[1])
        monkeypatch.setattr(safe, "MAX_NPZ_BYTES", 64 * 1024)
        assert cli.main([expand(a, d) for a in argv]) == 2
        capsys.readouterr()
        assert not os.path.lexists("/toymodels.lock")
    assert snapshot(home) == before


def test_the_new_catalogue_covers_every_class():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    for prefix in ("link-", "fifo-", "deep-", "npz-", "resume-", "audit-out-", "overwrite-"):
        assert sum(i.startswith(prefix) for i in ids) >= 1, prefix


# --- signals: real processes ------------------------------------------------------------------------------
def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "toymodels.cli", "run", "tms-intro", "plots=[]", "--quiet",
                             "--out", str(out), *extra], env=env, stderr=subprocess.PIPE, text=True)


def _marker_status(out: Path) -> str | None:
    try:
        return json.loads((out / runs.MARKER).read_text())["status"]
    except (OSError, ValueError):
        return None


def _lock_is_free(out: Path) -> bool:
    import fcntl

    fd = os.open(out / runs.LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _one_line(err: str, sig: signal.Signals) -> None:
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith(f"toymodels: error: interrupted ({sig.name})"), err


# one signal of each kind in the default suite (each process pays JAX's import); the other pairing is slow
@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_signals_at_start_up_give_one_line_and_no_run_directory(sig, tmp_path):
    """At 0.3 s the CLI is importing numpy, scipy and JAX: a KeyboardInterrupt raised there used to be a
    40-line traceback (or an ImportError, or an abort); now the signal is acted on at the next safe point."""
    p = _start(tmp_path / "out", "train.steps=100000")
    time.sleep(0.3)
    p.send_signal(sig)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 128 + sig, err
    _one_line(err, sig)
    assert _marker_status(tmp_path / "out") in (None, "interrupted")


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM])
def test_signals_mid_run_leave_the_marker_interrupted_and_the_lock_free(sig, tmp_path):
    out = tmp_path / "out"
    p = _start(out, "train.steps=100000")
    deadline = time.time() + 120
    while _marker_status(out) != "running" or not (out / "metrics.jsonl").exists():
        assert time.time() < deadline and p.poll() is None, p.stderr.read() if p.poll() is not None else "slow"
        time.sleep(0.05)
    p.send_signal(sig)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 128 + sig, err
    _one_line(err, sig)
    assert _marker_status(out) == "interrupted"
    assert _lock_is_free(out)


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert _start(ref, "train.steps=3000").wait(timeout=600) == 0
    p = _start(out, "train.steps=3000")
    while _marker_status(out) != "running" or not (out / "metrics.jsonl").exists():
        time.sleep(0.05)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 128 + signal.SIGTERM
    assert _start(out, "train.steps=3000", "--resume").wait(timeout=600) == 0
    assert _marker_status(out) == "complete"
    with np.load(ref / "weights.npz") as a, np.load(out / "weights.npz") as b:
        np.testing.assert_array_equal(a["W"], b["W"])


# --- the library's own paths (no CLI in between) ---------------------------------------------------------
def test_a_section_table_override_merges_into_the_presets_section():
    """``train={steps=50}`` used to replace the whole section (restarts 4 -> 1, regimes 4 -> 1)."""
    base = cli.resolve("tms-intro", [])
    cfg = cli.resolve("tms-intro", ["train={steps=50}"])
    assert cfg.train.steps == 50 and base.train.restarts == 4 and cfg.train.restarts == 4
    an = cli.resolve("analogy-15deg", ["finetune={lr=0.5}"])
    assert an.finetune.lr == 0.5 and an.finetune.regimes == cli.resolve("analogy-15deg", []).finetune.regimes


def test_the_metrics_log_never_writes_through_a_link(tmp_path):
    (tmp_path / "target").write_text("mine\n")
    (tmp_path / "metrics.jsonl").symlink_to(tmp_path / "target")
    with pytest.raises(runs.RunFileError, match="symbolic link"):
        runs.MetricsLog(tmp_path / "metrics.jsonl")({"step": 1})
    assert (tmp_path / "target").read_text() == "mine\n"


def test_a_writer_refuses_a_path_that_a_link_carries_out_of_the_run(tmp_path):
    (tmp_path / "outside").mkdir()
    with runs.open_run(tmp_path / "r") as run:
        (run.path / "sub").symlink_to(tmp_path / "outside")
        with pytest.raises(runs.RunFileError, match="outside the run directory"):
            runs.write_json(run.path / "sub" / "x.json", {"a": 1})
        (run.path / "sub").unlink()
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_deletion_that_fails_midway_leaves_a_truthful_marker(tmp_path, monkeypatch):
    with runs.open_run(tmp_path / "r") as run:
        for name in ("a.json", "b.json", "c.json"):
            runs.write_json(run.path / name, {})
    real_unlink, calls = Path.unlink, []

    def flaky(self, missing_ok=False):
        calls.append(self.name)
        if len(calls) == 2:
            raise PermissionError(13, "Permission denied", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", flaky)
    with pytest.raises(runs.RunExistsError, match="could not delete"):
        with runs.open_run(tmp_path / "r", overwrite=True):
            pass
    marker = json.loads((tmp_path / "r" / runs.MARKER).read_text())
    assert marker["status"] == "failed"
    left = {n for n in ("a.json", "b.json", "c.json") if (tmp_path / "r" / n).exists()}
    assert set(marker["files"]) == left and len(left) == 2


def test_the_metrics_log_never_appends_to_a_hard_link(tmp_path):
    """A hard link shares its bytes with the user's file: --resume's truncation would cut that file."""
    (tmp_path / "mine.txt").write_text("mine\n")
    os.link(tmp_path / "mine.txt", tmp_path / "metrics.jsonl")
    with pytest.raises(runs.RunFileError, match="hard"):
        runs.MetricsLog(tmp_path / "metrics.jsonl")({"step": 1})
    assert (tmp_path / "mine.txt").read_text() == "mine\n"


def test_resume_with_a_corrupt_checkpoint_is_one_line(tmp_path, make_config):
    from toymodels import experiment

    cfg = make_config()
    d = tmp_path / "r"
    (d / ".checkpoint").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    np.savez(d / ".checkpoint" / "pretrain.npz", leaf0=np.zeros(3))   # no __meta__
    with pytest.raises(runs.RunFileError, match="pretrain.npz.*not a checkpoint"):
        experiment.run(cfg, d, progress=False, echo=lambda s: None, resume=True)


@pytest.mark.parametrize("sae", ["broken", {"instances": "x"}, {"instances": [1]}, None])
def test_an_sae_run_with_a_broken_sae_summary_is_one_line(tmp_path, sae):
    """``toymodels audit`` of an [sae] run: a summary.json whose sae section is not what toymodels writes
    used to be a KeyError/TypeError traceback."""
    from types import SimpleNamespace

    from toymodels import audit_command

    np.savez(tmp_path / "weights_sae.npz", **{"batch_topk.W_dec": np.zeros((1, 2, 3), np.float32)})
    run = SimpleNamespace(path=tmp_path, config=SimpleNamespace(sae=object()), weights={},
                          summary={} if sae is None else {"sae": sae})
    with pytest.raises(runs.RunFileError, match="'sae' section"):
        audit_command._sae_source(run, None, "batch_topk")


@pytest.mark.parametrize("exc", [OverflowError("cannot convert float infinity to integer"), StopIteration()])
def test_a_figure_failing_on_crafted_numbers_is_one_line(tmp_path, exc):
    """e.g. phase_diagram's ``int(grad_samples)`` on an ``Infinity`` in summary.json, or lab's ``next(...)``
    over regimes that a hand-edited summary lacks: a RunFileError naming the run and the figure."""
    from toymodels import plots

    def figure(*args):
        raise exc

    with pytest.raises(runs.RunFileError, match="figure 'x' cannot be drawn"):
        plots._drawn(figure, tmp_path, "x")
