"""Geometric regularisers: pure functions of ONE instance's weights (or hidden activations), used as
loss terms in pretraining (``train.penalty``, :func:`toymodels.core.pretrain.reconstruction_objective`) and in
fine-tuning (the loss-term defences of :mod:`toymodels.defences`).

Notation: W (d_hidden, n) with columns W_i; Ŵ_i = W_i / (‖W_i‖² + ε²)^{1/2}; h = W x (batch, d_hidden).

====================== ===================================================== =========== ===============
penalty                value                                                 cost        zero iff
====================== ===================================================== =========== ===============
``gram_offdiag``       Σ_{i≠j} (Ŵ_iᵀŴ_j)² = ‖offdiag(ŴᵀŴ)‖_F²  (the seed's     O(n² d)     nonzero columns
                       "Frobenius norm of the feature covariance")                       mutually ⟂
``gram_offdiag_dual``  the same value as ‖ŴŴᵀ‖_F² − Σ_i ‖Ŵ_i‖⁴               O(n d²)     (same)
``soft_orthogonality`` ‖WᵀW − I‖_F²                                          O(n² d)     orthonormal W
``decov``              ½(‖C‖_F² − ‖diag C‖²), C = cov_batch(h)               O(B d²)     units uncorrelated
``targeted_cos``       Σ_{j∈H} cos(W_t, W_j)²   (target t, harmful set H)    O(n d)      t ⟂ every j ∈ H
====================== ===================================================== =========== ===============

``output_anchor`` (the anchor defence's output MSE to the pretrained model) is here too, but only
fine-tuning has a pretrained model to anchor to. The W penalties are invariant under hidden-space rotations W → OW (DeCov is not: it sees the hidden
basis). :func:`penalty` evaluates any of them by name on a model and a batch, which is how both the
pretraining objective and the defended fine-tuning objective add ``λ · P``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

EPS = 1e-6  # ε of the smooth column normalisation (zero columns map to zero)


def unit_columns(W, eps: float = EPS):
    """Ŵ_i = W_i / (‖W_i‖² + ε²)^{1/2}: (d_hidden, n). Smooth everywhere (a zero column maps to 0 with
    a finite gradient), and within ε²/2‖W_i‖² of the exact unit vector."""
    return W / jnp.sqrt(jnp.sum(W**2, axis=0, keepdims=True) + eps**2)


def gram_offdiag(W):
    """Σ_{i≠j} (Ŵ_iᵀ Ŵ_j)² = ‖offdiag(ŴᵀŴ)‖_F², via the n×n Gram matrix (O(n² d) flops).

    Zero iff the nonzero feature directions are mutually orthogonal (needs at most d_hidden of them);
    invariant under hidden-space rotations W → OW and under rescaling any column."""
    U = unit_columns(W)
    G = U.T @ U
    return jnp.sum((G * (1.0 - jnp.eye(G.shape[0], dtype=G.dtype))) ** 2)


def gram_offdiag_dual(W):
    """:func:`gram_offdiag` through the d×d matrix ŴŴᵀ (O(n d²) flops): ‖ŴᵀŴ‖_F² = ‖ŴŴᵀ‖_F², so
    Σ_{i≠j} (Ŵ_iᵀŴ_j)² = ‖ŴŴᵀ‖_F² − Σ_i ‖Ŵ_i‖⁴. Same value up to float32 cancellation (~1e-6 n)."""
    U = unit_columns(W)
    return jnp.sum((U @ U.T) ** 2) - jnp.sum(jnp.sum(U**2, axis=0) ** 2)


def soft_orthogonality(W):
    """‖WᵀW − I‖_F² (n×n). Zero iff the columns are orthonormal (possible only when n <= d_hidden);
    invariant under W → OW. Unlike :func:`gram_offdiag` it also pulls every norm to 1."""
    G = W.T @ W
    return jnp.sum((G - jnp.eye(G.shape[0], dtype=G.dtype)) ** 2)


def decov(h):
    """DeCov (Cogswell et al. 2016): ½(‖C‖_F² − ‖diag C‖²), C = (h − h̄)ᵀ(h − h̄) / B the covariance
    of the hidden activations h (B, d_hidden) over the batch. Zero iff the hidden units are
    uncorrelated on the batch. It depends on the hidden *basis*, so it is not rotation invariant —
    the TMS ``relu_output`` model has no privileged basis, and this penalty is the one that notices."""
    hc = h - jnp.mean(h, axis=0, keepdims=True)
    C = hc.T @ hc / h.shape[0]
    return 0.5 * (jnp.sum(C**2) - jnp.sum(jnp.diagonal(C) ** 2))


def targeted_cos(W, target_onehot, harmful_mask):
    """Σ_{j∈H} cos(W_t, W_j)², with the target and harmful features given as (n,) 0/1 vectors.
    Zero iff the target is orthogonal to every harmful feature; invariant under W → OW."""
    U = unit_columns(W)
    cos_t = U.T @ (U @ target_onehot)  # cos(W_i, W_t) for every i: (n,)
    return jnp.sum(harmful_mask * cos_t**2)


def output_anchor(out, out0, importance):
    """mean_{b,i} I_i (out_bi − out0_bi)²: the output-anchor (Gaussian KL) penalty; out, out0 (B, n)
    are the current and the pretrained model's outputs on the same pretraining-distribution batch."""
    return jnp.mean(importance * (out - out0) ** 2)


W_PENALTIES: dict[str, Callable] = {"gram_offdiag": gram_offdiag, "gram_offdiag_dual": gram_offdiag_dual,
                                    "soft_orthogonality": soft_orthogonality}


def penalty(kind: str, model, x, inst) -> jax.Array:
    """The penalty ``kind`` of one instance: ``model`` an nnx model (its ``W``), ``x`` (batch, n) the batch
    the loss is taken on (DeCov reads ``model.hidden(x)``), ``inst`` that instance's arrays (``targeted_cos``
    reads the (n,) 0/1 vectors ``inst["target"]`` and ``inst["harmful_mask"]``)."""
    if kind == "decov":
        return decov(model.hidden(x))
    if kind == "targeted_cos":
        return targeted_cos(model.W[...], inst["target"], inst["harmful_mask"])
    if kind in W_PENALTIES:
        return W_PENALTIES[kind](model.W[...])
    raise ValueError(f"unknown penalty {kind!r}: must be one of {', '.join(PENALTIES)}")


# config.TRAIN_PENALTIES lists the same names (and "none"); tests/test_penalties.py checks that they agree
PENALTIES = (*W_PENALTIES, "decov", "targeted_cos")


def with_penalty(objective, penalty_fn: Callable[[Any], jax.Array], lam: float):
    """``objective + lam * penalty_fn(params)`` for any :data:`toymodels.core.engine.Objective`, e.g.
    ``with_penalty(objective, lambda p: gram_offdiag(p["W"][...]), 0.1)``. (Configs use ``train.penalty``
    instead, which also covers the batch-dependent DeCov.)"""

    def penalised(params, key, inst):
        return objective(params, key, inst) + lam * penalty_fn(params)

    return penalised
