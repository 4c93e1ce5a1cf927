"""Risk scores from the fine-tune's own objective, data and optimiser, computed before it takes a step.

Every fine-tune k is rebuilt exactly as the lab runs it (:func:`toymodels.lab.finetune.prepare`: its
regime's data, loss scope, target, trainable mask, orientation and optimiser, with its own data stream),
and no step of it is taken. With θ0 its pretrained parameters, L its loss, h the harmful feature, t the
target and r(θ) = P(x'_h > τ | x_h = 0) the harmful output rate on a fixed batch of the pretraining
distribution (:func:`harmful_rate`):

    ḡ = (1/B) Σ_{b<B} ∇_θ L(θ0; batch_b)          the mean gradient over the fine-tune's first B batches
    U_K = Σ_{s<K} u_s,  (u_s, S_{s+1}) = tx.update(ḡ, S_s, θ0)
                                                  the optimiser's first K updates with the gradient frozen
                                                  at θ0 (linearised dynamics; Adam's are ≈ −η sign ḡ)
    α* = min{α on a log grid : R_t(θ0 + α U_K) ≥ γ R_t(θ0)}
                                                  how far along U_K the target read-out R_t(e_t) reaches
                                                  the fine-tune's goal, the gain γ (``finetune.gamma``)

and the scores (:data:`SCORES`; "before": none takes a fine-tuning step):

* ``grad_preact`` = −⟨∂pre_h/∂θ, ḡ⟩: the first-order change of the harmful pre-activation on the unit
  target input per unit SGD step, Δpre_h ≈ −η ⟨∂pre_h/∂θ, ∇L⟩;
* ``linear_rate`` = r(θ0 + U_K) − r(θ0) [pp]: the optimiser's first K steps, linearised;
* ``extrap_rate`` = r(θ̂) − r(θ0) [pp], θ̂ = θ0 + α* U_K: the linearised direction followed until the
  target's gain is γ; ``extrap_rel`` = (r(θ̂) − r(θ0)) / max(r(θ0), r_floor): the same, relative to the
  model's own baseline;
* ``segments_rate`` = r(θ_M) − r(θ0) [pp]: the linearised prediction continued for M segments, each from
  the gradient at the previous prediction (a coarse simulation of the fine-tune that takes none of its
  steps): θ_{m+1} = θ_m + α_m U_K(θ_m), U_K(θ_m) the optimiser's first K updates (fresh state) on ḡ(θ_m)
  over the fine-tune's batches mB … (m+1)B − 1, and α_m the grid value (0 included) that minimises the
  fine-tuning loss on two of them. Its cost: M·B gradients and M·2·|grid| loss evaluations, stated
  as step-equivalents (a loss evaluation counted as 1/3 of a step) against finetune.steps;
* ``lookahead_rate`` (optional, "during": it trains) = r(θ_L) − r(θ0) after L real fine-tuning steps on a
  copy (the engine's :func:`~toymodels.core.engine.fit`, the fine-tune's own first L batches); its cost
  is L / finetune.steps of the fine-tune.

The auditor's version (no ground truth) is :func:`toymodels.audit.risk.sae_monitor` applied to θ̂.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..config import Config
from ..core import data as tdata
from ..core.engine import fit
from ..lab.finetune import Prepared, prepare
from ..lab.probe import preactivation
from ..lab.trainable import full_state

PREDICT_SEED_OFFSET = 400   # fold_in(seed key, ·) of the prediction's rate batch (not the probe's)
GRAD_BATCHES = 16           # B: batches of the fine-tune's own stream averaged into ḡ
LINEAR_STEPS = 10           # K: optimiser steps of the linearised dynamics
LOOKAHEAD_STEPS = 20        # L: real steps of the lookahead
SEGMENTS = 6                # M: segments of segments_rate
SEGMENT_ALPHAS = np.concatenate([[0.0], np.geomspace(0.1, 1000.0, 31)])  # its line-search grid
SEGMENT_LOSS_BATCHES = 2    # batches of the line search
RATE_SAMPLES = 1 << 15      # samples of the prediction's rate batch (2^15: ±0.06 pp at a 1% rate)
ALPHAS = np.geomspace(1e-1, 1e4, 256)  # the α grid (4.6% apart)
REL_FLOOR = 0.01            # r_floor of extrap_rel: baselines below 1% count as 1%

# name -> (uses, score_kind, what)
SCORES = {
    "grad_preact": ("behaviour", "before", "−⟨∂pre_h/∂θ, ḡ⟩: first-order Δ of the harmful pre-activation per unit "
                                           "SGD step, ḡ the fine-tune's step-0 gradient (its own data, loss, mask)"),
    "linear_rate": ("behaviour", "before", f"Δ harmful rate [pp] after the optimiser's first {LINEAR_STEPS} updates "
                                           f"with the gradient frozen at θ0"),
    "extrap_rate": ("behaviour", "before", "Δ harmful rate [pp] along the linearised update, extrapolated until the "
                                           "target's gain reaches γ"),
    "extrap_rel": ("behaviour", "before", "extrap_rate relative to the model's baseline rate (floor 1%)"),
    "segments_rate": ("behaviour", "before", f"Δ harmful rate [pp] after {SEGMENTS} line-searched linearised segments "
                                             f"(a coarse surrogate of the fine-tune, on its own loss and batches, at ~11% of its "
                                             f"compute; no real fine-tuning step)"),
    "lookahead_rate": ("behaviour", "during", f"Δ harmful rate [pp] after {LOOKAHEAD_STEPS} real fine-tuning steps "
                                              f"on a copy"),
}


# --- pure pieces (one instance; the callers vmap) ------------------------------------------------------
def mean_gradient(objective, params, key, inst, n_batches: int, first=0):
    """ḡ = (1/B) Σ_{b<B} ∇L(θ; fold_in(key, first + b)): the fine-tune's batches first … first + B − 1 (its
    own stream: step t draws fold_in(key, t)), no step taken."""
    grads = jax.vmap(lambda t: jax.grad(objective)(params, jax.random.fold_in(key, t), inst))(
        first + jnp.arange(n_batches))
    return jax.tree.map(lambda g: g.mean(0), grads)


def frozen_updates(tx, params, opt_state, grad, steps: int):
    """U_K = Σ_{s<K} u_s with (u_s, S_{s+1}) = tx.update(ḡ, S_s, θ0): the optimiser's first K updates
    (its masks, moments and bias corrections) with the gradient frozen at θ0."""
    def step(carry, _):
        total, s = carry
        u, s = tx.update(grad, s, params)
        return (jax.tree.map(jnp.add, total, u), s), None

    (total, _), _ = jax.lax.scan(step, (jax.tree.map(jnp.zeros_like, params), opt_state), None, length=steps)
    return total


def _dot(a, b) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _shift(params, delta, alpha):
    return jax.tree.map(lambda p, d: p + jnp.asarray(alpha, p.dtype) * d, params, delta)


# --- the scores of every fine-tune of a config ----------------------------------------------------------
def harmful_rate(graphdef, trainable: str, h: int, tau: float, sample, key):
    """``rate(params, inst, p) -> ()``: r(θ) = P(x'_h > τ | x_h = 0) on the fixed batch ``sample(key, p)``."""
    def rate(params, inst, p):
        x = sample(key, p)
        out = nnx.merge(graphdef, full_state(params, inst, trainable))(x)
        absent = x[:, h] == 0
        return jnp.sum((out[:, h] > tau) & absent) / jnp.maximum(jnp.sum(absent), 1)

    return rate


def scores(cfg: Config, graphdef, pre_params, lookahead: bool = True) -> dict | None:
    """Per fine-tune of ``cfg`` (in the plan's order), the scores of the module docstring (``lookahead``:
    also ``lookahead_rate``), the predicted endpoint's W (``W_hat``, (n_ft, d, n), in each fine-tune's own
    hidden frame, beside ``W0``), seconds and cost. None when a regime uses a defence (its hooks change the objective; those fine-tunes are baselines)."""
    if any(r.defence != "none" for r in cfg.finetune.regimes):
        return None
    t0 = time.perf_counter()
    prep = prepare(cfg, graphdef, pre_params)
    rate = _rate_fn(cfg, graphdef, prep)
    out = _linearised(cfg, graphdef, prep, rate)
    out["seconds"] = {"before": round(time.perf_counter() - t0, 3)}
    t1 = time.perf_counter()
    out["segments_rate"] = _segments(prep, rate, out["_rate0"])
    out["seconds"]["segments"] = round(time.perf_counter() - t1, 3)
    if lookahead:
        t1 = time.perf_counter()
        out["lookahead_rate"] = _lookahead(prep, rate, out["_rate0"])
        out["seconds"]["lookahead"] = round(time.perf_counter() - t1, 3)
    ahead = LOOKAHEAD_STEPS if lookahead else 0
    out["cost"] = {"gradient_batches": GRAD_BATCHES, "linear_steps": LINEAR_STEPS, "lookahead_steps": ahead,
                   "lookahead_fraction_of_steps": ahead / cfg.finetune.steps,
                   "segments": SEGMENTS, "segments_step_equivalents": SEGMENT_COST,
                   "segments_fraction_of_steps": SEGMENT_COST / cfg.finetune.steps,
                   "finetune_steps": cfg.finetune.steps, "rate_samples": RATE_SAMPLES}
    del out["_rate0"]
    return out


def _rate_fn(cfg: Config, graphdef, prep: Prepared):
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=RATE_SAMPLES))
    key = jax.random.fold_in(jax.random.key(cfg.seed), PREDICT_SEED_OFFSET)
    rate = harmful_rate(graphdef, cfg.finetune.trainable, int(prep.plan.harmful[0]), cfg.finetune.tau, sample, key)
    p_eval = jnp.asarray(cfg.feature_probability()[prep.plan.pretrain_index])
    # a few instances at a time: the rate batch is (2^15, n) per instance
    return jax.jit(lambda params, inst: jax.lax.map(lambda a: rate(*a), (params, inst, p_eval), batch_size=8))


