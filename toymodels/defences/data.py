"""The defences that change the loss or the data of the fine-tuning step: loss terms (from
:mod:`toymodels.core.penalties`), replay and the filters, as one objective for ONE instance, and their
per-instance arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..config import Config
from ..core import data as tdata
from ..core.engine import Objective, weighted_mse
from ..core.penalties import output_anchor, penalty, unit_columns
from ..lab.objective import finetune_inputs
from ..lab.trainable import full_state, harmful_mask
from .registry import Spec, _regime_of

PRE_BATCH_SALT = 7_001      # fold_in(step key, ·): the pretraining-distribution batch of replay / anchor
FILTER_SALT = 7_002         # fold_in(step key, ·): the random control filter's priorities


def instance_arrays(cfg: Config, plan, base, sp: Spec) -> dict:
    """Per fine-tuning instance arrays for ``inst`` (leading axis n_ft): ``lam`` {loss: (n_ft,)},
    ``harmful_mask`` (n,), and for the mechanisms in use ``pre_probability``/``pre_importance`` (n,),
    ``anchor_base`` (the pretrained state), ``replay_fraction``, ``filter_mode`` (0 off, 1 geometric,
    2 random), ``filter_fraction`` and ``filter_W`` (the pretrained W), ``filter_dirs`` (unit harmful
    directions of the pretrained W, (d_hidden, h))."""
    regs = _regime_of(plan)
    n_ft, n = plan.n_ft, cfg.data.n_features
    f32 = lambda a: jnp.asarray(np.asarray(a, np.float32))
    strength = lambda kind: f32([r.strength if r.defence == kind else 0.0 for r in regs])
    harm = harmful_mask(n, plan.harmful)
    out: dict[str, Any] = {"lam": {k: strength(k) for k in sp.losses},
                           "harmful_mask": f32(np.broadcast_to(harm, (n_ft, n)))}
    if sp.pre_batch:
        out["pre_probability"] = f32(cfg.feature_probability()[plan.pretrain_index])
        out["pre_importance"] = f32(cfg.importance()[plan.pretrain_index])
    if "anchor" in sp.losses:
        out["anchor_base"] = base
    if sp.replay:
        out["replay_fraction"] = strength("replay")
    if sp.filter:
        mode = {"filter_geometric": 1, "filter_random": 2}
        out["filter_mode"] = jnp.asarray([mode.get(r.defence, 0) for r in regs], jnp.int32)
        out["filter_fraction"] = f32([r.strength if r.defence in mode else 0.0 for r in regs])
        W0 = base["W"][...]
        out["filter_W"] = W0
        out["filter_dirs"] = jax.vmap(unit_columns)(W0[:, :, jnp.asarray(plan.harmful)])
    return out


# --- data transforms ------------------------------------------------------------------------------
def harmful_scores(h, dirs):
    """max_j cos(h_b, d_j) over the harmful unit directions ``dirs`` (d_hidden, H): (B,). An empty
    sample (h_b = 0) gets −2, below every cosine, so it is never the "closest" one."""
    norm = jnp.sqrt(jnp.sum(h**2, axis=1))
    cos = (h @ dirs) / jnp.where(norm > 0, norm, 1.0)[:, None]
    return jnp.where(norm > 0, jnp.max(cos, axis=1), -2.0)


def filter_keep(h, dirs, fraction, mode, key):
    """Which samples a filter keeps, for one batch. Returns (keep (B,) float 0/1, n_dropped).

    The pool is the non-empty samples (h_b ≠ 0; an empty sample carries no feature to filter), m of
    them; the filter drops k = round(fraction · m):

    * mode 1 (geometric): the k samples with the highest :func:`harmful_scores` (ties by index);
    * mode 2 (random): k non-empty samples chosen uniformly at random (priorities from ``key``);
    * mode 0: none.

    Both filters drop the same number from the same pool, so the random one is the control."""
    score = harmful_scores(h, dirs)
    nonempty = score > -1.5
    k = jnp.round(fraction * jnp.sum(nonempty))
    priority = jnp.where(nonempty, jax.random.uniform(key, score.shape), -2.0)
    rank_by = jnp.where(mode == 1, score, priority)
    order = jnp.argsort(-rank_by, stable=True)                  # most-to-drop first
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
    drop = (rank < k) & nonempty & (mode > 0)
    return 1.0 - drop.astype(h.dtype), jnp.sum(drop)


def replay_rows(batch_size: int, fraction):
    """(B, 1) bool: the first round(fraction · B) rows of a batch are replayed pretraining data."""
    return (jnp.arange(batch_size) < jnp.round(fraction * batch_size))[:, None]


# --- the defended objective -------------------------------------------------------------------------
def objective(undefended: Objective, graphdef, sample: Callable, task: str, trainable: str, sp: Spec) -> Objective:
    """The fine-tuning objective of :func:`toymodels.lab.objective.finetune_objective` with the defences of
    ``sp``, for ONE instance:

        L = Σ_b keep_b Σ_i w_bi (tgt_bi − x'_bi)² / (n Σ_b keep_b)   +   Σ_k λ_k P_k

    where rows of the batch are fine-tuning data (w = the regime's loss weights, tgt = s ⊙ x) or, for
    replay, pretraining data (w = importance, tgt = x); keep_b is 1 unless a filter drops sample b;
    P_k are the penalties with per-instance weights λ_k. Without replay or a filter in ``sp`` the first
    term *is* the undefended objective (called, not copied), so loss terms only ever add to it; and a
    loss term with λ = 0 everywhere is not in ``sp`` at all."""
    def fn(params, key, inst):
        x = finetune_inputs(sample, key, inst)
        if sp.pre_batch:
            x_pre = sample(jax.random.fold_in(key, PRE_BATCH_SALT), inst["pre_probability"])
        model = nnx.merge(graphdef, full_state(params, inst, trainable))
        if sp.replay or sp.filter:
            tgt = tdata.target(x, task) * inst["out_scale"]
            w = inst["loss_weight"]
            if sp.replay:
                rows = replay_rows(x.shape[0], inst["replay_fraction"])
                x = jnp.where(rows, x_pre, x)
                tgt = jnp.where(rows, tdata.target(x_pre, task), tgt)
                w = jnp.where(rows, inst["pre_importance"], w)
            out = model(x)
            if sp.filter:
                keep, _ = filter_keep(x @ inst["filter_W"].T, inst["filter_dirs"], inst["filter_fraction"],
                                      inst["filter_mode"], jax.random.fold_in(key, FILTER_SALT))
                kept = jnp.maximum(jnp.sum(keep), 1.0)
                loss = jnp.mean(w * (tgt - out) ** 2 * keep[:, None]) * (x.shape[0] / kept)
            else:
                loss = weighted_mse(out, tgt, w)
        else:
            loss = undefended(params, key, inst)
        for kind in sp.losses:
            if kind == "anchor":
                out0 = nnx.merge(graphdef, inst["anchor_base"])(x_pre)
                pen = output_anchor(model(x_pre), out0, inst["pre_importance"])
            else:
                pen = penalty(kind, model, x, inst)
            loss = loss + inst["lam"][kind] * pen
        return loss

    return fn
