"""The SAE variants (toymodels.audit.sae) and their training in the engine (toymodels.audit.train)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from toymodels.audit import dictionary
from toymodels.audit import sae as S
from toymodels.audit import train as T
from toymodels.config import Config, DataConfig, ModelConfig, TrainConfig
from toymodels.config.sae import SAEConfig
from toymodels.core.models import init_instances


def test_jumprelu_straight_through_gradients():
    eps = 0.1
    z = jnp.array([[0.52], [0.3], [0.9]])            # (L=3, B=1): near the threshold, below, above
    theta = jnp.array([[0.5], [0.5], [0.5]])
    g_theta = jax.grad(lambda t: S.jumprelu(z, t, eps).sum())(theta)
    assert np.allclose(g_theta[:, 0], [-0.5 / eps, 0.0, 0.0])      # −(θ/ε) K((z − θ)/ε)
    g_z = jax.grad(lambda zz: S.jumprelu(zz, theta, eps).sum())(z)
    assert np.allclose(g_z[:, 0], [1.0, 0.0, 1.0])                 # H(z − θ)
    s_theta = jax.grad(lambda t: S.step(z, t, eps).sum())(theta)
    assert np.allclose(s_theta[:, 0], [-1.0 / eps, 0.0, 0.0])
    assert np.allclose(jax.grad(lambda zz: S.step(zz, theta, eps).sum())(z), 0.0)
    assert np.allclose(S.jumprelu(z, theta, eps)[:, 0], [0.52, 0.0, 0.9])


def test_topk_and_batch_topk_keep_what_they_should():
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(12, 64)))                    # (L, B)
    f = jax.jit(S.topk_codes, static_argnums=2)(z, jnp.asarray(3), 4)
    n_active = np.asarray((f > 0).sum(0))
    assert np.all(n_active <= 3) and np.all(n_active == np.minimum(3, np.asarray((z > 0).sum(0))))
    fb, t = jax.jit(S.batch_topk_codes)(z, jnp.asarray(2.0))
    assert abs(int((fb > 0).sum()) - 2 * 64) <= 1                 # k·B over the whole batch
    assert float(jnp.min(jnp.where(fb > 0, fb, jnp.inf))) >= float(t)


def test_masked_latents_never_fire():
    params = S.init_params(jax.random.key(0), 3, 6, 0.1)
    inst = {"mask": jnp.array([1.0, 1, 1, 0, 0, 0]), "sparsity": jnp.asarray(2.0)}
    ht = jax.random.normal(jax.random.key(1), (3, 50))
    for v in S.VARIANTS:
        f = jax.jit(S.codes, static_argnums=(3, 4))(params, ht, inst, v, 2)
        assert np.all(np.asarray(f)[3:] == 0), v


def test_dead_latents_are_revived_and_masked_ones_are_not():
    """Latents that never fire (encoder bias −100) are re-initialised after ``after`` steps; a masked
    latent is not."""
    d, L = 2, 4
    params = S.init_params(jax.random.key(0), d, L, 0.1)
    params["b_enc"] = params["b_enc"].at[:3].set(-100.0).at[3].set(-100.0)
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    inst = {"mask": mask, "sparsity": jnp.asarray(0.0)}
    tx = S.revive(optax.adam(1e-3), after=5, until=100, threshold_init=0.1, key=jax.random.key(1))
    state = tx.init(params)._replace(mask=mask)
    ht = jax.random.normal(jax.random.key(2), (d, 256))

    @jax.jit
    def step(params, state):
        g = jax.grad(S.loss)(params, ht, inst, "relu_l1")
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    for _ in range(6):
        params, state = step(params, state)
    assert np.asarray(state.revived).tolist() == [1, 1, 1, 0]
    # re-initialised at step 5 (then one Adam step of ~1e-3 since), the masked latent untouched
    assert np.all(np.abs(params["b_enc"][:3]) < 1e-2) and float(params["b_enc"][3]) == -100.0
    assert np.allclose(np.linalg.norm(params["W_dec"][:3], axis=1), 1.0, atol=1e-2)


def _pentagon_run(variant: str, **sae):
    """A 5-in-2-D model whose W is the regular pentagon (no pretraining), and an SAE config."""
    n, m = 5, 2
    cfg = Config(name="pent", n_inst=1, data=DataConfig(n_features=n, feature_probability=0.05),
                 model=ModelConfig(d_hidden=m), train=TrainConfig(steps=10),
                 sae=SAEConfig(variants=(variant,), **({"dict_sizes": (2 * n,), "batch_size": 512} | sae)))
    graphdef, params = init_instances(cfg.model, n, 1, jax.random.key(0))
    ang = 2 * np.pi * np.arange(n) / n
    W = np.stack([np.cos(ang), np.sin(ang)])[None].astype(np.float32)
    nnx.replace_by_pure_dict(params, {"W": jnp.asarray(W), "b_final": jnp.full((1, n), -0.3)})
    return cfg, graphdef, params, W[0]


@pytest.mark.slow
def test_topk_sae_recovers_the_pentagon():
    cfg, graphdef, params, W = _pentagon_run("topk", k=(1,), steps=1500, chunk_size=500)
    tr = T.train_variant(cfg, graphdef, params, "topk", progress=False)
    ev = T.evaluate(cfg, graphdef, tr)
    rec = T.recovery(W, ev["directions"][0], ev["fired"][0])
    assert rec["mcc"] > 0.95, rec
    assert ev["explained_variance"][0] > 0.9
    # the saved form gives the same codes as the trained one
    arrays = dictionary.to_arrays({"topk": tr}, {"topk": ev}, np.asarray([float(tr.inst["scale"][0])]), T.kmax(cfg),
                                  cfg.sae.bandwidth)
    dic = dictionary.dictionary(arrays, "topk", 0)
    h = np.eye(2, dtype=np.float32)
    codes = dictionary.encode(dic, h)
    assert codes.shape == (2, 10) and np.all((codes > 0).sum(1) <= 1)


def test_training_is_deterministic_and_one_compiled_sweep_per_variant():
    cfg, graphdef, params, W = _pentagon_run("relu_l1", l1=(0.1, 0.3), steps=30, chunk_size=30, revive_after=10)
    a = T.train_variant(cfg, graphdef, params, "relu_l1", progress=False)
    b = T.train_variant(cfg, graphdef, params, "relu_l1", progress=False)
    assert a.plan.n == 2 and a.params["W_dec"].shape == (2, 10, 2)
    for k in a.params:
        assert np.array_equal(np.asarray(a.params[k]), np.asarray(b.params[k])), k


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["batch_topk", "jumprelu"])
def test_every_variant_trains_and_evaluates(variant):
    cfg, graphdef, params, W = _pentagon_run(variant, steps=60, chunk_size=30)
    tr = T.train_variant(cfg, graphdef, params, variant, progress=False)
    ev = T.evaluate(cfg, graphdef, tr)
    assert np.all(np.isfinite(ev["explained_variance"])) and ev["fired"].shape == (1, 10)
    assert (ev["threshold"][0] > 0) == (variant == "batch_topk")


def test_evaluation_counts_dead_latents_and_topk_l0_is_k():
    """A latent whose encoder bias is −100 never fires and is counted dead; masked latents are not counted
    as fired; TopK's L0 on non-empty samples is exactly k (k=1 here, the pentagon's 2-D activations)."""
    cfg, graphdef, params, W = _pentagon_run("topk", k=(1,), dict_sizes=(8, 10), eval_batch_size=2048)
    plan = T.make_plan(cfg, "topk")
    inst = T.instance_arrays(cfg, plan, params, T.activation_scale(cfg, graphdef, params))
    sae = jax.vmap(lambda i: S.init_params(jax.random.fold_in(jax.random.key(3), i), 2, plan.L, 0.1))(
        jnp.arange(plan.n))
    sae["b_enc"] = sae["b_enc"].at[:, :3].set(-100.0)
    tr = T.Trained(plan, sae, np.zeros((plan.n, plan.L), int), 0.0, inst)
    ev = T.evaluate(cfg, graphdef, tr)
    assert plan.size.tolist() == [8, 10]
    assert not ev["fired"][:, :3].any() and not ev["fired"][0, 8:].any()
    rows = [T.recovery(W, ev["directions"][s], ev["fired"][s]) for s in range(plan.n)]
    dead = [int(plan.size[s] - ev["fired"][s].sum()) for s in range(plan.n)]
    assert all(d >= 3 for d in dead) and all(0 <= r["mcc"] <= 1 for r in rows)
    assert np.allclose(ev["l0_nonempty"], 1.0, atol=1e-6)
