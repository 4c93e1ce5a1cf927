"""The training engine (toymodels.train): vmap over instances, chunked scan, restarts, schedules,
optimiser defaults, divergence handling, and one real superposition property."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toymodels import errors
from toymodels.config import TrainConfig
from toymodels.core import data as tdata
from toymodels.core import engine, geometry, optim
from toymodels.core import pretrain as pt
from toymodels.core.models import init_instances
from toymodels.experiment import params_to_weights


def setup(cfg, n_total=None):
    """The pieces ``pt.pretrain`` builds, exposed: (graphdef, params, tx, inst, keys, objective)."""
    n_total = n_total or cfg.n_inst * cfg.train.restarts
    root = jax.random.key(cfg.seed)
    graphdef, params = init_instances(cfg.model, cfg.data.n_features, n_total, jax.random.fold_in(root, 0))
    tx = optim.optimizer(cfg.train)
    inst = pt.instance_data(cfg)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, 1), i))(jnp.arange(n_total))
    objective = pt.reconstruction_objective(graphdef, tdata.make_sampler(cfg.data), cfg.data.task)
    return graphdef, params, tx, inst, keys, objective


def take(tree, idx):
    return jax.tree.map(lambda a: a[idx], tree)


def W_of(params) -> np.ndarray:
    return params_to_weights(params)["W"]


def assert_params_close(a, b, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=atol)


# --- vmap, joint training, determinism, chunking ------------------------------------------------
def test_vmap_over_instances_equals_a_per_instance_python_loop(make_config):
    """The engine (vmap over instances of a scanned step) equals a plain Python loop of single-instance
    optax steps with the documented data keys, fold_in(keys[i], t) at global step t."""
    cfg = make_config(**{"train.steps": 30, "data.batch_size": 64})
    _graphdef, params, tx, inst, keys, objective = setup(cfg)
    state = engine.fit(engine.init_state(params, tx, keys), objective, tx, inst, 30, chunk_size=10,
                      progress=False)
    assert state.step == 30

    @jax.jit
    def step(p, o, key, ins):
        _loss, grads = jax.value_and_grad(objective)(p, key, ins)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o

    for i in range(cfg.n_inst):
        p, ins = take(params, i), take(inst, i)
        o = tx.init(p)
        for t in range(30):
            p, o = step(p, o, jax.random.fold_in(keys[i], t), ins)
        assert_params_close(take(state.params, i), p)


def test_joint_training_equals_training_each_alone(make_config):
    """Instance i's trajectory does not depend on the other instances: fitting all of them at once
    equals fitting any subset on its own (instances share no parameters, and each has its own keys)."""
    cfg = make_config(**{"train.steps": 40, "data.batch_size": 64})
    _graphdef, params, tx, inst, keys, objective = setup(cfg)
    joint = engine.fit(engine.init_state(params, tx, keys), objective, tx, inst, 40, chunk_size=20,
                      progress=False)
    for idx in (np.array([2, 0]),):  # a subset, in another order
        alone = engine.fit(engine.init_state(take(params, idx), tx, keys[idx]), objective, tx, take(inst, idx),
                          40, chunk_size=20, progress=False)
        assert_params_close(take(joint.params, idx), alone.params)


@pytest.fixture(scope="module")
def base_pretrain(make_config):
    """One pretrain of the tiny config (60 steps), shared by the tests below."""
    cfg = make_config(**{"train.steps": 60, "data.batch_size": 64, "train.eval_batch_size": 1024})
    return (cfg, *pt.pretrain(cfg, progress=False))


def test_instance_result_independent_of_other_settings_in_pretrain(base_pretrain):
    """Through ``pretrain``: changing instance 0's feature probability and dropping instance 2 leaves
    instance 1's trained weights and its evaluation loss unchanged (instance i's init, data and
    evaluation keys depend on i only, never on n_inst or the other settings), while instance 0 changes."""
    base, _, p_base, i_base = base_pretrain
    other = base.replace(**{"n_inst": 2, "data.feature_probability": [0.5, 0.3]})
    _, p, info = pt.pretrain(other, progress=False)
    np.testing.assert_allclose(W_of(p)[1], W_of(p_base)[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info["eval_loss"][1], i_base["eval_loss"][1], rtol=1e-5)
    assert np.abs(W_of(p)[0] - W_of(p_base)[0]).max() > 1e-4


def test_same_seed_bit_identical_different_seed_differs(base_pretrain):
    cfg, _, a, info_a = base_pretrain
    _, b, info_b = pt.pretrain(cfg, progress=False)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(info_a["eval_loss"], info_b["eval_loss"])
    _, c, _ = pt.pretrain(cfg.replace(seed=1), progress=False)
    assert np.abs(W_of(c) - W_of(a)).max() > 1e-3


def test_chunking_does_not_change_the_result_and_logs_at_boundaries(make_config):
    """200 steps in chunks of 100, or of 64 with a remainder chunk of 8, give the same weights. Rows
    are logged at every multiple of log_every and at the end of every chunk."""
    cfg = make_config(**{"train.steps": 200, "data.batch_size": 64})
    _graphdef, params, tx, inst, keys, objective = setup(cfg)
    rows = []
    a = engine.fit(engine.init_state(params, tx, keys), objective, tx, inst, 200, chunk_size=100, progress=False)
    b = engine.fit(engine.init_state(params, tx, keys), objective, tx, inst, 200, chunk_size=64, log_every=20,
                  on_log=rows.append, progress=False)
    assert a.step == b.step == 200
    assert_params_close(a.params, b.params)
    assert [r["step"] for r in rows] == [20, 40, 60, 64, 80, 100, 120, 128, 140, 160, 180, 192, 200]
    for r in rows:
        assert len(r["loss"]) == cfg.n_inst and all(math.isfinite(v) for v in r["loss"])
        assert r["loss_mean"] == pytest.approx(np.mean(r["loss"]), rel=1e-6)
    # a row's loss is the mean over the last log_every steps (within the chunk): it decreases overall
    assert rows[-1]["loss_mean"] < rows[0]["loss_mean"]


# --- restarts ---------------------------------------------------------------------------------------
def test_restarts_keep_the_lowest_eval_loss(make_config):
    """With 3 restarts per setting, pretrain returns, for each setting, the restart with the lowest
    evaluation loss, and the returned weights are that restart's weights."""
    cfg = make_config(**{"train.steps": 40, "train.restarts": 3, "data.batch_size": 64,
                         "train.eval_batch_size": 1024})
    final = {}
    _graphdef, best, info = pt.pretrain(cfg, on_chunk=lambda s: final.update(params=s.params), progress=False)
    all_loss = info["all_eval_loss"]
    assert all_loss.shape == (cfg.n_inst, 3)
    assert len(np.unique(all_loss.round(7))) > cfg.n_inst  # the restarts really differ
    np.testing.assert_array_equal(info["restart"], all_loss.argmin(1))
    W_all = W_of(final["params"])  # (n_inst * restarts, m, n): setting s, restart r at s * 3 + r
    np.testing.assert_array_equal(W_of(best), W_all[np.arange(cfg.n_inst) * 3 + info["restart"]])
    # the reported loss is the kept restart's on a fresh batch, not the selection minimum
    assert np.all(info["eval_loss"] != all_loss.min(1))
    np.testing.assert_allclose(info["eval_loss"], all_loss.min(1), rtol=0.2)


