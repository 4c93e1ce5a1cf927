"""Run configuration: frozen dataclasses, validated on construction, loaded from TOML or presets.

A config is the single source of truth for a run. It is written, fully resolved, to ``config.json``
in the run directory, and ``Config.from_dict(json.load(...))`` rebuilds it exactly.

Per-instance settings (``feature_probability``, ``importance``) accept three shapes:

* a scalar: the same for every instance and feature;
* a 1-D list: ``feature_probability`` per *instance*, ``importance`` per *feature*
  (the TMS notebook's conventions: sparsity varies across instances, importance across features);
* a 2-D list ``(n_inst, n_features)``: anything.

Validation errors are :class:`ConfigError` with one line naming the field, the value and what is
allowed; the CLI prints that line and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import numpy as np

MODEL_KINDS = ("relu_output", "linear", "relu_hidden", "abs_computation")
TASKS = ("reconstruct", "abs")
SCHEDULES = ("constant", "linear", "cosine")
# sgd: plain SGD; momentum: SGD with heavy-ball momentum (optax.sgd(momentum=...)); adam, adamw; novograd:
# an adaptive optimiser whose second moment is ONE scalar per parameter tensor (optax.novograd), so, unlike
# Adam's per-coordinate one, it commutes with a rotation of the hidden space (toymodels.finetune).
OPTIMIZERS = ("adamw", "adam", "sgd", "momentum", "novograd")
DECAYING_OPTIMIZERS = ("adamw", "novograd")  # the optimisers that use weight_decay
RNGS = ("hash", "threefry")
INITS = ("xavier_normal", "notebook")
GEOMETRIES = ("free", "planted", "pinned")
BASES = ("axes", "random")
FT_OBJECTIVES = ("amplify", "importance")
FT_DATA = ("narrow", "task", "full")
FT_SCOPES = ("target", "all")
FT_TRAINABLE = ("all", "W", "b_final", "target_column", "lora")
# Defences of toymodels.defences (its DEFENCES registry must list exactly these names).
FT_DEFENCES = ("none", "gram_offdiag", "gram_offdiag_dual", "soft_orthogonality", "decov", "targeted_cos", "anchor",
               "replay", "filter_geometric", "filter_random", "freeze_harmful", "grad_projection")
FT_FRACTION_DEFENCES = ("replay", "filter_geometric", "filter_random")  # strength is a fraction in [0, 1]
# Pretraining penalties of toymodels.penalties (its PENALTIES must list exactly these names, without "none").
TRAIN_PENALTIES = ("none", "gram_offdiag", "gram_offdiag_dual", "soft_orthogonality", "decov", "targeted_cos")


class ConfigError(ValueError):
    """A config value is out of range. The message is one line: field, value, what is allowed."""

    def __init__(self, field_name: str, value: Any, allowed: str):
        self.field = field_name
        super().__init__(f"{field_name}={_short(value)}: {allowed}")


def _short(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _check(cond: bool, name: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(name, value, allowed)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
    rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
    _check(ok, name, value, f"must be an integer {rng}")


def _check_float(name: str, value: Any, lo: float, hi: float, lo_open=False, hi_open=False) -> None:
    ok = _is_number(value) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    rng = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    _check(ok, name, value, f"must be a finite number in {rng}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, name, value, f"must be one of {', '.join(choices)}")


def _freeze(v: Any) -> Any:
    """Lists (from TOML/JSON) become tuples so the dataclasses stay hashable and immutable."""
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _array_spec(name: str, value: Any, lo: float, hi: float, lo_open: bool) -> np.ndarray:
    """Validate a scalar / 1-D / 2-D numeric spec and return it as a float array."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(name, value, "must be a number, a list of numbers, or a list of lists") from None
    _check(arr.ndim <= 2 and arr.size > 0, name, value, "must be a scalar, a 1-D list or a 2-D list")
    bad = ~np.isfinite(arr) | (arr > hi) | ((arr <= lo) if lo_open else (arr < lo))
    _check(not bad.any(), name, value, f"every entry must be in {'(' if lo_open else '['}{lo}, {hi}]")
    return arr


