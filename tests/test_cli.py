"""The ``toymodels`` command line, run in-process through ``toymodels.cli.main`` (and once through the
installed entry point): bad input exits 2 with one stderr line naming the field; run directories are
never overwritten by accident; ``plot`` redraws from saved files without training."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toymodels import cli
from toymodels.config import Config, load_toml
from toymodels.presets import PRESETS

TINY = ["train.steps=20", "train.chunk_size=10", "train.restarts=1", "data.batch_size=32",
        "train.eval_batch_size=256", "n_inst=2", "data.feature_probability=[1.0, 0.1]"]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``toymodels ARGV`` in-process: (exit code, stdout, stderr). argparse errors exit via SystemExit."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, field: str):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"toymodels: error: {field}"), lines[0]
    assert "Traceback" not in err


def snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under d: (content, mtime_ns)."""
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


# --- list / show ---------------------------------------------------------------------------------
def test_list_prints_every_preset_one_line_each(capsys):
    code, out, err = run_cli(capsys, "list")
    assert code == 0 and err == ""
    lines = out.strip().splitlines()
    assert len(lines) == len(PRESETS)
    assert [ln.split()[0] for ln in lines] == list(PRESETS)
    for ln, p in zip(lines, PRESETS.values()):
        assert p.summary in ln


def test_show_prints_the_resolved_config_with_overrides(capsys):
    code, out, err = run_cli(capsys, "show", "tms-intro", "train.steps=123", "seed=4")
    assert code == 0, err
    d = json.loads(out)
    assert d["train"]["steps"] == 123 and d["seed"] == 4
    assert Config.from_dict(d) == PRESETS["tms-intro"].build().replace(**{"train.steps": 123, "seed": 4})


# --- bad input ---------------------------------------------------------------------------------------
BAD = [
    ("train.steps=-5", "train.steps"),
    ("train.lr=abc", "train.lr"),
    ("train.lr=0", "train.lr"),
    ("model.kind=mlp", "model.kind"),
    ("data.feature_probability=2", "data.feature_probability"),
    ("data.feature_probability=[0.5, 0.5]", "data.feature_probability"),  # tms-intro has 10 instances
    ("train.schedule=exponential", "train.schedule"),
    ("train.nonsense=1", "train.nonsense"),
    ("bogus=1", "bogus"),
    ("train.steps", "train.steps"),  # no '='
]


@pytest.mark.parametrize("override,field", BAD, ids=[b[0] for b in BAD])
def test_bad_override_exits_2_with_one_line_and_creates_nothing(capsys, tmp_path, override, field):
    out_dir = tmp_path / "out"
    code, _out, err = run_cli(capsys, "run", "tms-intro", override, "--out", out_dir, "--quiet")
    assert code == 2
    assert_one_line_error(err, field)
    assert not out_dir.exists()


def test_unknown_preset_exits_2(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "tms-nonexistent", "--out", tmp_path / "o")
    assert code == 2
    assert_one_line_error(err, "preset")
    assert "tms-intro" in err  # lists the known presets


