"""Mixture-of-experts TMS (Chaudhari, Nuer & Thorstenson 2025, "Sparsity and Superposition in Mixture of
Experts", arXiv:2510.23671): E TMS autoencoders behind a top-k gate.

    g = G x                                     router logits, G (E, n)
    S = top-k(g)                                the k experts with the largest logits
    w_e = exp(g_e) / Σ_{e'∈S} exp(g_e')  (e ∈ S), 0 otherwise      (softmax over the selected logits)
    p_e = W_eᵀ W_e x + b_e                      expert e's output pre-activation, W_e (d, n), b_e (n,)
    x' = Σ_e w_e ReLU(p_e)

This is the authors' model (``model/model.py`` of github.com/MarmikChaudhari/moe-superposition, read
for this module): gate (E, n) with a Xavier-normal init, a softmax over all experts, top-k of it, the
selected probabilities renormalised to sum to 1 (identical to a softmax over the selected logits), one
tied W and one bias per expert, a ReLU per expert. Their optional load-balancing loss
(α N Σ_e f_e P_e, α = 0.01) is NOT included: the engine trains the reconstruction objective only. With
k = 1 the renormalised weight is exactly 1, so (without that loss) the gate receives no gradient and
routing stays at its random init, as in their code.

Parameters: ``W`` (d, n) and ``b_final`` (n,) are expert 0's (where the lab plants, pins and reads the
named features); ``W_experts`` (E−1, d, n) and ``b_experts`` (E−1, n) the other experts'; ``gate`` (E, n).
With E = 1 there is no gate and no other expert, and every operation is ``relu_output``'s: same draws
(``W`` is drawn first, from the first key), same parameters, same forward, bit for bit
(``tests/test_moe.py``). A rotation O of every expert's hidden space (W_e → O W_e) leaves the function
unchanged (W_eᵀOᵀO W_e = W_eᵀW_e; the gate reads x, not h): ``HIDDEN_LEAVES``.

``route_pair`` pins where features 0 and 1 (the first two named features, helpful and toxic) are
routed: ``same`` sends both to expert 0, ``different`` feature 0 to expert 0 and feature 1 to expert 1.
Their gate columns are replaced in the forward pass by constants (ROUTE_LOGIT on the chosen expert, 0
elsewhere), so those columns have no gradient and never move, with no optimiser mask; the stored
``gate`` entries there are unused. An input carrying only feature 0 (or only feature 1) goes to its
expert for any positive value; a mixed input follows the largest logit. ``learned`` fixes nothing.

The lab reads ``preact`` = Σ_e w_e p_e (exact, x' = ReLU(preact), when k = 1) and the per-expert records
``route(x)`` (batch, E) and ``expert_preacts(x)`` (E, batch, n).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROUTES = ("learned", "same", "different")
ROUTE_LOGIT = 10.0   # the pinned routing logit per unit of the feature (gate logits at init are ~N(0, 0.3²))


def pinned_routes(route_pair: str) -> tuple[tuple[int, int], ...]:
    """((feature, expert), ...) whose gate column is fixed by ``route_pair``."""
    if route_pair == "same":
        return ((0, 0), (1, 0))
    if route_pair == "different":
        return ((0, 0), (1, 1))
    if route_pair == "learned":
        return ()
    raise ValueError(f"model.route_pair={route_pair!r}: must be one of {', '.join(ROUTES)}")


class MoETMS(nnx.Module):
    """x' = Σ_e w_e(x) ReLU(W_eᵀW_e x + b_e), top-k softmax gate; see the module docstring. x (batch, n)."""

    REPRESENTED_BY = "readout"   # a feature may live in another expert than W's: core.planting.own_readouts
    HIDDEN_LEAVES = ("W", "W_experts")

    def __init__(self, n_features: int, d_hidden: int, *, n_experts: int = 1, k_active: int = 1,
                 route_pair: str = "learned", std: float, rngs: nnx.Rngs):
        if not 1 <= k_active <= n_experts:
            raise ValueError(f"model.k_active={k_active}: must be in 1..n_experts={n_experts}")
        self.routes = pinned_routes(route_pair)
        if self.routes and (n_features < 2 or n_experts < max(e for _, e in self.routes) + 1):
            raise ValueError(f"model.route_pair={route_pair!r}: needs >= 2 features and enough experts")
        self.n_experts, self.k_active = n_experts, k_active
        # W first, from the first key: with one expert the draws are relu_output's exactly
        self.W = nnx.Param(std * jax.random.normal(rngs.params(), (d_hidden, n_features)))
        self.b_final = nnx.Param(jnp.zeros((n_features,)))
        if n_experts > 1:
            self.W_experts = nnx.Param(std * jax.random.normal(rngs.params(), (n_experts - 1, d_hidden, n_features)))
            self.b_experts = nnx.Param(jnp.zeros((n_experts - 1, n_features)))
            gate_std = math.sqrt(2.0 / (n_experts + n_features))   # xavier_normal on (E, n), as the authors
            self.gate = nnx.Param(gate_std * jax.random.normal(rngs.params(), (n_experts, n_features)))

    @classmethod
    def from_config(cls, model_cfg, n_features: int, *, std: float, rngs: nnx.Rngs) -> MoETMS:
        return cls(n_features, model_cfg.d_hidden, n_experts=model_cfg.n_experts, k_active=model_cfg.k_active,
                   route_pair=model_cfg.route_pair, std=std, rngs=rngs)

    # --- the experts and the gate ---------------------------------------------------------------------
    def expert_weights(self) -> jax.Array:
        """(E, d, n): [W, *W_experts]."""
        W = self.W[...][None]
        return W if self.n_experts == 1 else jnp.concatenate([W, self.W_experts[...]], axis=0)

    def expert_biases(self) -> jax.Array:
        """(E, n): [b_final, *b_experts]."""
        b = self.b_final[...][None]
        return b if self.n_experts == 1 else jnp.concatenate([b, self.b_experts[...]], axis=0)

    def gate_matrix(self) -> jax.Array:
        """(E, n): the gate with the ``route_pair`` columns replaced by their constants (no gradient)."""
        G = self.gate[...]
        for f, e in self.routes:
            G = G.at[:, f].set(ROUTE_LOGIT * jax.nn.one_hot(e, self.n_experts, dtype=G.dtype))
        return G

    def route(self, x: jax.Array) -> jax.Array:
        """(batch, E) routing weights: softmax over the top-k logits, 0 elsewhere (rows sum to 1, exactly
        k nonzero). Ties (e.g. x = 0) go to the lower expert index."""
        if self.n_experts == 1:
            return jnp.ones((x.shape[0], 1), x.dtype)
        return self._route_t(self.gate_matrix() @ x.T).T

    def _route_t(self, gt: jax.Array) -> jax.Array:
        """Routing weights (E, batch) from logits gt (E, batch). Expert e is selected when fewer than k
        experts beat it, rank_e = #{e' : g_e' > g_e, or g_e' = g_e and e' < e} < k: E² comparisons, which
        for a few experts is much cheaper on CPU than ``lax.top_k`` and its gather (and the same set)."""
        E = self.n_experts
        lower = jnp.arange(E)[:, None] < jnp.arange(E)[None, :]                     # [e', e]: e' < e
        beats = (gt[:, None] > gt[None, :]) | ((gt[:, None] == gt[None, :]) & lower[..., None])
        selected = jnp.sum(beats, axis=0) < self.k_active                           # (E, batch)
        top = jnp.max(gt, axis=0, keepdims=True)                                    # the top-1 is always selected
        z = jnp.where(selected, jnp.exp(gt - jax.lax.stop_gradient(top)), 0.0)
        return z / jnp.sum(z, axis=0, keepdims=True)

    def expert_preacts(self, x: jax.Array) -> jax.Array:
        """(E, batch, n): p_e = W_eᵀ W_e x + b_e for every expert."""
        Ws = self.expert_weights()
        return jnp.einsum("bn,edn,edm->ebm", x, Ws, Ws) + self.expert_biases()[:, None, :]

    # --- the members every model has ------------------------------------------------------------------
    def hidden(self, x: jax.Array) -> jax.Array:
        """h = W x: expert 0's hidden activations (batch, d) (where the named features are planted)."""
        return x @ self.W[...].T

    def preact(self, x: jax.Array) -> jax.Array:
        """(batch, n): Σ_e w_e p_e, the routed output pre-activation (x' = ReLU of it when k = 1)."""
        if self.n_experts == 1:
            return self.hidden(x) @ self.W[...] + self.b_final[...]
        return jnp.einsum("be,ebn->bn", self.route(x), self.expert_preacts(x))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.n_experts == 1:
            return jax.nn.relu(self.hidden(x) @ self.W[...] + self.b_final[...])
        return jnp.einsum("be,ebn->bn", self.route(x), jax.nn.relu(self.expert_preacts(x)))

    def forward_t(self, xt: jax.Array) -> jax.Array:
        """x'ᵀ from xt = xᵀ, feature-major (the engine's fast path): (n, batch) -> (n, batch)."""
        if self.n_experts == 1:  # relu_output's forward_t, operation for operation
            W = self.W[...]
            return jax.nn.relu(W.T @ (W @ xt) + self.b_final[...][:, None])
        Ws = self.expert_weights()
        E, d, n = Ws.shape
        h = (Ws.reshape(E * d, n) @ xt).reshape(E, d, -1)                            # every expert's W_e x
        p = jnp.matmul(jnp.swapaxes(Ws, 1, 2), h) + self.expert_biases()[:, :, None]  # (E, n, batch)
        w = self._route_t(self.gate_matrix() @ xt)                                   # (E, batch)
        return jnp.sum(w[:, None, :] * jax.nn.relu(p), axis=0)


