"""Run directories hold only their own files (toymodels.io.runs.open_run): the marker and its manifest,
``--overwrite`` deleting only manifest files and only in a toymodels run, the lock naming its holder's
PID, atomic writes of every output (figures too) and stale temporary files cleaned on the next run.

Most tests drive ``open_run`` and the writers directly (no training); one CLI run checks the marker of a
real run, and one subprocess checks the lock across processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import toymodels
from toymodels import cli
from toymodels.errors import RunExistsError, RunLockedError, TrainingDiverged
from toymodels.io import runs
from toymodels.plots import registry

ROOT = Path(toymodels.__file__).resolve().parent.parent
TINY = ["train.steps=20", "train.chunk_size=10", "n_inst=2", "data.feature_probability=[1.0, 0.1]",
        "train.eval_batch_size=256", "data.batch_size=32"]


def tree(d: Path) -> dict[str, bytes | None]:
    """Every path under d: file -> its bytes, directory -> None."""
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


def marker(d: Path) -> dict:
    return json.loads((d / runs.MARKER).read_text())


def write_some(run_dir: Path) -> None:
    """What a run writes, through every writer: JSON, text, npz, the metrics log and a figure."""
    runs.write_json(run_dir / "config.json", {"a": 1})
    runs.write_text(run_dir / "table.md", "| x |\n")
    runs.write_npz(run_dir / "weights.npz", W=np.ones((1, 2, 3)))
    log = runs.MetricsLog(run_dir / "metrics.jsonl", phase="pretrain")
    log({"step": 1})
    log({"step": 2})
    fig = registry.new_figure((1, 1))
    registry.save(fig, run_dir / "figures", "x_loss")
    runs.write_json(run_dir / "member" / "summary.json", {})   # a suite member's file: same manifest


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """One real (tiny) run through the CLI, shared read-only by the tests here."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert cli.main(["run", "tms-intro", *TINY, "--out", str(out), "--quiet"]) == 0
    return out


# --- the marker and its manifest ---------------------------------------------------------------------------
def test_marker_lists_every_file_a_real_run_wrote(cli_run):
    out = cli_run
    m = marker(out)
    assert m["status"] == "complete" and m["toymodels"] and isinstance(m["pid"], int)
    assert m["started_utc"].endswith("Z") and m["finished_utc"] >= m["started_utc"]
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {runs.MARKER, runs.LOCK}
    assert on_disk and on_disk <= set(m["files"])  # every file the run left is in its manifest
    assert {"config.json", "metrics.jsonl", "summary.json", "weights.npz"} <= on_disk
    assert any(f.startswith("figures/") and f.endswith(".png") for f in on_disk)


