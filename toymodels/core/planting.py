"""Named features and planted geometry in the model: set the angles between features exactly, and keep them.

A config's ``[features]`` section names the first k features (e.g. ``helpful``, ``toxic``) and tags
the harmful ones; the others are benign and called ``f<i>``. The exact direction sets are built by
:mod:`toymodels.directions` (numpy); this module puts them into the instances' W.

Geometry modes (``features.geometry``)
--------------------------------------
* ``free``: plain TMS; the angles are measured afterwards.
* ``planted``: W_i starts at norm_i · d_i for the named features; everything trains.
* ``pinned``: as planted, and :func:`pin_directions` (an optax transformation appended to the
  optimiser chain) projects every update of a named column back onto its ray {c d_i : c >= 0}, so
  its direction is fixed while its norm, the biases and the other features train. Same training step,
  one more transform; the directions live in the transform's state, one set per instance.

``features.basis = "random"`` rotates the planted directions by a Haar-random orthogonal matrix per
instance (same cosines, arbitrary angle to the hidden axes). :func:`rotate_hidden` turns a whole model's
hidden space (the lab's orientation axis).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..config import Config, ConfigError, feature_names
from ..directions import pairwise_angles_deg, planted_directions, planted_norms, random_rotations
from .models import MODELS, init_instances
from .optim import optimizer

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
    """The pretraining optimiser, with :func:`pin_directions` appended when geometry is ``pinned``. The
    leaves a model declares in ``FROZEN_LEAVES`` (e.g. the residual MLP's fixed embedding) get
    ``optax.set_to_zero`` (no update, no weight decay: they stay bit-identical)."""
    tx = optimizer(cfg.train)
    frozen = getattr(MODELS[cfg.model.kind], "FROZEN_LEAVES", ())
    if frozen:
        def labels(params):
            name = lambda path: str(getattr(path[0], "key", getattr(path[0], "name", path[0])))
            return jax.tree_util.tree_map_with_path(lambda p, _: "frozen" if name(p) in frozen else "train", params)

        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    if cfg.features is not None and cfg.features.geometry == "pinned":
        pinned = np.arange(cfg.data.n_features) < len(cfg.features.names)
        tx = optax.chain(tx, pin_directions(pinned))
    return tx


def init_params(cfg: Config, n_total: int, key: jax.Array, restarts: int = 1):
    """TMS init of ``n_total = n_inst * restarts`` instances, with the named features planted
    (instance ``s * restarts + r`` is setting s, restart r) unless the geometry is ``free``."""
    graphdef, params = init_instances(cfg.model, cfg.data.n_features, n_total, key)
    f = cfg.features
    if f is None or f.geometry == "free":
        return graphdef, params
    D = planted_directions(f, cfg.model.d_hidden, cfg.n_inst)          # (n_inst, m, k)
    if f.basis == "random":  # the same cosines, at a random angle to the hidden axes
        D = np.einsum("iab,ibk->iak", random_rotations(cfg.n_inst, cfg.model.d_hidden, [cfg.seed, BASIS_SEED_OFFSET]), D)
    W_named = D * planted_norms(f, cfg.n_inst)[:, None, :]
    W_named = np.repeat(W_named, restarts, axis=0)
    return graphdef, plant(params, jnp.asarray(W_named, jnp.float32))


# A feature j is "barely represented" when ||W_j|| < 0.5. Why 0.5: alone on a unit input, j's own share of
# its read-out is ||W_j||^2 (x'_j = ReLU(||W_j||^2 x_j + b_j)), so below 0.5 the model passes on less than a
# quarter of the feature before its bias and its neighbours' interference; a gain or a rate measured on it
# is then mostly the weak start, and a collapsed feature (norm ~0.01) reads 0.00 -> 0.00,
# as if nothing spilled over. The weakly represented starts of the lab (norm ~0.44) fall under it on purpose.
REPRESENTED_NORM = 0.5


def barely_represented(names, norms, threshold: float = REPRESENTED_NORM) -> list[list[str]]:
    """Per instance, the named features whose norm is below ``threshold``; norms (n_inst, k)."""
    return [[n for n, v in zip(names, row) if v < threshold] for row in np.asarray(norms)]


def barely_represented_counts(per_instance) -> dict[str, tuple[int, int]]:
    """{feature: (instances where it is barely represented, instances)} from ``barely_represented``'s
    per-instance lists (summary.json's ``features.barely_represented``)."""
    per_instance = per_instance or []
    names = dict.fromkeys(n for weak in per_instance for n in weak)
    return {n: (sum(n in weak for weak in per_instance), len(per_instance)) for n in names}


def own_readouts(graphdef, params, k: int, n_features: int) -> np.ndarray:
    """(n_inst, k): each named feature's own end-to-end read-out x'_j(e_j) − x'_j(0), the part of its output
    on a unit input that is not the bias alone. For a one-layer tied model it is ‖W_j‖² when b_j >= 0; the
    deep families use it instead of the norm, since a layer's norm there says little (the next layers can
    rescale anything; a mixture routes a feature to an expert whose W is not the model's ``W``): their
    classes say ``REPRESENTED_BY = "readout"``."""
    E = jnp.eye(n_features)[:k]

    def one(state):
        m = nnx.merge(graphdef, state)
        return jnp.diagonal(m(E)[:, :k]) - m(jnp.zeros((1, n_features)))[0, :k]

    return np.asarray(jax.vmap(one)(params), np.float64)


def representation_measure(features: dict) -> tuple[str, np.ndarray, float]:
    """(what, values (n_inst, k), bound) behind a geometry summary's ``barely_represented``: the own
    read-out against ``represented_norm``² for models with layers or experts, else the norm against
    ``represented_norm``."""
    bound = features.get("represented_norm", REPRESENTED_NORM)
    if "own_readouts" in features:
        return "own read-out", np.asarray(features["own_readouts"]), bound ** 2
    return "norm", np.asarray(features["norms"]), bound


def geometry_summary(cfg: Config, W: np.ndarray, graphdef=None, params=None) -> dict:
    """The named features' measured geometry for ``summary.json``: norms, pairwise cosines and angles
    (degrees) per instance, the requested cosines when the geometry was planted, and per instance the
    features that ended barely represented: norm < ``REPRESENTED_NORM``, or, for models with layers
    (given ``graphdef`` and ``params``), own read-out (:func:`own_readouts`) < ``REPRESENTED_NORM``²."""
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
    out["represented_norm"] = REPRESENTED_NORM
    if graphdef is not None and getattr(MODELS[cfg.model.kind], "REPRESENTED_BY", "norm") == "readout":
        out["own_readouts"] = own_readouts(graphdef, params, k, cfg.data.n_features)
        out["represented_by"] = f"own read-out x'_j(e_j) - x'_j(0) >= {REPRESENTED_NORM ** 2:g}"
        out["barely_represented"] = barely_represented(out["names"], np.sqrt(np.maximum(out["own_readouts"], 0)))
    else:  # (no "represented_by" key here: the one-layer summaries keep their committed layout)
        out["barely_represented"] = barely_represented(out["names"], out["norms"])
    return out


def rotate_hidden(params, O, leaves=("W",)):
    """The same model with its hidden space rotated: A → O A for every instance and every leaf A in
    ``leaves`` (the model's ``HIDDEN_LEAVES``: those whose second-to-last axis is the hidden space);
    O (n_inst, d, d). Other leaves (the biases) are unchanged. For ``relu_output``, ``linear`` and the
    stacks of them (``deep``) the function is the same."""
    new = nnx.State(dict(params))
    for name in leaves:
        A = params[name][...]
        new[name] = params[name].replace(jnp.einsum("iab,i...bn->i...an", jnp.asarray(O, A.dtype), A))
    return new