def test_restarts_are_ranked_on_one_shared_batch_and_reported_on_a_fresh_one(make_config):
    """Identical restarts (the same weights copied) get identical selection losses: they are scored on
    one shared batch per setting. Different settings get independent batches, and restarts=1 with the
    same key scores setting s on the same batch as its restarts."""
    cfg = make_config(**{"train.steps": 40, "data.batch_size": 64, "train.eval_batch_size": 512})
    graphdef, params, *_ = setup(cfg)
    copies = jax.tree.map(lambda a: jnp.repeat(a, 4, axis=0), params)  # setting s restart r = params[s]
    inst = pt.instance_data(cfg, restarts=4)
    losses = pt.eval_losses(graphdef, copies, cfg, inst, jax.random.key(5), restarts=4).reshape(cfg.n_inst, 4)
    assert np.all(losses == losses[:, :1]), losses          # one batch per setting
    assert len(np.unique(losses[:, 0])) == cfg.n_inst         # settings differ (own p, own batch)
    # restarts=1 on the same key: setting s uses fold_in(key, s), the same batch as above
    single = pt.eval_losses(graphdef, params, cfg, pt.instance_data(cfg, restarts=1), jax.random.key(5))
    np.testing.assert_array_equal(single, losses[:, 0])


# --- optimiser and schedules ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_schedule_values(kind):
    lr, steps = 1e-2, 100
    sched = optim.schedule(kind, lr, steps)
    expected = {
        "constant": lambda t: lr,
        "linear": lambda t: lr * (1 - t / steps),
        "cosine": lambda t: lr * 0.5 * (1 + math.cos(math.pi * t / steps)),
    }[kind]
    for t in (0, 1, 25, 50, 99, 100):
        assert float(sched(t)) == pytest.approx(expected(t), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_optimizer_applies_the_schedule_over_train_steps(kind):
    """SGD on L(w) = Σ w (gradient 1): the step-t update is −lr_t, with lr_t from the schedule over
    train.steps."""
    cfg = TrainConfig(optimizer="sgd", schedule=kind, lr=0.1, steps=10)
    tx = optim.optimizer(cfg)
    sched = optim.schedule(kind, 0.1, 10)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    for t in range(10):
        updates, state = tx.update({"w": jnp.ones(2)}, state, params)
        np.testing.assert_allclose(np.asarray(updates["w"]), -float(sched(t)), rtol=1e-6, atol=1e-9)


def test_adamw_weight_decay_is_notebook_default():
    """TMS notebook defaults: AdamW, lr 1e-3, weight decay 0.01 (not optax's 1e-4). With a zero
    gradient Adam's step is 0, so the update is exactly −lr · wd · w."""
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.schedule, cfg.steps) == ("adamw", 1e-3, 0.01,
                                                                                  "constant", 10_000)
    tx = optim.optimizer(cfg)
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    updates, _ = tx.update({"w": jnp.zeros(3)}, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-3 * 0.01 * np.array([1.0, -2.0, 0.5]), rtol=1e-6)


