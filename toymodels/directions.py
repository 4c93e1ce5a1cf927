"""Exact direction sets and their angles: numpy only, float64, the leaf under config and core.

Feature i's direction is the column W_i = W[:, i] (TMS §Demonstrating Superposition); the geometry of
the named features is the set of unit directions d_i = W_i / ‖W_i‖.

* 2-D, polar angles θ_i in degrees:   d_i = (cos θ_i, sin θ_i).
* any d_hidden, a target cosine matrix C (k × k): with C = V Λ Vᵀ (eigenvalues descending),
  D = Λ^{1/2} Vᵀ restricted to its first d_hidden rows gives columns with DᵀD = C exactly.
  This needs C symmetric with unit diagonal, positive semidefinite (λ_min >= 0) and of rank
  <= d_hidden; anything else cannot be realised and is a :class:`~toymodels.errors.ConfigError`.
* orientations: the identity and Haar-random orthogonal matrices (``scipy.stats.ortho_group``), for
  the lab's orientation axis and ``features.basis = "random"``.

The config validates planted geometry with these functions, and the core plants it; so this module
imports nothing of toymodels but its errors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.stats

from .errors import ConfigError

# Eigenvalues of a cosine matrix within this of zero count as zero: a spec typed to ~6 digits is
# then realised to within about this much in every cosine.
EIG_TOL = 1e-6


# --- exact direction sets ------------------------------------------------------------------------
# --- exact direction sets (numpy, float64) ---------------------------------------------------------
def polar_directions(angles_deg) -> np.ndarray:
    """Unit vectors at polar angles θ_i (degrees) in 2-D: (2, k), column i = (cos θ_i, sin θ_i)."""
    t = np.deg2rad(np.asarray(angles_deg, np.float64))
    return np.stack([np.cos(t), np.sin(t)])


def directions_from_cosines(C, d_hidden: int, field: str = "features.cosines") -> np.ndarray:
    """Unit directions D (d_hidden, k) with DᵀD = C, from a target cosine matrix C (k, k).

    C = V Λ Vᵀ with λ descending; D = (V Λ^{1/2})ᵀ keeps the first d_hidden rows (zero rows pad when
    k < d_hidden). Raises ConfigError unless C is symmetric, unit-diagonal, entries in [-1, 1],
    positive semidefinite and of rank <= d_hidden (eigenvalues within ``EIG_TOL`` of 0 count as 0).
    """
    C = np.asarray(C, np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ConfigError(field, C.tolist(), "must be a square matrix (one row per named feature)")
    k = C.shape[0]
    if not np.all(np.isfinite(C)) or np.abs(C).max() > 1 + 1e-12:
        raise ConfigError(field, C.tolist(), "cosines must be finite numbers in [-1, 1]")
    if not np.allclose(C, C.T, atol=1e-12):
        raise ConfigError(field, C.tolist(), "must be symmetric: cos(i, j) = cos(j, i)")
    if not np.allclose(np.diag(C), 1.0, atol=1e-12):
        raise ConfigError(field, C.tolist(), "the diagonal must be 1 (every feature has cosine 1 with itself)")
    lam, V = np.linalg.eigh(C)
    lam, V = lam[::-1], V[:, ::-1]
    if lam[-1] < -EIG_TOL:
        raise ConfigError(field, C.tolist(), f"is not positive semidefinite (smallest eigenvalue "
                                             f"{lam[-1]:.3g}), so no set of vectors has these cosines")
    rank = int(np.sum(lam > EIG_TOL))
    if rank > d_hidden:
        raise ConfigError(field, C.tolist(), f"has rank {rank} (eigenvalues {np.round(lam, 4).tolist()}), "
                                             f"more than model.d_hidden={d_hidden} dimensions can hold")
    D = (V * np.sqrt(np.clip(lam, 0.0, None))).T[: min(d_hidden, k)]
    D = np.concatenate([D, np.zeros((d_hidden - D.shape[0], k))]) if D.shape[0] < d_hidden else D
    return D / np.linalg.norm(D, axis=0, keepdims=True)


def planted_directions(fcfg, d_hidden: int, n_inst: int) -> np.ndarray:
    """The requested unit directions of the named features, per instance: (n_inst, d_hidden, k) float64.

    ``angles`` (2-D only) and ``cosines`` are either one spec for all instances or one per instance.
    """
    k = len(fcfg.names)
    if fcfg.angles is not None:
        a = np.asarray(fcfg.angles, np.float64)
        if d_hidden != 2:
            raise ConfigError("features.angles", list(fcfg.angles), f"polar angles need model.d_hidden=2 "
                                                                      f"(got {d_hidden}); give features.cosines instead")
        if not (a.shape == (k,) or a.shape == (n_inst, k)) or not np.all(np.isfinite(a)):
            raise ConfigError("features.angles", _tolist(fcfg.angles),
                              f"must be {k} finite angles in degrees (one per named feature) or shape (n_inst, {k})")
        a = np.broadcast_to(a, (n_inst, k))
        return np.stack([polar_directions(row) for row in a])
    if fcfg.cosines is not None:
        C = np.asarray(fcfg.cosines, np.float64)
        if C.shape == (k, k):
            D = directions_from_cosines(C, d_hidden)
            return np.broadcast_to(D, (n_inst, d_hidden, k)).copy()
        if C.shape == (n_inst, k, k):
            return np.stack([directions_from_cosines(c, d_hidden, f"features.cosines[{i}]") for i, c in enumerate(C)])
        raise ConfigError("features.cosines", _tolist(fcfg.cosines),
                          f"must be a ({k}, {k}) matrix, or one per instance: shape (n_inst, {k}, {k})")
    raise ConfigError("features.geometry", fcfg.geometry, "needs features.angles or features.cosines")


def planted_norms(fcfg, n_inst: int) -> np.ndarray:
    """Initial norms ‖W_i‖ of the planted features: (n_inst, k)."""
    return np.broadcast_to(np.asarray(fcfg.norms, np.float64), (n_inst, len(fcfg.names))).copy()


def _tolist(v: Any) -> Any:
    return np.asarray(v).tolist() if v is not None else None


# --- measuring angles ----------------------------------------------------------------------------
# --- measuring geometry ------------------------------------------------------------------------------
def pairwise_angles_deg(W) -> np.ndarray:
    """Angles between the columns of W (m, n) in degrees, (n, n), via atan2(‖u − (u·v)v‖, u·v) on unit
    columns (well conditioned near 0° and 180°, unlike arccos). float64 numpy; NaN for a zero column."""
    W = np.asarray(W, np.float64)
    norms = np.linalg.norm(W, axis=0, keepdims=True)
    U = np.where(norms > 0, W / np.where(norms > 0, norms, 1.0), np.nan)
    dots = U.T @ U
    # ‖u − (u·v) v‖ for every pair: sqrt(1 − (u·v)²) computed from the residual, not from the dot.
    resid = U[:, :, None] - dots[None, :, :] * U[:, None, :]
    sines = np.linalg.norm(resid, axis=0)
    return np.rad2deg(np.arctan2(sines, dots))


def wrap_angle_deg(a: float) -> float:
    """An angle difference folded into [0, 180] degrees."""
    a = math.fmod(abs(a), 360.0)
    return 360.0 - a if a > 180.0 else a


# --- orientations of the hidden space -------------------------------------------------------------
# --- orientation -------------------------------------------------------------------------------------
def orientation_matrices(k: int, d_hidden: int, seed: int) -> np.ndarray:
    """(k, d, d) float64 orthogonal matrices: the identity first, then k − 1 Haar-random elements of O(d)
    (``scipy.stats.ortho_group``, from ``numpy.random.default_rng(seed)``; in 1-D, random signs ±1)."""
    out = np.empty((k, d_hidden, d_hidden))
    out[0] = np.eye(d_hidden)
    if k > 1:
        rng = np.random.default_rng(seed)
        if d_hidden == 1:
            out[1:] = rng.choice([-1.0, 1.0], size=(k - 1, 1, 1))
        else:
            out[1:] = scipy.stats.ortho_group.rvs(d_hidden, size=k - 1, random_state=rng).reshape(k - 1, d_hidden,
                                                                                              d_hidden)
    return out


def random_rotations(n: int, d_hidden: int, seed: int) -> np.ndarray:
    """(n, d, d): one Haar-random orthogonal matrix per instance (``features.basis = "random"``)."""
    return orientation_matrices(n + 1, d_hidden, seed)[1:]
