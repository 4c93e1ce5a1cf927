"""The toy models, as flax nnx modules for a *single* instance (the engine vmaps over instances).

Shapes: x (batch, n_features); W (d_hidden, n_features), so feature i's direction is the column W[:, i]
(the TMS paper's W_i); b_final (n_features,). Every model exposes ``W`` and ``b_final`` so that the
geometry metrics and the saved ``weights.npz`` read the same names, and ``hidden(x)``.

=================  ================================================  =============================
``relu_output``    x' = ReLU(Wᵀ W x + b_final)                       TMS §Demonstrating Superposition
``linear``         x' = Wᵀ W x + b_final                              TMS §Demonstrating Superposition
``relu_hidden``    x' = ReLU(Wᵀ ReLU(W x) + b_final)                  TMS §Privileged Basis
``abs_computation`` y' = ReLU(W_out ReLU(W x) + b_final), untied     TMS §Computation in Superposition
=================  ================================================  =============================

Beyond one layer, in their own modules and registered here: ``deep`` (:mod:`.deep`), ``residual_mlp``
(:mod:`.residual`) and ``moe`` (:mod:`.moe`). A new model is a module with the same members, added to
``MODELS``; the engine does not change. The members every model has, and what the lab reads:

* ``W`` (d_hidden, n_features): the directions of the features where the named ones are planted (the
  planted layer of a deep stack, expert 0 of a mixture); ``b_final`` (n_features,): the output bias;
* ``hidden(x)`` (batch, d_hidden): the activations at ``W``'s layer;
* ``__call__(x)`` and, optionally, ``forward_t(xt)``: the output;
* optionally ``preact(x)`` (batch, n_features): the output layer's input before its ReLU (the lab's
  pre-activation; without it, ``hidden(x) @ W + b_final``), and ``layer_preacts(x)`` (L, batch, n): the
  same at every layer, for the per-layer records;
* optionally ``n_layers`` and ``hidden_at(x, layer)`` (batch, d_hidden): the hidden activations of layer
  1..n_layers (what ``toymodels audit --layer`` reads); a model without them has one layer, ``hidden``;
* optionally ``HIDDEN_LEAVES``: the leaves whose second-to-last axis is a hidden space that a rotation
  of the hidden space turns (default ``("W",)``).

Each model also has ``forward_t(xt)``: the same map on a *feature-major* batch, xt = xᵀ of shape
(n_features, batch), returning x'ᵀ. The training engine uses it when present. On CPU the contractions
here are tiny (n, m ≤ a few tens), and with the batch as the minor, contiguous axis XLA's fusions
and matmuls vectorise along it; the batch-minor layout made a TMS step 4-7× faster than
``x @ W.T`` (``benchmarks/README.md``). A model without ``forward_t`` still trains, through
``__call__``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def init_std(kind: str, n_features: int, d_hidden: int, n_inst: int = 1) -> float:
    """Standard deviation of the normal init of W.

    * ``xavier_normal``: per instance, std = sqrt(2 / (n + m)) (Glorot, untruncated).
    * ``notebook``: what torch's ``xavier_normal_`` gives on the notebook's (n_inst, n, m) tensor,
      std = sqrt(2 / (m (n + n_inst))), which depends on the number of instances.
    * ``unit``: 1; :func:`init_instances` then scales every column of W to unit length (uniform on the sphere).
    """
    if kind == "xavier_normal":
        return math.sqrt(2.0 / (n_features + d_hidden))
    if kind == "notebook":
        return math.sqrt(2.0 / (d_hidden * (n_features + n_inst)))
    if kind == "unit":   # normal columns, normalised to unit length in init_instances
        return 1.0
    raise ValueError(f"model.init={kind!r}: must be xavier_normal, notebook or unit")


class _TiedModel(nnx.Module):
    """Shared parameters of the tied-weight models: W (d_hidden, n_features), b_final (n_features,)."""

    def __init__(self, n_features: int, d_hidden: int, *, std: float, rngs: nnx.Rngs):
        self.W = nnx.Param(std * jax.random.normal(rngs.params(), (d_hidden, n_features)))
        self.b_final = nnx.Param(jnp.zeros((n_features,)))

    def hidden(self, x: jax.Array) -> jax.Array:
        """h = W x, batched: (batch, n) -> (batch, m)."""
        return x @ self.W[...].T

    def _readout_t(self, ht: jax.Array) -> jax.Array:
        """Wᵀ h + b_final, feature-major: (m, batch) -> (n, batch)."""
        return self.W[...].T @ ht + self.b_final[...][:, None]


class ReLUOutput(_TiedModel):
    """x' = ReLU(Wᵀ W x + b_final)."""

    def __call__(self, x):
        return jax.nn.relu(self.hidden(x) @ self.W[...] + self.b_final[...])

    def forward_t(self, xt):
        """x'ᵀ from xt = xᵀ: (n, batch) -> (n, batch)."""
        return jax.nn.relu(self._readout_t(self.W[...] @ xt))


