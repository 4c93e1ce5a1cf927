"""Run directories (toymodels.runs, toymodels.experiment.run): the files a run writes, their shapes
and conventions, and the write-safety rules (atomic files, no accidental overwrite)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from toymodels.config import Config
from toymodels.io import runs


def test_run_directory_layout(trained_run):
    cfg, run_dir = trained_run
    for name in ("config.json", "env.json", "metrics.jsonl", "summary.json", "weights.npz"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "figures" / f"{cfg.name}_loss.png").is_file()
    assert (run_dir / "figures" / f"{cfg.name}_geometry_2d.png").is_file()
    leftovers = [p.name for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []  # atomic writes leave no temporary files behind


def test_config_json_rebuilds_the_config(trained_run):
    cfg, run_dir = trained_run
    assert Config.from_dict(json.loads((run_dir / "config.json").read_text())) == cfg
    assert runs.load(run_dir).config == cfg


def test_env_json_names_versions_and_devices(trained_run):
    import flax
    import jax

    env = json.loads((trained_run[1] / "env.json").read_text())
    assert env["jax"] == jax.__version__ and env["flax"] == flax.__version__
    assert env["devices"] and all(isinstance(d, str) for d in env["devices"])
    for key in ("python", "optax", "numpy", "platform", "started_utc"):
        assert env[key]


def test_metrics_jsonl_rows(trained_run):
    cfg, run_dir = trained_run
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert steps == list(range(cfg.train.log_every, cfg.train.steps + 1, cfg.train.log_every))
    for r in rows:
        assert r["phase"] == "pretrain"
        assert len(r["loss"]) == cfg.n_inst * cfg.train.restarts
        assert all(math.isfinite(v) and v >= 0 for v in r["loss"])
    # training lowers the loss of every instance between the first and the last row
    assert all(b < a for a, b in zip(rows[0]["loss"], rows[-1]["loss"]))


def test_summary_has_per_instance_settings_and_geometry(trained_run):
    cfg, run_dir = trained_run
    s = json.loads((run_dir / "summary.json").read_text())
    assert (s["n_inst"], s["n_features"], s["d_hidden"], s["steps"]) == (cfg.n_inst, 5, 2, cfg.train.steps)
    inst = s["instances"]
    assert [x["index"] for x in inst] == list(range(cfg.n_inst))
    np.testing.assert_allclose([x["feature_probability"] for x in inst], cfg.feature_probability(), rtol=1e-6)
    np.testing.assert_allclose([x["importance"] for x in inst], cfg.importance(), rtol=1e-6)
    W = np.load(run_dir / "weights.npz")["W"].astype(np.float64)
    for i, x in enumerate(inst):
        assert math.isfinite(x["eval_loss"]) and x["eval_loss"] >= 0
        np.testing.assert_allclose(x["feature_norms"], np.linalg.norm(W[i], axis=0), rtol=1e-5)
        np.testing.assert_allclose(x["dimensions_per_feature"], 2 / np.sum(W[i] ** 2), rtol=1e-5)
        assert x["n_represented"] == int(np.sum(np.linalg.norm(W[i], axis=0) > 0.5))


def test_weights_npz_shapes_and_relu_output_convention(trained_run):
    """weights.npz holds W (n_inst, d_hidden, n_features) and b_final (n_inst, n_features), and the
    model is x' = ReLU(WᵀW x + b_final): the importance-weighted MSE recomputed in numpy on fresh
    data equals the summary's eval_loss within the two estimates' sampling error (5 σ)."""
    cfg, run_dir = trained_run
    with np.load(run_dir / "weights.npz", allow_pickle=False) as z:
        W, b = z["W"].astype(np.float64), z["b_final"].astype(np.float64)
    assert W.shape == (cfg.n_inst, cfg.model.d_hidden, cfg.data.n_features)
    assert b.shape == (cfg.n_inst, cfg.data.n_features)
    summary = json.loads((run_dir / "summary.json").read_text())
    rng = np.random.default_rng(0)
    p, imp = cfg.feature_probability().astype(np.float64), cfg.importance().astype(np.float64)
    n_np, n_eval = 100_000, cfg.train.eval_batch_size
    for i in range(cfg.n_inst):
        x = np.where(rng.random((n_np, cfg.data.n_features)) < p[i], rng.random((n_np, cfg.data.n_features)), 0.0)
        out = np.maximum(x @ W[i].T @ W[i] + b[i], 0.0)
        per_example = np.mean(imp[i] * (x - out) ** 2, axis=1)
        ours, theirs = per_example.mean(), summary["instances"][i]["eval_loss"]
        sigma = per_example.std() * math.sqrt(1 / n_np + 1 / n_eval)
        assert abs(ours - theirs) < 5 * sigma + 1e-7, (i, ours, theirs, sigma)
        if i == cfg.n_inst - 1:
            # the check has power: for the sparsest instance (negative bias, ReLU active) dropping the
            # ReLU or the bias moves the loss far beyond the tolerance
            for alt in (x @ W[i].T @ W[i] + b[i], np.maximum(x @ W[i].T @ W[i], 0.0)):
                assert abs(np.mean(imp[i] * (x - alt) ** 2) - theirs) > 5 * sigma


def test_load_returns_everything(trained_run):
    cfg, run_dir = trained_run
    r = runs.load(run_dir)
    assert r.path == run_dir and r.config == cfg
    assert set(r.weights) >= {"W", "b_final"}
    assert r.metrics and r.metrics[-1]["step"] == cfg.train.steps
    assert r.summary["name"] == cfg.name
    np.testing.assert_array_equal(r.npz("weights")["W"], r.weights["W"])


def test_load_names_the_missing_file(tmp_path, copy_run):
    d = copy_run()
    (d / "summary.json").unlink()
    with pytest.raises(runs.RunFileError, match="summary.json: missing"):
        runs.load(d)


# --- write safety ----------------------------------------------------------------------------------------
def test_prepare_run_dir_never_overwrites_unless_asked(tmp_path):
    """prepare_run_dir (library callers) refuses what open_run refuses; it keeps no marker, so what it
    created is the caller's, and --overwrite never deletes it (only a marked run's manifest files)."""
    fresh = runs.prepare_run_dir(tmp_path / "a")
    assert fresh.is_dir() and (fresh / "figures").is_dir() and not (fresh / runs.MARKER).exists()
    (fresh / "config.json").write_text("{}")
    (fresh / "metrics.jsonl").write_text('{"step": 1}\n')
    for overwrite in (False, True):
        with pytest.raises(runs.RunExistsError, match="not a toymodels run"):
            runs.prepare_run_dir(fresh, overwrite=overwrite)
    assert (fresh / "metrics.jsonl").read_text() == '{"step": 1}\n'
    # a marked run: its manifest's files are deleted, and nothing else
    with runs.open_run(tmp_path / "b") as run:
        runs.write_json(run.path / "config.json", {})
        runs.write_text(run.path / "figures" / "old_loss.png", "png")
    (run.path / "my_notes.txt").write_text("mine")
    with pytest.raises(runs.RunExistsError, match="--overwrite"):
        runs.prepare_run_dir(run.path)
    runs.prepare_run_dir(run.path, overwrite=True)
    assert not (run.path / "config.json").exists() and not (run.path / "figures" / "old_loss.png").exists()
    assert (run.path / "my_notes.txt").read_text() == "mine" and (run.path / "figures").is_dir()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(runs.RunExistsError):
        runs.prepare_run_dir(f, overwrite=True)
    assert f.read_text() == "x"


def test_default_run_dir_is_new(tmp_path, make_config):
    cfg = make_config()
    a = runs.default_run_dir(cfg, tmp_path)
    assert a.parent == tmp_path and a.name.startswith(f"{cfg.name}-seed{cfg.seed}-")
    a.mkdir()
    b = runs.default_run_dir(cfg, tmp_path)
    assert b != a and not b.exists()
    from toymodels import presets

    suite = runs.default_run_dir(presets.get("tms-correlated"), tmp_path)   # a suite has no seed of its own
    assert suite.name.startswith("tms-correlated-") and not suite.exists()


def test_atomic_writes_and_jsonable(tmp_path):
    import jax.numpy as jnp

    obj = {"a": np.float32(0.5), "b": np.arange(3), "c": jnp.ones(2), "d": (np.int64(3), [np.bool_(True)]),
           "e": float("nan")}
    path = runs.write_json(tmp_path / "x.json", obj)
    back = json.loads(path.read_text())
    assert back["a"] == 0.5 and back["b"] == [0, 1, 2] and back["c"] == [1.0, 1.0] and back["d"] == [3, [True]]
    assert math.isnan(back["e"])
    runs.write_npz(tmp_path / "w.npz", W=np.ones((2, 3)), b_final=jnp.zeros(3))
    with np.load(tmp_path / "w.npz", allow_pickle=False) as z:
        assert z["W"].shape == (2, 3) and z["b_final"].shape == (3,)
    assert sorted(os.listdir(tmp_path)) == ["w.npz", "x.json"]

    class Boom(Exception):
        pass

    def failing_write(f):
        f.write(b"half")
        raise Boom

    with pytest.raises(Boom):
        runs._atomic(tmp_path / "x.json", failing_write)
    assert json.loads((tmp_path / "x.json").read_text())["a"] == 0.5  # the old file survives intact
    assert sorted(os.listdir(tmp_path)) == ["w.npz", "x.json"]


def test_result_files_get_the_usual_permissions(trained_run, tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the results must end up with the mode an ordinary
    file gets under the current umask, like metrics.jsonl and the figures."""
    probe = tmp_path / "probe"
    probe.write_text("x")
    usual = probe.stat().st_mode & 0o777
    run_dir = trained_run[1]
    for name in ("config.json", "env.json", "summary.json", "weights.npz", "metrics.jsonl"):
        assert (run_dir / name).stat().st_mode & 0o777 == usual, name


def test_metrics_log_appends_rows(tmp_path):
    log = runs.MetricsLog(tmp_path / "m.jsonl", phase="pretrain")
    log({"step": 1, "loss": np.array([0.5, 0.25])})
    log({"step": 2, "loss": [0.4, 0.2]})
    rows = [json.loads(x) for x in Path(tmp_path / "m.jsonl").read_text().splitlines()]
    assert rows == [{"phase": "pretrain", "step": 1, "loss": [0.5, 0.25]},
                    {"phase": "pretrain", "step": 2, "loss": [0.4, 0.2]}]
