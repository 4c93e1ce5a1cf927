"""Sparse autoencoders on hidden activations: the four variants, for ONE instance (the engine vmaps).

An SAE reads a hidden activation h ∈ R^d (normalised: the run multiplies h by c = √(d / E‖h‖²)) into L
latents and writes it back::

    z = W_encᵀ (h − b_dec) + b_enc                 pre-activations, (L,)
    f = σ(z)                                       the code (variant below)
    ĥ = Σ_i f_i d_i + b_dec                        d_i = W_dec,i / ‖W_dec,i‖ (relu_l1: d_i = W_dec,i)

and is trained on the batch mean of L = ‖h − ĥ‖² + S(f), with the variant's activation σ and sparsity S:

* ``relu_l1`` (Anthropic, April 2024 update): σ = ReLU, S = λ Σ_i f_i ‖W_dec,i‖. The decoder is not
  normalised; the penalty on f_i ‖W_dec,i‖ removes the scale freedom between encoder and decoder.
* ``topk`` (Gao et al. 2024): σ keeps the k largest ReLU(z_i) of each sample and zeroes the rest; S = 0.
* ``batch_topk`` (Bussmann et al. 2024): σ keeps the k·B largest ReLU(z_bi) over the whole batch of B
  samples (k latents per sample on average, more for busy samples, none for empty ones); S = 0. At
  inference a single threshold θ replaces the batch rule (:func:`codes`): the smallest kept value on a
  large evaluation batch.
* ``jumprelu`` (Rajamanoharan et al. 2024): σ(z)_i = z_i H(z_i − θ_i), θ_i = exp(log θ_i) learned; S = λ
  Σ_i H(z_i − θ_i) (an L0 penalty). H has no useful gradient, so θ learns through a straight-through
  estimator with a rectangle kernel K(u) = 1[|u| < ½] of width ε:

      ∂/∂θ [z H(z − θ)] := −(θ/ε) K((z − θ)/ε),    ∂/∂θ H(z − θ) := −(1/ε) K((z − θ)/ε),
      ∂/∂z [z H(z − θ)] := H(z − θ),               ∂/∂z H(z − θ) := 0.

* ``matryoshka`` (Bussmann et al. 2025, "Learning multi-level features with Matryoshka SAEs"): BatchTopK
  codes, trained so that every nested prefix of the dictionary reconstructs h on its own:
  L = (1/|M|) Σ_{m ∈ M} ‖h − Σ_{i < m} f_i d_i − b_dec‖², with prefixes m = size·(1/8, 1/4, 1/2, 1)
  (:data:`MATRYOSHKA_FRACTIONS`) of the instance's dictionary size. The first latents must then carry
  the broad, frequent features and later ones refine them; at inference it is BatchTopK (one threshold).

Dictionary sizes share one program: a 0/1 ``mask`` (L,) per instance switches latents off (their
pre-activations are −∞ for the top-k rules and their codes 0 everywhere). ``sparsity`` is per instance:
λ (relu_l1, jumprelu) or k (topk, batch_topk). Dead latents are revived by :func:`revive`.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

# the order is part of the PRNG streams (fold_in(key, VARIANTS.index(variant))): append, never reorder
VARIANTS = ("relu_l1", "topk", "batch_topk", "jumprelu", "matryoshka")
NORMALISED = ("topk", "batch_topk", "jumprelu", "matryoshka")   # variants whose decoder directions are unit
THRESHOLDED = ("batch_topk", "matryoshka")   # batch rule in training, one threshold θ at inference
MATRYOSHKA_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
NEG = -1e9   # a masked latent's pre-activation for the top-k rules
EPS = 1e-8


# --- parameters -----------------------------------------------------------------------------------------
def init_params(key: jax.Array, d: int, L: int, threshold_init: float) -> dict:
    """One SAE: decoder rows random unit vectors, encoder their transpose (tied at init), biases 0, JumpReLU
    thresholds θ₀."""
    W_dec = jax.random.normal(key, (L, d))
    W_dec = W_dec / jnp.linalg.norm(W_dec, axis=1, keepdims=True)
    return {"W_enc": W_dec.T, "b_enc": jnp.zeros((L,)), "W_dec": W_dec, "b_dec": jnp.zeros((d,)),
            "log_threshold": jnp.full((L,), jnp.log(threshold_init))}


def directions(params: dict, variant: str) -> jax.Array:
    """The decoder vectors ĥ is built from, (L, d): unit rows except for relu_l1."""
    W = params["W_dec"]
    if variant == "relu_l1":
        return W
    return W / jnp.maximum(jnp.linalg.norm(W, axis=1, keepdims=True), EPS)


# --- JumpReLU and its straight-through estimator --------------------------------------------------------
def _kernel(z, theta, eps):
    return (jnp.abs((z - theta) / eps) < 0.5).astype(z.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu(z, theta, eps):
    """z H(z − θ), with the pseudo-derivative in θ of the module docstring."""
    return z * (z > theta)


def _jumprelu_fwd(z, theta, eps):
    return jumprelu(z, theta, eps), (z, theta)


def _jumprelu_bwd(eps, res, g):
    z, theta = res
    d_theta = -(theta / eps) * _kernel(z, theta, eps) * g
    return (z > theta).astype(z.dtype) * g, _sum_to(d_theta, theta)


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def step(z, theta, eps):
    """H(z − θ), with the pseudo-derivative −(1/ε) K((z − θ)/ε) in θ and 0 in z."""
    return (z > theta).astype(z.dtype)


def _step_fwd(z, theta, eps):
    return step(z, theta, eps), (z, theta)


def _step_bwd(eps, res, g):
    z, theta = res
    return jnp.zeros_like(z), _sum_to(-(1.0 / eps) * _kernel(z, theta, eps) * g, theta)


step.defvjp(_step_fwd, _step_bwd)


def _sum_to(g, like):
    """Sum a broadcast gradient (L, B) back to θ's shape (L, 1)."""
    return g.sum(1, keepdims=True) if g.shape != like.shape else g