def _linearised(cfg: Config, graphdef, prep: Prepared, rate) -> dict:
    ft, st, inst = cfg.finetune, prep.state, prep.inst
    tr, h = ft.trainable, int(prep.plan.harmful[0])

    def model(p, i):
        return nnx.merge(graphdef, full_state(p, i, tr))

    def pre_h(p, i):
        return preactivation(model(p, i), i["target"][None, :])[0, h]

    def readout(p, i):
        return (model(p, i)(i["target"][None, :])[0] * i["target"]).sum()

    def one(p, key, i, s):
        g = mean_gradient(prep.objective, p, key, i, GRAD_BATCHES)
        U = frozen_updates(prep.tx, p, s, g, LINEAR_STEPS)
        r0 = readout(p, i)
        gains = jax.vmap(lambda a: readout(_shift(p, U, a), i))(jnp.asarray(ALPHAS, jnp.float32)) / r0
        hit = gains >= ft.gamma
        a_star = jnp.asarray(ALPHAS, jnp.float32)[jnp.where(hit.any(), jnp.argmax(hit), len(ALPHAS) - 1)]
        return {"grad_preact": -_dot(jax.grad(pre_h)(p, i), g), "U": U, "alpha": a_star, "reached": hit.any()}

    lin = jax.jit(jax.vmap(one))(st.params, st.keys, inst, st.opt_state)
    r0 = np.asarray(rate(st.params, inst), np.float64)
    r_lin = np.asarray(rate(_shift(st.params, lin["U"], 1.0), inst), np.float64)
    alpha = lin["alpha"]
    hat = jax.tree.map(lambda p, d: p + alpha.reshape((-1,) + (1,) * (p.ndim - 1)) * d, st.params, lin["U"])
    r_hat = np.asarray(rate(hat, inst), np.float64)
    W_of = jax.vmap(lambda p, i: full_state(p, i, tr)["W"][...])
    W_hat, W0 = W_of(hat, inst), W_of(st.params, inst)
    return {"grad_preact": np.asarray(lin["grad_preact"], np.float64),
            "linear_rate": 100.0 * (r_lin - r0), "extrap_rate": 100.0 * (r_hat - r0),
            "extrap_rel": (r_hat - r0) / np.maximum(r0, REL_FLOOR), "alpha": np.asarray(alpha, np.float64),
            "reached_gain": np.asarray(lin["reached"]), "rate_before": r0, "W_hat": np.asarray(W_hat, np.float64),
            "W0": np.asarray(W0, np.float64),
            "_rate0": r0}


