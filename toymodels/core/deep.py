"""Deep TMS: a stack of L bottlenecks, each one a TMS autoencoder over the same n features.

    x_0 = x,    p_l = W_lᵀ W_l x_{l-1} + b_l,    x_l = σ_l(p_l),    x' = x_L         (l = 1..L)

with W_l (d_hidden, n_features), σ_L = ReLU and σ_l (l < L) a ReLU or the identity
(``model.layer_activation``). In the hidden coordinates this is the recursion
h_{l+1} = W_{l+1} σ_l(W_lᵀ h_l + b_l), h_1 = W_1 x: the hidden-to-hidden map factors through the feature
basis, which is what gives every layer a representation of every feature, with a direction (column l of
W_l), a pre-activation p_l and an output x_l, so that the named pair can be planted at any layer and read at
every layer. Depth 1 is the single-layer ``relu_output`` model exactly (same parameters, same operations,
bit for bit; ``tests/test_deep.py``).

Parameters: ``W`` is layer ``plant_layer``'s matrix (the one the lab plants, pins, rotates and reads the
geometry of); ``W_layers`` (L−1, d, n) holds the other layers' matrices in layer order; ``b_final`` is
layer L's bias (the output bias, as in every model) and ``b_layers`` (L−1, n) the biases of layers 1..L−1.
A rotation O of every layer's hidden space (W_l → O W_l) leaves the function unchanged, since
W_lᵀOᵀO W_l = W_lᵀW_l.

The lab reads ``preact`` (p_L, the output's pre-activation) and ``layer_preacts`` (p_1..p_L) for its
per-layer records and the composed first-order prediction (:mod:`toymodels.lab.layers`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class DeepTMS(nnx.Module):
    """x' = x_L with x_l = σ_l(W_lᵀ W_l x_{l-1} + b_l); see the module docstring. Shapes: x (batch, n)."""

    HIDDEN_LEAVES = ("W", "W_layers")
    REPRESENTED_BY = "readout"   # a layer's norm says little: core.planting.own_readouts

    def __init__(self, n_features: int, d_hidden: int, *, n_layers: int = 1, plant_layer: int = 1,
                 activation: str = "relu", std: float, rngs: nnx.Rngs):
        if not 1 <= plant_layer <= n_layers:
            raise ValueError(f"model.plant_layer={plant_layer}: must be in 1..n_layers={n_layers}")
        self.n_layers, self.plant_layer, self.activation = n_layers, plant_layer, activation
        # W first, from the first key: at depth 1 the draws are relu_output's exactly
        self.W = nnx.Param(std * jax.random.normal(rngs.params(), (d_hidden, n_features)))
        self.b_final = nnx.Param(jnp.zeros((n_features,)))
        if n_layers > 1:
            self.W_layers = nnx.Param(std * jax.random.normal(rngs.params(), (n_layers - 1, d_hidden, n_features)))
            self.b_layers = nnx.Param(jnp.zeros((n_layers - 1, n_features)))

    @classmethod
    def from_config(cls, model_cfg, n_features: int, *, std: float, rngs: nnx.Rngs) -> DeepTMS:
        return cls(n_features, model_cfg.d_hidden, n_layers=model_cfg.n_layers, plant_layer=model_cfg.plant_layer,
                   activation=model_cfg.layer_activation, std=std, rngs=rngs)

    # --- the layers -------------------------------------------------------------------------------
    def weights(self) -> list[jax.Array]:
        """[W_1, ..., W_L], each (d, n): ``W`` at ``plant_layer``, ``W_layers`` elsewhere in order."""
        others = [self.W_layers[...][i] for i in range(self.n_layers - 1)] if self.n_layers > 1 else []
        return others[:self.plant_layer - 1] + [self.W[...]] + others[self.plant_layer - 1:]

    def biases(self) -> list[jax.Array]:
        """[b_1, ..., b_L], each (n,): ``b_layers`` then ``b_final``."""
        inner = [self.b_layers[...][i] for i in range(self.n_layers - 1)] if self.n_layers > 1 else []
        return inner + [self.b_final[...]]

    def _sigma(self, layer: int, p: jax.Array) -> jax.Array:
        """σ_l: a ReLU at the last layer, ``activation`` before it (1-based ``layer``)."""
        return jax.nn.relu(p) if layer == self.n_layers or self.activation == "relu" else p

    def layer_preacts(self, x: jax.Array) -> jax.Array:
        """(L, batch, n): p_l = W_lᵀ W_l x_{l-1} + b_l at every layer, for x (batch, n)."""
        out = []
        for layer, (W, b) in enumerate(zip(self.weights(), self.biases(), strict=True), start=1):
            p = (x @ W.T) @ W + b
            out.append(p)
            x = self._sigma(layer, p)
        return jnp.stack(out)

    def _input_to(self, x: jax.Array, layer: int) -> jax.Array:
        """x_{layer-1}: the input of ``layer`` (1-based), batched."""
        for i, (W, b) in enumerate(zip(self.weights()[:layer - 1], self.biases()[:layer - 1], strict=True), start=1):
            x = self._sigma(i, (x @ W.T) @ W + b)
        return x

    # --- the members every model has ------------------------------------------------------------
    def hidden(self, x: jax.Array) -> jax.Array:
        """h = W x_{plant_layer−1}: the activations at the planted layer, (batch, n) -> (batch, m)."""
        return self._input_to(x, self.plant_layer) @ self.W[...].T

    def hidden_at(self, x: jax.Array, layer: int) -> jax.Array:
        """h_l = W_l x_{l−1} (batch, m): the hidden activations of ``layer`` (1-based), what an SAE of
        ``toymodels audit --layer l`` reads."""
        return self._input_to(x, layer) @ self.weights()[layer - 1].T

    def preact(self, x: jax.Array) -> jax.Array:
        """p_L (batch, n): the output's pre-activation."""
        x = self._input_to(x, self.n_layers)
        W = self.weights()[-1]
        return (x @ W.T) @ W + self.b_final[...]

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.preact(x))

    def forward_t(self, xt: jax.Array, upto: int | None = None) -> jax.Array:
        """x'ᵀ from xt = xᵀ, feature-major (the engine's fast path): (n, batch) -> (n, batch); with
        ``upto`` = l, layer l's output x_lᵀ instead."""
        L = self.n_layers if upto is None else upto
        for layer, (W, b) in enumerate(zip(self.weights()[:L], self.biases()[:L], strict=True), start=1):
            xt = self._sigma(layer, W.T @ (W @ xt) + b[:, None])
        return xt

    def at_layer(self, layer: int) -> LayerView:
        """This model read at ``layer``: x_l as the output (``finetune.layer``, the objective at layer l)."""
        return LayerView(self, layer)


class LayerView:
    """A deep model whose output is layer l's, x_l = σ_l(p_l): what ``finetune.layer = l`` trains and reads
    the target's gain on. Only the output moves; the parameters are the model's."""

    def __init__(self, model: DeepTMS, layer: int):
        self.model, self.layer = model, layer

    def preact(self, x: jax.Array) -> jax.Array:
        return self.model.layer_preacts(x)[self.layer - 1]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.model._sigma(self.layer, self.preact(x))

    def forward_t(self, xt: jax.Array) -> jax.Array:
        return self.model.forward_t(xt, upto=self.layer)
