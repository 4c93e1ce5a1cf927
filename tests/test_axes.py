"""The robustness axes: rotations of the hidden space, the optimiser bank, stopping at a gain.

Properties (toymodels.axes): the ReLU-output model is unchanged by W → O W; one fine-tuning step of
SGD (and momentum, and NovoGrad's per-tensor second moment) from O W is O times the step from W; Adam's
per-coordinate step is not, and the test asserts the measured size of that difference.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from toymodels import directions
from toymodels.config import (
    Config,
    ConfigError,
    DataConfig,
    FeaturesConfig,
    FineTuneConfig,
    ModelConfig,
    OptimizerConfig,
    RegimeConfig,
    TrainConfig,
)
from toymodels.core import engine, optim, planting
from toymodels.lab import finetune as lab_ft
from toymodels.lab import plan as lab_plan
from toymodels.lab import progress, summary

NARROW = RegimeConfig("narrow", "narrow", "target")
FULL_ALL = RegimeConfig("full-all", "full", "all")
OPTIMIZERS = (OptimizerConfig("sgd", "sgd", lr=0.1), OptimizerConfig("momentum", "momentum", lr=0.02),
              OptimizerConfig("adam", "adam", lr=1e-2), OptimizerConfig("adamw", "adamw", lr=1e-2, weight_decay=0.1),
              OptimizerConfig("novograd", "novograd", lr=1e-2, weight_decay=0.01))
EQUIVARIANT = ("sgd", "momentum", "novograd")


def make_cfg(n_inst=1, orientations=1, optimizers=OPTIMIZERS, steps=3, **ft):
    return Config(name="axes", n_inst=n_inst, seed=2,
                  data=DataConfig(n_features=5, feature_probability=0.3, batch_size=256),
                  model=ModelConfig(d_hidden=2), train=TrainConfig(steps=10),
                  features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="pinned",
                                          angles=(0.0, 15.0)),
                  finetune=FineTuneConfig(steps=steps, chunk_size=steps, log_every=steps, batch_size=256,
                                          eval_batch_size=1024, regimes=(NARROW, FULL_ALL), optimizers=optimizers,
                                          orientations=orientations, **ft))


def rotation(theta_deg: float, reflect: bool) -> np.ndarray:
    t = math.radians(theta_deg)
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return R @ np.diag([1.0, -1.0]) if reflect else R


# --- the model is invariant ---------------------------------------------------------------------------
@given(theta=st.floats(0, 360), reflect=st.booleans(), seed=st.integers(0, 2**16))
def test_relu_output_model_is_unchanged_by_rotating_the_hidden_space(theta, reflect, seed):
    cfg = make_cfg(n_inst=3)
    graphdef, params = planting.init_params(cfg, 3, jax.random.key(seed))
    params["b_final"] = params["b_final"].replace(jax.random.normal(jax.random.key(seed + 1), (3, 5)))
    O = np.broadcast_to(rotation(theta, reflect), (3, 2, 2))
    rotated = planting.rotate_hidden(params, O)
    x = jax.random.uniform(jax.random.key(seed + 2), (64, 5))
    out = jax.vmap(lambda p: nnx.merge(graphdef, p)(x))
    np.testing.assert_allclose(np.asarray(out(rotated)), np.asarray(out(params)), atol=2e-6)
    W, W_rot = np.asarray(params["W"][...]), np.asarray(rotated["W"][...])
    np.testing.assert_allclose(W_rot, np.einsum("ab,ibn->ian", O[0], W), atol=1e-6)   # it really is O W


def test_orientation_matrices_are_orthogonal_identity_first_and_seeded():
    O = directions.orientation_matrices(6, 3, seed=[0, 1])
    np.testing.assert_array_equal(O[0], np.eye(3))
    np.testing.assert_allclose(np.einsum("kab,kcb->kac", O, O), np.broadcast_to(np.eye(3), (6, 3, 3)), atol=1e-12)
    np.testing.assert_array_equal(O, directions.orientation_matrices(6, 3, seed=[0, 1]))
    assert not np.allclose(O, directions.orientation_matrices(6, 3, seed=[1, 1]))
    one = directions.orientation_matrices(5, 1, seed=0)
    assert set(np.abs(one.ravel())) == {1.0}


# --- one step from O W is O times the step from W (SGD), and not for Adam --------------------------------
@pytest.fixture(scope="module")
def stepper():
    """The real fine-tuning objective and optimiser bank of a 1-model x 5-optimiser x 2-regime run, and a
    jitted function doing ``n`` engine steps from given parameters (one compile for every example)."""
    cfg = make_cfg()
    graphdef, params = planting.init_params(cfg, 1, jax.random.key(0))
    prep = lab_ft.prepare(cfg, graphdef, params)
    chunk = engine.make_chunk(prep.objective, prep.tx, 2)

    def run(start):
        opt = optim.set_optimizer_choice(jax.vmap(prep.tx.init)(start), prep.plan.optimizer_index)
        p, _, _ = chunk(start, opt, prep.state.keys, prep.inst, jnp.asarray(0, jnp.int32))
        return np.asarray(p["W"][...])

    return cfg, prep, run


def _steps(prep, run, O):
    """W after 2 steps from the pretrained W and from O W (per instance), and O applied to the first."""
    base = prep.base
    O_all = np.broadcast_to(O, (prep.plan.n_ft, 2, 2))
    W_from_W = run(base)
    W_from_OW = run(planting.rotate_hidden(base, O_all))
    W0 = np.asarray(base["W"][...])
    d_plain = W_from_W - W0                                  # ΔW from W
    d_rot = W_from_OW - np.einsum("ab,kbn->kan", O, W0)      # ΔW from O W
    return d_plain, d_rot, np.einsum("ab,kbn->kan", O, d_plain)


@settings(max_examples=10)
@given(theta=st.floats(0, 360), reflect=st.booleans())
def test_sgd_momentum_and_novograd_steps_commute_with_the_rotation(stepper, theta, reflect):
    _, prep, run = stepper
    O = rotation(theta, reflect)
    d_plain, d_rot, O_d = _steps(prep, run, O)
    for k in range(prep.plan.n_ft):
        if prep.plan.optimizer_name(k) not in EQUIVARIANT:
            continue
        scale = np.abs(d_plain[k]).max()
        assert scale > 1e-4, prep.plan.describe(k)          # the steps did something
        np.testing.assert_allclose(d_rot[k], O_d[k], atol=2e-4 * scale + 1e-7, err_msg=prep.plan.describe(k))


@settings(max_examples=10)
@given(theta=st.floats(10, 80), quadrant=st.integers(0, 3), reflect=st.booleans())
def test_adam_steps_do_not_commute_with_a_generic_rotation(stepper, theta, quadrant, reflect):
    """Adam's first steps are about −lr·sign(g) per coordinate, so from O W they are −lr·sign(O g), not
    O(−lr·sign(g)): away from the signed permutations (θ in 10°–80° mod 90°) the two differ by a sizeable
    fraction of the step. Measured here: at least 5% of the step's size, for Adam and AdamW."""
    _, prep, run = stepper
    O = rotation(theta + 90 * quadrant, reflect)
    d_plain, d_rot, O_d = _steps(prep, run, O)
    for k in range(prep.plan.n_ft):
        if prep.plan.optimizer_name(k) in EQUIVARIANT:
            continue
        rel = np.linalg.norm(d_rot[k] - O_d[k]) / np.linalg.norm(d_plain[k])
        assert rel > 0.05, (prep.plan.describe(k), theta, rel)