@dataclass(frozen=True)
class DataConfig:
    """The synthetic feature distribution (TMS §Demonstrating Superposition, §Correlated Features).

    Each feature is 0 with probability ``1 - p`` (sparsity S = 1 - p), else Uniform[0, 1]
    (Uniform[-1, 1] for the ``abs`` task, whose target is |x|, §Computation in Superposition).

    Features are laid out as ``correlated`` sets first, then ``anticorrelated`` sets, then independent
    features. A correlated set is all-on or all-off together; an anticorrelated set has at most one
    member on. Both keep each feature's marginal probability p (an anticorrelated set of size k is
    active with probability k·p, so k·p <= 1 is required).
    """

    n_features: int = 5
    feature_probability: Any = 0.1
    importance: Any = 1.0
    batch_size: int = 1024
    task: Literal["reconstruct", "abs"] = "reconstruct"
    correlated: tuple[int, ...] = ()
    anticorrelated: tuple[int, ...] = ()
    rng: Literal["hash", "threefry"] = "hash"

    def __post_init__(self):
        for f in ("feature_probability", "importance", "correlated", "anticorrelated"):
            object.__setattr__(self, f, _freeze(getattr(self, f)))
        _check_int("data.n_features", self.n_features, 1, 100_000)
        _check_int("data.batch_size", self.batch_size, 1, 1_000_000)
        _check_choice("data.task", self.task, TASKS)
        _check_choice("data.rng", self.rng, RNGS)
        _array_spec("data.feature_probability", self.feature_probability, 0.0, 1.0, lo_open=True)
        _array_spec("data.importance", self.importance, 0.0, 1e6, lo_open=False)
        for name in ("correlated", "anticorrelated"):
            sizes = getattr(self, name)
            ok = isinstance(sizes, tuple) and all(isinstance(s, int) and s >= 2 for s in sizes)
            _check(ok, f"data.{name}", list(sizes) if isinstance(sizes, tuple) else sizes,
                   "must be a list of set sizes, each an integer >= 2")
        used = sum(self.correlated) + sum(self.anticorrelated)
        _check(used <= self.n_features, "data.correlated", list(self.correlated),
               f"correlated + anticorrelated set sizes sum to {used}, more than n_features={self.n_features}")