def test_weighted_mse_is_mean_over_batch_and_features():
    rng = np.random.default_rng(0)
    out, tgt = rng.random((7, 5)).astype(np.float32), rng.random((7, 5)).astype(np.float32)
    imp = rng.random(5).astype(np.float32)
    expected = np.mean(imp[None, :] * (tgt.astype(np.float64) - out) ** 2)
    assert float(engine.weighted_mse(out, tgt, imp)) == pytest.approx(expected, rel=1e-5)


# --- divergence -----------------------------------------------------------------------------------
def test_nonfinite_loss_raises_naming_step_and_instance():
    """A toy objective whose loss becomes NaN once w > thr_i, with SGD lr 1 moving w by +1 a step:
    instance 1 (thr 37.5) is the first to fail, at step 38 (0-based: after 38 updates). Rows logged
    before the failure are delivered; none after it."""
    def objective(params, key, inst):
        w = params["w"]
        return jnp.where(w > inst["thr"], jnp.nan, -w)

    tx = optax.sgd(1.0)
    params = {"w": jnp.zeros(3)}
    inst = {"thr": jnp.array([1000.0, 37.5, 80.0])}
    keys = jax.random.split(jax.random.key(0), 3)
    rows = []
    with pytest.raises(errors.TrainingDiverged) as err:
        engine.fit(engine.init_state(params, tx, keys), objective, tx, inst, 100, chunk_size=10, log_every=10,
                  on_log=rows.append, progress=False)
    assert (err.value.step, err.value.instance) == (38, 1)
    assert "step 38" in str(err.value) and "instance 1" in str(err.value)
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert all(math.isfinite(v) for r in rows for v in r["loss"])


