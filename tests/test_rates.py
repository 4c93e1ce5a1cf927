"""The reported toxic rates (:mod:`toymodels.lab.rates`): the right probability, the paired error of a
change, common inputs within a model and independent inputs across models, bit-identical reruns."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from toymodels.config import Config, DataConfig, FeaturesConfig, FineTuneConfig, ModelConfig
from toymodels.core.models import init_instances
from toymodels.lab import rates

N, D, HARM = 5, 2, 1


def _setup(samples=1 << 17):
    cfg = Config(name="rates", n_inst=2, data=DataConfig(n_features=N, feature_probability=0.2),
                 model=ModelConfig(kind="relu_output", d_hidden=D),
                 features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",)),
                 finetune=FineTuneConfig(tau=0.1, rate_samples=samples))
    graphdef, params = init_instances(cfg.model, N, 2, jax.random.key(0))
    return cfg, graphdef, params


def _numpy_rate(W, b, p, tau, n, seed):
    """P(ReLU(Wᵀ W x + b)_h > τ | x_h = 0) by plain numpy Monte Carlo, independent of the package."""
    rng = np.random.default_rng(seed)
    x = np.where(rng.random((n, N)) < p, rng.random((n, N)), 0.0)
    out = np.maximum(x @ W.T @ W + b, 0.0)[:, HARM]
    absent = x[:, HARM] == 0
    return np.mean(out[absent] > tau)


def test_rate_is_the_conditional_firing_probability():
    cfg, graphdef, params = _setup()
    m = rates.measure(cfg, graphdef, params, np.array([0, 1]), np.array([0, 1]), [HARM])
    for i in range(2):
        W, b = np.asarray(params["W"][...][i], np.float64), np.asarray(params["b_final"][...][i], np.float64)
        ref = _numpy_rate(W, b, 0.2, 0.1, 400_000, seed=i)
        se = np.sqrt(ref * (1 - ref) / m["n_absent"][i, 0]) + np.sqrt(ref * (1 - ref) / 320_000)
        assert ref > 0.01, "the test needs a model whose harmful output fires"
        assert abs(m["rate"][i, 0] - ref) < 5 * se, (m["rate"][i, 0], ref)
    assert m["n_samples"] == rates.n_chunks(1 << 17) * rates.CHUNK
    assert np.all(m["change"] == 0) and np.all(m["se_change"] == 0)   # each state is its own reference


def test_changes_are_paired_within_a_model_and_inputs_are_independent_across_models():
    cfg, graphdef, params = _setup()
    # states: model 0 twice (start and a moved copy), model 1 with model 0's weights
    moved = jax.tree.map(lambda a: a[0], params)
    moved["b_final"].set_value(moved["b_final"][...].at[HARM].add(0.05))   # fires more often
    start0, copy1 = jax.tree.map(lambda a: a[0], params), jax.tree.map(lambda a: a[0], params)
    states = jax.tree.map(lambda *a: jnp.stack(a), start0, moved, copy1)
    m = rates.measure(cfg, graphdef, states, np.array([0, 0, 1]), np.array([0, 0, 2]), [HARM])
    assert m["change"][1, 0] > 0 and m["change"][1, 0] == m["rate"][1, 0] - m["rate"][0, 0]
    # a paired change on common inputs is far more precise than two independent rates
    independent = np.sqrt(2 * m["rate"][0, 0] * (1 - m["rate"][0, 0]) / m["n_absent"][0, 0])
    assert 0 < m["se_change"][1, 0] < 0.8 * independent
    # the same weights on model 1's own inputs: a different sample, so (almost surely) a different count
    assert m["rate"][2, 0] != m["rate"][0, 0]
    again = rates.measure(cfg, graphdef, states, np.array([0, 0, 1]), np.array([0, 0, 2]), [HARM])
    assert all(np.array_equal(m[k], again[k]) for k in ("rate", "change", "se_change"))   # bit-identical


def test_points_are_the_ends_and_the_probes_around_each_matched_gain():
    readout = np.array([[1.0, 1.0], [1.2, 1.0], [1.6, 1.1], [2.1, 1.2]])
    need = rates.points(readout, [1.5, 2.0])
    assert need[0] == {0, 1, 2, 3} and need[1] == {0, 3}   # instance 1 never reaches 1.5


def test_rotated_copies_are_measured_once_and_give_the_rates_of_the_original():
    cfg, graphdef, params = _setup(samples=1 << 15)
    one = jax.tree.map(lambda a: a[0], params)
    moved = jax.tree.map(lambda a: a, one)
    moved["b_final"].set_value(one["b_final"][...].at[HARM].add(0.05))
    c, s_ = np.cos(0.7), np.sin(0.7)
    O = jnp.array([[c, -s_], [s_, c]], jnp.float32)
    rot = lambda st: jax.tree.map(lambda a: a, st) | {"W": type(st["W"])(O @ st["W"][...])}
    # start, moved, and both rotated; plus a state whose reference differs from its twin's
    states = jax.tree.map(lambda *a: jnp.stack(a), one, moved, rot(one), rot(moved), moved)
    ref = np.array([0, 0, 2, 2, 4])
    m = rates.measure(cfg, graphdef, states, np.zeros(5, int), ref, [HARM])
    np.testing.assert_allclose(m["rate"][2:4], m["rate"][:2], atol=2 / m["n_absent"][0, 0])
    assert m["change"][4, 0] == 0 and m["se_change"][4, 0] == 0          # its own reference: no change
    assert m["change"][1, 0] > 0 and m["se_change"][1, 0] > 0
