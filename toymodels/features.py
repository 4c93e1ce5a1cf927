"""Named features and planted geometry: set the angles between features exactly, and keep them.

A config's ``[features]`` section names the first k features (e.g. ``helpful``, ``toxic``) and tags
the harmful ones; the others are benign and called ``f<i>``. Feature i's direction is the column
W_i = W[:, i] (TMS §Demonstrating Superposition), and the *geometry* of the named features is the set
of unit directions d_i = W_i / ‖W_i‖.

Building exact direction sets
-----------------------------
* 2-D, polar angles θ_i in degrees:   d_i = (cos θ_i, sin θ_i).
* any d_hidden, a target cosine matrix C (k × k): with C = V Λ Vᵀ (eigenvalues descending),
  D = Λ^{1/2} Vᵀ restricted to its first d_hidden rows gives columns with DᵀD = C exactly.
  This needs C symmetric with unit diagonal, positive semidefinite (λ_min >= 0) and of rank
  <= d_hidden; anything else cannot be realised and is a :class:`~toymodels.config.ConfigError`.

Geometry modes (``features.geometry``)
--------------------------------------
* ``free``: plain TMS; the angles are measured afterwards.
* ``planted``: W_i starts at norm_i · d_i for the named features; everything trains.
* ``basis = "random"``: the planted directions are rotated by a Haar-random orthogonal matrix per
  instance (same cosines, arbitrary angle to the hidden axes; see :mod:`toymodels.axes`).
* ``pinned``: as planted, and :func:`pin_directions` (an optax transformation appended to the
  optimiser chain) projects every update of a named column back onto its ray {c d_i : c >= 0}, so
  its direction is fixed while its norm, the biases and the other features train. Same training step,
  one more transform; the directions live in the transform's state, one set per instance.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import train
from .config import Config, ConfigError, FeaturesConfig, feature_names

# Eigenvalues of a cosine matrix within this of zero count as zero: a spec typed to ~6 digits is
# then realised to within about this much in every cosine.
EIG_TOL = 1e-6
BASIS_SEED_OFFSET = 400  # numpy seed (cfg.seed, ·) of features.basis = "random"


# --- names --------------------------------------------------------------------------------------
def names(cfg: Config) -> list[str]:
    """All feature names of a config: ``features.names`` first, then ``f<i>``."""
    return feature_names(cfg.features, cfg.data.n_features)


def index(cfg: Config, name: str) -> int:
    """The feature index of ``name``; ConfigError for an unknown name."""
    all_names = names(cfg)
    if name not in all_names:
        raise ConfigError("feature", name, f"unknown feature; known: {', '.join(all_names[:8])}")
    return all_names.index(name)


def harmful_indices(cfg: Config) -> list[int]:
    """Indices of the features tagged harmful, in ``features.harmful`` order."""
    return [index(cfg, n) for n in (cfg.features.harmful if cfg.features else ())]


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


def planted_directions(fcfg: FeaturesConfig, d_hidden: int, n_inst: int) -> np.ndarray:
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


def planted_norms(fcfg: FeaturesConfig, n_inst: int) -> np.ndarray:
    """Initial norms ‖W_i‖ of the planted features: (n_inst, k)."""
    return np.broadcast_to(np.asarray(fcfg.norms, np.float64), (n_inst, len(fcfg.names))).copy()


def _tolist(v: Any) -> Any:
    return np.asarray(v).tolist() if v is not None else None


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


# --- planting and pinning (JAX) --------------------------------------------------------------------
def plant(params, W_named: jax.Array):
    """Replace the first k columns of every instance's W with ``W_named`` (n_inst, d_hidden, k)."""
    new = nnx.State(dict(params))
    W = params["W"][...]
    k = W_named.shape[-1]
    new["W"] = params["W"].replace(W.at[:, :, :k].set(W_named.astype(W.dtype)))
    return new


class PinState(NamedTuple):
    """Per-instance state of :func:`pin_directions`: the unit directions d_i (d_hidden, n_features) of
    the pinned columns (zero elsewhere), taken from the parameters at ``init``."""

    directions: jax.Array


