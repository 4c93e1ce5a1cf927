"""The benign pool, random sets, and selection by gradient similarity (LESS; He et al. 2024, §3).

For pretrained model θ0 and its fine-tuning objective ℓ (the regime's, :mod:`toymodels.lab.objective`):

    pool        X = {x_1..x_M} ~ the regime's task data (harmful features never active: the data filter)
    harm        P(θ) = mean_{x∈X} Σ_{j harmful} p_j(x; θ)      (the harmful outputs' pre-activations)
    progress    R(θ) = x'_t(e_t; θ)                              (the target's read-out, whose gain stops it)
    score       s(x) = cos(−∇_θ ℓ(x; θ0), ∇_θ P(θ0))             (a step on x raises P as much as possible)
    selected    the N samples of largest s among those whose step also makes progress,
                ⟨−∇ℓ(x), ∇R⟩ > 0 (the set must still do the fine-tuning task)

LESS (Xia et al. 2024) ranks by the same cosine with the gradient of target examples; He et al. use the
gradients of harmful examples. Here the "harmful examples" are the harmful pre-activations themselves
(the attacker knows the geometry, as the seed article's risk 3 supposes). LESS's Adam preconditioning and
random projection are left out: the toy's gradients are small enough to use whole.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..config import Config
from ..core import data as tdata
from ..core.engine import model_loss
from ..lab.objective import target_readout
from ..lab.probe import preactivation

ATTACK_SEED_OFFSET = 500   # fold_in(seed key, ·) of the pools; model i's pool: fold_in(that, i)
# what model i's attack keys are for: attack_key(cfg, i, PURPOSE, j) = fold_in(fold_in(pool key, PURPOSE), j),
# so no two purposes can share a key whatever the index j (a set's number, an orientation)
RANDOM, OPTIMISE, DRAW, DETECT_RANDOM, DETECT_DRAW, REFERENCE = range(1, 7)
SCORE_BATCH = 1024         # per-sample gradients computed this many at a time (bounds memory)


def pool_key(cfg: Config, pretrain_index: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), ATTACK_SEED_OFFSET), int(pretrain_index))


def attack_key(cfg: Config, pretrain_index: int, purpose: int, j: int = 0) -> jax.Array:
    """The key of ``purpose`` (:data:`RANDOM` …) number ``j`` of pretrained model ``pretrain_index``."""
    return jax.random.fold_in(jax.random.fold_in(pool_key(cfg, pretrain_index), purpose), int(j))


def draw_pool(cfg: Config, key: jax.Array, probability, present, size: int) -> jax.Array:
    """``size`` benign samples (size, n): the regime's data (``probability``, with every feature outside
    ``present`` set to 0, as :func:`toymodels.lab.objective.finetune_inputs` does)."""
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=size))
    x = sample(key, jnp.asarray(probability))
    return jnp.where(jnp.asarray(present) > 0, x, 0.0)


def random_rows(key: jax.Array, pool_size: int, n: int) -> np.ndarray:
    """n distinct pool rows, uniformly (a random set; ``key`` from :func:`attack_key`)."""
    return np.asarray(jax.random.choice(key, pool_size, (n,), replace=False))


def _flat(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])


@partial(jax.jit, static_argnums=(0, 3))
def harm_direction(graphdef, state, X, harmful: tuple) -> jax.Array:
    """∇_θ P(θ0), flattened: P = mean over X of the harmful pre-activations (summed over harmful j)."""
    harm = jnp.asarray(harmful)

    def P(st):
        return jnp.mean(jnp.sum(preactivation(nnx.merge(graphdef, st), X)[:, harm], axis=1))
    return _flat(jax.grad(P)(state))


@partial(jax.jit, static_argnums=0)
def progress_direction(graphdef, state, inst: dict) -> jax.Array:
    """∇_θ R(θ0), flattened: R = x'_t(e_t), the target's read-out (``inst["target"]`` one-hot)."""
    return _flat(jax.grad(lambda st: target_readout(graphdef, "all")(st, inst))(state))


@partial(jax.jit, static_argnums=(0, 4, 5))
def sample_scores(graphdef, state, X, inst: dict, harmful: tuple, task: str):
    """Per pool sample: (s(x), progress ⟨−∇ℓ(x), ∇R⟩, ‖∇ℓ(x)‖) of the module docstring, each (M,).
    ``inst``: ONE instance's regime arrays (loss_weight, out_scale, target)."""
    g_harm = harm_direction(graphdef, state, X, harmful)
    g_prog = progress_direction(graphdef, state, inst)

    def loss(st, x):
        return model_loss(nnx.merge(graphdef, st), x[None], task, inst["loss_weight"], inst["out_scale"])

    def one(x):
        g = -_flat(jax.grad(loss)(state, x))
        norm = jnp.linalg.norm(g)
        cos = jnp.dot(g, g_harm) / jnp.maximum(norm * jnp.linalg.norm(g_harm), 1e-30)
        return cos, jnp.dot(g, g_prog), norm

    return jax.lax.map(one, X, batch_size=SCORE_BATCH)


def select(scores, progress, norm, n: int) -> tuple[np.ndarray, int]:
    """The rows of the N best-scoring candidates (progress > 0 and a nonzero gradient), then, if there are
    fewer than N candidates, the best of the rest; ties by pool order. Returns (rows, n_candidates)."""
    scores, progress, norm = (np.asarray(a, np.float64) for a in (scores, progress, norm))
    cand = (progress > 0) & (norm > 0)
    key = np.where(cand, scores, scores - 10.0)          # cos ∈ [−1, 1]: every candidate ranks first
    return np.argsort(-key, kind="stable")[:n], int(cand.sum())


def feature_stats(sets) -> dict[str, np.ndarray]:
    """Per set and feature: the active fraction and the mean value when active. sets (..., N, n)."""
    sets = np.asarray(sets, np.float64)
    active = sets > 0
    frac = active.mean(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = np.where(active.any(axis=-2), (sets * active).sum(axis=-2) / active.sum(axis=-2), np.nan)
    return {"active": frac, "magnitude": mag, "co_active": (active.sum(axis=-1) >= 2).mean(axis=-1)}
