"""Geometry of the learned features: pure functions of W (d_hidden, n_features), for one instance.

Feature i's direction is the column W_i = W[:, i]; Ŵ_i = W_i / ‖W_i‖. All functions take a single
instance's W; vmap them for a sweep (``jax.vmap(feature_dimensionality)(W)`` with W (n_inst, m, n)).
They accept numpy or JAX arrays and return JAX arrays. References are to TMS (Elhage et al. 2022).
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp

EPS = 1e-12
# Above this many features, feature_dimensionality and feature_interference use the (m, m) Gram matrix
# instead of the (n, n) products (an (n, n) float32 array at n = 16,384 is 1 GiB, and 20x the FLOPs).
DENSE_MAX = 4096


def _row_sq_sums(U, W):
    """Σ_j (U_i · W_j)² for every i: (n,). Σ_j (U_iᵀ W_j)² = U_iᵀ (W Wᵀ) U_i, so only the (m, m) Gram
    matrix W Wᵀ is built: O(m² n) work and memory O(m n), against O(n² m) and O(n²) for (UᵀW)²."""
    return jnp.sum(U * ((W @ W.T) @ U), axis=0)


def feature_norms(W):
    """‖W_i‖ for each feature: (n,). A norm near 1 means "represented" (§Demonstrating Superposition)."""
    return jnp.sqrt(jnp.sum(W**2, axis=0))


def unit_directions(W):
    """Ŵ = W / ‖W_i‖ column-wise (zero columns stay zero): (m, n)."""
    norms = feature_norms(W)
    return W / jnp.where(norms > EPS, norms, 1.0)


def cosine_matrix(W):
    """C_ij = Ŵ_i · Ŵ_j: (n, n), symmetric, unit diagonal for every nonzero feature."""
    U = unit_directions(W)
    return U.T @ U


def interference(W):
    """Off-diagonal part of the Gram matrix WᵀW: (n, n). Entry (i, j) is how much feature j leaks
    into feature i's read-out before the ReLU (§Demonstrating Superposition, the Wᵀ W plots)."""
    G = W.T @ W
    return G * (1.0 - jnp.eye(G.shape[0], dtype=G.dtype))


def feature_interference(W):
    """Σ_{j≠i} (Ŵ_i · W_j)²: (n,), how much of the other features lands on feature i's direction. Zero
    iff feature i shares its direction with no other feature (the colour of the TMS superposition plots,
    which the paper calls the feature's superposition with the others). Not *polysemanticity*, which in
    interpretability belongs to neurons (the tms-privileged figure, :func:`toymodels.plots.tms.neuron_loadings`)."""
    U = unit_directions(W)
    if W.shape[1] > DENSE_MAX:
        return _row_sq_sums(U, W) - jnp.sum(U * W, axis=0) ** 2
    P = (U.T @ W) ** 2
    return jnp.sum(P, axis=1) - jnp.diagonal(P)


def polysemanticity(W):
    """Deprecated alias of :func:`feature_interference` (the old, misleading name); removed in 0.3."""
    warnings.warn("toymodels geometry.polysemanticity is feature_interference: polysemanticity is a property of "
                  "neurons, not features; the old name goes in 0.3", DeprecationWarning, stacklevel=2)
    return feature_interference(W)


def feature_dimensionality(W):
    """D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)²: (n,) (§The Geometry of Superposition, "Feature Dimensionality").

    1 for a feature with a dimension to itself, 1/2 for an antipodal pair, 2/k for a regular k-gon
    (k >= 3), 0 for an unrepresented (zero) feature. Σ_i D_i <= d_hidden.
    """
    U = unit_directions(W)
    denom = _row_sq_sums(U, W) if W.shape[1] > DENSE_MAX else jnp.sum((U.T @ W) ** 2, axis=1)
    num = jnp.sum(W**2, axis=0)
    return jnp.where(denom > EPS, num / jnp.where(denom > EPS, denom, 1.0), 0.0)


def dimensions_per_feature(W):
    """D* = d_hidden / ‖W‖_F² (§The Geometry of Superposition). ‖W‖_F² counts features represented
    (each represented feature has ‖W_i‖ ≈ 1), so D* is hidden dimensions per represented feature."""
    return W.shape[0] / jnp.maximum(jnp.sum(W**2), EPS)


def n_represented(W, threshold: float = 0.5):
    """Number of features with ‖W_i‖ > threshold."""
    return jnp.sum(feature_norms(W) > threshold)


def summary(W, threshold: float = 0.5) -> dict:
    """Scalar geometry numbers of one instance, for ``summary.json``."""
    return {
        "dimensions_per_feature": dimensions_per_feature(W),
        "frobenius_sq": jnp.sum(W**2),
        "n_represented": n_represented(W, threshold),
        "mean_feature_dimensionality": jnp.mean(feature_dimensionality(W)),
    }
