"""The engine's fast paths compute the same numbers as the plain ones (toymodels.models.forward_t,
the feature-major reconstruction objective, and instance groups in engine.make_chunk)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from toymodels.config import ModelConfig
from toymodels.core import data as tdata
from toymodels.core import engine, optim
from toymodels.core import pretrain as pt
from toymodels.core.models import MODELS, init_instances

KINDS = sorted(MODELS)


def one_model(kind: str, n: int, m: int, seed: int = 0):
    cfg = ModelConfig(kind=kind, d_hidden=m)
    graphdef, params = init_instances(cfg, n, 1, jax.random.key(seed))
    params = jax.tree.map(lambda a: a[0], params)
    # non-zero biases, so that the bias broadcast of forward_t is exercised
    params["b_final"] = params["b_final"].replace(jnp.linspace(-0.3, 0.2, n))
    return graphdef, params


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,m", [(5, 2), (20, 5), (3, 7)])
def test_forward_t_is_call_transposed(kind, n, m):
    graphdef, params = one_model(kind, n, m)
    model = nnx.merge(graphdef, params)
    x = jax.random.uniform(jax.random.key(1), (64, n), minval=-1.0, maxval=1.0)
    np.testing.assert_allclose(np.asarray(model.forward_t(x.T)), np.asarray(model(x)).T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_feature_major_objective_equals_batch_major_loss_and_gradient(kind):
    """reconstruction_objective (feature-major when the model has forward_t) gives the loss and the
    gradient of mean_{batch, i} I_i (target(x)_i − f(x)_i)² computed batch-major from the same x."""
    n, m, batch = 6, 3, 256
    task = "abs" if kind == "abs_computation" else "reconstruct"
    graphdef, params = one_model(kind, n, m)
    sample = lambda key, p: tdata.sample_features(key, p, batch, task=task)
    inst = {"feature_probability": jnp.linspace(1.0, 0.1, n),
            "importance": 0.9 ** jnp.arange(n, dtype=jnp.float32)}
    key = jax.random.key(3)

    def batch_major(params):
        x = sample(key, inst["feature_probability"])
        out = nnx.merge(graphdef, params)(x)
        return engine.weighted_mse(out, tdata.target(x, task), inst["importance"])

    objective = pt.reconstruction_objective(graphdef, sample, task)
    got_loss, got_grad = jax.jit(jax.value_and_grad(objective))(params, key, inst)
    want_loss, want_grad = jax.jit(jax.value_and_grad(batch_major))(params)
    np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-7)


def test_instance_groups_give_the_same_training(make_config, monkeypatch):
    """7 instances trained in groups of 3 (3 + 3 + a remainder of 1, through lax.map) end where the
    ungrouped vmap ends, with the same per-step losses."""
    cfg = make_config(**{"n_inst": 7, "data.feature_probability": 0.3, "data.batch_size": 64})
    graphdef, params = init_instances(cfg.model, cfg.data.n_features, cfg.n_inst, jax.random.key(0))
    tx = optim.optimizer(cfg.train)
    inst = pt.instance_data(cfg)
    keys = jax.random.split(jax.random.key(1), cfg.n_inst)
    objective = pt.reconstruction_objective(graphdef, tdata.make_sampler(cfg.data), cfg.data.task)
    state = engine.init_state(params, tx, keys)
    per_instance = 64 * cfg.data.n_features  # the largest array of one instance's loss: x, (n, batch)

    def run(group_elements):
        monkeypatch.setattr(engine, "GROUP_ELEMENTS", group_elements)
        one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), (params, keys, inst))
        assert engine._largest_array(jax.make_jaxpr(objective)(*one).jaxpr) == per_instance
        chunk = engine.make_chunk(objective, tx, 20)
        return chunk(state.params, state.opt_state, state.keys, inst, jnp.int32(0))

    assert engine._group_size(objective, params, keys, inst, cfg.n_inst) == cfg.n_inst  # default: one group
    grouped = run(3 * per_instance)
    single = run(1 << 40)
    for a, b in zip(jax.tree.leaves(grouped), jax.tree.leaves(single)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert grouped[2].shape == (cfg.n_inst, 20)


@pytest.mark.parametrize("n_inst,widest,want",
                         [(100, 25, 25), (100, 51, 50), (7, 3, 3), (10, 64, 10), (5, 1, 1)])
def test_group_size_makes_equal_groups_no_wider_than_allowed(n_inst, widest, want, monkeypatch):
    per = 1000
    monkeypatch.setattr(engine, "GROUP_ELEMENTS", widest * per)
    objective = lambda params, key, inst: jnp.sum(jnp.zeros((per,)) + params["w"])
    params = {"w": jnp.zeros((n_inst,))}
    keys = jax.random.split(jax.random.key(0), n_inst)
    assert engine._group_size(objective, params, keys, {}, n_inst) == want