@dataclass(frozen=True)
class ModelConfig:
    """Which toy model, and its sizes.

    * ``relu_output``  x' = ReLU(WᵀW x + b_final)          (TMS §Demonstrating Superposition)
    * ``linear``       x' = WᵀW x + b_final
    * ``relu_hidden``  x' = ReLU(Wᵀ ReLU(W x) + b_final)   (TMS §Privileged Basis)
    * ``abs_computation`` y' = ReLU(W_out ReLU(W x) + b_final), untied (§Computation in Superposition)
    """

    kind: Literal["relu_output", "linear", "relu_hidden", "abs_computation"] = "relu_output"
    d_hidden: int = 2
    init: Literal["xavier_normal", "notebook"] = "xavier_normal"

    def __post_init__(self):
        _check_choice("model.kind", self.kind, MODEL_KINDS)
        _check_int("model.d_hidden", self.d_hidden, 1, 100_000)
        _check_choice("model.init", self.init, INITS)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. Defaults are the TMS notebook's: AdamW, lr 1e-3 constant, weight decay 0.01,
    batch 1024 (in :class:`DataConfig`), 10 000 steps. ``optimizer`` is one of :data:`OPTIMIZERS`;
    ``momentum`` is the heavy-ball coefficient of ``momentum`` (unused by the others); ``weight_decay``
    is used by ``adamw`` and ``novograd``.

    ``penalty`` adds a geometric regulariser of :mod:`toymodels.penalties` to the pretraining loss,
    L = mean_{b,i} I_i (x_i − x'_i)² + λ P(W), with λ = ``penalty_strength``: a scalar, or a 1-D list of
    one λ per instance (a λ sweep in one compiled run). ``targeted_cos`` penalises cos(target, harmful)²
    and needs a ``[features]`` section: the target is ``finetune.target``, or without ``[finetune]`` the
    first named feature not tagged harmful. With every λ = 0 the penalty is not compiled in, so the run
    is bit-identical to ``penalty = "none"``.
    """

    steps: int = 10_000
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: Literal["adamw", "adam", "sgd", "momentum", "novograd"] = "adamw"
    momentum: float = 0.9
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    chunk_size: int = 500
    log_every: int = 100
    restarts: int = 1
    eval_batch_size: int = 8192
    penalty: Literal["none", "gram_offdiag", "gram_offdiag_dual", "soft_orthogonality", "decov",
                     "targeted_cos"] = "none"
    penalty_strength: Any = 0.0

    def __post_init__(self):
        object.__setattr__(self, "penalty_strength", _freeze(self.penalty_strength))
        _check_int("train.steps", self.steps, 0, 10_000_000)
        _check_float("train.lr", self.lr, 0.0, 10.0, lo_open=True)
        _check_float("train.weight_decay", self.weight_decay, 0.0, 10.0)
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_float("train.momentum", self.momentum, 0.0, 1.0, hi_open=True)
        _check_choice("train.schedule", self.schedule, SCHEDULES)
        _check_int("train.chunk_size", self.chunk_size, 1, 1_000_000)
        _check_int("train.log_every", self.log_every, 1, 1_000_000)
        _check_int("train.restarts", self.restarts, 1, 1000)
        _check_int("train.eval_batch_size", self.eval_batch_size, 1, 10_000_000)
        _check_choice("train.penalty", self.penalty, TRAIN_PENALTIES)
        lam = _array_spec("train.penalty_strength", self.penalty_strength, 0.0, 1e6, lo_open=False)
        _check(lam.ndim <= 1, "train.penalty_strength", self.penalty_strength,
               "must be a number or a 1-D list (one λ per instance)")
        _check(self.penalty != "none" or not (lam > 0).any(), "train.penalty_strength", self.penalty_strength,
               f"is the weight of train.penalty, which is 'none'; set train.penalty to one of "
               f"{', '.join(TRAIN_PENALTIES[1:])}")

    def penalty_active(self) -> bool:
        """Whether the pretraining loss has a penalty term: a penalty with some λ > 0."""
        return self.penalty != "none" and bool((np.asarray(self.penalty_strength, np.float64) > 0).any())


@dataclass(frozen=True)
class FeaturesConfig:
    """Named features and their planted geometry (``toymodels.features``).

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
            object.__setattr__(self, f, _freeze(getattr(self, f)))
        for f in ("angles", "cosines"):  # TOML has no null: an empty list unsets (features.angles=[])
            if getattr(self, f) == ():
                object.__setattr__(self, f, None)
        ok = (isinstance(self.names, tuple) and len(self.names) >= 1
              and all(isinstance(x, str) and x != "" for x in self.names) and len(set(self.names)) == len(self.names))
        _check(ok, "features.names", _listy(self.names), "must be a non-empty list of distinct non-empty strings")
        ok = isinstance(self.harmful, tuple) and all(x in self.names for x in self.harmful)
        _check(ok, "features.harmful", _listy(self.harmful),
               f"must be a list of names from features.names ({', '.join(self.names)})")
        _check(len(set(self.harmful)) == len(self.harmful), "features.harmful", _listy(self.harmful),
               "must not repeat a name")
        _check_choice("features.geometry", self.geometry, GEOMETRIES)
        if self.geometry == "free":
            _check(self.angles is None and self.cosines is None, "features.geometry", self.geometry,
                   "'free' learns the geometry; set geometry='planted' or 'pinned' to use angles or cosines")
        else:
            _check((self.angles is None) != (self.cosines is None), "features.angles", _listy(self.angles),
                   f"geometry='{self.geometry}' needs exactly one of features.angles (2-D, degrees) "
                   f"or features.cosines (a cosine matrix)")
        _array_spec("features.norms", self.norms, 0.0, 1e3, lo_open=True)
        _check_choice("features.basis", self.basis, BASES)
        _check(self.basis == "axes" or self.geometry != "free", "features.basis", self.basis,
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
    """

    name: str = "narrow"
    data: Literal["narrow", "task", "full"] = "narrow"
    loss_scope: Literal["target", "all"] = "target"
    target: str = ""
    defence: str = "none"
    strength: float = 0.0

    def __post_init__(self):
        _check(isinstance(self.name, str) and self.name != "" and "/" not in self.name, "finetune.regimes.name",
               self.name, "must be a non-empty string without '/'")
        _check_choice("finetune.regimes.data", self.data, FT_DATA)
        _check_choice("finetune.regimes.loss_scope", self.loss_scope, FT_SCOPES)
        _check(isinstance(self.target, str), "finetune.regimes.target", self.target, "must be a feature name")
        _check_choice("finetune.regimes.defence", self.defence, FT_DEFENCES)
        if self.defence in FT_FRACTION_DEFENCES:
            _check_float("finetune.regimes.strength", self.strength, 0.0, 1.0)
        else:
            _check_float("finetune.regimes.strength", self.strength, 0.0, 1e6)


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
        _check(isinstance(self.name, str) and self.name != "" and "/" not in self.name and "|" not in self.name,
               "finetune.optimizers.name", self.name, "must be a non-empty string without '/' or '|'")
        _check_choice("finetune.optimizers.optimizer", self.optimizer, OPTIMIZERS)
        _check_float("finetune.optimizers.lr", self.lr, 0.0, 10.0, lo_open=True)
        _check_float("finetune.optimizers.weight_decay", self.weight_decay, 0.0, 10.0)
        _check(self.weight_decay == 0 or self.optimizer in DECAYING_OPTIMIZERS, "finetune.optimizers.weight_decay",
               self.weight_decay, f"is used only by {', '.join(DECAYING_OPTIMIZERS)}; {self.optimizer!r} ignores it, "
                                  f"so it must be 0")
        _check_float("finetune.optimizers.momentum", self.momentum, 0.0, 1.0, hi_open=True)


@dataclass(frozen=True)
class FineTuneConfig:
    """Fine-tune every pretrained instance under each of ``regimes`` (``toymodels.finetune``).

    Objective, per fine-tuning instance, with x from the regime's data and x' the model's output:

    * ``amplify``:    L = mean_{batch,i} w_i (s_i x_i − x'_i)²,  s_target = ``gamma``, s_other = 1;
    * ``importance``: L = mean_{batch,i} w_i (x_i − x'_i)²,      w_target ×= ``importance_factor``;

    where w is the pretraining importance, zeroed outside the target when ``loss_scope='target'``.
    ``target_probability`` is P(target active) during fine-tuning (None: its pretraining probability).
    ``trainable``: ``all``; ``W``; ``b_final``; ``target_column`` (W[:, target] only); ``lora`` (a
    rank-``lora_rank`` adapter ΔW = (A B)ᵀ on a frozen W, as flax's ``nnx.LoRA``).
    ``tau`` is the threshold of the toxic output rate P(x'_j > tau | x_j = 0).
    ``from_run``: fine-tune the ``weights.npz`` of that finished run instead of pretraining.
    ``weight_decay`` defaults to 0 so that untouched weights stay exactly where pretraining left them.
    ``overhead_repeats`` > 0 also times every regime's fine-tuning step against the undefended one
    (:func:`toymodels.defences.measure_overhead`, median of that many interleaved repeats of one chunk)
    and adds the capability metrics of :mod:`toymodels.defences` to the summary.

    Axes of robustness (``toymodels.finetune``), all instances of the same compiled sweep:

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
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adamw", "adam", "sgd", "momentum", "novograd"] = "adam"
    momentum: float = 0.9
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    batch_size: int = 1024
    chunk_size: int = 50
    log_every: int = 50
    tau: float = 0.1
    eval_batch_size: int = 8192
    save_trajectory: bool = True
    from_run: str = ""
    overhead_repeats: int = 0
    optimizers: tuple[OptimizerConfig, ...] = ()
    orientations: int = 1
    stop_gain: float | None = None
    matched_gains: tuple[float, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "regimes", _freeze(self.regimes))
        object.__setattr__(self, "optimizers", _freeze(self.optimizers))
        object.__setattr__(self, "matched_gains", _freeze(self.matched_gains))
        _check(isinstance(self.target, str) and self.target != "", "finetune.target", self.target,
               "must be a feature name")
        _check_choice("finetune.objective", self.objective, FT_OBJECTIVES)
        _check_float("finetune.gamma", self.gamma, -1e3, 1e3)
        _check_float("finetune.importance_factor", self.importance_factor, 0.0, 1e6)
        ok = (isinstance(self.regimes, tuple) and len(self.regimes) >= 1
              and all(isinstance(r, RegimeConfig) for r in self.regimes))
        _check(ok, "finetune.regimes", _listy(self.regimes), "must be a non-empty list of regime tables")
        names = [r.name for r in self.regimes]
        _check(len(set(names)) == len(names), "finetune.regimes", names, "regime names must be distinct")
        if self.target_probability is not None:
            _check_float("finetune.target_probability", self.target_probability, 0.0, 1.0, lo_open=True)
        _check_choice("finetune.trainable", self.trainable, FT_TRAINABLE)
        _check_int("finetune.lora_rank", self.lora_rank, 1, 100_000)
        _check_int("finetune.steps", self.steps, 0, 10_000_000)
        _check_float("finetune.lr", self.lr, 0.0, 10.0, lo_open=True)
        _check_float("finetune.weight_decay", self.weight_decay, 0.0, 10.0)
        _check_choice("finetune.optimizer", self.optimizer, OPTIMIZERS)
        _check_float("finetune.momentum", self.momentum, 0.0, 1.0, hi_open=True)
        _check_choice("finetune.schedule", self.schedule, SCHEDULES)
        _check_int("finetune.batch_size", self.batch_size, 1, 1_000_000)
        _check_int("finetune.chunk_size", self.chunk_size, 1, 1_000_000)
        _check_int("finetune.log_every", self.log_every, 1, 1_000_000)
        _check_float("finetune.tau", self.tau, -1e6, 1e6)
        _check_int("finetune.eval_batch_size", self.eval_batch_size, 1, 10_000_000)
        _check(isinstance(self.save_trajectory, bool), "finetune.save_trajectory", self.save_trajectory,
               "must be true or false")
        _check(isinstance(self.from_run, str), "finetune.from_run", self.from_run, "must be a run directory path")
        _check_int("finetune.overhead_repeats", self.overhead_repeats, 0, 10_000)
        ok = isinstance(self.optimizers, tuple) and all(isinstance(o, OptimizerConfig) for o in self.optimizers)
        _check(ok, "finetune.optimizers", _listy(self.optimizers), "must be a list of optimiser tables")
        names = [o.name for o in self.optimizers]
        _check(len(set(names)) == len(names), "finetune.optimizers", names, "optimiser names must be distinct")
        _check_int("finetune.orientations", self.orientations, 1, 10_000)
        if self.stop_gain is not None:
            _check_float("finetune.stop_gain", self.stop_gain, 0.0, 1e6, lo_open=True)
        ok = isinstance(self.matched_gains, tuple) and all(_is_number(g) and math.isfinite(g) and g > 0
                                                           for g in self.matched_gains)
        _check(ok, "finetune.matched_gains", _listy(self.matched_gains), "must be a list of positive numbers")

    def optimizer_list(self) -> tuple[OptimizerConfig, ...]:
        """The optimiser axis: ``optimizers``, or the single optimiser of the scalar fields."""
        if self.optimizers:
            return self.optimizers
        return (OptimizerConfig(name=self.optimizer, optimizer=self.optimizer, lr=self.lr,
                                weight_decay=self.weight_decay if self.optimizer in DECAYING_OPTIMIZERS else 0.0,
                                momentum=self.momentum),)


def _listy(v: Any) -> Any:
    """A JSON-able rendering of a spec for error messages."""
    if isinstance(v, tuple):
        return [_listy(x) for x in v]
    if is_dataclass(v):
        return dataclasses.asdict(v)
    return v


def feature_names(features: FeaturesConfig | None, n_features: int) -> list[str]:
    """Names of all features: the named ones first, then ``f<i>`` for the rest."""
    named = list(features.names) if features is not None else []
    return named + [f"f{i}" for i in range(len(named), n_features)]


@dataclass(frozen=True)
class Config:
    """A whole run. ``n_inst`` is the number of *settings*; each trains ``train.restarts`` times
    and the lowest-loss restart is kept."""

    name: str = "custom"
    seed: int = 0
    n_inst: int = 10
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Optional sections of the fine-tuning lab: named features / planted geometry, and fine-tuning.
    features: FeaturesConfig | None = None
    finetune: FineTuneConfig | None = None
    plots: tuple[str, ...] = ()
    notes: str = ""
    # Free-form, JSON-able metadata for plots (axis values of a grid, labels...). Not used by training.
    meta: Any = None

    def __post_init__(self):
        object.__setattr__(self, "plots", _freeze(self.plots))
        _check(isinstance(self.name, str) and self.name != "" and "/" not in self.name, "name", self.name,
               "must be a non-empty string without '/'")
        _check_int("seed", self.seed, 0, 2**31 - 1)
        _check_int("n_inst", self.n_inst, 1, 1_000_000)
        p = _array_spec("data.feature_probability", self.data.feature_probability, 0.0, 1.0, True)
        imp = _array_spec("data.importance", self.data.importance, 0.0, 1e6, False)
        n, k = self.data.n_features, self.n_inst
        _check(p.ndim != 1 or p.shape[0] == k, "data.feature_probability", self.data.feature_probability,
               f"a 1-D list gives one probability per instance, so needs n_inst={k} entries")
        _check(imp.ndim != 1 or imp.shape[0] == n, "data.importance", self.data.importance,
               f"a 1-D list gives one importance per feature, so needs n_features={n} entries")
        for nm, a, v in (("data.feature_probability", p, self.data.feature_probability),
                         ("data.importance", imp, self.data.importance)):
            _check(a.ndim != 2 or a.shape == (k, n), nm, v, f"a 2-D list must have shape (n_inst, n_features)=({k}, {n})")
        pp = self.feature_probability()
        start = 0  # a set shares one activity draw at its first feature, so its members need one p
        for kind in ("correlated", "anticorrelated"):
            for s in getattr(self.data, kind):
                block = pp[:, start:start + s]
                _check(bool(np.all(block == block[:, :1])), "data.feature_probability", self.data.feature_probability,
                       f"features {start}..{start + s - 1} form a {kind} set, so they need equal probabilities")
                start += s
        start = sum(self.data.correlated)  # anticorrelated sets follow the correlated ones
        for s in self.data.anticorrelated:
            worst = float(pp[:, start].max()) * s
            _check(worst <= 1.0 + 1e-9, "data.anticorrelated", list(self.data.anticorrelated),
                   f"a set of size {s} needs size*feature_probability <= 1, got {worst:.3g}")
            start += s
        lam = np.asarray(self.train.penalty_strength, np.float64)
        _check(lam.ndim == 0 or lam.shape[0] == k, "train.penalty_strength", self.train.penalty_strength,
               f"a 1-D list gives one λ per instance, so needs n_inst={k} entries")
        if self.train.penalty == "targeted_cos":
            f = self.features
            _check(f is not None and len(f.harmful) > 0 and self.penalty_target() is not None, "train.penalty",
                   self.train.penalty, "targeted_cos needs a [features] section with a harmful feature and a "
                                       "target (finetune.target, or a named feature not tagged harmful)")
        if self.model.kind == "abs_computation":
            _check(self.data.task == "abs", "data.task", self.data.task,
                   "model.kind='abs_computation' computes |x|, so data.task must be 'abs'")
        if self.features is not None:
            self._check_features()
        if self.finetune is not None:
            self._check_finetune()

    def _check_features(self) -> None:
        f, n, k, m = self.features, self.data.n_features, self.n_inst, self.model.d_hidden
        _check(len(f.names) <= n, "features.names", list(f.names),
               f"names {len(f.names)} features but data.n_features={n}")
        clash = set(f.names) & set(feature_names(None, n)[len(f.names):])
        _check(not clash, "features.names", list(f.names), f"{min(clash or {'?'})!r} is the automatic "
                                                           f"name of another feature")
        if f.geometry == "free":
            return
        from . import features as tfeatures  # numpy only at validation time

        tfeatures.planted_directions(f, m, k)  # raises ConfigError if the spec cannot be realised
        norms = np.asarray(f.norms, np.float64)
        ok = norms.ndim == 0 or norms.shape in ((len(f.names),), (k, len(f.names)))
        _check(ok, "features.norms", _listy(f.norms),
               f"must be a scalar, one norm per named feature ({len(f.names)}), or shape (n_inst, {len(f.names)})")

    def _check_finetune(self) -> None:
        ft = self.finetune
        if ft.from_run and self.features is None:
            return  # checked again once merged with the source run's config (experiment.resolve_from_run)
        _check(self.features is not None and len(self.features.harmful) > 0, "finetune", "[finetune]",
               "needs a [features] section that names the target and tags at least one feature as harmful")
        names = feature_names(self.features, self.data.n_features)
        for where, t in [("finetune.target", ft.target)] + [("finetune.regimes.target", r.target)
                                                               for r in ft.regimes if r.target]:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            _check(t in names, where, t, f"must be a feature name ({shown})")
            _check(t not in self.features.harmful, where, t, "the fine-tuning target must not be tagged harmful")
        if ft.trainable == "lora":
            _check(self.model.kind in ("relu_output", "linear", "relu_hidden"), "finetune.trainable", ft.trainable,
                   "lora adapts the tied W of relu_output, linear and relu_hidden models")
            top = min(self.model.d_hidden, self.data.n_features)
            _check(ft.lora_rank <= top, "finetune.lora_rank", ft.lora_rank,
                   f"must be <= min(d_hidden, n_features) = {top}")
        if ft.orientations > 1:
            _check(self.model.kind in ("relu_output", "linear"), "finetune.orientations", ft.orientations,
                   f"rotating the hidden space leaves only relu_output and linear models unchanged; "
                   f"model.kind={self.model.kind!r} has a privileged hidden basis")
        for r in ft.regimes:  # these act on the full W and b_final, which LoRA freezes
            _check(not (ft.trainable == "lora" and r.defence in ("freeze_harmful", "grad_projection")),
                   "finetune.regimes.defence", r.defence, "acts on W itself; not available with trainable='lora'")

    def feature_names(self) -> list[str]:
        """All feature names: ``features.names`` first, then ``f<i>``."""
        return feature_names(self.features, self.data.n_features)

    def penalty_target(self) -> int | None:
        """Index of the target of the ``targeted_cos`` pretraining penalty: ``finetune.target``, else the
        first named feature not tagged harmful; None when there is none."""
        if self.features is None:
            return None
        if self.finetune is not None and self.finetune.target in self.feature_names():
            return self.feature_names().index(self.finetune.target)
        return next((i for i, nm in enumerate(self.features.names) if nm not in self.features.harmful), None)

    # --- resolved per-instance arrays ---------------------------------------------------------
    def feature_probability(self) -> np.ndarray:
        """(n_inst, n_features) float32 array of P(feature active)."""
        a = np.asarray(self.data.feature_probability, np.float64)
        if a.ndim == 1:
            a = a[:, None]
        return np.broadcast_to(a, (self.n_inst, self.data.n_features)).astype(np.float32)

    def importance(self) -> np.ndarray:
        """(n_inst, n_features) float32 array of per-feature loss weights."""
        a = np.asarray(self.data.importance, np.float64)
        return np.broadcast_to(a, (self.n_inst, self.data.n_features)).astype(np.float32)

    # --- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        return _build(cls, d, prefix="")

    def replace(self, **overrides: Any) -> Config:
        """Return a copy with dotted-key overrides applied, e.g. ``replace(**{"train.steps": 100})``."""
        d = self.to_dict()
        for key, value in overrides.items():
            head, section = key.split(".")[0], _optional_section(Config, key.split(".")[0])
            if "." in key and section is not None and d.get(head) is None:
                d[head] = _to_jsonable(dataclasses.asdict(section()))  # absent optional section: its defaults
            set_dotted(d, key, value)
        return Config.from_dict(d)


def _to_jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def set_dotted(d: dict, key: str, value: Any) -> None:
    """Set ``d["a"]["b"] = value`` for ``key == "a.b"``; unknown keys raise ConfigError."""
    parts = key.split(".")
    node = d
    for i, p in enumerate(parts):
        if not isinstance(node, dict) or p not in node:
            where = ".".join(parts[:i]) or "the config"
            allowed = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(key, value, f"unknown field in {where}; known fields: {', '.join(allowed)}")
        if i == len(parts) - 1:
            node[p] = value
        else:
            node = node[p]


def _build(cls, d: Any, prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(prefix.rstrip(".") or "config", d, "must be a table of fields")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        k = sorted(unknown)[0]
        raise ConfigError(prefix + k, d[k], f"unknown field; known fields: {', '.join(sorted(names))}")
    kwargs = {}
    for k, v in d.items():
        t = hints[k]
        sub = _optional_section(cls, k)
        if is_dataclass(t) or (sub is not None and v is not None):
            kwargs[k] = _build(sub or t, v, prefix + k + ".")
            continue
        item = _tuple_of_dataclass(t)
        if item is not None and isinstance(v, (list, tuple)):
            kwargs[k] = tuple(x if isinstance(x, item) else _build(item, x, f"{prefix}{k}.") for x in v)
            continue
        kwargs[k] = _coerce(prefix + k, t, v)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise


def _optional_section(cls, name: str):
    """The dataclass ``X`` of a field annotated ``X | None`` (an optional config section), else None."""
    t = get_type_hints(cls).get(name)
    args = [a for a in get_args(t) if a is not type(None)]
    if type(None) in get_args(t) and len(args) == 1 and is_dataclass(args[0]):
        return args[0]
    return None


def _tuple_of_dataclass(t: Any):
    """``X`` for a field annotated ``tuple[X, ...]`` with X a dataclass, else None."""
    args = get_args(t)
    if get_origin(t) is tuple and args and is_dataclass(args[0]):
        return args[0]
    return None


def _coerce(name: str, t: Any, v: Any) -> Any:
    """Light type coercion for values from TOML / the command line (ints given for floats, etc.)."""
    if (t is float or (float in get_args(t) and type(None) in get_args(t))) and _is_number(v):
        return float(v)
    if t is str or get_origin(t) is Literal:
        if not isinstance(v, str):
            choices = get_args(t)
            raise ConfigError(name, v, f"must be a string{' (one of ' + ', '.join(choices) + ')' if choices else ''}")
    if get_origin(t) is tuple and isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


def load_toml(path: str | Path) -> Config:
    """Load a config from a TOML file. Missing fields take their defaults."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            d = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), "<file>", f"is not valid TOML: {e}") from None
    return Config.from_dict(d)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line. The value is read as a TOML value when it parses
    (``3``, ``1e-3``, ``[0.1, 0.2]``, ``"x"``, ``true``), otherwise kept as a bare string."""
    if "=" not in text:
        raise ConfigError(text, text, "overrides are written key=value, e.g. train.steps=200")
    key, raw = text.split("=", 1)
    key = key.strip().removeprefix("--")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value
