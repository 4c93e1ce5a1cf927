"""What a newcomer meets first (issue 15): the public ``tm.hidden`` and ``tm.FineTuneHooks``, ``load_run``
on suites, rerunning a run from its own ``config.json``, ``plot --out``, clear errors for partial names,
and the warning when a planted feature ends pretraining barely represented."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_cli import run_cli  # the CLI in-process: (exit code, stdout, stderr)

import toymodels as tm
from toymodels import experiment, presets
from toymodels.core.planting import REPRESENTED_NORM, barely_represented
from toymodels.errors import RepresentationWarning
from toymodels.io import runs
from toymodels.lab.report import format_table

ROOT = Path(__file__).resolve().parent.parent


def test_hidden_is_W_x_per_instance_and_for_all(make_config):
    from toymodels.core.models import init_instances

    cfg = make_config()
    graphdef, params = init_instances(cfg.model, cfg.data.n_features, cfg.n_inst, jax.random.key(1))
    params["b_final"] = params["b_final"].replace(jax.random.normal(jax.random.key(2), params["b_final"][...].shape))
    x = jax.random.uniform(jax.random.key(0), (7, cfg.data.n_features))
    W = np.asarray(params["W"][...])
    h_all = np.asarray(tm.hidden(graphdef, params, x))
    assert h_all.shape == (cfg.n_inst, 7, cfg.model.d_hidden)
    for i in range(cfg.n_inst):
        np.testing.assert_allclose(h_all[i], np.asarray(x) @ W[i].T, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(tm.hidden(graphdef, params, x, instance=i)), h_all[i])
    # the output is ReLU(h Wᵀ... ) read from the same h: apply agrees with the hidden activations
    y = np.asarray(tm.apply(graphdef, params, x, instance=1))
    b = np.asarray(params["b_final"][...])[1]
    np.testing.assert_allclose(y, np.maximum(h_all[1] @ W[1] + b, 0), rtol=1e-5, atol=1e-6)


def test_finetune_hooks_are_public_and_a_plugin_changes_the_result():
    assert tm.FineTuneHooks is not None and isinstance(tm.NO_HOOKS, tm.FineTuneHooks)

    class Anchor(tm.FineTuneHooks):   # L' = L + λ Σ (W − W₀)²: pulls W back to its pretrained value
        calls = 0

        def instance_arrays(self, plan, base):
            return {"W0": jnp.asarray(base["W"][...])}

        def wrap_objective(self, undefended, graphdef, sample):
            Anchor.calls += 1
            return lambda params, key, inst: (undefended(params, key, inst)
                                              + 100.0 * jnp.sum((params["W"][...] - inst["W0"]) ** 2))

    cfg = presets.get("analogy-15deg").replace(**{"train.steps": 200, "finetune.steps": 50, "n_inst": 1,
                                                   "finetune.regimes": [{"name": "narrow"}]})
    graphdef, params, _ = tm.pretrain(cfg, progress=False)
    W0 = np.asarray(params["W"][...])[0]
    a = tm.finetune(cfg, graphdef, params, progress=False)
    b = tm.finetune(cfg, graphdef, params, progress=False, hooks=Anchor())
    assert Anchor.calls >= 1
    moved = lambda r: float(np.abs(np.asarray(r.finetuned["W"][...])[0] - W0).max())
    assert moved(a) > 1e-3                  # the fine-tune moves W ...
    assert moved(b) < 0.2 * moved(a)        # ... and the plug-in's anchor holds most of it back


@pytest.fixture(scope="module")
def tiny_suite(make_config, tmp_path_factory) -> Path:
    """A finished two-member suite (read-only: copy it before editing)."""
    small = {"train.steps": 30, "plots": []}
    suite = presets.Suite("tiny-suite", (make_config(name="m1", **small), make_config(name="m2", seed=1, **small)))
    return experiment.run_suite(suite, runs.prepare_run_dir(tmp_path_factory.mktemp("suite") / "tiny-suite"),
                                progress=False, echo=lambda s: None)


def test_load_run_on_a_suite_stacks_members(tiny_suite):
    pytest.importorskip("pandas")
    d = tiny_suite
    s = tm.load_run(d)
    assert list(s.members) == ["m1", "m2"]
    assert list(s.settings.columns)[0] == "member"
    assert sorted(set(s.settings["member"])) == ["m1", "m2"]
    assert len(s.settings) == sum(len(t.settings) for t in s.members.values()) == 2 * 3
    assert len(s.metrics) == sum(len(t.metrics) for t in s.members.values()) > 0


def test_load_run_refuses_a_suite_naming_a_directory_outside(tiny_suite, tmp_path):
    import shutil

    pytest.importorskip("pandas")
    d = tmp_path / "copy"
    shutil.copytree(tiny_suite, d)
    suite = json.loads((d / "suite.json").read_text())
    suite["members"] = ["../elsewhere"]
    (d / "suite.json").write_text(json.dumps(suite))
    with pytest.raises(tm.ConfigError, match="members"):
        tm.load_run(d)
    suite["members"] = ["m1", "m2"]
    (d / "suite.json").write_text(json.dumps(suite))
    shutil.move(d / "m2", tmp_path / "outside")
    (d / "m2").symlink_to(tmp_path / "outside")     # a member that is a link out of the suite
    with pytest.raises(tm.ConfigError, match="symbolic link"):
        tm.load_run(d)


def test_a_run_reruns_from_its_own_config_json(capsys, trained_run, tmp_path):
    cfg, run_dir = trained_run
    code, out, err = run_cli(capsys, "run", run_dir / "config.json", "--out", tmp_path / "again", "--quiet")
    assert code == 0, err
    again = tmp_path / "again"
    assert json.loads((again / "config.json").read_text()) == json.loads((run_dir / "config.json").read_text())
    with np.load(run_dir / "weights.npz") as a, np.load(again / "weights.npz") as b:
        np.testing.assert_array_equal(a["W"], b["W"])   # same config, same seed, same machine: bit-identical


def test_show_output_runs_again(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "show", "tms-intro", "train.steps=20", "seed=7")
    assert code == 0
    path = tmp_path / "shown.json"
    path.write_text(out)
    code, out, err = run_cli(capsys, "show", path)
    assert code == 0, err
    assert json.loads(out)["train"]["steps"] == 20 and json.loads(out)["seed"] == 7


@pytest.mark.parametrize("content, what", [("[1, 2]", "JSON object"), ('{"suite": "s", "members": []}', "members")])
def test_bad_config_json_is_one_line(capsys, tmp_path, content, what):
    path = tmp_path / "c.json"
    path.write_text(content)
    code, _, err = run_cli(capsys, "run", path, "--out", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1 and what in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_plot_out_writes_elsewhere_and_never_overwrites(capsys, copy_run, tmp_path):
    run_dir = copy_run()
    before = sorted(p.name for p in (run_dir / "figures").iterdir())
    code, out, err = run_cli(capsys, "plot", run_dir, "--out", tmp_path / "figs")
    assert code == 0, err
    drawn = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert drawn and drawn == sorted(Path(p).name for p in out.split())
    assert sorted(p.name for p in (run_dir / "figures").iterdir()) == before
    mine = tmp_path / "figs" / drawn[0]
    mine.write_bytes(b"mine")
    code, _, err = run_cli(capsys, "plot", run_dir, "--out", tmp_path / "figs")
    assert code == 2 and err.startswith("toymodels: error: --out=") and mine.read_bytes() == b"mine"


def test_partial_names_are_a_clear_error():
    W = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"names has 1 entries; W has 3 features"):
        tm.plot_finetune_2d(W, W, names=["helpful"])
    with pytest.raises(ValueError, match="titles"):
        tm.plot_features_in_2d(np.ones((2, 2, 3)), titles=["only one"])
    with pytest.raises(ValueError, match="colors"):
        tm.plot_features_in_2d(W, colors=["r", "g"])


def test_barely_represented_threshold():
    assert REPRESENTED_NORM == 0.5
    assert barely_represented(["a", "b"], [[1.0, 0.01], [0.49, 0.5]]) == [["b"], ["a"]]


def test_collapse_in_the_0_20_60_case_is_warned_recorded_and_marked(tmp_path):
    """Angles 0/20/60° with toxic planted at norm 0.2: pretraining leaves toxic at norm ~0.01, and its
    table row would read 0.00 -> 0.00. The run warns, summary.json records it and the table marks it."""
    cfg = presets.get("analogy-15deg").replace(**{
        "features.names": ["helpful", "toxic", "insult"], "features.harmful": ["toxic", "insult"],
        "features.angles": [0, 20, 60], "features.norms": [1.0, 0.2, 0.2], "finetune.steps": 50, "plots": [],
        "finetune.regimes": [{"name": "narrow"}]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = experiment.run(cfg, runs.prepare_run_dir(tmp_path / "collapse"), progress=False, echo=lambda s: None)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RepresentationWarning)]
    assert len(msgs) == 1 and "'toxic'" in msgs[0] and f"of {cfg.n_inst} models" in msgs[0]
    s = json.loads((run_dir / "summary.json").read_text())
    norms = np.asarray(s["features"]["norms"])
    assert (norms[:, 1] < 0.1).all() and (norms[:, 0] > 0.5).all()   # toxic collapsed, helpful represented
    assert s["features"]["barely_represented"] == [["toxic"]] * cfg.n_inst
    table = format_table(s)
    assert "toxic!" in table and "insult!" not in table
    assert "! toxic ended pretraining barely represented" in table


def test_a_represented_feature_does_not_warn():
    feats = {"names": ["helpful", "toxic"], "harmful": ["toxic"], "norms": [[0.97, 0.55], [0.99, 0.53]],
             "represented_norm": REPRESENTED_NORM}
    feats["barely_represented"] = barely_represented(feats["names"], feats["norms"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert experiment.warn_barely_represented(feats) == []
    assert not caught and feats["barely_represented"] == [[], []]
    feats["norms"][1][1] = 0.44
    feats["barely_represented"] = barely_represented(feats["names"], feats["norms"])
    with pytest.warns(RepresentationWarning, match=r"norm 0.44 < 0.5\) in 1 of 2 models \(instances 1\)"):
        experiment.warn_barely_represented(feats)


def test_env_json_names_the_cpu(trained_run):
    env = json.loads((trained_run[1] / "env.json").read_text())
    cpu = env["cpu"]
    assert cpu["model"] and cpu["cores"] >= 1 and isinstance(cpu["isa"], list)
    assert set(cpu["isa"]) <= set(__import__("toymodels.machine", fromlist=["x"]).XLA_ISA_FLAGS)
    assert env["jax"] == jax.__version__ and env["jaxlib"]
    fp = __import__("toymodels.machine", fromlist=["x"]).fingerprint(env)
    assert fp["cpu"]["model"] == cpu["model"] and fp["numpy"] == np.__version__
