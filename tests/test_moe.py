"""The mixture-of-experts TMS (toymodels.core.moe): one expert is relu_output bit for bit, top-k routing,
pinned routes of the named pair, and a fine-tuning run through the lab."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from toymodels.config import (
    Config,
    DataConfig,
    FeaturesConfig,
    FineTuneConfig,
    ModelConfig,
    RegimeConfig,
    TrainConfig,
)
from toymodels.core import models, planting
from toymodels.core import pretrain as pt
from toymodels.core.moe import ROUTE_LOGIT, MoETMS
from toymodels.lab import finetune as lab_ft
from toymodels.lab.probe import preactivation


def cfg_of(model: ModelConfig, steps=300, n=6, n_inst=3, features=None, finetune=None) -> Config:
    return Config(name="moe-test", seed=5, n_inst=n_inst,
                  data=DataConfig(n_features=n, feature_probability=[0.05, 0.2, 0.6][:n_inst], batch_size=256),
                  model=model, train=TrainConfig(steps=steps, chunk_size=100, log_every=100, eval_batch_size=2048),
                  features=features, finetune=finetune)


def pure(params) -> dict:
    return {k: np.asarray(v) for k, v in nnx.to_pure_dict(params).items()}


# --- one expert is relu_output ---------------------------------------------------------------------------
def test_one_expert_is_relu_output_bit_for_bit():
    ref = cfg_of(ModelConfig(kind="relu_output", d_hidden=3))
    moe = dataclasses.replace(ref, model=ModelConfig(kind="moe", d_hidden=3, n_experts=1, k_active=1))
    key = jax.random.key(0)
    g_r, p_r = models.init_instances(ref.model, 6, 3, key)
    g_m, p_m = models.init_instances(moe.model, 6, 3, key)
    a, b = pure(p_r), pure(p_m)
    assert a.keys() == b.keys() == {"W", "b_final"}
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # the forward (batch-major, feature-major) and the lab's pre-activation
    x = jax.random.uniform(jax.random.key(1), (64, 6)) * (jax.random.uniform(jax.random.key(2), (64, 6)) < 0.3)
    r, m = nnx.merge(g_r, jax.tree.map(lambda v: v[0], p_r)), nnx.merge(g_m, jax.tree.map(lambda v: v[0], p_m))
    assert np.array_equal(np.asarray(r(x)), np.asarray(m(x)))
    assert np.array_equal(np.asarray(r.forward_t(x.T)), np.asarray(m.forward_t(x.T)))
    assert np.array_equal(np.asarray(preactivation(r, x)), np.asarray(preactivation(m, x)))
    # the same training trajectory through the engine
    _, pr, ir = pt.pretrain(ref, progress=False)
    _, pm, im = pt.pretrain(moe, progress=False)
    a, b = pure(pr), pure(pm)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert np.array_equal(ir["eval_loss"], im["eval_loss"])
    assert not np.array_equal(a["W"], pure(p_r)["W"])  # it did train


# --- top-k routing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("E,k", [(4, 1), (5, 3)])
def test_topk_routes_to_exactly_k_experts_with_weights_summing_to_one(E, k):
    m = MoETMS(8, 3, n_experts=E, k_active=k, std=0.5, rngs=nnx.Rngs(params=3))
    x = jax.random.uniform(jax.random.key(4), (500, 8))
    w = np.asarray(m.route(x))
    assert w.shape == (500, E)
    assert np.all((w > 0).sum(1) == k)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
    # the selected experts are those with the k largest logits
    logits = np.asarray(x @ m.gate[...].T)
    top = np.argsort(-logits, axis=1)[:, :k]
    assert all(set(np.flatnonzero(w[i])) == set(top[i]) for i in range(500))
    # x' = Σ_e w_e ReLU(p_e); forward_t agrees with __call__
    p = np.asarray(m.expert_preacts(x))
    np.testing.assert_allclose(np.asarray(m(x)), np.einsum("be,ebn->bn", w, np.maximum(p, 0)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(m.forward_t(x.T)).T, np.asarray(m(x)), rtol=1e-5, atol=1e-6)


def test_rotating_every_expert_leaves_the_function_unchanged():
    cfg = ModelConfig(kind="moe", d_hidden=3, n_experts=3, k_active=2)
    g, p = models.init_instances(cfg, 6, 2, jax.random.key(7))
    O = np.linalg.qr(np.random.default_rng(0).normal(size=(2, 3, 3)))[0]
    q = planting.rotate_hidden(p, O, models.hidden_leaves("moe"))
    x = jax.random.uniform(jax.random.key(8), (100, 6))
    for i in range(2):
        a = nnx.merge(g, jax.tree.map(lambda v, i=i: v[i], p))(x)
        b = nnx.merge(g, jax.tree.map(lambda v, i=i: v[i], q))(x)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


# --- the pinned routes of the named pair -------------------------------------------------------------------
@pytest.mark.parametrize("route,expert_of_toxic", [("same", 0), ("different", 1)])
def test_route_pair_sends_helpful_and_toxic_to_their_experts(route, expert_of_toxic):
    m = MoETMS(6, 2, n_experts=3, k_active=1, route_pair=route, std=0.5, rngs=nnx.Rngs(params=0))
    v = jnp.linspace(0.01, 1.0, 50)[:, None]
    helpful_only = v * jax.nn.one_hot(0, 6)[None]
    toxic_only = v * jax.nn.one_hot(1, 6)[None]
    assert np.all(np.asarray(m.route(helpful_only))[:, 0] == 1.0)
    assert np.all(np.asarray(m.route(toxic_only))[:, expert_of_toxic] == 1.0)
    # the pinned columns are constants: no gradient reaches the stored gate there
    g = nnx.grad(lambda mod: jnp.sum(mod.preact(helpful_only + toxic_only) ** 2))(m)
    assert np.all(np.asarray(g.gate[...])[:, :2] == 0.0)
    assert np.asarray(m.gate_matrix())[expert_of_toxic, 1] == ROUTE_LOGIT


def test_route_pair_different_needs_two_experts():
    from toymodels.config import ConfigError

    with pytest.raises(ConfigError, match="route_pair"):
        ModelConfig(kind="moe", n_experts=1, route_pair="different")


# --- through the lab -----------------------------------------------------------------------------------------
@pytest.mark.slow  # the default suite runs moe-routing end to end (tests/test_presets_smoke.py)
def test_finetune_smoke_through_the_lab():
    ft = FineTuneConfig(target="helpful", objective="amplify", gamma=2.0, steps=40, chunk_size=20, log_every=20,
                        batch_size=128, eval_batch_size=1024, lr=1e-2,
                        regimes=(RegimeConfig("narrow", "narrow", "target"),))
    feats = FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="pinned", angles=(0.0, 15.0))
    cfg = cfg_of(ModelConfig(kind="moe", d_hidden=2, n_experts=2, k_active=1, route_pair="different"), steps=100,
                 n=5, n_inst=2, features=feats, finetune=ft)
    graphdef, params, _ = pt.pretrain(cfg, progress=False)
    res = lab_ft.finetune(cfg, graphdef, params, progress=False)
    W0, W1 = np.asarray(res.pretrained["W"][...]), np.asarray(res.finetuned["W"][...])
    assert np.all(np.abs(W1[:, :, 0] - W0[:, :, 0]).max(1) > 1e-3)   # helpful moved in expert 0
    # the pair's planted directions survive pretraining (pinned in expert 0)
    c = np.einsum("id,id->i", W0[:, :, 0], W0[:, :, 1]) / np.maximum(
        np.linalg.norm(W0[:, :, 0], axis=1) * np.linalg.norm(W0[:, :, 1], axis=1), 1e-12)
    norms = np.linalg.norm(W0[:, :, 1], axis=1)
    assert np.all((np.abs(c - np.cos(np.radians(15.0))) < 1e-4) | (norms < 1e-6))


def test_learned_gate_trains_when_k_exceeds_one_and_not_when_k_is_one():
    # top-1: the renormalised weight is exactly 1, so no gradient reaches the gate (as in the authors' code
    # without their load-balancing loss); top-2 of 3: the softmax over the selected logits passes one
    x = jax.random.uniform(jax.random.key(9), (64, 6))
    for k, moves in ((1, False), (2, True)):
        m = MoETMS(6, 2, n_experts=3, k_active=k, std=0.5, rngs=nnx.Rngs(params=1))
        g = np.asarray(nnx.grad(lambda mod: jnp.sum(mod(x) ** 2))(m).gate[...])
        assert (np.abs(g).max() > 1e-6) == moves


def test_fine_tuning_a_mixture_needs_one_active_expert():
    """The lab thresholds one pre-activation; with k > 1 the output is Σ_e w_e ReLU(p_e), so it is refused."""
    import dataclasses as dc

    from toymodels.config import ConfigError, ModelConfig
    from toymodels.presets.lab import analogy_base
    base = analogy_base("x")
    with pytest.raises(ConfigError, match=r"model\.k_active"):
        dc.replace(base, model=ModelConfig(kind="moe", d_hidden=2, n_experts=2, k_active=2))
    with pytest.raises(ConfigError, match=r"model\.route_pair"):
        ModelConfig(kind="moe", d_hidden=2, n_experts=2, k_active=2, route_pair="same")
