"""Synthetic sparse features (TMS §Demonstrating Superposition; §Correlated and Anticorrelated Features).

For one instance, a batch ``x`` of shape (batch, n_features) has

    x_i = 0                 with probability 1 - p_i
    x_i ~ Uniform[0, 1]     otherwise                      (task "reconstruct")
    x_i ~ Uniform[-1, 1]    otherwise                      (task "abs", target |x|)
    x_i ~ Uniform[-1, 1]    otherwise                      (task "resid_relu", target x + ReLU(x))

One uniform draw per element is enough: with u ~ U[0,1), ``active = u < p`` and, given ``active``,
``u / p`` is again U[0,1). That halves the random numbers the notebook draws (it draws a mask and a
value separately), and random numbers dominate a TMS step on CPU (``shared/ENGINEERING.md``).

Feature sets (``correlated``, ``anticorrelated``) share one "activity" draw taken at the set's first
feature (its *representative*) and draw values separately:

* correlated set: every member is on iff u_rep < p_rep (all on or all off together);
* anticorrelated set of size k: member r is on iff r·p_rep <= u_rep < (r+1)·p_rep, so at most one
  member is on and each is on with probability p_rep (needs k·p_rep <= 1).

Every function here is for a *single* instance; the engine vmaps it over the instance axis.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import rng as trng
from . import scale_data

SIGNED_TASKS = ("abs", "resid_relu")  # tasks whose inputs are Uniform[-1, 1] when active


def feature_groups(n_features: int, correlated=(), anticorrelated=()) -> tuple[np.ndarray, np.ndarray]:
    """Static layout of feature sets: ``rep[i]`` is the index of feature i's set representative and
    ``offset[i]`` its slot within an anticorrelated set (0 otherwise). Independent features are their
    own representative. Sets come first: correlated, then anticorrelated."""
    rep = np.arange(n_features)
    offset = np.zeros(n_features, dtype=np.int32)
    start = 0
    for size in correlated:
        rep[start:start + size] = start
        start += size
    for size in anticorrelated:
        rep[start:start + size] = start
        offset[start:start + size] = np.arange(size)
        start += size
    return rep, offset


def sample_features(
    key: jax.Array,
    feature_probability: jax.Array,
    batch_size: int,
    *,
    task: str = "reconstruct",
    rng: str = "hash",
    groups: tuple[np.ndarray, np.ndarray] | None = None,
) -> jax.Array:
    """Draw x: (batch_size, n_features) for one instance.

    Args:
      key: a JAX PRNG key. With ``rng="hash"`` it seeds the counter-based generator in
        :mod:`toymodels.core.rng` (one 32-bit word per call); with ``"threefry"`` it is used directly.
      feature_probability: (n_features,) P(x_i != 0) = 1 - S.
      groups: ``feature_groups(...)`` for correlated / anticorrelated sets, or None (all independent).
    """
    n = feature_probability.shape[-1]
    shape = (batch_size, n)
    p = feature_probability
    if groups is None:
        u = trng.uniform(key, shape, rng)
        active = u < p
        value = u / p
    else:
        rep, offset = groups
        k_act, k_val = jax.random.split(key)
        u_rep = trng.uniform(k_act, shape, rng)[:, rep]     # shared activity draw per set
        p_rep = p[rep]
        lo = offset * p_rep
        active = (u_rep >= lo) & (u_rep < lo + p_rep)
        value = trng.uniform(k_val, shape, rng)
    if task in SIGNED_TASKS:
        value = 2.0 * value - 1.0
    return jnp.where(active, value, 0.0)


def make_sampler(data_cfg) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``sample(key, feature_probability) -> x`` for one instance, closed over a :class:`DataConfig`
    (:mod:`.scale_data`'s generator when the config sets power_law, correlation or parents)."""
    if scale_data.is_rich(data_cfg):
        return scale_data.make_sampler(data_cfg)
    has_sets = bool(data_cfg.correlated) or bool(data_cfg.anticorrelated)
    groups = feature_groups(data_cfg.n_features, data_cfg.correlated, data_cfg.anticorrelated) if has_sets else None
    return partial(sample_features, batch_size=data_cfg.batch_size, task=data_cfg.task, rng=data_cfg.rng,
                   groups=groups)


def target(x: jax.Array, task: str) -> jax.Array:
    """What the model should output: x itself (``reconstruct``), |x| (``abs``), or y = x + ReLU(x)
    (``resid_relu``: the residual MLP's labels, APD/SPD's ``act_plus_resid`` with unit coefficients)."""
    if task == "abs":
        return jnp.abs(x)
    if task == "resid_relu":
        return x + jax.nn.relu(x)
    return x
