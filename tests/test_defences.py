"""Defences (the penalties themselves are in test_penalties.py): the gradient projection, the filters, the freeze
mask, and bit-for-bit reproduction of the undefended run at λ = 0."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toymodels import defences
from toymodels.config import (
    FT_DEFENCES,
    Config,
    ConfigError,
    DataConfig,
    FeaturesConfig,
    FineTuneConfig,
    ModelConfig,
    RegimeConfig,
    TrainConfig,
)
from toymodels.core import data as tdata
from toymodels.core import engine, penalties, planting
from toymodels.core import pretrain as pt
from toymodels.lab import finetune as lab_ft
from toymodels.lab import objective, plan, summary

TASK = RegimeConfig("task", "task", "target")
FULL_ALL = RegimeConfig("full-all", "full", "all")


# --- the gradient projection ---------------------------------------------------------------------------
def _projection_state(W, harmful, enabled=1.0):
    tx = defences.optim.project_out_harmful(harmful)
    from flax import nnx

    params = nnx.State({"W": nnx.Param(jnp.asarray(W, jnp.float32)), "b_final": nnx.Param(jnp.zeros(W.shape[1]))})
    state = tx.init(params)._replace(enabled=jnp.asarray(enabled, jnp.float32))
    return tx, params, state


@settings(max_examples=10)
@given(seed=st.integers(0, 10_000))
def test_projection_leaves_no_component_along_harmful_directions(seed):
    from flax import nnx

    rng = np.random.default_rng(seed)
    W = rng.normal(size=(5, 8))
    harmful = np.array([2, 6])
    tx, params, state = _projection_state(W, harmful)
    u = rng.normal(size=W.shape)
    updates = nnx.State({"W": nnx.Param(jnp.asarray(u, jnp.float32)), "b_final": nnx.Param(jnp.ones(8))})
    new, _ = tx.update(updates, state, params)
    v = np.asarray(new["W"][...], np.float64)
    Q, _ = np.linalg.qr(W[:, harmful])                               # orthonormal basis of the span
    assert np.abs(Q.T @ v).max() <= 1e-6 * np.abs(u).max()           # nothing along the harmful span
    P_perp = np.eye(5) - Q @ Q.T
    np.testing.assert_allclose(v, P_perp @ u, atol=1e-5)             # the rest of the update is kept
    np.testing.assert_array_equal(np.asarray(new["b_final"][...]), np.ones(8))
    # disabled: the update comes back bit for bit
    tx, params, state = _projection_state(W, harmful, enabled=0.0)
    same, _ = tx.update(updates, state, params)
    np.testing.assert_array_equal(np.asarray(same["W"][...]), np.asarray(updates["W"][...]))


def small_cfg(regimes, n_inst=2, d_hidden=2, steps=20, **ft):
    ft = {"steps": steps, "chunk_size": 10, "log_every": 10, "batch_size": 128, "eval_batch_size": 512,
          "regimes": tuple(regimes), "save_trajectory": False, **ft}
    feats = (FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="pinned", angles=(0.0, 15.0))
             if d_hidden == 2 else
             FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="pinned",
                            cosines=[[1.0, 0.9], [0.9, 1.0]]))
    return Config(name="def", n_inst=n_inst, seed=5,
                  data=DataConfig(n_features=5, feature_probability=0.2, batch_size=128),
                  model=ModelConfig(d_hidden=d_hidden), train=TrainConfig(steps=30, chunk_size=30, log_every=30),
                  features=feats, finetune=FineTuneConfig(**ft))


@pytest.fixture(scope="module")
def planted():
    cfg = small_cfg([TASK])
    return planting.init_params(cfg, cfg.n_inst, jax.random.key(2))


def run_chunk(cfg, graphdef, params):
    """Fine-tune with the engine's own compiled chunk (what ``finetune`` runs between probes): the
    starting and final full states, and the losses. One compile instead of finetune()'s several."""
    prep = lab_ft.prepare(cfg, graphdef, params, defences.hooks_for(cfg))
    chunk = engine.make_chunk(prep.objective, prep.tx, cfg.finetune.steps)
    s = prep.state
    new, _, losses = chunk(s.params, s.opt_state, s.keys, prep.inst, jnp.asarray(0, jnp.int32))
    return ({k: np.asarray(prep.base[k][...]) for k in ("W", "b_final")},
            {k: np.asarray(new[k][...]) for k in ("W", "b_final")}, np.asarray(losses))


