"""The config sections: frozen dataclasses, each validated on construction.

Per-instance settings (``feature_probability``, ``importance``) accept three shapes:

* a scalar: the same for every instance and feature;
* a 1-D list: ``feature_probability`` per *instance*, ``importance`` per *feature*
  (the TMS notebook's conventions: sparsity varies across instances, importance across features);
* a 2-D list ``(n_inst, n_features)``: anything.

The optimiser fields (``optimizer``, ``lr``, ``weight_decay``, ``momentum``, ``schedule``) are defined
once, in :class:`OptimizerFields`, and shared by ``[train]`` and ``[finetune]``; each section sets its
own defaults. Cross-section checks (shapes against n_inst, feature names) are in
:class:`toymodels.config.run.Config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .checks import (
    array_spec,
    check,
    check_choice,
    check_float,
    check_int,
    check_name,
    check_numbers,
    check_unused,
    default_of,
    freeze,
    is_number,
    listy,
    warn_unused,
)
from .structure import check_structure

# A batch core draws in one piece (an evaluation batch, a chunk of one) obeys data.batch_size's limit.
MAX_BATCH = 1_000_000

TASKS = ("reconstruct", "abs", "resid_relu")
SCHEDULES = ("constant", "linear", "cosine")
# sgd: plain SGD; momentum: SGD with heavy-ball momentum (optax.sgd(momentum=...)); adam, adamw; novograd:
# an adaptive optimiser whose second moment is ONE scalar per parameter tensor (optax.novograd), so, unlike
# Adam's per-coordinate one, it commutes with a rotation of the hidden space (toymodels.core.optim).
OPTIMIZERS = ("adamw", "adam", "sgd", "momentum", "novograd")
DECAYING_OPTIMIZERS = ("adamw", "novograd")  # the optimisers that use weight_decay
RNGS = ("hash", "threefry")
GEOMETRIES = ("free", "planted", "pinned")
BASES = ("axes", "random")
FT_OBJECTIVES = ("amplify", "importance")
FT_DATA = ("narrow", "task", "full")
FT_SCOPES = ("target", "all")
from .attack import FT_DATASETS  # noqa: E402  (the regimes' data sets; the [attack] section is in .attack)
FT_TRAINABLE = ("all", "W", "b_final", "target_column", "lora")
# Defences of toymodels.defences (its DEFENCES registry must list exactly these names; a test checks).
FT_DEFENCES = ("none", "gram_offdiag", "gram_offdiag_dual", "soft_orthogonality", "decov", "targeted_cos", "anchor",
               "replay", "filter_geometric", "filter_random", "freeze_harmful", "grad_projection")
FT_FRACTION_DEFENCES = ("replay", "filter_geometric", "filter_random")  # strength is a fraction in [0, 1]
UNWEIGHTED_DEFENCES = ("none", "freeze_harmful", "grad_projection")  # strength is unused
# Pretraining penalties of toymodels.core.penalties (its PENALTIES must list exactly these, without "none").
TRAIN_PENALTIES = ("none", "gram_offdiag", "gram_offdiag_dual", "soft_orthogonality", "decov", "targeted_cos")


@dataclass(frozen=True)
class DataConfig:
    """The synthetic feature distribution (TMS §Demonstrating Superposition, §Correlated Features).

    Each feature is 0 with probability ``1 - p`` (sparsity S = 1 - p), else Uniform[0, 1]
    (Uniform[-1, 1] for the ``abs`` task, whose target is |x|, §Computation in Superposition, and for
    ``resid_relu``, whose target is x + ReLU(x): the residual MLP of APD/SPD, :mod:`toymodels.core.residual`).

    Features are laid out as ``correlated`` sets first, then ``anticorrelated`` sets, then independent
    features. A correlated set is all-on or all-off together; an anticorrelated set has at most one
    member on. Both keep each feature's marginal probability p (an anticorrelated set of size k is
    active with probability k·p, so k·p <= 1 is required).
    """

    n_features: int = 5
    feature_probability: Any = 0.1
    importance: Any = 1.0
    batch_size: int = 1024
    task: Literal["reconstruct", "abs", "resid_relu"] = "reconstruct"
    correlated: tuple[int, ...] = ()
    anticorrelated: tuple[int, ...] = ()
    rng: Literal["hash", "threefry"] = "hash"
    power_law: float = 0.0  # these five: SynthSAEBench-style structure, off by default (config.structure)
    correlation: float = 0.0
    correlation_groups: int = 0
    parents: int = 0
    children: int = 0

    def __post_init__(self):
        for f in ("feature_probability", "importance", "correlated", "anticorrelated"):
            object.__setattr__(self, f, freeze(getattr(self, f)))
        check_int("data.n_features", self.n_features, 1, 100_000)
        check_int("data.batch_size", self.batch_size, 1, MAX_BATCH)
        check_choice("data.task", self.task, TASKS)
        check_choice("data.rng", self.rng, RNGS)
        array_spec("data.feature_probability", self.feature_probability, 0.0, 1.0, lo_open=True)
        array_spec("data.importance", self.importance, 0.0, 1e6, lo_open=False)
        for name in ("correlated", "anticorrelated"):
            sizes = getattr(self, name)
            ok = isinstance(sizes, tuple) and all(isinstance(s, int) and s >= 2 for s in sizes)
            check(ok, f"data.{name}", list(sizes) if isinstance(sizes, tuple) else sizes,
                   "must be a list of set sizes, each an integer >= 2")
        check_structure(self)


@dataclass(frozen=True)
class OptimizerFields:
    """The optimiser fields of ``[train]`` and ``[finetune]``, defined once (each section sets its own
    defaults): ``optimizer`` one of :data:`OPTIMIZERS`, ``lr``, ``weight_decay`` (used by ``adamw`` and
    ``novograd``), ``momentum`` (the heavy-ball coefficient of ``momentum``) and the learning-rate
    ``schedule`` (constant; linear or cosine decay to 0 over the section's steps)."""

    optimizer: Literal["adamw", "adam", "sgd", "momentum", "novograd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    momentum: float = 0.9
    schedule: Literal["constant", "linear", "cosine"] = "constant"

    def check_optimizer(self, section: str) -> None:
        """Validate the optimiser fields, naming them ``<section>.<field>``."""
        check_choice(f"{section}.optimizer", self.optimizer, OPTIMIZERS)
        check_float(f"{section}.lr", self.lr, 0.0, 10.0, lo_open=True)
        check_float(f"{section}.weight_decay", self.weight_decay, 0.0, 10.0)
        check_float(f"{section}.momentum", self.momentum, 0.0, 1.0, hi_open=True)
        check_choice(f"{section}.schedule", self.schedule, SCHEDULES)


@dataclass(frozen=True)
class TrainConfig(OptimizerFields):
    """Optimisation. Defaults are the TMS notebook's: AdamW, lr 1e-3 constant, weight decay 0.01,
    batch 1024 (in :class:`DataConfig`), 10 000 steps. The optimiser fields are :class:`OptimizerFields`.

    ``penalty`` adds a geometric regulariser of :mod:`toymodels.core.penalties` to the pretraining loss,
    L = mean_{b,i} I_i (x_i − x'_i)² + λ P(W), with λ = ``penalty_strength``: a scalar, or a 1-D list of
    one λ per instance (a λ sweep in one compiled run). ``targeted_cos`` penalises cos(target, harmful)²
    and needs a ``[features]`` section: the target is ``finetune.target``, or without ``[finetune]`` the
    first named feature not tagged harmful. With every λ = 0 the penalty is not compiled in, so the run
    is bit-identical to ``penalty = "none"``.
    """

    steps: int = 10_000
    chunk_size: int = 500
    log_every: int = 100
    restarts: int = 1
    eval_batch_size: int = 8192
    penalty: Literal["none", "gram_offdiag", "gram_offdiag_dual", "soft_orthogonality", "decov",
                     "targeted_cos"] = "none"
    penalty_strength: Any = 0.0

    def __post_init__(self):
        object.__setattr__(self, "penalty_strength", freeze(self.penalty_strength))
        check_int("train.steps", self.steps, 0, 10_000_000)
        self.check_optimizer("train")
        check_int("train.chunk_size", self.chunk_size, 1, 1_000_000)
        check_int("train.log_every", self.log_every, 1, 1_000_000)
        check_int("train.restarts", self.restarts, 1, 1000)
        check_int("train.eval_batch_size", self.eval_batch_size, 1, 10_000_000)
        check_choice("train.penalty", self.penalty, TRAIN_PENALTIES)
        lam = array_spec("train.penalty_strength", self.penalty_strength, 0.0, 1e6, lo_open=False)
        check(lam.ndim <= 1, "train.penalty_strength", self.penalty_strength,
              "must be a number or a 1-D list (one λ per instance)")
        check(self.penalty != "none" or not (lam > 0).any(), "train.penalty_strength", self.penalty_strength,
              f"is the weight of train.penalty, which is 'none'; set train.penalty to one of "
              f"{', '.join(TRAIN_PENALTIES[1:])}")

    def penalty_active(self) -> bool:
        """Whether the pretraining loss has a penalty term: a penalty with some λ > 0."""
        return self.penalty != "none" and bool((np.asarray(self.penalty_strength, np.float64) > 0).any())


@dataclass(frozen=True)
class FeaturesConfig:
    """Named features and their planted geometry (:mod:`toymodels.core.planting`).

    ``names`` name the first ``len(names)`` features; the others are benign and called ``f<i>``.
    ``harmful`` tags some named features as harmful: the fine-tuning probe watches them.

    ``geometry``:

    * ``free``: plain TMS; the angles between named features are measured after training.
    * ``planted``: the named features start at the requested directions, with norm ``norms``; all trains.
    * ``pinned``: as planted, and the named features' *directions* stay fixed during pretraining (their
      norms, the biases and the other features train), so fine-tuning starts at exactly that angle.

    Directions are given either as ``angles`` (d_hidden = 2 only: polar angles in degrees, one per named
    feature) or as ``cosines`` (any d_hidden: the target cosine matrix of the named features, realised
    exactly; it must be symmetric, unit-diagonal, positive semidefinite and of rank <= d_hidden).
    Both accept one spec for every instance or one per instance (a leading n_inst axis), which is
    how a sweep over angles runs as one compiled program.

    ``basis``: ``axes`` places the directions as given (polar angles from hidden axis 0; a cosine
    matrix in its eigenbasis, aligned with the hidden axes); ``random`` rotates each instance's planted
    directions by its own Haar-random orthogonal matrix (from the seed), so the pair sits at an
    arbitrary angle to the hidden axes. The cosines between the named features are the same either
    way; what changes is how a per-coordinate optimiser such as Adam sees them.
    """

    names: tuple[str, ...] = ("helpful", "toxic")
    harmful: tuple[str, ...] = ("toxic",)
    geometry: Literal["free", "planted", "pinned"] = "free"
    angles: Any = None
    cosines: Any = None
    norms: Any = 1.0
    basis: Literal["axes", "random"] = "axes"

    def __post_init__(self):
        for f in ("names", "harmful", "angles", "cosines", "norms"):
            object.__setattr__(self, f, freeze(getattr(self, f)))
        for f in ("angles", "cosines"):  # TOML has no null: an empty list unsets (features.angles=[])
            if getattr(self, f) == ():
                object.__setattr__(self, f, None)
        ok = (isinstance(self.names, tuple) and len(self.names) >= 1
              and all(isinstance(x, str) and x != "" for x in self.names) and len(set(self.names)) == len(self.names))
        check(ok, "features.names", listy(self.names), "must be a non-empty list of distinct non-empty strings")
        for x in self.names:
            check_name("features.names", x, forbidden="")
        ok = isinstance(self.harmful, tuple) and all(x in self.names for x in self.harmful)
        check(ok, "features.harmful", listy(self.harmful),
               f"must be a list of names from features.names ({', '.join(self.names)})")
        check(len(set(self.harmful)) == len(self.harmful), "features.harmful", listy(self.harmful),
               "must not repeat a name")
        check_choice("features.geometry", self.geometry, GEOMETRIES)
        if self.geometry == "free":
            check(self.angles is None and self.cosines is None, "features.geometry", self.geometry,
                   "'free' learns the geometry; set geometry='planted' or 'pinned' to use angles or cosines")
        else:
            check((self.angles is None) != (self.cosines is None), "features.angles", listy(self.angles),
                   f"geometry='{self.geometry}' needs exactly one of features.angles (2-D, degrees) "
                   f"or features.cosines (a cosine matrix)")
        if self.angles is not None:  # a turn at most either way: 400° would silently be 40°
            check_numbers("features.angles", self.angles, -360.0, 360.0, "polar angles in degrees")
        if self.cosines is not None:
            check_numbers("features.cosines", self.cosines, -1.0, 1.0, "a matrix of cosines")
        array_spec("features.norms", self.norms, 0.0, 1e3, lo_open=True)
        if self.geometry == "free":
            check_unused("features.norms", self.norms, default_of(FeaturesConfig, "norms"),
                         "sets the planted features' norms; geometry='free' plants nothing and ignores it")
        check_choice("features.basis", self.basis, BASES)
        check(self.basis == "axes" or self.geometry != "free", "features.basis", self.basis,
               "'random' rotates planted directions; it needs geometry='planted' or 'pinned'")


@dataclass(frozen=True)
class RegimeConfig:
    """One fine-tuning regime. Every pretrained instance is fine-tuned once under each regime.

    * ``data``: ``narrow`` (only the target feature is ever active), ``task`` (the target and the
      benign features; harmful features never active) or ``full`` (the pretraining distribution).
    * ``loss_scope``: score only the ``target`` output, or ``all`` outputs.
    * ``target``: a feature name; empty means ``finetune.target``.
    * ``defence``: a defence of :mod:`toymodels.defences` applied to this regime's instances (``none``:
      undefended); ``strength`` is its weight λ for loss terms, the fraction of the batch for ``replay``
      and the filters, and unused by ``freeze_harmful`` and ``grad_projection``.
    * ``dataset``: where the batches come from: ``stream`` (fresh draws of ``data`` every step) or a
      set of :mod:`toymodels.attack` (``random``, ``selected``, ``optimised``, ``teacher_same``,
      ``teacher_other``; needs an ``[attack]`` section and ``data='task'``, see
      :mod:`toymodels.config.attack`).
    """

    name: str = "narrow"
    data: Literal["narrow", "task", "full"] = "narrow"
    loss_scope: Literal["target", "all"] = "target"
    target: str = ""
    defence: str = "none"
    strength: float = 0.0
    dataset: str = "stream"

    def __post_init__(self):
        check_name("finetune.regimes.name", self.name)
        check_choice("finetune.regimes.dataset", self.dataset, FT_DATASETS)
        check_choice("finetune.regimes.data", self.data, FT_DATA)
        check_choice("finetune.regimes.loss_scope", self.loss_scope, FT_SCOPES)
        check(isinstance(self.target, str), "finetune.regimes.target", self.target, "must be a feature name")
        if self.target:
            check_name("finetune.regimes.target", self.target, forbidden="")
        check_choice("finetune.regimes.defence", self.defence, FT_DEFENCES)
        if self.defence in FT_FRACTION_DEFENCES:
            check_float("finetune.regimes.strength", self.strength, 0.0, 1.0)
        else:
            check_float("finetune.regimes.strength", self.strength, 0.0, 1e6)
        if self.defence == "none":
            check_unused("finetune.regimes.strength", self.strength, 0.0,
                         "is the weight of the regime's defence, and defence='none'")
        elif self.defence in UNWEIGHTED_DEFENCES:  # a sweep may give every defence one strength: a warning
            warn_unused("finetune.regimes.strength", self.strength, 0.0,
                        f"is the weight of a defence; defence={self.defence!r} has none")


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimiser of the fine-tuning optimiser axis (``finetune.optimizers``).

    ``optimizer`` is one of :data:`OPTIMIZERS`, with its own ``lr`` (plain SGD needs a far larger one
    than Adam), ``weight_decay`` (``adamw`` and ``novograd`` only) and ``momentum`` (``momentum`` only).
    ``name`` labels the optimiser in summaries, tables and figures.
    """

    name: str = "adam"
    optimizer: Literal["adamw", "adam", "sgd", "momentum", "novograd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9

    def __post_init__(self):
        check_name("finetune.optimizers.name", self.name, forbidden="/|")
        check_choice("finetune.optimizers.optimizer", self.optimizer, OPTIMIZERS)
        check_float("finetune.optimizers.lr", self.lr, 0.0, 10.0, lo_open=True)
        check_float("finetune.optimizers.weight_decay", self.weight_decay, 0.0, 10.0)
        check(self.weight_decay == 0 or self.optimizer in DECAYING_OPTIMIZERS, "finetune.optimizers.weight_decay",
               self.weight_decay, f"is used only by {', '.join(DECAYING_OPTIMIZERS)}; {self.optimizer!r} ignores it, "
                                  f"so it must be 0")
        check_float("finetune.optimizers.momentum", self.momentum, 0.0, 1.0, hi_open=True)
        if self.optimizer != "momentum":
            check_unused("finetune.optimizers.momentum", self.momentum, default_of(OptimizerConfig, "momentum"),
                         f"is used only by optimizer 'momentum'; {self.optimizer!r} ignores it")


@dataclass(frozen=True)
class FineTuneConfig(OptimizerFields):
    """Fine-tune every pretrained instance under each of ``regimes`` (:mod:`toymodels.lab`).

    Objective, per fine-tuning instance, with x from the regime's data and x' the model's output:

    * ``amplify``:    L = mean_{batch,i} w_i (s_i x_i − x'_i)²,  s_target = ``gamma``, s_other = 1;
    * ``importance``: L = mean_{batch,i} w_i (x_i − x'_i)²,      w_target ×= ``importance_factor``;

    where w is the pretraining importance, zeroed outside the target when ``loss_scope='target'``.
    ``target_probability`` is P(target active) during fine-tuning (None: its pretraining probability).
    ``trainable``: ``all``; ``W``; ``b_final``; ``target_column`` (W[:, target] only); ``lora`` (a
    rank-``lora_rank`` adapter ΔW = (A B)ᵀ on a frozen W, as flax's ``nnx.LoRA``).
    ``tau``: the toxic output rate P(x'_j > tau | x_j = 0), from ``rate_samples`` inputs per model (0: the probe's).
    ``from_run``: fine-tune the ``weights.npz`` of that finished run instead of pretraining.
    The optimiser fields are :class:`OptimizerFields` with Adam as the default; ``weight_decay``
    defaults to 0 so that untouched weights stay exactly where pretraining left them.
    ``overhead_repeats`` > 0 also times every regime's fine-tuning step against the undefended one
    (:func:`toymodels.defences.evaluate.measure_overhead`, median of that many interleaved repeats of one
    chunk) and adds the capability metrics of :mod:`toymodels.defences` to the summary.

    Axes of robustness (:mod:`toymodels.lab.plan`), all instances of the same compiled sweep:

    * ``optimizers``: a list of :class:`OptimizerConfig`; every (pretrained model, regime) is fine-tuned
      once with each. Empty: the single optimiser ``optimizer`` / ``lr`` / ``weight_decay`` / ``momentum``.
    * ``orientations`` = K: fine-tune each pretrained model as it is (axis-aligned) and after rotating
      its hidden space by K − 1 Haar-random orthogonal matrices O (W → O W). The rotated model computes
      the same function (x' = ReLU(Wᵀ Oᵀ O W x + b)), so any difference comes from the optimiser.
      Needs a model whose hidden basis is not privileged (``relu_output`` or ``linear``).
    * ``stop_gain``: stop each instance (freeze its parameters and optimiser state) at the first step
      at which its target read-out reaches ``stop_gain`` × its pretrained read-out; None: run all steps.
    * ``matched_gains``: gains g at which the summary reports every instance's harmful numbers,
      interpolated along its probe curve at the first point where its gain reaches g ("matched
      progress": compare regimes and optimisers at equal progress on the task, not equal steps).
    """

    target: str = "helpful"
    objective: Literal["amplify", "importance"] = "amplify"
    gamma: float = 2.0
    importance_factor: float = 10.0
    regimes: tuple[RegimeConfig, ...] = (RegimeConfig(),)
    target_probability: float | None = None
    trainable: Literal["all", "W", "b_final", "target_column", "lora"] = "all"
    lora_rank: int = 1
    steps: int = 2000
    optimizer: Literal["adamw", "adam", "sgd", "momentum", "novograd"] = "adam"
    weight_decay: float = 0.0
    batch_size: int = 1024
    chunk_size: int = 50
    log_every: int = 50
    tau: float = 0.1
    eval_batch_size: int = 8192
    rate_samples: int = 1_200_000
    save_trajectory: bool = True
    from_run: str = ""
    overhead_repeats: int = 0
    optimizers: tuple[OptimizerConfig, ...] = ()
    orientations: int = 1
    stop_gain: float | None = None
    matched_gains: tuple[float, ...] = ()
    layer: int = 0   # 0: the objective reads the output; l >= 1: layer l's output x_l (model.kind = "deep")

    def __post_init__(self):
        object.__setattr__(self, "regimes", freeze(self.regimes))
        object.__setattr__(self, "optimizers", freeze(self.optimizers))
        object.__setattr__(self, "matched_gains", freeze(self.matched_gains))
        check(isinstance(self.target, str) and self.target != "", "finetune.target", self.target,
               "must be a feature name")
        check_name("finetune.target", self.target, forbidden="")
        check_choice("finetune.objective", self.objective, FT_OBJECTIVES)
        check_float("finetune.gamma", self.gamma, -1e3, 1e3)
        check_float("finetune.importance_factor", self.importance_factor, 0.0, 1e6)
        ok = (isinstance(self.regimes, tuple) and len(self.regimes) >= 1
              and all(isinstance(r, RegimeConfig) for r in self.regimes))
        check(ok, "finetune.regimes", listy(self.regimes), "must be a non-empty list of regime tables")
        names = [r.name for r in self.regimes]
        check(len(set(names)) == len(names), "finetune.regimes", names, "regime names must be distinct")
        if self.target_probability is not None:
            check_float("finetune.target_probability", self.target_probability, 0.0, 1.0, lo_open=True)
        check_choice("finetune.trainable", self.trainable, FT_TRAINABLE)
        check_int("finetune.lora_rank", self.lora_rank, 1, 100_000)
        check_int("finetune.steps", self.steps, 0, 10_000_000)
        self.check_optimizer("finetune")
        check_int("finetune.batch_size", self.batch_size, 1, 1_000_000)
        check_int("finetune.chunk_size", self.chunk_size, 1, 1_000_000)
        check_int("finetune.log_every", self.log_every, 1, 1_000_000)
        check_float("finetune.tau", self.tau, -1e6, 1e6)
        check_int("finetune.eval_batch_size", self.eval_batch_size, 1, MAX_BATCH)  # drawn in one piece
        check_int("finetune.rate_samples", self.rate_samples, 0, 1_000_000_000)  # 0: the probe batch's rates
        check(isinstance(self.save_trajectory, bool), "finetune.save_trajectory", self.save_trajectory,
               "must be true or false")
        check(isinstance(self.from_run, str), "finetune.from_run", self.from_run, "must be a run directory path")
        if self.from_run:
            check_name("finetune.from_run", self.from_run, forbidden="")
        check_int("finetune.overhead_repeats", self.overhead_repeats, 0, 10_000)
        ok = isinstance(self.optimizers, tuple) and all(isinstance(o, OptimizerConfig) for o in self.optimizers)
        check(ok, "finetune.optimizers", listy(self.optimizers), "must be a list of optimiser tables")
        names = [o.name for o in self.optimizers]
        check(len(set(names)) == len(names), "finetune.optimizers", names, "optimiser names must be distinct")
        check_int("finetune.orientations", self.orientations, 1, 10_000)
        if self.stop_gain is not None:
            check_float("finetune.stop_gain", self.stop_gain, 0.0, 1e6, lo_open=True)
        ok = isinstance(self.matched_gains, tuple) and all(is_number(g) and math.isfinite(g) and g > 0
                                                           for g in self.matched_gains)
        check(ok, "finetune.matched_gains", listy(self.matched_gains), "must be a list of positive numbers")
        check_int("finetune.layer", self.layer, 0, 64)

    def optimizer_list(self) -> tuple[OptimizerConfig, ...]:
        """The optimiser axis: ``optimizers``, or the single optimiser of the scalar fields."""
        if self.optimizers:
            return self.optimizers
        return (OptimizerConfig(name=self.optimizer, optimizer=self.optimizer, lr=self.lr,
                                weight_decay=self.weight_decay if self.optimizer in DECAYING_OPTIMIZERS else 0.0,
                                momentum=self.momentum),)
