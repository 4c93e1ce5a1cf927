"""The amplification probe: what happens to the harmful features, measured at every chunk boundary.

It runs on a fixed evaluation batch of the *pretraining* distribution and measures, for each harmful
feature j: its pre-activation on the unit target input, its spurious output and toxic output rate
P(x'_j > τ | x_j = 0), cos(target, j), norms, the target's read-out, and the first-order prediction
⟨W0_j, ΔW_t⟩ beside the measured change.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from ..config import Config
from ..core import data as tdata
from . import metrics as amp
from .objective import read_at
from .plan import PROBE_SEED_OFFSET, Plan


# --- the probe ----------------------------------------------------------------------------------------
def preactivation(model, x):
    """The output layer's input before the final ReLU (batch, n): the model's ``preact`` when it has one
    (the families of :mod:`toymodels.core.models`), else hidden(x) @ readout + b_final, readout W for
    tied models and W_outᵀ for ``abs_computation``."""
    if hasattr(model, "preact"):
        return model.preact(x)
    readout = model.W_out[...].T if hasattr(model, "W_out") else model.W[...]
    return model.hidden(x) @ readout + model.b_final[...]


PROBE_HARMFUL = ("preact", "preact_change", "spurious", "rate", "cos", "norm", "pred_first_order",
                 "pred_along_target", "rel_error")
PROBE_SCALAR = ("target_norm", "target_readout", "overlap", "overlap_signed", "features_per_dim", "mean_cos2",
                "target_cos_drift", "alpha")


def make_probe(graphdef, cfg: Config, plan: Plan):
    """``probe(states, base_states, target, eval_p) -> {metric: (n_ft, ...)}``, jitted and vmapped.

    ``states`` are the current full parameters, ``base_states`` the pretrained ones, ``target`` (n_ft,)
    int, ``eval_p`` (n_ft, n) the pretraining feature probability. The evaluation batch is drawn from
    one fixed key, the same for every instance and every call, so curves carry no sampling noise and
    regimes are compared on identical inputs. Metrics: see ``PROBE_HARMFUL`` (each (h,)) and
    ``PROBE_SCALAR``.
    """
    harmful = jnp.asarray(plan.harmful)
    n = cfg.data.n_features
    tau = cfg.finetune.tau
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=cfg.finetune.eval_batch_size))
    key = jax.random.fold_in(jax.random.key(cfg.seed), PROBE_SEED_OFFSET)

    def one(state, state0, target, p):
        model, model0 = nnx.merge(graphdef, state), nnx.merge(graphdef, state0)
        W, W0 = state["W"][...], state0["W"][...]
        e_t = jax.nn.one_hot(target, n, dtype=W.dtype)[None, :]
        pre, pre0 = preactivation(model, e_t)[0], preactivation(model0, e_t)[0]
        x = sample(key, p)
        out = model(x)
        norms = jnp.linalg.norm(W, axis=0)
        cos = amp.cosine_matrix(W)[target]
        pred = amp.first_order_prediction(W0, W, target, harmful)
        change = (pre - pre0)[harmful]
        score, signed, _ = amp.overlap_score(W, target, harmful)
        fpd, cos2 = amp.superposition_density(W)
        d0 = W0[:, target] / jnp.maximum(jnp.linalg.norm(W0[:, target]), amp.EPS)
        return {
            "preact": pre[harmful],
            "preact_change": change,
            "spurious": amp.spurious_output(out, x, harmful),
            "rate": amp.toxic_output_rate(out, x, harmful, tau),
            "cos": cos[harmful],
            "norm": norms[harmful],
            "pred_first_order": pred,
            "pred_along_target": amp.along_target_prediction(W0, W, target, harmful),
            "rel_error": amp.relative_error(change, pred),
            "target_norm": norms[target],
            "target_readout": read_at(model, cfg.finetune.layer)(e_t)[0, target],  # where the objective reads
            "overlap": score,
            "overlap_signed": signed,
            "features_per_dim": fpd,
            "mean_cos2": cos2,
            # cos between the target's current and pretrained direction: 1 means it only grew
            "target_cos_drift": jnp.dot(W[:, target], d0) / jnp.maximum(norms[target], amp.EPS),
            # α = ⟨d0_t, ΔW_t⟩: how far the target was pushed along its own pretrained direction
            "alpha": jnp.dot(d0, W[:, target] - W0[:, target]),
        }

    return jax.jit(jax.vmap(one))