def test_projected_finetuning_keeps_the_harmful_span_of_W_fixed():
    # full data and the loss on all outputs move every column, the harmful one included
    cfg = small_cfg([dataclasses.replace(FULL_ALL, defence="grad_projection")], d_hidden=3, steps=30, lr=1e-2)
    graphdef, params = planting.init_params(cfg, cfg.n_inst, jax.random.key(2))
    before, after, _ = run_chunk(cfg, graphdef, params)
    W0, W1 = before["W"].astype(np.float64), after["W"].astype(np.float64)
    for k in range(cfg.n_inst):
        d = W0[k][:, 1] / np.linalg.norm(W0[k][:, 1])               # toxic's pretrained direction
        dW = W1[k] - W0[k]
        assert np.abs(d @ dW).max() < 1e-6                          # no column moved along it
        assert np.linalg.norm(dW) > 1e-2                            # but the model did train


def test_freeze_keeps_harmful_parameters_bit_identical_and_trains_the_rest():
    cfg = small_cfg([dataclasses.replace(FULL_ALL, defence="freeze_harmful")], lr=1e-2, optimizer="adamw",
                    weight_decay=0.1)
    graphdef, params = planting.init_params(cfg, cfg.n_inst, jax.random.key(2))
    before, after, _ = run_chunk(cfg, graphdef, params)
    (W0, b0), (W1, b1) = (before["W"], before["b_final"]), (after["W"], after["b_final"])
    assert np.array_equal(W0[:, :, 1], W1[:, :, 1]) and np.array_equal(b0[:, 1], b1[:, 1])
    assert np.abs(W1[:, :, [0, 2, 3, 4]] - W0[:, :, [0, 2, 3, 4]]).max() > 1e-3


# --- the data filter --------------------------------------------------------------------------------------
@settings(max_examples=10)
@given(seed=st.integers(0, 10_000), fraction=st.sampled_from([0.0, 0.1, 0.37, 0.5, 1.0]))
def test_filter_drops_exactly_the_reported_samples(seed, fraction):
    rng = np.random.default_rng(seed)
    B, d = 64, 3
    h = rng.normal(size=(B, d))
    h[rng.uniform(size=B) < 0.3] = 0.0                              # empty samples are never in the pool
    dirs = np.asarray(penalties.unit_columns(jnp.asarray(rng.normal(size=(d, 2)))))
    score = np.asarray(defences.data.harmful_scores(jnp.asarray(h), jnp.asarray(dirs)))
    nonempty = np.linalg.norm(h, axis=1) > 0
    k = int(np.round(fraction * nonempty.sum()))
    drops = {}
    for mode in (1, 2):
        keep, n_drop = defences.data.filter_keep(jnp.asarray(h), jnp.asarray(dirs), fraction, mode, jax.random.key(seed))
        dropped = np.asarray(keep) == 0
        assert int(n_drop) == dropped.sum() == k
        assert not np.any(dropped & ~nonempty)
        drops[mode] = dropped
    kept_pool = nonempty & ~drops[1]
    if drops[1].any() and kept_pool.any():                           # geometric: the closest ones go
        assert score[drops[1]].min() >= score[kept_pool].max()
    keep0, n0 = defences.data.filter_keep(jnp.asarray(h), jnp.asarray(dirs), fraction, 0, jax.random.key(seed))
    assert int(n0) == 0 and np.all(np.asarray(keep0) == 1)