# --- per-expert records, from saved weights (numpy in, numpy out) -----------------------------------------
REPRESENTED_NORM = 0.5   # as toymodels.core.planting: below it a feature is barely represented


def stacked_experts(weights: dict) -> np.ndarray:
    """(n_inst, E, d, n): every instance's expert matrices [W, *W_experts] from a ``weights.npz`` dict."""
    W = np.asarray(weights["W"], np.float64)[:, None]
    return W if "W_experts" not in weights else np.concatenate([W, np.asarray(weights["W_experts"], np.float64)], 1)


def expert_superposition(weights: dict) -> dict[str, np.ndarray]:
    """Per instance and expert (n_inst, E): ``features_per_dim`` = ‖W_e‖_F² / d (TMS's 1/D*; the authors'
    per-expert D* = d / ‖W_e‖_F²) and ``represented_per_dim`` = #{i : ‖W_e,i‖ > 0.5} / d."""
    Ws = stacked_experts(weights)
    d = Ws.shape[2]
    norms = np.linalg.norm(Ws, axis=2)                                   # (n_inst, E, n)
    return {"features_per_dim": (Ws ** 2).sum((2, 3)) / d,
            "represented_per_dim": (norms > REPRESENTED_NORM).sum(-1) / d}


def routing(model_cfg, weights: dict, x: np.ndarray) -> np.ndarray:
    """(n_inst, batch, E) routing weights of every saved instance on inputs x (n_inst, batch, n)."""
    n = x.shape[-1]
    graphdef, params = nnx.split(MoETMS.from_config(model_cfg, n, std=1.0, rngs=nnx.Rngs(params=0)))
    nnx.replace_by_pure_dict(params, {k: jnp.asarray(v) for k, v in weights.items()})   # stacked: (n_inst, ...)
    return np.asarray(jax.jit(jax.vmap(lambda p, xi: nnx.merge(graphdef, p).route(xi)))(params, jnp.asarray(x)))


def sample_inputs(p: np.ndarray, n_samples: int, seed: int) -> np.ndarray:
    """(n_inst, n_samples, n) TMS inputs: feature i is Uniform[0, 1] with probability p[inst, i], else 0."""
    rng = np.random.default_rng(seed)
    p = np.asarray(p, np.float64)[:, None, :]
    shape = (p.shape[0], n_samples, p.shape[2])
    return np.where(rng.random(shape) < p, rng.random(shape), 0.0).astype(np.float32)


def expert_load(model_cfg, weights: dict, p: np.ndarray, n_samples: int = 1 << 14, seed: int = 0) -> np.ndarray:
    """(n_inst, E): the share of the routed inputs each expert receives, mean over inputs of
    1[e selected] / k (inputs with no active feature left out; rows sum to 1)."""
    x = sample_inputs(p, n_samples, seed)
    w = routing(model_cfg, weights, x) > 0
    busy = x.any(-1)[..., None]
    return (w * busy).sum(1) / np.maximum(busy.sum(1), 1) / model_cfg.k_active
