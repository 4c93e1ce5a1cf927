"""The synthetic feature distribution (TMS §Demonstrating Superposition, §Correlated Features),
checked statistically: every frequency within 5 binomial standard deviations, every mean and
variance within 5 standard errors, the value distribution within a Kolmogorov–Smirnov bound.
Both generators (``hash`` and ``threefry``) must give the same distribution.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toymodels.config import Config, DataConfig
from toymodels.core import data as tdata

GENERATORS = ["hash", "threefry"]
SIGMAS = 5.0
KS_C = 1.95  # P(sqrt(N)·sup|F_N − F| > 1.95) ≈ 0.001 (Kolmogorov distribution)


def freq_tol(p, n):
    """SIGMAS binomial standard deviations of a frequency of n draws with probability p."""
    p = np.asarray(p, np.float64)
    return SIGMAS * np.sqrt(p * (1 - p) / n) + 1e-12


def ks_uniform(values: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> float:
    """sqrt(N) · sup_t |F_N(t) − F(t)| for F = Uniform[lo, hi]."""
    v = np.sort((np.asarray(values, np.float64) - lo) / (hi - lo))
    n = v.size
    i = np.arange(1, n + 1)
    return float(np.sqrt(n) * max(np.max(i / n - v), np.max(v - (i - 1) / n)))


@functools.cache
def _jitted_sampler(batch: int, task: str, rng: str):
    return jax.jit(functools.partial(tdata.sample_features, batch_size=batch, task=task, rng=rng))


def sample(key, p, batch, *, task="reconstruct", rng="hash"):
    """One instance's batch (batch, n_features) as numpy, from a jitted sampler."""
    return np.asarray(_jitted_sampler(batch, task, rng)(key, jnp.asarray(p, jnp.float32)))


@pytest.mark.parametrize("rng", GENERATORS)
def test_activity_probability_per_feature(rng):
    """P(x_i != 0) = p_i for each feature, for features with different p in one instance."""
    p = np.array([1.0, 0.7, 0.3, 0.1, 0.02, 0.5], np.float32)
    n = 200_000
    x = sample(jax.random.key(1), p, n, rng=rng)
    assert x.shape == (n, p.size) and x.dtype == np.float32
    freq = (x != 0).mean(0)
    np.testing.assert_array_less(np.abs(freq - p), freq_tol(p, n))
    assert np.all(x >= 0) and np.all(x <= 1)


@pytest.mark.parametrize("rng", GENERATORS)
def test_values_given_active_are_uniform(rng):
    """Given x_i != 0, x_i ~ Uniform[0, 1]: mean 1/2, variance 1/12, and a KS bound — also for a
    small p, where the value is u/p of a single draw u."""
    n = 200_000
    for p in (0.9, 0.05):
        x = sample(jax.random.key(2), np.full(4, p, np.float32), n, rng=rng)
        v = x[x != 0].astype(np.float64)
        k = v.size
        assert abs(v.mean() - 0.5) < SIGMAS * np.sqrt(1 / 12 / k)
        # Var(sample variance) ≈ (μ4 − σ⁴)/k with μ4 = 1/80, σ⁴ = 1/144 for U[0, 1]
        assert abs(v.var() - 1 / 12) < SIGMAS * np.sqrt((1 / 80 - 1 / 144) / k)
        assert ks_uniform(v) < KS_C, f"p={p}: values not Uniform[0,1]"


@pytest.mark.parametrize("rng", GENERATORS)
def test_per_instance_feature_probability_2d(rng):
    """A 2-D (n_inst, n_features) feature_probability through Config and make_sampler, vmapped over
    instances the way the engine does: every (instance, feature) frequency matches its p."""
    p2 = [[0.9, 0.5, 0.1, 0.02], [0.02, 0.1, 0.5, 0.9], [0.3, 0.3, 0.3, 0.3]]
    cfg = Config(n_inst=3, data=DataConfig(n_features=4, feature_probability=p2, batch_size=50_000, rng=rng))
    p = cfg.feature_probability()
    assert p.shape == (3, 4)
    sampler = tdata.make_sampler(cfg.data)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(3))
    x = np.asarray(jax.jit(jax.vmap(sampler))(keys, jnp.asarray(p)))
    assert x.shape == (3, 50_000, 4)
    freq = (x != 0).mean(1)
    np.testing.assert_array_less(np.abs(freq - p), freq_tol(p, 50_000))


