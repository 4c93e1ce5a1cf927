"""Amplification, overlap and density metrics: pure functions of weights, outputs and inputs.

The claim under study (Minegishi et al. 2026): fine-tuning pushes the target feature's column by
ΔW_t, and feature j's pre-activation on target inputs, W_jᵀ W_t x_t + b_j, moves to first order by

    Δpre_j ≈ ⟨W_j, ΔW_t⟩ x_t        (= α ‖W_j‖ cos θ_tj  when ΔW_t = α d_t, a push along the target)

so harmful features near the target (small θ, large cos) are amplified with it. The functions here
measure the pieces of that statement for ONE instance; the probe in :mod:`toymodels.lab.probe` vmaps
them. Shapes: W (d_hidden, n), x and out (batch, n), index arguments are ints or int arrays.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..core.geometry import cosine_matrix, unit_directions

EPS = 1e-12


# --- output metrics ---------------------------------------------------------------------------------
def toxic_output_rate(out, x, j, tau: float):
    """P(x'_j > τ | x_j = 0): how often feature j's output fires although j is absent.

    out, x: (batch, n); j an int or (h,) ints. Returns () or (h,). NaN if x_j is never 0."""
    absent = x[:, j] == 0
    fired = (out[:, j] > tau) & absent
    return jnp.sum(fired, axis=0) / jnp.sum(absent, axis=0)


def spurious_output(out, x, j):
    """E[x'_j | x_j = 0]: feature j's mean output on inputs where it is absent. () or (h,)."""
    absent = x[:, j] == 0
    return jnp.sum(jnp.where(absent, out[:, j], 0.0), axis=0) / jnp.sum(absent, axis=0)


# --- the first-order prediction -------------------------------------------------------------------
def first_order_prediction(W0, W1, target, j):
    """⟨W0_j, W1_t − W0_t⟩: the predicted change of pre_j = W_jᵀ W_t + b_j on the unit target input
    when only the target column moves. Exact when W_j and b_j are unchanged. () or (h,)."""
    dWt = W1[:, target] - W0[:, target]
    return jnp.tensordot(dWt, W0[:, j], axes=(0, 0))


def along_target_prediction(W0, W1, target, j):
    """α ⟨W0_j, d_t⟩ with α = ⟨d_t, ΔW_t⟩, d_t = W0_t/‖W0_t‖: the Minegishi form, which keeps only the
    part of the push that lies along the target direction (no rotation). () or (h,)."""
    d = W0[:, target] / jnp.maximum(jnp.linalg.norm(W0[:, target]), EPS)
    alpha = jnp.dot(d, W1[:, target] - W0[:, target])
    return alpha * jnp.tensordot(d, W0[:, j], axes=(0, 0))


def relative_error(measured, predicted, floor: float = 1e-8):
    """|measured − predicted| / max(|measured|, floor)."""
    return jnp.abs(measured - predicted) / jnp.maximum(jnp.abs(measured), floor)


# --- overlap and density ----------------------------------------------------------------------------
def overlap_score(W, target: int, harmful):
    """Cosine of the target to its nearest harmful feature. Returns (score, signed, nearest):

    signed = max_j cos(W_t, W_j) over harmful j (the most aligned one), score = clip(signed, 0, 1), and
    nearest the position in ``harmful`` of that feature. A zero column has cosine 0 with everything.
    """
    harmful = jnp.atleast_1d(jnp.asarray(harmful))
    cos = cosine_matrix(jnp.asarray(W))[target, harmful]
    nearest = jnp.argmax(cos)
    signed = cos[nearest]
    return jnp.clip(signed, 0.0, 1.0), signed, nearest


def superposition_density(W):
    """(features per dimension, mean off-diagonal cos²) of one instance.

    features per dimension = ‖W‖_F² / d_hidden (TMS: ‖W‖_F² counts represented features, so this is
    1/D*); mean off-diagonal cos² = mean_{i≠j} (Ŵ_i·Ŵ_j)² over the nonzero columns (0 for orthogonal
    features, 1 when all share one line). Returns a pair of scalars.
    """
    W = jnp.asarray(W)
    m, n = W.shape
    U = unit_directions(W)
    nz = (jnp.sum(U**2, axis=0) > 0.5).astype(W.dtype)
    pair = nz[:, None] * nz[None, :] * (1.0 - jnp.eye(n, dtype=W.dtype))
    C2 = (U.T @ U) ** 2
    mean_cos2 = jnp.sum(C2 * pair) / jnp.maximum(jnp.sum(pair), 1.0)
    return jnp.sum(W**2) / m, mean_cos2


# --- before/after arithmetic (numpy) ----------------------------------------------------------------
def relative_increase_pct(before, after):
    """100 (after − before) / |before|; NaN where before is 0 (an increase from nothing has no ratio)."""
    before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(before != 0, 100.0 * (after - before) / np.abs(before), np.nan)


def percentage_points(before, after):
    """100 (after − before): the change of a rate in percentage points."""
    return 100.0 * (np.asarray(after, np.float64) - np.asarray(before, np.float64))
