"""The counter-based hash generator (toymodels.rng), tested statistically.

Each statistic is compared with its distribution under the null hypothesis "i.i.d. Uniform[0, 1)":
means and correlations within 5 standard errors, chi-square statistics below their 1 - 1e-6
quantile, Kolmogorov–Smirnov distances below the 0.001 critical value. The keys are fixed, so the
tests are deterministic. They have power: without mixing after the seed the cross-step test fails
by more than 50 standard errors (checked below), and a single multiply round instead of lowbias32's
two fails the cross-instance and cross-step tests (measured; benchmarks/README.md).
Independence is checked across elements of one draw, across instances (different keys) and across
consecutive training steps (``fold_in(key, t)``, as the engine derives them). Finally the data
distribution of ``data.sample_features`` is the same with ``rng="hash"`` and ``rng="threefry"``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from toymodels.core import data as tdata
from toymodels.core import rng as trng

N = 1 << 20          # numbers per draw for the one-dimensional tests
Z = 5.0              # tolerance in standard errors
CHI2_Q = 1 - 1e-6    # chi-square statistics must stay below this quantile of their null distribution
KS_C = 1.95          # sqrt(n)·D below 1.95: P ≈ 0.001 under the null (Kolmogorov distribution)


@functools.cache
def _uniform_fn(shape: tuple[int, ...], generator: str):
    return jax.jit(lambda key: trng.uniform(key, shape, generator))


def draw(key, shape, generator="hash") -> np.ndarray:
    return np.asarray(_uniform_fn(tuple(shape), generator)(key), np.float64)


def step_keys(root, steps):
    """The engine's data keys: fold_in(key, t) for consecutive steps t."""
    return [jax.random.fold_in(root, t) for t in range(steps)]


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def chi2_uniform(u: np.ndarray, bins: int) -> float:
    counts = np.bincount(np.minimum((u.ravel() * bins).astype(np.int64), bins - 1), minlength=bins)
    expected = u.size / bins
    return float(((counts - expected) ** 2 / expected).sum())


def assert_chi2(stat: float, dof: int):
    limit = stats.chi2.ppf(CHI2_Q, dof)
    assert stat < limit, f"chi-square {stat:.1f} >= {limit:.1f} (dof {dof})"


# --- the numbers themselves ---------------------------------------------------------------------
def test_values_are_24_bit_multiples_in_unit_interval():
    """u = k · 2⁻²⁴ with integer k in [0, 2²⁴): 24 bits of resolution, exactly representable, and
    all 24 bits are used (every bit is 1 about half the time)."""
    u = draw(jax.random.key(0), (N,))
    k = u * 2.0**24
    assert u.min() >= 0.0 and u.max() < 1.0
    np.testing.assert_array_equal(k, np.round(k))
    bits = (k.astype(np.int64)[:, None] >> np.arange(24)) & 1
    freq = bits.mean(0)
    assert np.all(np.abs(freq - 0.5) < Z * np.sqrt(0.25 / N)), freq


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uniform_marginal_chi_square_ks_mean_variance(seed):
    u = draw(jax.random.key(seed), (N,))
    assert_chi2(chi2_uniform(u, 1024), 1023)
    assert np.sqrt(N) * stats.kstest(u, "uniform").statistic < KS_C
    assert abs(u.mean() - 0.5) < Z * np.sqrt(1 / 12 / N)
    # Var of the sample variance of U[0,1): (mu4 - sigma^4) / N with mu4 = 1/80, sigma^2 = 1/12
    assert abs(u.var() - 1 / 12) < Z * np.sqrt((1 / 80 - 1 / 144) / N)


def test_every_feature_column_and_batch_row_block_is_uniform():
    """The engine draws (batch, n_features) arrays and works on their transpose; each column (one
    feature across the batch) and the low-order counters (the first rows) are uniform too."""
    key = jax.random.key(7)
    u = np.stack([draw(k, (4096, 20)) for k in step_keys(key, 8)])  # (8 steps, 4096, 20)
    for i in range(20):
        col = u[:, :, i].ravel()
        assert_chi2(chi2_uniform(col, 64), 63)
        assert abs(col.mean() - 0.5) < Z * np.sqrt(1 / 12 / col.size)
    first_rows = u[:, :16, :].ravel()
    assert_chi2(chi2_uniform(first_rows, 16), 15)


