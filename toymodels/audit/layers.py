"""The layer an audit reads: its activations and its true feature directions, for any model.

Every model has one layer at least: ``hidden(x)`` = h = W x (through a ReLU for the models with a hidden
ReLU), whose true feature directions are the columns of ``W`` (d, n) (:mod:`toymodels.core.models`). A
multi-layer model also has ``n_layers`` and ``hidden_at(x, l)``; the deep TMS (:mod:`toymodels.core.deep`)
has, at layer l = 1..L,

    h_l = W_l x_{l−1}      (batch, d),     true directions: the columns of W_l = ``model.weights()[l−1]``,

and ``W`` is W_p, p = ``plant_layer`` (the named features' layer, the lab's). This module is the one place
the audit asks a model for them: :func:`activations`, :func:`true_directions` (one instance),
:func:`true_directions_all` (every instance of a vmapped ``params``) and :func:`check_layer` (the
``--layer`` of ``toymodels audit``). A model without ``hidden_at`` has layer 1 only; without ``weights()``
its true directions are known only at ``W``'s layer (:func:`default_layer`).
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from ..config import ConfigError

# the kinds with one layer whose hidden activation is W x (through a ReLU for the last two)
SINGLE_LAYER_KINDS = ("relu_output", "linear", "relu_hidden", "abs_computation")


def n_layers(model) -> int:
    """L: the layers an audit can read (1 for a model without ``hidden_at``)."""
    return int(getattr(model, "n_layers", 1)) if hasattr(model, "hidden_at") else 1


def default_layer(model) -> int:
    """The layer of ``W`` (the planted layer of a deep stack; 1 for a single-layer model): what the audit
    reads when no layer is given, so every single-layer audit is what it was."""
    return int(getattr(model, "plant_layer", 1)) if n_layers(model) > 1 else 1


def check_layer(model, layer: int | None, flag: str = "--layer") -> int:
    """``layer`` (None: :func:`default_layer`) checked against the model: an int in 1..n_layers, and a layer
    whose true directions the model exposes. Bad input raises a one-line :class:`ConfigError` naming
    ``flag``."""
    L, p = n_layers(model), default_layer(model)
    if layer is None:
        return p
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 1 <= layer <= L:
        allowed = (f"must be an integer in 1..{L} (the model's n_layers = {L}; default {p}, the planted layer)"
                   if L > 1 else "must be 1: the model has one layer (hidden = W x)")
        raise ConfigError(flag, layer, allowed)
    if layer != p and not hasattr(model, "weights"):
        raise ConfigError(flag, layer, f"this model kind exposes its true feature directions only at layer {p} "
                                       f"(its W); must be {p}")
    return int(layer)


def activations(model, x: jax.Array, layer: int | None = None) -> jax.Array:
    """h_l (batch, d) of inputs x (batch, n): ``model.hidden_at(x, layer)``, or ``model.hidden(x)`` for a
    model with one layer and at ``W``'s layer (None), where both agree, so a single-layer audit is unchanged."""
    if layer is None or layer == default_layer(model) or not hasattr(model, "hidden_at"):
        return model.hidden(x)
    return model.hidden_at(x, layer)


def true_directions(model, layer: int | None = None) -> jax.Array:
    """The true feature directions of ``layer`` (d, n): the columns of W_l (``model.weights()[layer−1]``), or
    ``W`` at its own layer (None)."""
    if layer is None or layer == default_layer(model) or not hasattr(model, "weights"):
        return model.W[...]
    return model.weights()[layer - 1]


def true_directions_all(graphdef, params, layer: int | None = None) -> np.ndarray:
    """:func:`true_directions` of every instance of ``params`` (leading instance axis): (n_inst, d, n),
    float64 (the scorers' precision); None: ``params["W"]``, read as before."""
    if layer is None:
        return np.asarray(params["W"][...], np.float64)
    W = jax.vmap(lambda state: true_directions(nnx.merge(graphdef, state), layer))(params)
    return np.asarray(W, np.float64)


def layer_of(graphdef, params, layer: int | None, flag: str = "--layer") -> tuple[int, int]:
    """(the checked layer, n_layers) of the models in ``params`` (:func:`check_layer` on instance 0)."""
    model = nnx.merge(graphdef, jax.tree.map(lambda a: a[0], params))
    return check_layer(model, layer, flag), n_layers(model)


def hidden_is_Wx(cfg) -> bool:
    """Whether the hidden activation at ``W``'s layer is W x (through a ReLU for ``relu_hidden`` and
    ``abs_computation``): the single-layer kinds and a deep stack planted at layer 1 (h_1 = W_1 x). The
    readers that have only ``W`` (the fine-tuning trajectory, the predicted endpoint) need it."""
    return cfg.model.kind in SINGLE_LAYER_KINDS or (cfg.model.kind == "deep" and cfg.model.plant_layer == 1)


def describe(layer: int, L: int) -> str:
    """One line for an audit's head: which layer it read."""
    if L == 1:
        return "layer 1 of 1 (h = the model's hidden activations; true directions: the columns of W)"
    return f"layer {layer} of {L} (h_{layer} = W_{layer} x_{layer - 1}; true directions: the columns of W_{layer})"


__all__ = ["SINGLE_LAYER_KINDS", "activations", "check_layer", "default_layer", "describe", "hidden_is_Wx", "layer_of", "n_layers", "true_directions",
           "true_directions_all"]
