"""The ``[model]`` section: which toy model, and its sizes.

Single-layer TMS models (``d_hidden`` is the bottleneck width m):

* ``relu_output``  x' = ReLU(WᵀW x + b_final)          (TMS §Demonstrating Superposition)
* ``linear``       x' = WᵀW x + b_final
* ``relu_hidden``  x' = ReLU(Wᵀ ReLU(W x) + b_final)   (TMS §Privileged Basis)
* ``abs_computation`` y' = ReLU(W_out ReLU(W x) + b_final), untied (§Computation in Superposition)

``init``: ``xavier_normal`` (per instance), ``notebook`` (the TMS notebook's), or ``unit``: every column W_i
is a uniformly random unit vector of R^m (SynthSAEBench's feature directions, before its orthogonalisation
steps). With ``train.steps = 0`` the model then *is* planted random geometry whose true directions are known
exactly (the ``synthsae-16k`` preset).

Beyond one layer (:mod:`toymodels.core.deep`, :mod:`toymodels.core.residual`, :mod:`toymodels.core.moe`):

* ``deep``  a stack of ``n_layers`` TMS bottlenecks, x_l = σ(W_lᵀW_l x_{l-1} + b_l), the last σ a ReLU;
  ``plant_layer`` is the layer whose W holds the named features (the model's ``W``).
* ``residual_mlp``  the SPD/APD residual MLP: a fixed random embedding into a residual stream of width
  ``d_hidden``, ``n_layers`` MLP blocks of ``d_mlp`` neurons each, read out by the embedding's transpose.
* ``moe``  ``n_experts`` TMS autoencoders behind a top-``k_active`` gate (Chaudhari et al. 2025);
  ``route_pair`` fixes where the first two named features are routed.

A field that does not apply to the chosen kind must stay at its default (a ConfigError otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .checks import check, check_choice, check_int, default_of

MODEL_KINDS = ("relu_output", "linear", "relu_hidden", "abs_computation", "deep", "residual_mlp", "moe")
INITS = ("xavier_normal", "notebook", "unit")
UNIT_INIT_KINDS = ("relu_output", "linear", "relu_hidden")   # kinds whose W columns are the feature directions
LAYER_ACTIVATIONS = ("relu", "linear")
ROUTES = ("learned", "same", "different")
# kinds whose function a rotation of the hidden space leaves unchanged (the lab's orientation axis;
# deep with a ReLU or identity between layers: each layer is W_lᵀW_l; moe: each expert is, and the gate reads x;
# residual_mlp: the residual stream's basis is not privileged, W_in, W_out and the embedding turn together)
ROTATION_INVARIANT_KINDS = ("relu_output", "linear", "deep", "moe", "residual_mlp")

# which fields belong to which kinds (the others must keep their defaults)
KIND_FIELDS = {
    "n_layers": ("deep", "residual_mlp"),
    "plant_layer": ("deep",),
    "layer_activation": ("deep",),
    "d_mlp": ("residual_mlp",),
    "clean_labels": ("residual_mlp",),
    "n_experts": ("moe",),
    "k_active": ("moe",),
    "route_pair": ("moe",),
}


@dataclass(frozen=True)
class ModelConfig:
    """Which toy model, and its sizes (see the module docstring for the kinds)."""

    kind: Literal["relu_output", "linear", "relu_hidden", "abs_computation", "deep", "residual_mlp",
                  "moe"] = "relu_output"
    d_hidden: int = 2
    init: Literal["xavier_normal", "notebook", "unit"] = "xavier_normal"
    n_layers: int = 1
    plant_layer: int = 1
    layer_activation: Literal["relu", "linear"] = "relu"
    d_mlp: int = 50
    clean_labels: bool = False
    n_experts: int = 1
    k_active: int = 1
    route_pair: Literal["learned", "same", "different"] = "learned"

    def __post_init__(self):
        check_choice("model.kind", self.kind, MODEL_KINDS)
        check_int("model.d_hidden", self.d_hidden, 1, 100_000)
        check_choice("model.init", self.init, INITS)
        check(self.init != "unit" or self.kind in UNIT_INIT_KINDS, "model.init", self.init,
              f"'unit' plants random unit feature directions in W; it needs model.kind in ({', '.join(UNIT_INIT_KINDS)})")
        check_int("model.n_layers", self.n_layers, 1, 64)
        check_int("model.plant_layer", self.plant_layer, 1, 64)
        check(self.plant_layer <= self.n_layers, "model.plant_layer", self.plant_layer,
              f"must be a layer of the model, 1..n_layers={self.n_layers}")
        check_choice("model.layer_activation", self.layer_activation, LAYER_ACTIVATIONS)
        check_int("model.d_mlp", self.d_mlp, 1, 100_000)
        check(isinstance(self.clean_labels, bool), "model.clean_labels", self.clean_labels, "must be true or false")
        check_int("model.n_experts", self.n_experts, 1, 1024)
        check_int("model.k_active", self.k_active, 1, 1024)
        check(self.k_active <= self.n_experts, "model.k_active", self.k_active,
              f"must be at most model.n_experts={self.n_experts}")
        check_choice("model.route_pair", self.route_pair, ROUTES)
        check(self.route_pair != "different" or self.n_experts >= 2, "model.route_pair", self.route_pair,
              "'different' needs model.n_experts >= 2")
        # with k > 1 a pinned route only tilts the softmax (the pinned expert gets ~0.6 of the weight), so the
        # pair is not routed exclusively
        check(self.route_pair == "learned" or self.k_active == 1, "model.route_pair", self.route_pair,
              f"pins a route only with model.k_active = 1 (got {self.k_active}); use 'learned'")
        for name, kinds in KIND_FIELDS.items():
            value = getattr(self, name)
            check(self.kind in kinds or value == default_of(ModelConfig, name), f"model.{name}", value,
                  f"applies only to model.kind in ({', '.join(kinds)}); leave it at its default "
                  f"{default_of(ModelConfig, name)!r} for kind {self.kind!r}")