def test_adam_commutes_with_signed_permutations(stepper):
    """The control: a quarter turn maps coordinates to coordinates, so even Adam commutes with it."""
    _, prep, run = stepper
    d_plain, d_rot, O_d = _steps(prep, run, rotation(90.0, False))
    scale = np.abs(d_plain).max()
    np.testing.assert_allclose(d_rot, O_d, atol=2e-4 * scale)


# --- the axes inside a real fine-tuning run -------------------------------------------------------------
def test_orientation_axis_in_a_run_sgd_matches_rotated_and_adam_does_not():
    cfg = make_cfg(n_inst=2, orientations=3, steps=40,
                   optimizers=(OptimizerConfig("sgd", "sgd", lr=0.1), OptimizerConfig("adam", "adam", lr=1e-2)))
    graphdef, params = planting.init_params(cfg, 2, jax.random.key(0))
    res = lab_ft.finetune(cfg, graphdef, params, progress=False)
    plan = res.plan
    assert plan.n_ft == 2 * 3 * 2 * 2
    O = lab_plan.orientation_matrices(cfg)
    W0, W1 = np.asarray(res.pretrained["W"][...]), np.asarray(res.finetuned["W"][...])
    axis = {(int(plan.pretrain_index[k]), plan.optimizer_name(k), plan.regime_name(k)): k
            for k in range(plan.n_ft) if plan.orientation_index[k] == 0}
    diffs = {"sgd": [], "adam": []}
    for k in range(plan.n_ft):
        o = int(plan.orientation_index[k])
        a = axis[(int(plan.pretrain_index[k]), plan.optimizer_name(k), plan.regime_name(k))]
        np.testing.assert_allclose(W0[k], O[o] @ W0[a], atol=1e-6)         # the start is the rotated model
        if o:
            diffs[plan.optimizer_name(k)].append(np.abs(W1[k] - O[o] @ W1[a]).max())
    assert max(diffs["sgd"]) < 1e-4, diffs["sgd"]
    assert min(diffs["adam"]) > 1e-3, diffs["adam"]
    s = summary.summarize(cfg, res)
    assert set(s["by_group"]) == {summary.group_key(r, o, c) for r in ("narrow", "full-all")
                                        for o in ("sgd", "adam") for c in ("axis", "rotated")}
    g = s["by_group"]
    for reg in ("narrow", "full-all"):   # SGD: the rotated copies measure the same numbers
        a, r = g[f"{reg}|sgd|axis"]["harmful"]["toxic"], g[f"{reg}|sgd|rotated"]["harmful"]["toxic"]
        assert r["preact_change"]["mean"] == pytest.approx(a["preact_change"]["mean"], abs=1e-4)
    assert s["by_regime"]["narrow"]["n"] == 2   # the reference slice: axis-aligned, first optimiser


