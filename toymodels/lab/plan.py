"""The fine-tuning plan: which instance is what, and each instance's objective as arrays.

Every pretrained instance is fine-tuned under each regime of ``cfg.finetune.regimes``, with each optimiser
of its optimiser axis, in each orientation of its hidden space; all of them are instances of ONE compiled
sweep. Per fine-tuning instance, with target t:

    x ~ regime data;  tgt_i = s_i x_i;  L = mean_{batch,i} w_i (tgt_i − x'_i)²

* data ``narrow``: only x_t is ever nonzero; ``task``: x_t and the benign features, harmful ones always
  0; ``full``: the pretraining distribution. P(x_t active) is ``target_probability`` (default: its
  pretraining probability), so the regimes differ only in what else is present.
* objective ``amplify``: s_t = γ (the target's output should be γ x_t), s_i = 1 elsewhere;
  ``importance``: s = 1 and w_t is multiplied by k.
* loss scope ``target``: w_i = 0 for i ≠ t; ``all``: w is the pretraining importance.

Vocabulary: a *setting* is one of the config's ``n_inst`` pretraining settings (a pretrained model once
the best restart is kept); an *engine instance* is a flat index of the compiled sweep; a *fine-tune* is
one (pretrained model, orientation, optimiser, regime) of the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import Config, RegimeConfig
from ..core.planting import harmful_indices, index, names
from ..directions import orientation_matrices as _orientations

PROBE_SEED_OFFSET = 200   # fold_in(seed key, ·) of the fixed evaluation batch
FT_SEED_OFFSET = 100      # fold_in(seed key, ·) of the fine-tuning data and LoRA init
ORIENTATION_SEED_OFFSET = 300  # numpy seed (cfg.seed, ·) of the orientation axis' random rotations


# --- the plan: which instance is what -------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Static description of the fine-tuning instances. Instance

        k = ((pretrain_index · n_orientations + orientation) · n_optimizers + optimizer) · n_regimes + regime

    so with one orientation and one optimiser, k = pretrain_index · n_regimes + regime."""

    n_ft: int
    pretrain_index: np.ndarray   # (n_ft,) which pretrained instance each starts from
    regime_index: np.ndarray     # (n_ft,)
    regimes: tuple[RegimeConfig, ...]
    target: np.ndarray           # (n_ft,) target feature index
    harmful: np.ndarray          # (h,) harmful feature indices (the same for every instance)
    names: tuple[str, ...]       # all feature names
    orientation_index: np.ndarray = None  # (n_ft,) 0 = axis-aligned, o >= 1 = random rotation o
    optimizer_index: np.ndarray = None    # (n_ft,) position in optimizer_names
    optimizer_names: tuple[str, ...] = ()
    n_orientations: int = 1

    def regime_name(self, k: int) -> str:
        return self.regimes[int(self.regime_index[k])].name

    def optimizer_name(self, k: int) -> str:
        return self.optimizer_names[int(self.optimizer_index[k])]

    def is_reference(self, k: int) -> bool:
        """The reference slice: axis-aligned and the first optimiser (what single-axis runs are)."""
        return int(self.orientation_index[k]) == 0 and int(self.optimizer_index[k]) == 0

    def describe(self, k: int) -> str:
        """What instance k is, in words, e.g. "pretrained instance 2 under regime 'narrow'"."""
        extra = ""
        if len(self.optimizer_names) > 1:
            extra += f" with optimiser '{self.optimizer_name(k)}'"
        if self.n_orientations > 1:
            o = int(self.orientation_index[k])
            extra += ", axis-aligned" if o == 0 else f", rotated (orientation {o})"
        return f"pretrained instance {int(self.pretrain_index[k])} under regime '{self.regime_name(k)}'{extra}"


def make_plan(cfg: Config) -> Plan:
    ft = cfg.finetune
    R, Q, O = len(ft.regimes), len(ft.optimizer_list()), ft.orientations
    grid = np.stack(np.meshgrid(np.arange(cfg.n_inst), np.arange(O), np.arange(Q), np.arange(R),
                                indexing="ij"), -1).reshape(-1, 4)
    pre, orient, opt, reg = grid.T
    targets = np.array([index(cfg, r.target or ft.target) for r in ft.regimes])
    return Plan(n_ft=len(grid), pretrain_index=pre, regime_index=reg, regimes=tuple(ft.regimes),
                target=targets[reg], harmful=np.asarray(harmful_indices(cfg), np.int32), names=tuple(names(cfg)),
                orientation_index=orient, optimizer_index=opt,
                optimizer_names=tuple(o.name for o in ft.optimizer_list()), n_orientations=O)


def regime_arrays(cfg: Config, plan: Plan) -> dict[str, np.ndarray]:
    """Per-instance (n_ft, n_features) float32 arrays of the fine-tuning objective:
    ``feature_probability``, ``present`` (1 where a feature may be active), ``out_scale`` (s),
    ``loss_weight`` (w), ``target`` (one-hot)."""
    ft, n = cfg.finetune, cfg.data.n_features
    p = cfg.feature_probability()[plan.pretrain_index].astype(np.float64)
    w = cfg.importance()[plan.pretrain_index].astype(np.float64)
    onehot = np.eye(n)[plan.target]
    harm = np.zeros(n)
    harm[plan.harmful] = 1.0
    data = np.array([plan.regimes[r].data for r in plan.regime_index])
    scope = np.array([plan.regimes[r].loss_scope for r in plan.regime_index])
    present = np.where((data == "narrow")[:, None], onehot,
                       np.where((data == "task")[:, None], 1.0 - harm[None, :], 1.0))
    if ft.target_probability is not None:
        p = np.where(onehot > 0, ft.target_probability, p)
    p = np.where(present > 0, p, 0.0)
    out_scale = np.ones_like(p)
    if ft.objective == "amplify":
        out_scale = np.where(onehot > 0, ft.gamma, 1.0)
    else:
        w = np.where(onehot > 0, w * ft.importance_factor, w)
    w = np.where((scope == "target")[:, None], w * onehot, w)
    f32 = lambda a: np.asarray(a, np.float32)
    return {"feature_probability": f32(p), "present": f32(present), "out_scale": f32(out_scale),
            "loss_weight": f32(w), "target": f32(onehot)}


def orientation_matrices(cfg: Config) -> np.ndarray:
    """The orientation axis of ``cfg.finetune``: (K, d_hidden, d_hidden), identity first, then K − 1
    Haar-random rotations from the seed (:func:`toymodels.directions.orientation_matrices`)."""
    return _orientations(cfg.finetune.orientations, cfg.model.d_hidden, seed=[cfg.seed, ORIENTATION_SEED_OFFSET])