def test_filtered_loss_is_the_loss_of_the_kept_samples():
    cfg = small_cfg([dataclasses.replace(TASK, defence="filter_geometric", strength=0.4)], n_inst=1)
    graphdef, params = planting.init_params(cfg, 1, jax.random.key(2))
    prep = lab_ft.prepare(cfg, graphdef, params, defences.hooks_for(cfg))
    one = lambda tree: jax.tree.map(lambda a: a[0], tree)
    p, inst = one(prep.state.params), one(prep.inst)
    key = jax.random.key(11)
    loss = float(jax.jit(prep.objective)(p, key, inst))
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=cfg.finetune.batch_size))
    x = objective.finetune_inputs(sample, key, inst)
    keep, n_drop = jax.jit(defences.data.filter_keep)(x @ inst["filter_W"].T, inst["filter_dirs"], inst["filter_fraction"],
                                                 inst["filter_mode"], jax.random.fold_in(key, defences.data.FILTER_SALT))
    kept = np.asarray(keep) > 0
    assert int(n_drop) > 0
    from flax import nnx

    out = np.asarray(nnx.merge(graphdef, p)(x))
    tgt = np.asarray(x) * np.asarray(inst["out_scale"])
    se = np.asarray(inst["loss_weight"]) * (tgt - out) ** 2
    assert loss == pytest.approx(float(se[kept].mean()), rel=1e-5)


# --- λ = 0 is the undefended run, bit for bit ------------------------------------------------------------
@pytest.fixture(scope="module")
def undefended(planted):
    graphdef, params = planted
    return run_chunk(small_cfg([TASK]), graphdef, params)[1:]


@pytest.mark.parametrize("defence", [d for d in FT_DEFENCES if defences.DEFENCES[d].plugs in ("loss", "data")])
def test_a_defence_at_zero_strength_reproduces_the_undefended_run(defence, planted, undefended):
    graphdef, params = planted
    cfg = small_cfg([dataclasses.replace(TASK, name=defence, defence=defence, strength=0.0)])
    _, after, losses = run_chunk(cfg, graphdef, params)
    ref, ref_losses = undefended
    for leaf in ("W", "b_final"):
        assert np.array_equal(after[leaf], ref[leaf]), leaf
    assert np.array_equal(losses, ref_losses)


def test_every_defence_at_positive_strength_changes_the_run(planted, undefended):
    # (so that the zero-strength test above is not empty) one sweep, every regime-level defence at 0.5
    graphdef, params = planted
    names = [d for d in FT_DEFENCES if d != "none"]
    cfg = small_cfg([dataclasses.replace(TASK, name=d, defence=d, strength=0.5) for d in names])
    _, after, _ = run_chunk(cfg, graphdef, params)
    W, W_ref = after["W"], undefended[0]["W"]
    for r, d in enumerate(names):
        if d == "freeze_harmful":  # toxic gets no gradient on task data: freezing it changes nothing there
            assert np.array_equal(W[r::len(names)][:, :, 1], W_ref[:, :, 1])
            continue
        assert not np.array_equal(W[r::len(names)], W_ref), d


def test_defences_share_the_data_stream_of_their_pretrained_model(planted):
    # one sweep: undefended, a filter at 0 (not compiled in) and one at 0.3 (compiled in, so the other
    # instances run through it with nothing dropped): all see their pretrained model's data stream
    graphdef, params = planted
    cfg = small_cfg([TASK, dataclasses.replace(TASK, name="f0", defence="filter_random", strength=0.0),
                     dataclasses.replace(TASK, name="f3", defence="filter_random", strength=0.3)])
    W = run_chunk(cfg, graphdef, params)[1]["W"]
    np.testing.assert_allclose(W[0::3], W[1::3], atol=1e-6)
    np.testing.assert_allclose(W[0::3], run_chunk(small_cfg([TASK]), graphdef, params)[1]["W"], atol=1e-6)
    assert np.abs(W[2::3] - W[0::3]).max() > 1e-4