# --- a real property of superposition ------------------------------------------------------------------
def test_short_training_reduces_loss_and_sparse_features_go_into_superposition(make_config):
    """TMS §Demonstrating Superposition at n=5, m=2: with dense features (p=1) the model keeps about
    m features (D* = m/‖W‖_F² near 1); with sparse features (p=0.05) it represents more features than
    it has dimensions (> 2 features with ‖W_i‖ > 0.5, D* < 1/2). Both losses fall well below their
    value at initialisation. (500 steps at lr 1e-2 suffice at this size; thresholds are loose.)"""
    cfg = make_config(**{"n_inst": 2, "data.feature_probability": [1.0, 0.05], "data.batch_size": 256,
                         "train.steps": 500, "train.chunk_size": 250, "train.lr": 1e-2,
                         "train.eval_batch_size": 8192})
    graphdef, params0, *_ = setup(cfg)
    k_eval = jax.random.key(123)
    loss0 = pt.eval_losses(graphdef, params0, cfg, pt.instance_data(cfg), k_eval)
    _, params, _info = pt.pretrain(cfg, progress=False)
    loss1 = pt.eval_losses(graphdef, params, cfg, pt.instance_data(cfg), k_eval)
    assert np.all(loss1 < 0.5 * loss0), (loss0, loss1)
    W = W_of(params)
    dstar = [float(geometry.dimensions_per_feature(w)) for w in W]
    n_rep = [int(geometry.n_represented(w)) for w in W]
    assert dstar[0] > 0.7, dstar
    assert n_rep[1] > cfg.model.d_hidden and dstar[1] < 0.5, (n_rep, dstar)


def test_a_large_evaluation_batch_is_scored_in_chunks_shared_by_restarts(make_config, monkeypatch):
    """With a chunk budget smaller than the batch, the batch is K equal chunks: identical restarts still
    get identical losses (one shared set of chunks per setting), and the chunked loss agrees with an
    unchunked batch of the same size to within sampling noise."""
    cfg = make_config(**{"train.eval_batch_size": 40_000})
    graphdef, params, *_ = setup(cfg)
    copies = jax.tree.map(lambda a: jnp.repeat(a, 3, axis=0), params)
    inst = pt.instance_data(cfg, restarts=3)
    whole = pt.eval_losses(graphdef, copies, cfg, inst, jax.random.key(1), restarts=3)
    monkeypatch.setattr(pt, "EVAL_CHUNK_ELEMENTS", 9 * 5 * 4096)   # 9 instances x 5 features: 4096 a chunk
    assert pt._eval_chunks(cfg, 9) == (10, 4000)
    chunked = pt.eval_losses(graphdef, copies, cfg, inst, jax.random.key(1), restarts=3).reshape(3, 3)
    assert np.all(chunked == chunked[:, :1])
    np.testing.assert_allclose(chunked[:, 0], whole.reshape(3, 3)[:, 0], rtol=0.05)
    assert not np.array_equal(chunked[:, 0], whole.reshape(3, 3)[:, 0])   # other samples: really chunked


def test_the_report_batch_is_common_to_all_settings(make_config):
    """restarts=None scores every instance on one batch: identical models with the same data distribution
    get identical losses (paired comparisons across settings carry no batch noise)."""
    cfg = make_config(**{"data.feature_probability": 0.2, "train.eval_batch_size": 2048})
    graphdef, params, *_ = setup(cfg)
    same = jax.tree.map(lambda a: jnp.repeat(a[:1], cfg.n_inst, axis=0), params)
    inst = pt.instance_data(cfg, restarts=1)
    common = pt.eval_losses(graphdef, same, cfg, inst, jax.random.key(2), restarts=None)
    assert np.all(common == common[0])
    per_setting = pt.eval_losses(graphdef, same, cfg, inst, jax.random.key(2), restarts=1)
    assert len(np.unique(per_setting)) == cfg.n_inst


def test_without_a_terminal_progress_is_plain_lines_with_step_rate_eta_and_loss(make_config, capsys):
    """stderr is not a terminal under pytest: no tqdm bar, but plain lines a log file can hold."""
    cfg = make_config(**{"train.steps": 200, "train.chunk_size": 20, "data.batch_size": 64})
    _graphdef, params, tx, inst, keys, objective = setup(cfg)
    engine.fit(engine.init_state(params, tx, keys), objective, tx, inst, 200, chunk_size=20, progress="tiny-run")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tiny-run: step")]
    assert lines and lines[-1].startswith("tiny-run: step 200/200 (100%)"), err
    assert all(" steps/s, ETA " in line and ", loss " in line for line in lines)
    assert "\r" not in err and "\x1b" not in err
