"""A richer feature distribution for large models: power-law firing, correlated features, hierarchies.

SynthSAEBench-style data (its ``firing_probabilities``, correlation and hierarchy options), for one
instance, built from the same one-uniform-per-element generator as :mod:`.data`:

* **power-law firing** (``data.power_law = α``): feature i fires with probability p_i = p · (i+1)^(−α),
  p the instance's ``data.feature_probability`` (:meth:`toymodels.config.Config.feature_probability`
  applies it, so evaluation and every per-instance array see the same p_i).
* **correlated features** (``data.correlation = ρ``, ``data.correlation_groups = G``): feature i belongs
  to group i mod G. Each sample draws one uniform g_k per group; feature i's activity uniform is g_k with
  probability ρ and its own u_i otherwise (a mixture copula). Every marginal stays Uniform(0, 1), so p_i
  is unchanged, and two features of one group fire together with probability
  ρ² min(q_i, q_j) + (1 − ρ²) q_i q_j instead of q_i q_j.
* **hierarchies** (``data.parents = P``, ``data.children = C``): features 0 … P−1 are parents, and
  feature P + a·C + j (j < C) is the j-th child of parent a. A child fires only when its parent does, with
  conditional probability q_c = p_c / p_a, so its marginal stays p_c (needs p_c <= p_a, which a power law
  over the index gives; larger p_c is clipped to p_a).
* magnitudes: an independent Uniform(0, 1) per element (Uniform(−1, 1) for the ``abs`` task).

Costs per sample: 2 uniforms per feature (3 with correlation) and G per-group uniforms; no n × n array.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import rng as trng

__all__ = ["co_fire_probability", "hierarchy_parents", "is_rich", "make_sampler", "power_law", "sample_features"]


def is_rich(data_cfg) -> bool:
    """Whether a :class:`DataConfig` asks for this generator (any of its options set)."""
    return (getattr(data_cfg, "correlation", 0.0) > 0 or getattr(data_cfg, "parents", 0) > 0
            or getattr(data_cfg, "power_law", 0.0) > 0)


def power_law(n: int, alpha: float) -> np.ndarray:
    """(i+1)^(−α) for i < n, float64: the firing profile that multiplies each instance's p."""
    return np.arange(1, n + 1, dtype=np.float64) ** -float(alpha)


def hierarchy_parents(n: int, parents: int, children: int) -> np.ndarray:
    """parent[i]: the parent feature of feature i, or −1 for a root (module docstring's layout)."""
    out = np.full(n, -1, np.int32)
    if parents and children:
        idx = parents + np.arange(parents * children)
        out[idx] = np.repeat(np.arange(parents), children)
    return out


def co_fire_probability(q_i: float, q_j: float, rho: float) -> float:
    """P(both fire) for two same-group features with activity probabilities q_i, q_j (no hierarchy)."""
    return rho**2 * min(q_i, q_j) + (1 - rho**2) * q_i * q_j


def sample_features(key: jax.Array, feature_probability: jax.Array, batch_size: int, *, task: str = "reconstruct",
                    rng: str = "hash", parent: np.ndarray | None = None, groups: int = 0,
                    rho: float = 0.0) -> jax.Array:
    """Draw x: (batch_size, n_features) for one instance (module docstring). ``feature_probability`` (n,)
    is already the power-law profile (the config applies it)."""
    n = feature_probability.shape[-1]
    shape = (batch_size, n)
    k_act, k_val, k_grp, k_mix = jax.random.split(key, 4)
    p = feature_probability
    u = trng.uniform(k_act, shape, rng)
    if groups and rho > 0:
        g = trng.uniform(k_grp, (batch_size, groups), rng)[:, np.arange(n) % groups]
        u = jnp.where(trng.uniform(k_mix, shape, rng) < rho, g, u)
    if parent is not None and (parent >= 0).any():
        has = parent >= 0
        safe = np.where(has, parent, 0)
        q = jnp.where(has, jnp.minimum(p / jnp.maximum(p[safe], 1e-30), 1.0), p)
        active = u < q
        active = active & jnp.where(has, active[:, safe], True)   # one level: parents are roots
    else:
        active = u < p
    value = trng.uniform(k_val, shape, rng)
    if task in ("abs", "resid_relu"):  # data.SIGNED_TASKS (data imports this module)
        value = 2.0 * value - 1.0
    return jnp.where(active, value, 0.0)


def make_sampler(data_cfg) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``sample(key, feature_probability) -> x`` for one instance, closed over a :class:`DataConfig`."""
    parent = hierarchy_parents(data_cfg.n_features, data_cfg.parents, data_cfg.children)
    return partial(sample_features, batch_size=data_cfg.batch_size, task=data_cfg.task, rng=data_cfg.rng,
                   parent=parent if (parent >= 0).any() else None, groups=data_cfg.correlation_groups,
                   rho=data_cfg.correlation)
