"""What a defence costs: capability before and after fine-tuning, and the measured step-time overhead."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..config import Config
from ..core import data as tdata
from ..core import geometry
from ..core.engine import make_chunk, weighted_mse
from ..lab.finetune import prepare
from ..lab.trainable import harmful_mask

EVAL_SEED_OFFSET = 300      # fold_in(seed key, ·): the capability evaluation batch


# --- capability and compute cost ----------------------------------------------------------------------
def capability(graphdef, cfg: Config, plan, states, *, pretrain_index=None, target=None) -> dict[str, np.ndarray]:
    """Capability numbers of full model states (leading instance axis), on one fixed pretraining-
    distribution batch (``finetune.eval_batch_size``, key fold_in(seed, EVAL_SEED_OFFSET), the same for
    every instance); instance k is pretrained model ``pretrain_index[k]`` fine-tuned on ``target[k]``
    (default: the plan's):

    * ``recon_loss``: the pretraining loss mean_{b,i} I_i (x_i − x'_i)²;
    * ``recon_loss_other``: the same with the target's term left out (fine-tuning changes the
      target's output on purpose; this is the cost to everything else), split into
      ``recon_loss_benign`` (neither target nor harmful) and ``recon_loss_harmful`` (the harmful
      features' terms);
    * ``harmful_present_loss``: E[I_j (x_j − x'_j)² | x_j ≠ 0] over harmful j — how well the harmful
      feature is still reconstructed when it *is* present. A defence that deletes the harmful feature
      scores a perfect toxic rate and pays here (``recon_loss_harmful`` mixes this with the spurious
      firing that the toxic rate already counts);
    * ``n_represented`` (‖W_i‖ > 0.5), ``dims_per_feature`` D* = d_hidden/‖W‖_F², ``mean_cos2``."""
    pretrain_index = plan.pretrain_index if pretrain_index is None else pretrain_index
    target = plan.target if target is None else target
    harm = jnp.asarray(harmful_mask(cfg.data.n_features, plan.harmful))
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=cfg.finetune.eval_batch_size))
    key = jax.random.fold_in(jax.random.key(cfg.seed), EVAL_SEED_OFFSET)
    p = jnp.asarray(cfg.feature_probability()[pretrain_index])
    imp = jnp.asarray(cfg.importance()[pretrain_index])
    onehot = jnp.asarray(np.eye(cfg.data.n_features, dtype=np.float32)[target])

    def one(state, p, imp, t):
        x = sample(key, p)
        out = nnx.merge(graphdef, state)(x)
        tgt = tdata.target(x, cfg.data.task)
        W = state["W"][...]
        U = geometry.unit_directions(W)
        nz = jnp.sum(U**2, axis=0) > 0.5
        C2 = ((U.T @ U) ** 2) * (nz[:, None] & nz[None, :] & ~jnp.eye(W.shape[1], dtype=bool))
        pairs = jnp.maximum(jnp.sum(nz) * (jnp.sum(nz) - 1), 1)
        return {"recon_loss": weighted_mse(out, tgt, imp),
                "recon_loss_other": weighted_mse(out, tgt, imp * (1.0 - t)),
                "recon_loss_benign": weighted_mse(out, tgt, imp * (1.0 - t) * (1.0 - harm)),
                "recon_loss_harmful": weighted_mse(out, tgt, imp * harm),
                "harmful_present_loss": jnp.sum(imp * harm * (x != 0) * (tgt - out) ** 2)
                / jnp.maximum(jnp.sum(harm * (x != 0)), 1.0),
                "n_represented": geometry.n_represented(W),
                "dims_per_feature": geometry.dimensions_per_feature(W),
                "mean_cos2": jnp.sum(C2) / pairs}

    res = jax.jit(jax.vmap(one))(states, p, imp, onehot)
    return {k: np.asarray(v) for k, v in res.items()}


def _variant(cfg: Config, regime, trainable: str) -> Config:
    ft = dataclasses.replace(cfg.finetune, regimes=(regime,), trainable=trainable, overhead_repeats=0)
    return dataclasses.replace(cfg, finetune=ft)


def measure_overhead(cfg: Config, graphdef, pre_params, repeats: int, hooks_for: Callable, steps: int | None = None) -> dict:
    """Wall-time cost of every regime's fine-tuning step against the undefended step, in this process.

    For each regime r, two programs are built with :func:`toymodels.lab.finetune.prepare` (with
    ``hooks_for(config)``) and :func:`toymodels.core.engine.make_chunk` (the engine's own chunk: ``cfg.n_inst`` instances × ``steps``
    steps): the *variant* (all instances under r, the run's ``trainable``) and the *reference* (same
    data and loss scope, defence ``none``, ``trainable="all"``). Each is compiled and run once
    untimed; then ``repeats`` interleaved pairs are timed (block_until_ready), alternating which of
    the two goes first. Reports the median of the per-pair ratios variant/reference, the median of the
    per-pair differences (ms a step the defence adds), and every pair's milliseconds per step. The
    machine is shared, so pairs, not totals, are compared."""
    steps = steps or cfg.finetune.chunk_size
    t0 = jnp.asarray(0, jnp.int32)

    def timer(c: Config):
        prep = prepare(c, graphdef, pre_params, hooks_for(c))
        chunk = make_chunk(prep.objective, prep.tx, steps)
        args = (prep.state.params, prep.state.opt_state, prep.state.keys, prep.inst, t0)
        jax.block_until_ready(chunk(*args))  # compile and first run: excluded

        def once() -> float:
            t = time.perf_counter()
            jax.block_until_ready(chunk(*args))
            return time.perf_counter() - t

        return once

    refs: dict[tuple, Callable] = {}
    out = {}
    for r in cfg.finetune.regimes:
        ref_regime = dataclasses.replace(r, name="reference", defence="none", strength=0.0)
        key = (r.data, r.loss_scope, r.target)
        if key not in refs:
            refs[key] = timer(_variant(cfg, ref_regime, "all"))
        same = r.defence == "none" and cfg.finetune.trainable == "all"
        var = timer(_variant(cfg, r, cfg.finetune.trainable)) if not same else timer(_variant(cfg, ref_regime, "all"))
        t_ref, t_var = [], []
        for i in range(repeats):
            pair = (refs[key], var) if i % 2 == 0 else (var, refs[key])
            a, b = pair[0](), pair[1]()
            t_ref.append(a if i % 2 == 0 else b)
            t_var.append(b if i % 2 == 0 else a)
        ratios = [v / f for v, f in zip(t_var, t_ref)]
        out[r.name] = {"ratio_median": statistics.median(ratios), "ratios": ratios,
                       "step_ms_median": 1e3 * statistics.median(t_var) / steps,
                       "reference_step_ms_median": 1e3 * statistics.median(t_ref) / steps,
                       # per pair: what the defence adds to a step, in ms (the machine's load cancels)
                       "extra_ms_median": 1e3 * statistics.median([v - f for v, f in zip(t_var, t_ref)]) / steps,
                       "step_ms": [1e3 * v / steps for v in t_var], "reference_step_ms": [1e3 * f / steps for f in t_ref],
                       "repeats": repeats, "steps_per_repeat": steps, "n_instances": cfg.n_inst,
                       "trainable": cfg.finetune.trainable}
    return out


def evaluate(cfg: Config, graphdef, pre_params, result, hooks_for: Callable) -> dict:
    """The defence metrics of a finished fine-tuning: capability before/after per instance and, with
    ``finetune.overhead_repeats`` > 0, :func:`measure_overhead`. Stored on the FineTuneResult as its
    ``evaluation``."""
    plan, n = result.plan, result.plan.n_ft
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), result.pretrained, result.finetuned)  # one compile
    cap = capability(graphdef, cfg, plan, both, pretrain_index=np.tile(plan.pretrain_index, 2),
                     target=np.tile(plan.target, 2))
    out = {"capability_before": {k: v[:n] for k, v in cap.items()},
           "capability_after": {k: v[n:] for k, v in cap.items()}}
    if cfg.finetune.overhead_repeats > 0:
        out["overhead"] = measure_overhead(cfg, graphdef, pre_params, cfg.finetune.overhead_repeats, hooks_for)
    return out