# --- the top-k rules (feature-major: latents on axis 0, the batch on axis 1) -------------------------
def topk_codes(z, k, kmax: int):
    """Per sample, the k largest ReLU(z) of z (L, B) (k a per-instance integer <= kmax, static): (L, B)."""
    vals = jax.lax.top_k(z.T, kmax)[0]                                     # (B, kmax), descending
    thr = jnp.take(vals, jnp.clip(k.astype(jnp.int32) - 1, 0, kmax - 1), axis=1)[None, :]
    return jnp.where(z >= thr, jax.nn.relu(z), 0.0)


def batch_threshold(a, n_keep, iters: int = 20):
    """The value t with about ``n_keep`` entries of a >= 0 above it: bisection on [0, max a] (20 halvings,
    about 1e-6 of the range); t = 0 keeps every positive entry when there are fewer."""
    hi = jnp.max(a)

    def body(_, c):
        lo, hi = c
        mid = 0.5 * (lo + hi)
        many = jnp.sum(a > mid) >= n_keep
        return jnp.where(many, mid, lo), jnp.where(many, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iters, body, (jnp.zeros_like(hi), hi))
    return jnp.where(jnp.sum(a > 0) > n_keep, lo, 0.0)


def batch_topk_codes(z, k):
    """Over the batch (z: (L, B)), the round(k B) largest ReLU(z): (L, B); and the threshold used."""
    a = jax.nn.relu(z)
    t = batch_threshold(a, jnp.round(k * z.shape[1]))
    return jnp.where(a > t, a, 0.0), t


# --- the SAE (feature-major: a batch is hᵀ, (d, B); codes are (L, B)) ----------------------------------
def preactivations(params: dict, ht, mask):
    """z = W_encᵀ (h − b_dec) + b_enc for a batch ht = hᵀ (d, B), masked latents at −∞ (NEG): (L, B).
    The batch is the minor axis, which XLA vectorises along (as the engine's ``model_loss``)."""
    z = params["W_enc"].T @ (ht - params["b_dec"][:, None]) + params["b_enc"][:, None]
    return jnp.where(mask[:, None] > 0, z, NEG)


def codes(params: dict, ht, inst, variant: str, kmax: int = 1, eps: float = 0.05, threshold=None):
    """The code f (L, B) of a batch ht (d, B) under the variant's rule; batch_topk uses the batch rule, or
    the fixed inference ``threshold`` θ when given (f = ReLU(z) 1[z > θ])."""
    z = preactivations(params, ht, inst["mask"])
    if variant == "relu_l1":
        return jax.nn.relu(z)
    if variant == "topk":
        return topk_codes(z, inst["sparsity"], kmax)
    if variant in THRESHOLDED:
        if threshold is not None:
            return jnp.where(z > threshold, jax.nn.relu(z), 0.0)
        return batch_topk_codes(z, inst["sparsity"])[0]
    if variant == "jumprelu":
        return jumprelu(z, jnp.exp(params["log_threshold"])[:, None], eps)
    raise ValueError(f"unknown SAE variant {variant!r}")


def decode(params: dict, ft, variant: str):
    """ĥᵀ = Dᵀ f + b_dec: (d, B)."""
    return directions(params, variant).T @ ft + params["b_dec"][:, None]