# --- configuration and summary ----------------------------------------------------------------------------
def test_registry_matches_the_config_and_bad_settings_are_rejected():
    assert set(FT_DEFENCES) | {"lora"} == set(defences.DEFENCES)
    with pytest.raises(ConfigError, match="finetune.regimes.defence"):
        RegimeConfig("r", defence="orthogonalise")
    with pytest.raises(ConfigError, match="finetune.regimes.strength"):
        RegimeConfig("r", defence="replay", strength=1.5)
    with pytest.raises(ConfigError, match="finetune.regimes.defence"):
        small_cfg([dataclasses.replace(TASK, defence="grad_projection")], trainable="lora")
    assert defences.spec(small_cfg([TASK])) is None


def test_summary_rows_pair_each_defence_with_its_undefended_baseline(planted):
    graphdef, params = planted
    cfg = small_cfg([TASK, dataclasses.replace(TASK, name="tc", defence="targeted_cos", strength=1.0)], steps=30,
                    lr=1e-2)
    res = lab_ft.finetune(cfg, graphdef, params, progress=False, hooks=defences.hooks_for(cfg))
    s = summary.summarize(cfg, res, defences.hooks_for(cfg))
    rows = s["defences"]["regimes"]
    assert rows["tc"]["baseline"] == "task" and rows["task"]["baseline"] == "task"
    inst = s["instances"]
    pp = {r: [e["harmful"]["toxic"]["rate"]["change_pp"] for e in inst if e["regime"] == r] for r in ("task", "tc")}
    assert rows["tc"]["rate_change_pp"]["mean"] == pytest.approx(np.mean(pp["tc"]))
    np.testing.assert_allclose(rows["tc"]["rate_change_pp_vs_baseline"]["values"],
                               np.array(pp["tc"]) - np.array(pp["task"]))
    # capability: the pretrained models are the same for both regimes, so their 'before' numbers agree
    caps = s["defences"]["instances"]
    assert caps[0]["recon_loss_before"] == caps[1]["recon_loss_before"]
    lo, hi = rows["tc"]["rate_change_pp"]["ci95"]
    assert lo <= rows["tc"]["rate_change_pp"]["mean"] <= hi


def test_capability_loss_matches_the_pretraining_objective(planted):
    graphdef, params = planted
    cfg = small_cfg([TASK])
    p = plan.make_plan(cfg)
    cap = defences.capability(graphdef, cfg, p, params)
    # recompute with the engine's own pretraining objective on the same batch
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=cfg.finetune.eval_batch_size))
    key = jax.random.fold_in(jax.random.key(cfg.seed), defences.evaluate.EVAL_SEED_OFFSET)
    obj = pt.reconstruction_objective(graphdef, sample, cfg.data.task)
    for k in range(cfg.n_inst):
        inst = {"feature_probability": jnp.asarray(cfg.feature_probability()[k]),
                "importance": jnp.asarray(cfg.importance()[k])}
        want = float(obj(jax.tree.map(lambda a, k=k: a[k], params), key, inst))
        assert cap["recon_loss"][k] == pytest.approx(want, rel=1e-5)
        assert cap["recon_loss_other"][k] < cap["recon_loss"][k]
        assert cap["recon_loss_other"][k] == pytest.approx(cap["recon_loss_benign"][k] + cap["recon_loss_harmful"][k],
                                                           rel=1e-5)
    # a model that has deleted toxic (column and bias 0) outputs 0 for it: the loss when present is the
    # mean of x_toxic² over the samples where it is present (≈ 1/3 for U[0, 1] values)
    deleted = jax.tree.map(jnp.copy, params)
    deleted["W"] = deleted["W"].replace(deleted["W"][...].at[:, :, 1].set(0.0))
    deleted["b_final"] = deleted["b_final"].replace(deleted["b_final"][...].at[:, 1].set(0.0))
    cap = defences.capability(graphdef, cfg, p, deleted)
    x_toxic = np.asarray(sample(key, jnp.asarray(cfg.feature_probability()[0])))[:, 1]
    present = x_toxic[x_toxic != 0]
    assert len(present) > 50
    np.testing.assert_allclose(cap["harmful_present_loss"], np.mean(present**2), rtol=1e-5)