def test_writers_register_their_files_and_only_inside_the_run(tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    with runs.open_run(tmp_path / "r") as run:
        assert runs.active_run() is run and marker(run.path)["status"] == "running"
        write_some(run.path)
        runs.write_json(elsewhere, {})   # outside the run directory: not its file
        assert marker(run.path)["files"] == run.files  # the marker on disk follows each new file
    assert runs.active_run() is None
    m = marker(run.path)
    assert m["status"] == "complete"
    assert m["files"] == ["config.json", "table.md", "weights.npz", "metrics.jsonl", "figures/x_loss.png",
                          "member/summary.json"]
    assert (run.path / "metrics.jsonl").read_text().count("\n") == 2


def test_status_records_how_the_run_ended(tmp_path):
    with pytest.raises(TrainingDiverged), runs.open_run(tmp_path / "d"):
        raise TrainingDiverged(3, 0, float("nan"))
    assert marker(tmp_path / "d")["status"] == "diverged"
    with pytest.raises(RuntimeError), runs.open_run(tmp_path / "f"):
        raise RuntimeError("boom")
    assert marker(tmp_path / "f")["status"] == "failed"
    with pytest.raises(KeyboardInterrupt), runs.open_run(tmp_path / "k"):
        raise KeyboardInterrupt
    assert marker(tmp_path / "k")["status"] == "interrupted"   # issue 16: --resume continues it


def test_unfinished_finished_and_resumed_runs(tmp_path):
    with pytest.raises(RuntimeError), runs.open_run(tmp_path / "f") as run:
        runs.write_json(run.path / "config.json", {})
        raise RuntimeError
    before = tree(tmp_path)
    with pytest.raises(RunExistsError, match="unfinished.*--resume.*--overwrite"):
        runs.open_run(tmp_path / "f").__enter__()
    assert tree(tmp_path) == before
    with runs.open_run(tmp_path / "f", resume=True) as run:
        assert run.resuming and not run.complete and run.files == ["config.json"]
    assert marker(tmp_path / "f")["status"] == "complete"
    done = tree(tmp_path)
    with runs.open_run(tmp_path / "f", resume=True) as run:   # finished: nothing to do, nothing touched
        assert run.complete and not run.resuming
    assert tree(tmp_path) == done
    with pytest.raises(RunExistsError, match="already holds a toymodels run"):
        runs.open_run(tmp_path / "f").__enter__()


# --- --overwrite deletes only the run's own files -------------------------------------------------------
def test_overwrite_on_a_directory_that_is_not_a_run_deletes_nothing(capsys, tmp_path):
    d = tmp_path / "repo"
    (d / "figures").mkdir(parents=True)
    (d / "figures" / "committed.png").write_bytes(b"png")
    (d / "config.json").write_text("{}")
    (d / "README.md").write_text("mine")
    before = tree(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(RunExistsError, match="not a toymodels run"):
            runs.open_run(d, overwrite=overwrite).__enter__()
    code = cli.main(["run", "tms-intro", "train.steps=50", "--out", str(d), "--overwrite", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "deletes nothing" in err
    assert tree(tmp_path) == before   # not even a lock file


def test_overwrite_deletes_only_the_manifest_files(tmp_path):
    with runs.open_run(tmp_path / "r") as run:
        write_some(run.path)
    d = run.path
    (d / "notes.txt").write_text("mine")                      # the user's files beside the run's
    (d / "figures" / "my_drawing.png").write_bytes(b"mine")
    (d / "member" / "mine.txt").write_text("mine")
    with runs.open_run(d, overwrite=True) as run2:
        assert run2.files == [] and marker(d)["status"] == "running"
        left = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()} - {runs.MARKER, runs.LOCK}
        assert left == {"notes.txt", "figures/my_drawing.png", "member/mine.txt"}
    assert marker(d) ["status"] == "complete" and marker(d)["files"] == []


def test_overwrite_removes_directories_it_empties(tmp_path):
    with runs.open_run(tmp_path / "r") as run:
        runs.write_json(run.path / "member" / "deep" / "x.json", {})
    with runs.open_run(run.path, overwrite=True):
        assert not (run.path / "member").exists() and (run.path / "figures").is_dir()


def test_manifest_names_outside_the_run_are_never_deleted(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    with runs.open_run(tmp_path / "r") as run:
        pass
    m = marker(run.path)
    m["files"] = ["../victim.txt", str(victim), "figures/../../victim.txt"]
    (run.path / runs.MARKER).write_text(json.dumps(m))
    with runs.open_run(run.path, overwrite=True):
        pass
    assert victim.read_text() == "keep"


def test_a_suite_member_directory_belongs_to_the_top_manifest(tmp_path):
    with runs.open_run(tmp_path / "s") as run:
        runs.write_json(run.path / "suite.json", {})
        member = runs.prepare_run_dir(run.path / "m1", overwrite=True)
        runs.write_json(member / "config.json", {})
        runs.MetricsLog(member / "metrics.jsonl")({"step": 1})
    assert marker(run.path)["files"] == ["suite.json", "m1/config.json", "m1/metrics.jsonl"]
    assert not (member / runs.MARKER).exists()  # one marker, at the top


def test_metrics_log_never_appends_to_a_log_that_is_not_this_runs(tmp_path):
    with runs.open_run(tmp_path / "r") as run:
        (run.path / "metrics.jsonl").write_text('{"step": 99}\n')   # e.g. left by something else
        runs.MetricsLog(run.path / "metrics.jsonl")({"step": 1})
        runs.MetricsLog(run.path / "metrics.jsonl")({"step": 2})   # the same run's second logger appends
    assert [json.loads(x)["step"] for x in (run.path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# --- the lock ---------------------------------------------------------------------------------------------
def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path):
    open_second = ("import sys\nfrom toymodels.io import runs\n"
                   "try:\n    runs.open_run(sys.argv[1], overwrite=True).__enter__()\n"
                   "except runs.RunLockedError as e:\n    print(e); sys.exit(3)\n")
    with runs.open_run(tmp_path / "r") as run:
        assert (run.path / runs.LOCK).read_text().strip() == str(os.getpid())
        before = tree(tmp_path)
        r = _python(open_second, str(run.path))
        assert r.returncode == 3, r.stderr
        assert f"PID {os.getpid()}" in r.stdout and "another toymodels process" in r.stdout
        # the CLI, in its own process: one line, exit 2, no traceback
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        c = subprocess.run([sys.executable, "-m", "toymodels.cli", "run", "tms-intro", "--out", str(run.path),
                            "--overwrite", "--quiet"], capture_output=True, text=True, env=env, timeout=120,
                           check=False)
        assert c.returncode == 2 and "Traceback" not in c.stderr
        assert c.stderr.count("\n") == 1 and f"(PID {os.getpid()})" in c.stderr
        assert tree(tmp_path) == before
    # released with the run (and by the OS if the process dies): the next one gets it
    with runs.open_run(tmp_path / "r", overwrite=True):
        pass


def test_the_lock_is_released_when_the_holder_dies(tmp_path):
    d = tmp_path / "r"
    r = _python("import os, sys\nfrom toymodels.io import runs\nrun = runs.open_run(sys.argv[1])\n"
                "run.__enter__()\nos._exit(0)\n", str(d))   # dies holding the lock; its marker still says running
    assert r.returncode == 0, r.stderr
    assert marker(d)["status"] == "running"
    with pytest.raises(RunExistsError, match="unfinished") as e:
        runs.open_run(d).__enter__()
    assert not isinstance(e.value, RunLockedError)
    with runs.open_run(d, resume=True) as run:
        assert run.resuming


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with runs.open_run(tmp_path / "r") as run, pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
        runs.open_run(run.path, overwrite=True).__enter__()


# --- atomic writes ----------------------------------------------------------------------------------------
def test_stale_temporary_files_are_cleaned_on_the_next_run(tmp_path):
    with pytest.raises(RuntimeError), runs.open_run(tmp_path / "r") as run:
        write_some(run.path)
        raise RuntimeError  # killed
    d = run.path
    stale = [d / ".config.json.x1y2z3ab.tmp", d / "figures" / ".x_loss.abc123_z.tmp.png",
             d / "member" / ".summary.json.q0000000.tmp"]
    for f in stale:
        f.write_bytes(b"half")
    (d / ".my_hidden.tmp.txt.bak").write_text("mine")   # not a temporary name of ours
    # issue 16: a name like ours whose file is not in the run's manifest is the user's, and stays
    users = [d / ".notes.abcdefgh.tmp", d / "figures" / ".mine.abcdefgh.tmp.png"]
    for f in users:
        f.write_text("mine")
    with runs.open_run(d, resume=True):
        assert not any(f.exists() for f in stale)
    assert (d / ".my_hidden.tmp.txt.bak").read_text() == "mine"
    assert all(f.read_text() == "mine" for f in users)


def test_a_figure_that_fails_midway_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def half_then_die(self, fname, **kwargs):
        fname.write(b"\x89PNG half a figure")
        raise KeyboardInterrupt  # the run is killed while drawing

    fig = registry.new_figure((1, 1))
    with runs.open_run(tmp_path / "r") as run:
        registry.save(fig, run.path / "figures", "first")     # a complete one
        monkeypatch.setattr(Figure, "savefig", half_then_die)
        with pytest.raises(KeyboardInterrupt):
            registry.save(fig, run.path / "figures", "second")
    figures = sorted(p.name for p in (run.path / "figures").iterdir())
    assert figures == ["first.png"]  # no 0-byte or half PNG at the final name, no temporary left
    assert (run.path / "figures" / "first.png").read_bytes().startswith(b"\x89PNG")


def test_a_file_writer_that_fails_leaves_no_file(tmp_path):
    with runs.open_run(tmp_path / "r") as run:
        with pytest.raises(RuntimeError), runs.atomic_path(run.path / "figures" / "anim.gif") as tmp:
            assert tmp.suffix == ".gif" and tmp.parent == run.path / "figures"
            tmp.write_bytes(b"GIF89a half")
            raise RuntimeError
        with runs.atomic_path(run.path / "figures" / "ok.gif") as tmp:
            tmp.write_bytes(b"GIF89a")
    assert sorted(p.name for p in (run.path / "figures").iterdir()) == ["ok.gif"]
    assert "figures/ok.gif" in marker(run.path)["files"]


def test_saved_png_bytes_are_unchanged_by_the_atomic_write(tmp_path):
    fig = registry.new_figure((2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    p = registry.save(fig, tmp_path, "a")
    direct = tmp_path / "direct.png"
    fig.savefig(direct, dpi=110, metadata=registry.PNG_META, bbox_inches="tight")
    assert p.read_bytes() == direct.read_bytes()


def test_plot_on_a_marked_run_registers_its_figures_and_keeps_the_status(capsys, tmp_path, cli_run):
    out = tmp_path / "run"
    shutil.copytree(cli_run, out)
    m = marker(out)
    for f in (out / "figures").iterdir():
        f.unlink()
    assert cli.main(["plot", str(out)]) == 0
    capsys.readouterr()
    m2 = marker(out)
    assert m2["status"] == m["status"] == "complete" and set(m2["files"]) == set(m["files"])
    assert any((out / "figures").iterdir())