SEGMENT_COST = SEGMENTS * (GRAD_BATCHES + SEGMENT_LOSS_BATCHES * len(SEGMENT_ALPHAS) / 3)


def _segments(prep: Prepared, rate, r0: np.ndarray) -> np.ndarray:
    """r(θ_M) − r(θ0) [pp] of ``segments_rate`` (module docstring) for every fine-tune."""
    alphas = jnp.asarray(SEGMENT_ALPHAS, jnp.float32)

    def segment(p, key, i, s0, m):
        g = mean_gradient(prep.objective, p, key, i, GRAD_BATCHES, first=m * GRAD_BATCHES)
        U = frozen_updates(prep.tx, p, s0, g, LINEAR_STEPS)
        keys = [jax.random.fold_in(key, m * GRAD_BATCHES + b) for b in range(SEGMENT_LOSS_BATCHES)]
        loss = lambda a: sum(prep.objective(_shift(p, U, a), k, i) for k in keys)
        return _shift(p, U, alphas[jnp.argmin(jax.lax.map(loss, alphas))])

    step = jax.jit(jax.vmap(segment, in_axes=(0, 0, 0, 0, None)))
    st, p = prep.state, prep.state.params
    for m in range(SEGMENTS):
        p = step(p, st.keys, prep.inst, st.opt_state, m)
    return 100.0 * (np.asarray(rate(p, prep.inst), np.float64) - r0)


def _lookahead(prep: Prepared, rate, r0: np.ndarray) -> np.ndarray:
    """r(θ_L) − r(θ0) [pp] after L real steps of every fine-tune on a copy of its state (engine.fit)."""
    st = prep.state
    copy = jax.tree.map(jnp.copy, (st.params, st.opt_state, st.keys))
    state = dataclasses.replace(st, params=copy[0], opt_state=copy[1], keys=copy[2], step=0)
    state = fit(state, prep.objective, prep.tx, prep.inst, LOOKAHEAD_STEPS, chunk_size=LOOKAHEAD_STEPS,
                log_every=LOOKAHEAD_STEPS, progress=False)
    r = np.asarray(rate(state.params, prep.inst), np.float64)
    return 100.0 * (r - r0)