def pin_directions(pinned) -> optax.GradientTransformation:
    """Keep the directions of the ``pinned`` columns of W fixed; their norms may change.

    Appended last to an optimiser chain. For a pinned column with direction d_i and proposed update u_i,
    the returned update is u'_i = max(⟨d_i, W_i + u_i⟩, 0) d_i − W_i, so W_i + u'_i is the projection of
    W_i + u_i onto the ray {c d_i : c >= 0}: the direction never turns and never flips; a feature may
    shrink to zero norm and regrow along d_i. Other parameters and columns pass through unchanged.

    ``pinned``: (n_features,) bools. The directions are read from the parameters given to ``init``
    (the planted W), so with ``jax.vmap(tx.init)`` every instance keeps its own.
    """
    mask = jnp.asarray(np.asarray(pinned, bool))

    def init(params):
        W = params["W"][...]
        norms = jnp.linalg.norm(W, axis=0)
        return PinState(jnp.where(mask & (norms > 0), W / jnp.where(norms > 0, norms, 1.0), 0.0))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("pin_directions needs the parameters: call tx.update(grads, state, params)")
        W, u, d = params["W"][...], updates["W"][...], state.directions
        coef = jnp.maximum(jnp.sum(d * (W + u), axis=0), 0.0)
        u_pinned = d * coef - W
        new = nnx.State(dict(updates))
        new["W"] = updates["W"].replace(jnp.where(mask, u_pinned, u))
        return new, state

    return optax.GradientTransformation(init, update)


def pretraining_optimizer(cfg: Config) -> optax.GradientTransformation:
    """The pretraining optimiser, with :func:`pin_directions` appended when geometry is ``pinned``."""
    tx = train.optimizer(cfg.train)
    if cfg.features is not None and cfg.features.geometry == "pinned":
        pinned = np.arange(cfg.data.n_features) < len(cfg.features.names)
        tx = optax.chain(tx, pin_directions(pinned))
    return tx


def init_params(cfg: Config, n_total: int, key: jax.Array, restarts: int = 1):
    """TMS init of ``n_total = n_inst * restarts`` instances, with the named features planted
    (instance ``s * restarts + r`` is setting s, restart r) unless the geometry is ``free``."""
    from .models import init_instances

    graphdef, params = init_instances(cfg.model, cfg.data.n_features, n_total, key)
    f = cfg.features
    if f is None or f.geometry == "free":
        return graphdef, params
    D = planted_directions(f, cfg.model.d_hidden, cfg.n_inst)          # (n_inst, m, k)
    if f.basis == "random":  # the same cosines, at a random angle to the hidden axes
        from .axes import random_rotations

        D = np.einsum("iab,ibk->iak", random_rotations(cfg.n_inst, cfg.model.d_hidden, [cfg.seed, BASIS_SEED_OFFSET]), D)
    W_named = D * planted_norms(f, cfg.n_inst)[:, None, :]
    W_named = np.repeat(W_named, restarts, axis=0)
    return graphdef, plant(params, jnp.asarray(W_named, jnp.float32))


def pretrain(cfg: Config, *, on_log=None, on_chunk=None, progress=True):
    """:func:`toymodels.train.pretrain` with planted and pinned geometry: the same engine, restarts and
    best-of selection, and the same return value ``(graphdef, params, info)``. Only the initial W
    (planted columns) and the optimiser (pinned directions) differ."""
    return train.pretrain(cfg, on_log=on_log, on_chunk=on_chunk, progress=progress,
                          init=lambda c, total, key: init_params(c, total, key, restarts=c.train.restarts),
                          tx=pretraining_optimizer(cfg))


def geometry_summary(cfg: Config, W: np.ndarray) -> dict:
    """The named features' measured geometry for ``summary.json``: norms, pairwise cosines and angles
    (degrees) per instance, and the requested cosines when the geometry was planted."""
    k = len(cfg.features.names)
    Wk = np.asarray(W, np.float64)[:, :, :k]
    U = Wk / np.maximum(np.linalg.norm(Wk, axis=1, keepdims=True), 1e-300)
    out = {
        "names": list(cfg.features.names),
        "harmful": list(cfg.features.harmful),
        "geometry": cfg.features.geometry,
        "norms": np.linalg.norm(Wk, axis=1),
        "cosines": np.einsum("imk,iml->ikl", U, U),
        "angles_deg": np.stack([pairwise_angles_deg(w) for w in Wk]),
    }
    if cfg.features.geometry != "free":
        D = planted_directions(cfg.features, cfg.model.d_hidden, cfg.n_inst)
        out["requested_cosines"] = np.einsum("imk,iml->ikl", D, D)
        out["max_cosine_error"] = float(np.abs(out["cosines"] - out["requested_cosines"]).max())
    return out


def wrap_angle_deg(a: float) -> float:
    """An angle difference folded into [0, 180] degrees."""
    a = math.fmod(abs(a), 360.0)
    return 360.0 - a if a > 180.0 else a