def test_hash_bits_are_the_row_major_counter_hash():
    """hash_bits(seed, shape)[..., b, i] == mix32(mix32(flat index) ^ seed), whatever the internal
    transposition, also under jit and when the caller transposes the result (the engine does)."""
    seed = jnp.uint32(0xDEADBEEF)
    for shape in [(37,), (33, 7), (3, 17, 5)]:
        idx = np.arange(int(np.prod(shape)), dtype=np.uint32)
        want = trng._mix32_np(trng._mix32_np(idx) ^ np.uint32(0xDEADBEEF)).reshape(shape)
        np.testing.assert_array_equal(np.asarray(trng.hash_bits(seed, shape)), want)
        got = jax.jit(lambda s, shape=shape: trng.hash_bits(s, shape))(seed)
        np.testing.assert_array_equal(np.asarray(got), want)
        if len(shape) >= 2:
            got_t = jax.jit(lambda s, shape=shape: jnp.swapaxes(trng.hash_bits(s, shape), -1, -2))(seed)
            np.testing.assert_array_equal(np.asarray(got_t), np.swapaxes(want, -1, -2))


# --- independence ------------------------------------------------------------------------------
@pytest.mark.parametrize("lag", [1, 2, 3, 5, 20, 1024, 4099])
def test_no_lag_correlation_within_a_draw(lag):
    """Correlation of u_j and u_{j+lag} along the row-major element index (lag 20 = the same feature
    in the next batch row of a 20-feature draw; 1024 = one batch further on in feature-major order)."""
    u = draw(jax.random.key(11), (N,))
    assert abs(corr(u[:-lag], u[lag:])) < Z / np.sqrt(N - lag)


def test_pairs_of_neighbours_are_jointly_uniform():
    """2-D chi-square of (u_j, u_{j+1}) on a 16 x 16 grid: the pair is uniform on the unit square, not
    just uncorrelated."""
    u = draw(jax.random.key(12), (N,))
    a, b = (np.minimum((v * 16).astype(np.int64), 15) for v in (u[0::2], u[1::2]))
    counts = np.bincount(a * 16 + b, minlength=256)
    expected = a.size / 256
    assert_chi2(float(((counts - expected) ** 2 / expected).sum()), 255)


def test_features_within_a_row_are_uncorrelated():
    """All 20·19/2 pairs of features of a (batch, 20) draw, over 32 steps of 4096 rows: every pairwise
    correlation within Z standard errors (Bonferroni is not needed at Z = 5 for 190 pairs)."""
    key = jax.random.key(13)
    u = np.concatenate([draw(k, (4096, 20)) for k in step_keys(key, 32)])  # (131072, 20)
    c = np.corrcoef(u, rowvar=False)
    off = c[~np.eye(20, dtype=bool)]
    assert np.abs(off).max() < Z / np.sqrt(u.shape[0])


