"""The geometric regularisers (toymodels.penalties): zero exactly when their condition holds, invariant
to hidden rotations where they should be; and as a pretraining loss term (``train.penalty``): the
objective is reconstruction + λ P, λ = 0 is bit-identical to no penalty, and λ > 0 moves the geometry
the way the penalty says."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toymodels.config import Config, ConfigError, DataConfig, FeaturesConfig, ModelConfig, TrainConfig
from toymodels.core import data as tdata
from toymodels.core import penalties
from toymodels.core import pretrain as pt
from toymodels.core.models import init_instances
from toymodels.experiment import run
from toymodels.io.runs import load, prepare_run_dir


def orthogonal(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def two_columns(theta: float, norms=(1.0, 1.0), d: int = 3) -> np.ndarray:
    W = np.zeros((d, 2))
    W[:2, 0] = norms[0] * np.array([1.0, 0.0])
    W[:2, 1] = norms[1] * np.array([math.cos(theta), math.sin(theta)])
    return W


# --- penalties: zero exactly when their condition holds, positive (and the right size) otherwise -------
@settings(max_examples=15)
@given(theta=st.floats(0.0, math.pi), n1=st.floats(0.2, 3.0), n2=st.floats(0.2, 3.0))
def test_gram_offdiag_is_twice_the_squared_cosine(theta, n1, n2):
    W = jnp.asarray(two_columns(theta, (n1, n2)), jnp.float32)
    expected = 2 * math.cos(theta) ** 2  # (Ŵ0·Ŵ1)² counted for (0,1) and (1,0); scale-free
    assert float(penalties.gram_offdiag(W)) == pytest.approx(expected, abs=2e-6)
    assert float(penalties.gram_offdiag_dual(W)) == pytest.approx(expected, abs=2e-5)
    assert float(penalties.targeted_cos(W, jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))) == pytest.approx(
        expected / 2, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_penalties_vanish_on_orthogonal_directions_only(seed):
    rng = np.random.default_rng(seed)
    d, n = 6, 4
    Q = orthogonal(d, seed)[:, :n]
    scales = rng.uniform(0.3, 2.0, n)
    W = jnp.asarray(Q * scales, jnp.float32)                       # orthogonal, arbitrary norms
    assert float(penalties.gram_offdiag(W)) < 1e-10
    assert abs(float(penalties.gram_offdiag_dual(W))) < 1e-5
    onehot, harm = jnp.eye(n)[0], jnp.asarray([0.0, 1.0, 1.0, 0.0])
    assert float(penalties.targeted_cos(W, onehot, harm)) < 1e-10
    # soft orthogonality needs unit norms too: zero for Q, Σ(s²−1)² for Q·diag(s)
    assert float(penalties.soft_orthogonality(jnp.asarray(Q, jnp.float32))) < 1e-10
    assert float(penalties.soft_orthogonality(W)) == pytest.approx(float(np.sum((scales**2 - 1) ** 2)), rel=1e-5)
    # any overlap makes them positive
    V = np.array(Q)
    V[:, 1] += 0.3 * V[:, 0]
    V = jnp.asarray(V, jnp.float32)
    assert float(penalties.gram_offdiag(V)) > 0.1
    assert float(penalties.targeted_cos(V, onehot, harm)) > 0.05
    assert float(penalties.soft_orthogonality(V)) > 0.1
    # ...but the targeted penalty ignores overlaps between features it does not watch
    U = np.array(Q)
    U[:, 3] += 0.5 * U[:, 2]
    assert float(penalties.targeted_cos(jnp.asarray(U, jnp.float32), onehot, harm)) < 1e-10


@pytest.mark.parametrize("seed", range(3))
def test_soft_orthogonality_cannot_vanish_with_more_features_than_dimensions(seed):
    # WᵀW has rank <= d, so at least n − d of its eigenvalues are 0 and ‖WᵀW − I‖² >= n − d
    W = jnp.asarray(np.random.default_rng(seed).normal(size=(3, 7)), jnp.float32)
    assert float(penalties.soft_orthogonality(W)) >= 7 - 3 - 1e-4
    assert float(penalties.gram_offdiag(W)) > 0


def test_decov_vanishes_for_uncorrelated_units_and_is_basis_dependent():
    a = np.array([1, -1, 1, -1, 1, -1, 1, -1], np.float64)
    b = np.array([1, 1, -1, -1, 1, 1, -1, -1], np.float64)        # zero mean, orthogonal to a
    h = np.stack([a, 2 * b], 1)
    assert float(penalties.decov(jnp.asarray(h))) < 1e-12
    c = np.stack([a, a + b], 1)                                    # cov(unit0, unit1) = 1
    assert float(penalties.decov(jnp.asarray(c))) == pytest.approx(1.0, rel=1e-6)  # ½·(1² + 1²)
    # DeCov is not rotation invariant: a 45° rotation of the uncorrelated h correlates its units
    # (variances 1 and 4 differ, so the rotated covariance has an off-diagonal (4 − 1)/2)
    R = np.array([[1, -1], [1, 1]]) / math.sqrt(2)
    assert float(penalties.decov(jnp.asarray(h @ R))) == pytest.approx(1.5**2, rel=1e-6)


def test_output_anchor_is_zero_iff_outputs_agree():
    out = jnp.asarray(np.random.default_rng(0).uniform(size=(16, 5)), jnp.float32)
    imp = jnp.ones(5)
    assert float(penalties.output_anchor(out, out, imp)) == 0.0
    assert float(penalties.output_anchor(out, out.at[3, 2].add(0.5), imp)) == pytest.approx(0.25 / 80, rel=1e-5)


@settings(max_examples=10)
@given(seed=st.integers(0, 10_000))
def test_weight_penalties_are_invariant_to_hidden_rotations(seed):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(4, 7))
    O = orthogonal(4, seed)
    onehot, harm = jnp.eye(7)[0], jnp.asarray([0, 1, 1, 0, 0, 0, 0], jnp.float32)
    for f in (penalties.gram_offdiag, penalties.gram_offdiag_dual, penalties.soft_orthogonality,
              lambda w: penalties.targeted_cos(w, onehot, harm)):
        a, b = float(f(jnp.asarray(W, jnp.float32))), float(f(jnp.asarray(O @ W, jnp.float32)))
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)


def test_gram_penalty_and_its_dual_agree_on_large_random_matrices():
    W = jnp.asarray(np.random.default_rng(1).normal(size=(8, 200)), jnp.float32)
    a, b = float(penalties.gram_offdiag(W)), float(penalties.gram_offdiag_dual(W))
    assert b == pytest.approx(a, rel=1e-4)


def test_with_penalty_adds_lambda_times_the_penalty():
    obj = lambda params, key, inst: jnp.sum(params["W"]) * 0.5
    pen = lambda params: penalties.gram_offdiag(params["W"])
    params = {"W": jnp.asarray(two_columns(0.3), jnp.float32)}
    got = penalties.with_penalty(obj, pen, 0.7)(params, jax.random.key(0), None)
    assert float(got) == pytest.approx(float(obj(params, None, None)) + 0.7 * 2 * math.cos(0.3) ** 2, rel=1e-5)


# --- as a pretraining loss term (train.penalty) ---------------------------------------------------------
def pen_cfg(penalty="none", lam=0.0, steps=300, n_inst=3, **kw) -> Config:
    return Config(name="pen", seed=3, n_inst=n_inst,
                  data=DataConfig(n_features=5, feature_probability=0.1, batch_size=256),
                  model=ModelConfig(d_hidden=2),
                  train=TrainConfig(steps=steps, chunk_size=100, log_every=100, eval_batch_size=1024, lr=3e-3,
                                    penalty=penalty, penalty_strength=lam),
                  **kw)


def W_of(params) -> np.ndarray:
    return np.asarray(params["W"][...])


@pytest.mark.parametrize("kind", ["gram_offdiag", "soft_orthogonality", "decov"])
def test_pretraining_objective_is_reconstruction_plus_lambda_times_the_penalty(kind):
    cfg = pen_cfg(kind, 0.37, n_inst=1)
    graphdef, params = init_instances(cfg.model, cfg.data.n_features, 1, jax.random.key(0))
    one = jax.tree.map(lambda a: a[0], params)
    inst = jax.tree.map(lambda a: a[0], pt.instance_data(cfg))
    sample = tdata.make_sampler(cfg.data)
    key = jax.random.key(5)
    plain = pt.reconstruction_objective(graphdef, sample, cfg.data.task)(one, key, inst)
    penalised = pt.reconstruction_objective(graphdef, sample, cfg.data.task, kind)(one, key, inst)
    x = sample(key, inst["feature_probability"])
    W = W_of(one)
    want = {"gram_offdiag": penalties.gram_offdiag(W), "soft_orthogonality": penalties.soft_orthogonality(W),
            "decov": penalties.decov(x @ W.T)}[kind]
    assert float(want) > 1e-5  # a random init is not already at the penalty's zero
    # the difference, so that a small penalty (DeCov of a small init) is still checked to ~1e-3
    assert float(penalised) - float(plain) == pytest.approx(0.37 * float(want), rel=2e-3)


def test_zero_strength_pretraining_penalty_is_bit_identical_to_none():
    _, p0, i0 = pt.pretrain(pen_cfg(), progress=False)
    _, p1, i1 = pt.pretrain(pen_cfg("gram_offdiag", 0.0), progress=False)
    np.testing.assert_array_equal(W_of(p0), W_of(p1))
    np.testing.assert_array_equal(np.asarray(p0["b_final"][...]), np.asarray(p1["b_final"][...]))
    np.testing.assert_array_equal(i0["eval_loss"], i1["eval_loss"])
    assert "eval_penalty" not in i1


def test_per_instance_strength_sweeps_lambda_in_one_run():
    # λ = 0 for instance 0 and 1 for instance 1..2, in one compiled program
    lams = [0.0, 1.0, 1.0]
    _, p_none, _ = pt.pretrain(pen_cfg(), progress=False)
    _, p_sweep, info = pt.pretrain(pen_cfg("gram_offdiag", lams), progress=False)
    W0, Ws = W_of(p_none), W_of(p_sweep)
    # the λ = 0 instance trains as without the penalty (to float32 rounding: the program differs)
    np.testing.assert_allclose(Ws[0], W0[0], atol=2e-4)
    # the penalised instances end with a smaller Gram penalty than the same inits trained without it
    g = lambda W: float(penalties.gram_offdiag(jnp.asarray(W)))
    for k in (1, 2):
        assert g(Ws[k]) < g(W0[k]) - 0.05
    # the reported penalty is P of the final weights (W penalties do not depend on the batch)
    np.testing.assert_allclose(info["eval_penalty"], [g(W) for W in Ws], rtol=1e-4)


def test_targeted_pretraining_penalty_pulls_target_and_harmful_apart():
    # helpful and toxic planted 15° apart, then free to move; the penalty is on their cosine only
    feats = FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="planted", angles=(0.0, 15.0))
    cos2 = {}
    for lam in (0.0, 1.0):
        cfg = pen_cfg("targeted_cos", lam, steps=200, features=feats)
        _, params, _ = pt.pretrain(cfg, progress=False)
        W = W_of(params)
        U = W[:, :, :2] / np.linalg.norm(W[:, :, :2], axis=1, keepdims=True)
        cos2[lam] = np.sum(U[:, :, 0] * U[:, :, 1], axis=1) ** 2
    # TMS itself spreads these five features out (unpenalised cos² 0.04-0.7 after 200 steps); the
    # penalty makes the pair orthogonal, and below where the same inits get without it
    assert np.all(cos2[1.0] < 1e-3)
    assert np.all(cos2[1.0] < 0.1 * cos2[0.0])


def test_penalised_run_records_penalty_and_round_trips(tmp_path):
    cfg = pen_cfg("soft_orthogonality", [0.0, 0.1, 1.0], steps=200)
    run(cfg, prepare_run_dir(tmp_path / "r"), progress=False, echo=lambda s: None)
    r = load(tmp_path / "r")
    assert r.config == cfg
    assert r.summary["penalty"] == "soft_orthogonality"
    got = [(s["penalty_strength"], s["penalty"]) for s in r.summary["instances"]]
    assert [g[0] for g in got] == [0.0, 0.1, 1.0]
    W = r.weights["W"]
    for (_, p), w in zip(got, W):
        assert p == pytest.approx(float(penalties.soft_orthogonality(jnp.asarray(w))), rel=1e-4)


@pytest.mark.parametrize("overrides, field, words", [
    ({"train.penalty_strength": 0.1}, "train.penalty_strength", "which is 'none'"),
    ({"train.penalty": "gram_offdiag", "train.penalty_strength": -1.0}, "train.penalty_strength", "[0.0, 1000000.0]"),
    ({"train.penalty": "gram_offdiag", "train.penalty_strength": [0.1, 0.2]}, "train.penalty_strength", "n_inst=3"),
    ({"train.penalty": "gram_offdiag", "train.penalty_strength": [[0.1]]}, "train.penalty_strength", "1-D"),
    ({"train.penalty": "orthogonal"}, "train.penalty", "gram_offdiag"),
    ({"train.penalty": "targeted_cos", "train.penalty_strength": 1.0}, "train.penalty", "[features]"),
])
def test_bad_penalty_settings_name_the_field(overrides, field, words):
    with pytest.raises(ConfigError) as e:
        pen_cfg().replace(**overrides)
    assert e.value.field == field and words in str(e.value)


def test_pretraining_rows_pair_each_lambda_with_the_unpenalised_seeds(tmp_path):
    from toymodels import defences
    from toymodels.presets.defences import pretrain_member

    cfg = pretrain_member("targeted_cos", 5, 2, 0.05).replace(**{
        "n_inst": 4, "train.penalty_strength": [0.0, 0.0, 1.0, 1.0], "train.steps": 60, "train.chunk_size": 60,
        "finetune.steps": 20, "finetune.chunk_size": 20, "finetune.batch_size": 128,
        "finetune.eval_batch_size": 1024, "train.eval_batch_size": 1024})
    run(cfg, prepare_run_dir(tmp_path / "r"), progress=False, echo=lambda s: None)
    r = load(tmp_path / "r")
    rows = defences.pretraining_rows(r)
    assert [row["lambda"] for row in rows] == [0.0, 1.0] and [row["n"] for row in rows] == [2, 2]
    inst, ft = r.summary["instances"], r.summary["finetune"]["instances"]
    cos = np.asarray(r.summary["features"]["cosines"])[:, 0, 1]
    for row, idx in zip(rows, ([0, 1], [2, 3])):
        assert row["recon_loss"]["mean"] == pytest.approx(np.mean([inst[i]["eval_loss"] for i in idx]), rel=1e-12)
        assert row["cos"]["values"] == pytest.approx(cos[idx].tolist())
        for reg in ("narrow", "task"):
            want = [e["harmful"]["toxic"]["rate"]["change_pp"] for e in ft
                    if e["pretrain_instance"] in idx and e["regime"] == reg]
            assert row["rate_change_pp"][reg]["values"] == pytest.approx(want) and len(want) == 2
    # λ = 0 paired with itself is exactly 0; λ = 1 is paired seed by seed (instance 2 with 0, 3 with 1)
    assert rows[0]["recon_loss_vs_unpenalised"]["values"] == [0.0, 0.0]
    assert rows[1]["recon_loss_vs_unpenalised"]["values"] == pytest.approx(
        [inst[2]["eval_loss"] - inst[0]["eval_loss"], inst[3]["eval_loss"] - inst[1]["eval_loss"]])
    # the penalty's final value is reported for every instance of a penalised run, λ = 0 ones included
    assert all("penalty" in s for s in inst)