@pytest.mark.parametrize("rng", GENERATORS)
def test_abs_task_values_symmetric_in_minus_one_one(rng):
    """task="abs": active values ~ Uniform[−1, 1] (mean 0, P(x > 0) = 1/2, KS), target |x| ∈ [0, 1]."""
    n = 200_000
    p = np.full(3, 0.4, np.float32)
    x = sample(jax.random.key(4), p, n, rng=rng, task="abs")
    assert np.all(x >= -1) and np.all(x <= 1)
    active = x != 0
    np.testing.assert_array_less(np.abs(active.mean(0) - p), freq_tol(p, n))
    v = x[active].astype(np.float64)
    k = v.size
    assert abs(v.mean()) < SIGMAS * np.sqrt(1 / 3 / k)
    assert abs((v > 0).mean() - 0.5) < freq_tol(0.5, k)
    assert ks_uniform(v, -1.0, 1.0) < KS_C
    t = np.asarray(tdata.target(jnp.asarray(x), "abs"))
    assert np.all(t >= 0) and np.all(t <= 1)
    np.testing.assert_array_equal(t, np.abs(x))
    np.testing.assert_array_equal(np.asarray(tdata.target(jnp.asarray(x), "reconstruct")), x)


@pytest.mark.parametrize("rng", GENERATORS)
def test_correlated_and_anticorrelated_sets(rng):
    """Layout: correlated sets (3, 2), then an anticorrelated set of 3, then 2 independent features.

    * a correlated set is all-on or all-off together, each member with marginal p;
    * an anticorrelated set never has two members on at once, each member has marginal p, so the
      set is active with probability k·p;
    * values inside a set are drawn separately (not copies), Uniform[0, 1];
    * independent features stay independent: P(both on) = p².
    """
    p_val, n = 0.25, 100_000
    dcfg = DataConfig(n_features=10, feature_probability=p_val, batch_size=n, correlated=(3, 2),
                      anticorrelated=(3,), rng=rng)
    cfg = Config(n_inst=1, data=dcfg)
    sampler = jax.jit(tdata.make_sampler(cfg.data))
    x = np.asarray(sampler(jax.random.key(5), jnp.asarray(cfg.feature_probability()[0])))
    on = x != 0
    # every feature keeps its marginal probability
    np.testing.assert_array_less(np.abs(on.mean(0) - p_val), freq_tol(p_val, n))
    # correlated sets: all on or all off
    for sl in (slice(0, 3), slice(3, 5)):
        block = on[:, sl]
        assert np.all(block.all(1) | ~block.any(1))
        assert not np.array_equal(x[:, sl.start], x[:, sl.start + 1])  # values drawn separately
    # anticorrelated set: at most one member on; the set is active with probability 3p
    anti = on[:, 5:8]
    assert anti.sum(1).max() == 1
    assert abs(anti.any(1).mean() - 3 * p_val) < freq_tol(3 * p_val, n)
    # independent features: joint probability p²
    assert abs((on[:, 8] & on[:, 9]).mean() - p_val**2) < freq_tol(p_val**2, n)
    # values in sets are still Uniform[0, 1] given active
    assert ks_uniform(x[:, :8][on[:, :8]]) < KS_C


@pytest.mark.parametrize("rng", GENERATORS)
def test_fresh_samples_per_key_and_reproducible_per_key(rng):
    """Different keys (other instances, other steps via fold_in) give different batches; the same key
    gives the identical batch."""
    p = jnp.full((5,), 0.5, jnp.float32)
    key = jax.random.key(6)
    a = sample(key, p, 4096, rng=rng)
    np.testing.assert_array_equal(a, sample(key, p, 4096, rng=rng))
    others = [sample(k, p, 4096, rng=rng) for k in
              (jax.random.key(7), jax.random.fold_in(key, 1), jax.random.fold_in(key, 2))]
    for b in others:
        both = (a != 0) & (b != 0)
        # two independent batches share a value with probability ~ 2^-24 per element
        assert np.mean(a[both] == b[both]) < 0.01
        # and their activity patterns agree only by chance (p² + (1−p)² = 1/2 here)
        agree = np.mean((a != 0) == (b != 0))
        assert abs(agree - 0.5) < freq_tol(0.5, a.size)


def test_generators_share_one_distribution():
    """hash and threefry give the same activity rate and the same value law (two-sample check)."""
    p = np.full(4, 0.3, np.float32)
    n = 100_000
    xh = sample(jax.random.key(8), p, n, rng="hash")
    xt = sample(jax.random.key(8), p, n, rng="threefry")
    fh, ft = (xh != 0).mean(), (xt != 0).mean()
    assert abs(fh - ft) < SIGMAS * np.sqrt(2 * 0.3 * 0.7 / xh.size)
    vh, vt = np.sort(xh[xh != 0]), np.sort(xt[xt != 0])
    grid = np.linspace(0, 1, 201)
    d = np.max(np.abs(np.searchsorted(vh, grid) / vh.size - np.searchsorted(vt, grid) / vt.size))
    # two-sample KS at level ~0.001: c(α)·sqrt((n1 + n2)/(n1·n2))
    assert d < KS_C * np.sqrt((vh.size + vt.size) / (vh.size * vt.size))
