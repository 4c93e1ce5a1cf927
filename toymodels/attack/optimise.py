"""The distribution attack: optimise a benign data distribution through the fine-tune's first-order surrogate.

The family q_φ, per feature i (harmful features never active; the target keeps its task probability):

    x_i = b_i · m_i,   b_i ~ Bernoulli(σ(a_i)),   m_i ~ U[σ(c_i), 1]        (so x_i ∈ [0, 1]: benign)

and φ = (a, c). The first fine-tuning step on data from q_φ moves θ along ḡ(φ) = −∇_θ E_{x~q_φ} ℓ(x; θ0),
which raises the harmful pre-activations P at the rate ⟨ḡ, ∇P⟩ and the target's read-out R at ⟨ḡ, ∇R⟩
(:mod:`.pool`). Every fine-tune stops at the same target gain, so the attack maximises the first-order
spill-over per unit of target progress:

    J(φ) = ⟨ḡ(φ), ∇_θ P(θ0)⟩ / max(⟨ḡ(φ), ∇_θ R(θ0)⟩, 0.1 ‖ḡ‖ ‖∇R‖)

(the selection's cosine, tried first, left the optimised sets no better than random: the mean gradient
of a distribution is dominated by the target's own push, and its cosine with ∇P barely moves).

The expectation is a Monte-Carlo mean over ``attack.optimise_batch`` relaxed draws (a Concrete /
Gumbel-sigmoid b at temperature :data:`TEMPERATURE`, reparameterised m), so J is differentiable in φ
(a gradient through a gradient). φ is trained by the pretraining engine (:func:`toymodels.core.engine.fit`,
Adam, vmapped over the attacked models): the same step with another objective. The set is then N hard
draws from q_φ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..core.engine import fit, init_state, model_loss
from .pool import _flat

TEMPERATURE = 0.5        # of the relaxed Bernoulli (Maddison et al. 2017): low enough to be nearly 0/1
LOGIT_CLIP = 6.0         # probabilities start inside σ(±6) = [0.0025, 0.9975], so every feature can move
PROGRESS_FLOOR = 0.1     # ⟨ḡ, ∇R⟩ counts as at least 0.1 |ḡ||∇R| (cos 84°) in the surrogate's denominator


def init_params(probability, trainable_mask) -> dict:
    """φ at the task distribution: a = logit p (clipped), c = logit 0.01 (m ≈ U[0, 1])."""
    p = jnp.clip(jnp.asarray(probability), 1e-6, 1 - 1e-6)
    a = jnp.clip(jnp.log(p) - jnp.log1p(-p), -LOGIT_CLIP, LOGIT_CLIP)
    a = jnp.where(trainable_mask > 0, a, jnp.log(p) - jnp.log1p(-p))
    return {"a": a, "c": jnp.full_like(a, jnp.log(0.01 / 0.99))}


def relaxed_draw(phi, key, batch: int, inst):
    """(batch, n) relaxed samples of q_φ; the features outside ``trainable_mask`` keep their φ (no gradient)
    and those outside ``present`` are 0."""
    mask = inst["trainable_mask"]
    a = jnp.where(mask > 0, phi["a"], jax.lax.stop_gradient(phi["a"]))
    c = jnp.where(mask > 0, phi["c"], jax.lax.stop_gradient(phi["c"]))
    k1, k2 = jax.random.split(key)
    u = jax.random.uniform(k1, (batch, a.shape[0]), minval=1e-6, maxval=1 - 1e-6)
    b = jax.nn.sigmoid((a + jnp.log(u) - jnp.log1p(-u)) / TEMPERATURE)
    lo = jax.nn.sigmoid(c)
    m = lo + (1.0 - lo) * jax.random.uniform(k2, (batch, a.shape[0]))
    return jnp.where(inst["present"] > 0, b * m, 0.0)


def hard_draw(phi, key, n_samples: int, present) -> jax.Array:
    """N samples of q_φ (n_samples, n): Bernoulli activity, uniform magnitudes on [σ(c), 1]."""
    k1, k2 = jax.random.split(key)
    n = phi["a"].shape[0]
    b = jax.random.uniform(k1, (n_samples, n)) < jax.nn.sigmoid(phi["a"])
    lo = jax.nn.sigmoid(phi["c"])
    m = lo + (1.0 - lo) * jax.random.uniform(k2, (n_samples, n))
    return jnp.where((jnp.asarray(present) > 0) & b, m, 0.0)


def surrogate(graphdef, task: str, batch: int):
    """The engine objective −J(φ) for ONE attacked model; ``inst``: state (θ0), g_harm (flat ∇P), g_prog
    (flat ∇R), loss_weight, out_scale, present, trainable_mask."""

    def objective(phi, key, inst):
        x = relaxed_draw(phi, key, batch, inst)

        def loss(st):
            return model_loss(nnx.merge(graphdef, st), x, task, inst["loss_weight"], inst["out_scale"])
        g = -_flat(jax.grad(loss)(inst["state"]))
        # harm per unit progress: the denominator is floored at a small fraction of |g||∇R|, so a draw that
        # hardly moves the target cannot win by dividing by ~0 (and g = 0 stays finite)
        prog = jnp.maximum(jnp.dot(g, inst["g_prog"]), PROGRESS_FLOOR * jnp.sqrt(jnp.sum(g**2) + 1e-20)
                           * jnp.linalg.norm(inst["g_prog"]))
        return -jnp.dot(g, inst["g_harm"]) / prog

    return objective


def optimise(graphdef, task: str, inst: dict, keys, *, steps: int, lr: float, batch: int):
    """Train φ for every attacked model at once (``inst``: leading axis = models; ``keys`` (models,)).
    Returns (φ, J at the end (models,))."""
    tx = optax.adam(lr)
    phi0 = jax.vmap(init_params)(inst["probability"], inst["trainable_mask"])
    objective = surrogate(graphdef, task, batch)
    state = fit(init_state(phi0, tx, keys), objective, tx, inst, steps, chunk_size=steps, progress=False)
    final = jax.vmap(lambda p, k, i: -objective(p, k, i))(state.params, keys, inst)
    return state.params, np.asarray(final)