def test_instances_with_different_keys_are_independent():
    """Instances get keys fold_in(k_data, i): the same element positions of different instances are
    uncorrelated, and the instances' streams are not shifted copies of each other."""
    root = jax.random.key(21)
    keys = [jax.random.fold_in(root, i) for i in range(12)]
    u = np.stack([draw(k, (N // 8,)) for k in keys])
    n = u.shape[1]
    c = np.corrcoef(u)
    assert np.abs(c[~np.eye(len(keys), dtype=bool)]).max() < Z / np.sqrt(n)
    for lag in (1, 20):  # instance i+1 is not instance i shifted by a few elements
        assert abs(corr(u[0, lag:], u[1, :-lag])) < Z / np.sqrt(n - lag)
    # a split key (as pretrain's restarts get) behaves the same
    ka, kb = jax.random.split(root)
    assert abs(corr(draw(ka, (N // 8,)), draw(kb, (N // 8,)))) < Z / np.sqrt(n)


def test_consecutive_steps_are_independent():
    """The engine's step keys fold_in(key, t): draws of consecutive steps are uncorrelated element by
    element, and the joint distribution of (u_t, u_{t+1}) at one element is uniform on the square."""
    steps = 64
    u = np.stack([draw(k, (16384,)) for k in step_keys(jax.random.key(31), steps)])  # (steps, n)
    n = u.shape[1]
    for t in range(steps - 1):
        assert abs(corr(u[t], u[t + 1])) < Z / np.sqrt(n)
    a = np.minimum((u[:-1] * 8).astype(np.int64), 7).ravel()
    b = np.minimum((u[1:] * 8).astype(np.int64), 7).ravel()
    counts = np.bincount(a * 8 + b, minlength=64)
    expected = a.size / 64
    assert_chi2(float(((counts - expected) ** 2 / expected).sum()), 63)
    # each element's sequence over steps has no lag-1 autocorrelation, pooled over elements
    x = u - 0.5
    r1 = float((x[:-1] * x[1:]).sum() / (x * x).sum())
    assert abs(r1) < Z / np.sqrt(x[:-1].size)


def test_the_tests_catch_a_generator_without_final_mixing():
    """Power check: the same statistics on bits = mix32(i) ^ seed (counters reused, no mixing after the
    seed) fail the cross-step test by a wide margin, so passing above means something."""
    counters = trng._mix32_np(np.arange(16384, dtype=np.uint32))
    seeds = [int(jax.random.bits(k, (), jnp.uint32)) for k in step_keys(jax.random.key(31), 16)]
    u = np.stack([((counters ^ np.uint32(s)) >> np.uint32(8)) * 2.0**-24 for s in seeds])
    worst = max(abs(corr(u[t], u[t + 1])) for t in range(len(seeds) - 1))
    assert worst > 10 * Z / np.sqrt(u.shape[1])


# --- the data distribution does not depend on the generator ---------------------------------------
@functools.cache
def _sampler(batch: int, rng: str, task: str):
    return jax.jit(functools.partial(tdata.sample_features, batch_size=batch, rng=rng, task=task))


@pytest.mark.parametrize("task", ["reconstruct", "abs"])
def test_sample_features_same_distribution_with_hash_and_threefry(task):
    """For each feature probability p: P(x_i != 0) agrees between the generators within binomial
    tolerance (and with p), and the active values have the same mean, variance and distribution
    (two-sample Kolmogorov–Smirnov)."""
    p = jnp.asarray([1.0, 0.5, 0.2, 0.05, 0.01], jnp.float32)
    batch = 200_000
    x = {rng: np.asarray(_sampler(batch, rng, task)(jax.random.key(41), p), np.float64)
         for rng in ("hash", "threefry")}
    lo = -1.0 if task == "abs" else 0.0
    for i, pi in enumerate(np.asarray(p, np.float64)):
        act = {rng: x[rng][:, i] != 0 for rng in x}
        f_h, f_t = act["hash"].mean(), act["threefry"].mean()
        sd = np.sqrt(pi * (1 - pi) / batch) + 1e-12
        assert abs(f_h - pi) < Z * sd and abs(f_t - pi) < Z * sd
        assert abs(f_h - f_t) < Z * np.sqrt(2) * sd
        v_h, v_t = x["hash"][act["hash"], i], x["threefry"][act["threefry"], i]
        assert v_h.min() >= lo and v_h.max() <= 1.0
        se = np.sqrt((1 - lo) ** 2 / 12 * (1 / v_h.size + 1 / v_t.size))
        assert abs(v_h.mean() - v_t.mean()) < Z * se
        assert abs(v_h.mean() - (1 + lo) / 2) < Z * np.sqrt((1 - lo) ** 2 / 12 / v_h.size)
        var_se = (1 - lo) ** 2 * np.sqrt((1 / 80 - 1 / 144) * (1 / v_h.size + 1 / v_t.size))
        assert abs(v_h.var() - v_t.var()) < Z * var_se
        n_eff = v_h.size * v_t.size / (v_h.size + v_t.size)
        assert np.sqrt(n_eff) * stats.ks_2samp(v_h, v_t).statistic < KS_C