def test_optimizer_bank_applies_each_instances_choice():
    txs = [optax.sgd(0.1), optax.sgd(1.0), optax.adam(0.5)]
    bank = optim.optimizer_bank(txs)
    params = {"w": jnp.array([[1.0, -2.0]] * 3)}
    grads = {"w": jnp.array([[0.5, 0.25]] * 3)}
    state = optim.set_optimizer_choice(jax.vmap(bank.init)(params), [0, 1, 2])
    upd, _ = jax.vmap(bank.update)(grads, state, params)
    expected = [txs[q].update({"w": grads["w"][q]}, txs[q].init({"w": params["w"][q]}))[0]["w"] for q in range(3)]
    np.testing.assert_allclose(np.asarray(upd["w"]), np.stack([np.asarray(e) for e in expected]), rtol=1e-6)


def test_single_optimizer_run_is_bit_identical_to_the_scalar_fields():
    """``optimizers = [adam]`` and the scalar fields ``optimizer = "adam"`` compile the same program."""
    one = make_cfg(steps=20, optimizers=(OptimizerConfig("adam", "adam", lr=1e-2),))
    scalar = make_cfg(steps=20, optimizers=(), optimizer="adam", lr=1e-2)
    graphdef, params = planting.init_params(one, 1, jax.random.key(0))
    a = lab_ft.finetune(one, graphdef, params, progress=False)
    b = lab_ft.finetune(scalar, graphdef, params, progress=False)
    np.testing.assert_array_equal(np.asarray(a.finetuned["W"][...]), np.asarray(b.finetuned["W"][...]))


# --- stopping at a gain, and reading curves at a gain ------------------------------------------------------
def test_stop_gain_freezes_each_instance_at_its_first_step_past_the_gain():
    cfg = make_cfg(n_inst=2, steps=300, optimizers=(OptimizerConfig("adam", "adam", lr=3e-3),), stop_gain=1.3)
    cfg = cfg.replace(**{"finetune.chunk_size": 50})
    graphdef, params = planting.init_params(cfg, 2, jax.random.key(0))
    res = lab_ft.finetune(cfg, graphdef, params, progress=False)
    gain = np.array([p["target_readout"] for _, p in res.probes])
    gain = gain / gain[0]
    stopped = res.stopped_at
    assert np.all(stopped > 0) and np.all(stopped < 300), stopped
    final = gain[-1]
    assert np.all(final >= 1.3) and np.all(final < 1.3 * 1.02), final   # stopped just past the gain
    # frozen from then on: the probe rows after the stop are identical
    steps = np.array([t for t, _ in res.probes])
    for k in range(res.plan.n_ft):
        after = np.flatnonzero(steps > stopped[k])
        assert np.all(gain[after, k] == gain[after[0], k])


def test_at_gain_interpolates_at_the_first_crossing():
    gain = np.array([1.0, 1.2, 1.6, 2.0, 1.5])
    v = {"y": np.array([0.0, 2.0, 6.0, 10.0, -1.0])}
    assert progress.at_gain(gain, v, 1.4)["y"] == pytest.approx(4.0)
    assert progress.at_gain(gain, v, 2.0)["y"] == pytest.approx(10.0)
    assert progress.at_gain(gain, v, 1.0)["y"] == pytest.approx(0.0)
    assert progress.at_gain(gain, v, 2.5) is None


# --- config checks -------------------------------------------------------------------------------------
def test_axis_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="finetune.orientations"):
        Config(name="x", n_inst=1, data=DataConfig(n_features=5), model=ModelConfig(kind="relu_hidden", d_hidden=2),
               features=FeaturesConfig(), finetune=FineTuneConfig(orientations=2))
    with pytest.raises(ConfigError, match="finetune.optimizers.weight_decay"):
        OptimizerConfig("sgd", "sgd", lr=0.1, weight_decay=0.01)
    with pytest.raises(ConfigError, match="finetune.optimizers"):
        FineTuneConfig(optimizers=(OptimizerConfig("a", "sgd"), OptimizerConfig("a", "adam")))
    with pytest.raises(ConfigError, match="finetune.stop_gain"):
        FineTuneConfig(stop_gain=-1.0)
    cfg = make_cfg().replace(**{"finetune.optimizers": [{"name": "sgd", "optimizer": "sgd", "lr": 0.5}]})
    assert cfg.finetune.optimizers == (OptimizerConfig("sgd", "sgd", lr=0.5),)