class Linear(_TiedModel):
    """x' = Wᵀ W x + b_final."""

    def __call__(self, x):
        return self.hidden(x) @ self.W[...] + self.b_final[...]

    def forward_t(self, xt):
        """x'ᵀ from xt = xᵀ: (n, batch) -> (n, batch)."""
        return self._readout_t(self.W[...] @ xt)


class ReLUHidden(_TiedModel):
    """x' = ReLU(Wᵀ ReLU(W x) + b_final): a privileged hidden basis."""

    def hidden(self, x):
        return jax.nn.relu(x @ self.W[...].T)

    def __call__(self, x):
        return jax.nn.relu(self.hidden(x) @ self.W[...] + self.b_final[...])

    def forward_t(self, xt):
        """x'ᵀ from xt = xᵀ: (n, batch) -> (n, batch)."""
        return jax.nn.relu(self._readout_t(jax.nn.relu(self.W[...] @ xt)))


class AbsComputation(nnx.Module):
    """y' = ReLU(W_out ReLU(W x) + b_final), untied, trained to compute |x| on x ∈ [-1, 1].

    W (d_hidden, n_features) reads features into neurons; W_out (n_features, d_hidden) writes back.
    """

    def __init__(self, n_features: int, d_hidden: int, *, std: float, rngs: nnx.Rngs):
        self.W = nnx.Param(std * jax.random.normal(rngs.params(), (d_hidden, n_features)))
        self.W_out = nnx.Param(std * jax.random.normal(rngs.params(), (n_features, d_hidden)))
        self.b_final = nnx.Param(jnp.zeros((n_features,)))

    def hidden(self, x):
        return jax.nn.relu(x @ self.W[...].T)

    def __call__(self, x):
        return jax.nn.relu(self.hidden(x) @ self.W_out[...].T + self.b_final[...])

    def forward_t(self, xt):
        """y'ᵀ from xt = xᵀ: (n, batch) -> (n, batch)."""
        return jax.nn.relu(self.W_out[...] @ jax.nn.relu(self.W[...] @ xt) + self.b_final[...][:, None])


MODELS = {
    "relu_output": ReLUOutput,
    "linear": Linear,
    "relu_hidden": ReLUHidden,
    "abs_computation": AbsComputation,
}


def _register_families():
    """The families beyond one layer live in their own modules (each imports nothing from here)."""
    from .deep import DeepTMS
    from .moe import MoETMS
    from .residual import ResidualMLP

    MODELS.update(deep=DeepTMS, moe=MoETMS, residual_mlp=ResidualMLP)


_register_families()


def param_shapes(model_cfg, n_features: int, n_inst: int) -> dict[str, tuple[int, ...]]:
    """{leaf name: shape with the leading instance axis} of ``n_inst`` models of ``model_cfg``, from
    ``jax.eval_shape`` (nothing is computed): what a saved ``weights.npz`` must hold."""
    _, shapes = jax.eval_shape(lambda: init_instances(model_cfg, n_features, n_inst, jax.random.key(0)))
    return {k: tuple(v.shape) for k, v in nnx.to_pure_dict(shapes).items()}


def hidden_leaves(kind: str) -> tuple[str, ...]:
    """The parameter leaves of ``kind`` that a rotation of the hidden space turns (``HIDDEN_LEAVES``)."""
    return getattr(MODELS[kind], "HIDDEN_LEAVES", ("W",))


def build(model_cfg, n_features: int, *, std: float, rngs: nnx.Rngs) -> nnx.Module:
    """One instance of ``model_cfg.kind``. The single-layer kinds take (n_features, d_hidden); the
    families take their own fields from ``model_cfg`` through their ``from_config``."""
    cls = MODELS[model_cfg.kind]
    if hasattr(cls, "from_config"):
        return cls.from_config(model_cfg, n_features, std=std, rngs=rngs)
    return cls(n_features, model_cfg.d_hidden, std=std, rngs=rngs)


def init_instances(model_cfg, n_features: int, n_inst: int, key: jax.Array):
    """Build ``n_inst`` independent models. Returns ``(graphdef, params)`` where every leaf of the
    ``params`` state has a leading instance axis. Instance i is initialised from ``fold_in(key, i)``,
    so it does not depend on how many other instances there are."""
    std = init_std(model_cfg.init, n_features, model_cfg.d_hidden, n_inst)

    def one(k):
        state = nnx.split(build(model_cfg, n_features, std=std, rngs=nnx.Rngs(params=k)))[1]
        if model_cfg.init == "unit":   # W_i = g_i / ‖g_i‖, g_i ~ N(0, I_m): uniform on the unit sphere
            W = state["W"][...]
            state["W"] = state["W"].replace(W / jnp.linalg.norm(W, axis=0, keepdims=True))
        return state

    graphdef = nnx.split(build(model_cfg, n_features, std=std, rngs=nnx.Rngs(params=0)))[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_inst))
    return graphdef, jax.vmap(one)(keys)