def test_bad_toml_exits_2(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3\n")
    code, _, err = run_cli(capsys, "run", bad, "--out", tmp_path / "o")
    assert code == 2
    assert_one_line_error(err, str(bad))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[train]\nsteps = 3\nlearning_rate = 0.1\n")
    code, _, err = run_cli(capsys, "run", unknown, "--out", tmp_path / "o")
    assert code == 2
    assert_one_line_error(err, "train.learning_rate")
    code, _, err = run_cli(capsys, "run", tmp_path / "missing.toml", "--out", tmp_path / "o")
    assert code == 2
    assert_one_line_error(err, "CONFIG")
    assert not (tmp_path / "o").exists()


def test_unknown_figure_name_fails_before_training(capsys, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('name = "x"\nn_inst = 1\nplots = ["loss", "no_such_figure"]\n[train]\nsteps = 5\n')
    code, _, err = run_cli(capsys, "run", toml, "--out", tmp_path / "o", "--quiet")
    assert code == 2
    assert_one_line_error(err, "plots='no_such_figure'")
    assert not (tmp_path / "o").exists()


def test_entry_point_subprocess():
    """The installed ``toymodels`` script: a bad value exits 2 with one line on stderr; list works."""
    exe = shutil.which("toymodels") or str(Path(sys.executable).parent / "toymodels")
    assert Path(exe).exists(), "the toymodels console script is not installed (pip install -e .)"
    r = subprocess.run([exe, "run", "tms-intro", "train.steps=-1"], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "train.steps")
    r = subprocess.run([exe, "list"], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and "tms-intro" in r.stdout


# --- run directories -------------------------------------------------------------------------------
def test_run_refuses_existing_nonempty_out_and_overwrite_replaces(capsys, tmp_path, copy_run):
    foreign = copy_run()  # results without a marker: not a toymodels run, never written into
    before = snapshot(foreign)
    for flags in ((), ("--overwrite",)):
        code, _, err = run_cli(capsys, "run", "tms-intro", *TINY, "--out", foreign, "--quiet", *flags)
        assert code == 2
        assert_one_line_error(err, "--out=") and "not a toymodels run" in err
        assert snapshot(foreign) == before

    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "run", "tms-intro", *TINY, "--out", run_dir, "--quiet")
    assert code == 0, err
    before = snapshot(run_dir)
    code, _, err = run_cli(capsys, "run", "tms-intro", *TINY, "--out", run_dir, "--quiet")
    assert code == 2
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert snapshot(run_dir) == before  # nothing touched: same bytes, same mtimes

    code, _, err = run_cli(capsys, "run", "tms-intro", *TINY, "seed=5", "--out", run_dir, "--quiet", "--overwrite")
    assert code == 0, err
    cfg = Config.from_dict(json.loads((run_dir / "config.json").read_text()))
    assert cfg.name == "tms-intro" and cfg.seed == 5 and cfg.train.steps == 20
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows and max(r["step"] for r in rows) == 20  # a fresh log, not appended to the old run's
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["n_inst"] == 2


def test_toml_config_runs_and_round_trips(capsys, tmp_path):
    toml = tmp_path / "tiny.toml"
    toml.write_text(
        'name = "tiny-toml"\nseed = 2\nn_inst = 2\nplots = ["loss"]\n'
        '[data]\nn_features = 3\nfeature_probability = [0.5, 0.1]\nbatch_size = 32\n'
        '[model]\nd_hidden = 2\n'
        '[train]\nsteps = 20\nchunk_size = 10\nlog_every = 5\neval_batch_size = 256\nschedule = "linear"\n'
    )
    out = tmp_path / "run"
    code, _stdout, err = run_cli(capsys, "run", toml, "train.lr=0.01", "--out", out, "--quiet")
    assert code == 0, err
    saved = Config.from_dict(json.loads((out / "config.json").read_text()))
    assert saved == load_toml(toml).replace(**{"train.lr": 0.01})
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [5, 10, 15, 20]
    assert (out / "figures" / "tiny-toml_loss.png").is_file()


def test_plot_redraws_figures_without_training(capsys, copy_run, monkeypatch):
    """Delete the figures and redraw them: same bytes as before (byte-stable PNGs), the saved results
    untouched, and no training code runs (it is patched to fail)."""
    run_dir = copy_run()
    figs = {p.name: p.read_bytes() for p in (run_dir / "figures").glob("*.png")}
    assert figs, "the trained run has no figures"
    data_files = {n: snapshot(run_dir)[n] for n in ("config.json", "summary.json", "weights.npz", "metrics.jsonl")}
    shutil.rmtree(run_dir / "figures")

    from toymodels.core import engine, pretrain

    def no_training(*a, **k):
        raise AssertionError("toymodels plot must not train")

    monkeypatch.setattr(pretrain, "pretrain", no_training)
    monkeypatch.setattr(pretrain, "train", no_training)
    monkeypatch.setattr(engine, "fit", no_training)
    code, out, err = run_cli(capsys, "plot", run_dir)
    assert code == 0, err
    redrawn = {p.name: p.read_bytes() for p in (run_dir / "figures").glob("*.png")}
    assert redrawn == figs
    assert sorted(Path(line).name for line in out.split()) == sorted(figs)
    assert {n: snapshot(run_dir)[n] for n in data_files} == data_files


def test_plot_rejects_missing_or_unfinished_run_dir(capsys, tmp_path):
    code, _, err = run_cli(capsys, "plot", tmp_path / "nope")
    assert code == 2
    assert_one_line_error(err, "RUN_DIR")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    code, _, err = run_cli(capsys, "plot", tmp_path / "half")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "summary.json" in err


def test_plot_with_an_unknown_figure_in_a_hand_edited_config_is_one_line(capsys, copy_run):
    run_dir = copy_run()
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["plots"] = ["loss", "no_such_figure"]
    (run_dir / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(capsys, "plot", run_dir)
    assert code == 2
    assert_one_line_error(err, "plots")
    assert "no_such_figure" in err and "geometry_2d" in err  # names the bad one and lists the known ones


def test_diverged_run_exits_1_naming_step_and_instance_and_keeps_metrics(capsys, tmp_path):
    """SGD at lr 5 blows up within a few steps. The run stops with exit code 1 and one line naming the
    step and instance; metrics.jsonl keeps a row for every step before the failure (log_every=1);
    no summary.json or weights.npz pretend the run finished."""
    out = tmp_path / "diverged"
    code, _, err = run_cli(capsys, "run", "tms-intro", "train.optimizer=sgd", "train.lr=5", "train.steps=200",
                           "train.restarts=1", "train.chunk_size=1", "train.log_every=1", "data.batch_size=64",
                           "--out", out, "--quiet")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    m = re.search(r"at step (\d+) in instance (\d+)", lines[0])
    assert m, lines[0]
    step, instance = int(m.group(1)), int(m.group(2))
    assert 0 <= instance < 10
    assert step >= 1, "diverged at the first step: choose a smaller lr so that some rows are written"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # loss at 0-based step `step` was non-finite, so steps 1..step (1-based, completed) are logged
    assert [r["step"] for r in rows] == list(range(1, step + 1))
    assert all(all(math.isfinite(v) for v in r["loss"]) for r in rows)
    assert (out / "config.json").is_file() and (out / "env.json").is_file()
    assert not (out / "summary.json").exists() and not (out / "weights.npz").exists()
    assert os.listdir(out / "figures") == []


def test_diverged_restart_is_named_by_setting_and_restart(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "tms-intro", "train.optimizer=sgd", "train.lr=5", "train.steps=50",
                           "train.restarts=2", "train.chunk_size=50", "data.batch_size=64",
                           "--out", tmp_path / "d", "--quiet")
    assert code == 1
    m = re.search(r"in instance (\d+) \(setting (\d+), restart (\d+) of 2\).*smaller train\.lr", err)
    assert m, err
    instance, setting, restart = map(int, m.groups())
    assert instance == 2 * setting + restart and 0 <= setting < 10


def test_diverged_finetuning_names_the_regime(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "analogy-15deg", "train.steps=20", "finetune.optimizer=sgd",
                           "finetune.lr=10", "finetune.gamma=100", "finetune.steps=40", "finetune.chunk_size=40",
                           "--out", tmp_path / "d", "--quiet")
    assert code == 1
    m = re.search(r"\(fine-tuning pretrained instance (\d+) under regime '([\w-]+)'\).*smaller finetune\.lr", err)
    assert m, err
    assert 0 <= int(m.group(1)) < 4 and m.group(2) in ("narrow", "narrow-all", "full", "full-all")