def loss(params: dict, ht, inst, variant: str, kmax: int = 1, eps: float = 0.05):
    """The batch mean of ‖h − ĥ‖² + S(f) (module docstring) for one instance; ht = hᵀ (d, B), normalised."""
    f = codes(params, ht, inst, variant, kmax, eps)
    if variant == "matryoshka":
        return matryoshka_reconstruction(params, ht, f, inst["mask"])
    rec = jnp.mean(jnp.sum((ht - decode(params, f, variant)) ** 2, axis=0))
    if variant == "relu_l1":
        return rec + inst["sparsity"] * jnp.mean(jnp.linalg.norm(params["W_dec"], axis=1) @ f)
    if variant == "jumprelu":
        z = preactivations(params, ht, inst["mask"])
        l0 = step(z, jnp.exp(params["log_threshold"])[:, None], eps) * inst["mask"][:, None]
        return rec + inst["sparsity"] * jnp.mean(jnp.sum(l0, axis=0))
    return rec


def matryoshka_reconstruction(params: dict, ht, f, mask):
    """(1/|M|) Σ_m mean_b ‖h − Σ_{i < m} f_i d_i − b_dec‖² over the prefixes m = ⌈size · φ⌉, φ in
    :data:`MATRYOSHKA_FRACTIONS`, size = Σ mask (the instance's dictionary size)."""
    size = jnp.sum(mask)
    idx = jnp.arange(f.shape[0])[:, None]
    total = 0.0
    for frac in MATRYOSHKA_FRACTIONS:
        fm = jnp.where(idx < jnp.ceil(size * frac), f, 0.0)
        total = total + jnp.mean(jnp.sum((ht - decode(params, fm, "matryoshka")) ** 2, axis=0))
    return total / len(MATRYOSHKA_FRACTIONS)


# --- dead latents ----------------------------------------------------------------------------------
class ReviveState(NamedTuple):
    """State of :func:`revive`: the inner optimiser's, steps since each latent last fired (L,), how often each
    was re-initialised (L,), the latents that exist (mask, set after init), the step, and a PRNG key."""

    inner: optax.OptState
    since: jax.Array
    revived: jax.Array
    mask: jax.Array
    count: jax.Array
    key: jax.Array


def revive(inner: optax.GradientTransformation, after: int, until: int, threshold_init: float,
           key: jax.Array) -> optax.GradientTransformation:
    """The optimiser ``inner``, re-initialising dead latents. A latent fired in a step exactly when the
    gradient of its encoder bias is nonzero (every variant's code has zero derivative where it is off). A
    latent of the mask that has not fired for ``after`` steps, at a step before ``until``, is resampled: a
    random unit direction v becomes its decoder row and encoder column, its bias 0 and its JumpReLU
    threshold θ₀ (the update is new − old). ``after = 0``: only counting, no revival. The mask is 1 at
    init; :func:`set_revive_mask` writes each instance's."""

    def init(params):
        L = params["b_enc"].shape[-1]
        return ReviveState(inner.init(params), jnp.zeros((L,), jnp.int32), jnp.zeros((L,), jnp.int32),
                           jnp.ones((L,)), jnp.zeros((), jnp.int32), key)

    def update(grads, state, params=None):
        fired = grads["b_enc"] != 0
        since = jnp.where(fired, 0, state.since + 1)
        updates, inner_state = inner.update(grads, state.inner, params)
        dead = (since >= max(after, 1)) & (state.mask > 0) & (state.count < until) & (after > 0)
        d = params["W_dec"].shape[-1]
        v = jax.random.normal(jax.random.fold_in(state.key, state.count), (dead.shape[0], d))
        v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
        new = {"W_dec": v, "W_enc": v.T, "b_enc": jnp.zeros_like(params["b_enc"]),
               "log_threshold": jnp.full_like(params["log_threshold"], jnp.log(threshold_init))}
        col = {"W_dec": dead[:, None], "W_enc": dead[None, :], "b_enc": dead, "log_threshold": dead}
        updates = {k: jnp.where(col[k], new[k] - params[k], u) if k in col else u for k, u in updates.items()}
        state = ReviveState(inner_state, jnp.where(dead, 0, since), state.revived + dead, state.mask,
                            state.count + 1, state.key)
        return updates, state

    return optax.GradientTransformation(init, update)


def set_revive_mask(opt_state: ReviveState, mask) -> ReviveState:
    """Write the per-instance latent masks (n_inst, L) into a vmapped :class:`ReviveState`."""
    return opt_state._replace(mask=jnp.asarray(mask, jnp.float32))
