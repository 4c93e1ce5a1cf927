"""Pretraining: the TMS objective, restarts with best-of selection, planted and pinned features.

:func:`pretrain` is the one entry point: a config with a ``[features]`` section gets its planted
(and pinned) geometry (:mod:`.planting`), everything else plain TMS. Instance ``s * restarts + r`` of the
engine is setting s, restart r; the kept restart of each setting is returned.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..errors import TrainingDiverged
from . import data as tdata
from . import penalties, planting
from .engine import Objective, TrainState, fit, init_state, model_loss


def reconstruction_objective(graphdef, sample, task: str, penalty: str = "none") -> Objective:
    """The TMS pretraining objective for one instance; ``inst`` has ``feature_probability`` and
    ``importance``, both (n_features,).

    With a ``penalty`` of :mod:`toymodels.core.penalties` (``train.penalty``) it is

        L = mean_{b,i} I_i (x_i − x'_i)² + λ P(W)        (P on this batch's h for DeCov)

    with λ = ``inst["penalty_strength"]`` (a scalar per instance), and for ``targeted_cos`` the (n,) 0/1
    vectors ``inst["target"]`` and ``inst["harmful_mask"]`` (see :func:`instance_data`). The
    reconstruction term is :func:`model_loss` (feature-major, the fast path).
    """

    def objective(params, key, inst):
        x = sample(key, inst["feature_probability"])
        model = nnx.merge(graphdef, params)
        loss = model_loss(model, x, task, inst["importance"])
        if penalty == "none":
            return loss
        return loss + inst["penalty_strength"] * penalties.penalty(penalty, model, x, inst)

    return objective


# --- convenience: the whole pretraining of a Config ---------------------------------------------
def instance_data(cfg, restarts: int | None = None) -> dict:
    """Per-instance arrays, repeated for restarts: instance ``s * restarts + r`` is setting s, restart r.
    With an active ``train.penalty`` also ``penalty_strength`` (λ per instance) and, for
    ``targeted_cos``, ``target`` and ``harmful_mask`` ((n,) 0/1 vectors)."""
    r = cfg.train.restarts if restarts is None else restarts
    rep = lambda a: jnp.asarray(np.repeat(np.asarray(a, np.float32), r, axis=0))
    out = {"feature_probability": rep(cfg.feature_probability()), "importance": rep(cfg.importance())}
    if cfg.train.penalty_active():
        n = cfg.data.n_features
        out["penalty_strength"] = rep(np.broadcast_to(np.asarray(cfg.train.penalty_strength), (cfg.n_inst,)))
        if cfg.train.penalty == "targeted_cos":
            names = cfg.feature_names()
            harm = np.array([nm in cfg.features.harmful for nm in names], np.float32)
            out["target"] = rep(np.broadcast_to(np.eye(n, dtype=np.float32)[cfg.penalty_target()], (cfg.n_inst, n)))
            out["harmful_mask"] = rep(np.broadcast_to(harm, (cfg.n_inst, n)))
    return out


def active_penalty(cfg) -> str:
    """``train.penalty`` when it has some λ > 0, else "none" (a zero penalty is not compiled in)."""
    return cfg.train.penalty if cfg.train.penalty_active() else "none"


# Numbers in one evaluation chunk over all instances (64 MB of float32): a larger evaluation batch is
# drawn and scored in equal chunks, so ranking restarts on 2^20 samples needs no more memory than this.
EVAL_CHUNK_ELEMENTS = 1 << 24


def eval_losses(graphdef, params, cfg, inst, key: jax.Array, restarts: int | None = 1) -> np.ndarray:
    """Per-instance reconstruction loss on an evaluation batch of ``train.eval_batch_size`` (same
    distribution; without the penalty term). Instance k belongs to setting k // ``restarts``; all
    restarts of one setting are scored on ONE shared batch, drawn from fold_in(key, setting), so they
    are compared on the same inputs (:func:`_chunked_eval`). ``restarts=None``: every instance gets the
    one batch drawn from ``key`` (common random numbers across settings, for paired comparisons). A batch
    too large for one chunk is drawn and scored in K equal chunks (the loss is then the mean over
    K·⌈B/K⌉ >= B samples)."""
    obj = lambda sample: reconstruction_objective(graphdef, sample, cfg.data.task)
    return _chunked_eval(cfg, params, inst, key, restarts, obj)


def eval_penalty(graphdef, params, cfg, inst, key: jax.Array, restarts: int | None = 1) -> np.ndarray | None:
    """Per-instance value of the active ``train.penalty`` P (without λ) on the same evaluation batches as
    :func:`eval_losses`; None when the run has no active penalty."""
    kind = active_penalty(cfg)
    if kind == "none":
        return None

    def obj(sample):
        def pen(p, k, i):
            return penalties.penalty(kind, nnx.merge(graphdef, p), sample(k, i["feature_probability"]), i)

        return pen

    return _chunked_eval(cfg, params, inst, key, restarts, obj)


def _eval_chunks(cfg, n_inst: int) -> tuple[int, int]:
    """(K, c): the evaluation batch of ``train.eval_batch_size`` as K chunks of c samples each, with
    c · n_inst · n_features <= EVAL_CHUNK_ELEMENTS (K = 1, c = the batch, when it fits)."""
    B = cfg.train.eval_batch_size
    per = max(1, EVAL_CHUNK_ELEMENTS // (n_inst * cfg.data.n_features))
    if B <= per:
        return 1, B
    K = math.ceil(B / per)
    return K, math.ceil(B / K)


def _chunked_eval(cfg, params, inst, key, restarts: int, make_objective) -> np.ndarray:
    """mean over the K chunks of ``make_objective(sampler)(params, key, inst)`` per instance, chunk k
    drawn from fold_in(fold_in(key, setting), k) (chunk 0 of a one-chunk batch: fold_in(key, setting))."""
    n = jax.tree.leaves(params)[0].shape[0]
    K, c = _eval_chunks(cfg, n)
    sample = tdata.make_sampler(_with_batch(cfg.data, c))
    if restarts is None:  # one batch for every instance
        setting_keys = jax.vmap(lambda s: key)(jnp.arange(n))
    else:
        setting_keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(n) // restarts)
    fn = jax.jit(jax.vmap(make_objective(sample)))
    if K == 1:
        return np.asarray(fn(params, setting_keys, inst))
    total = np.zeros(n, np.float64)
    for k in range(K):
        keys = jax.vmap(lambda s, k=k: jax.random.fold_in(s, k))(setting_keys)
        total += np.asarray(fn(params, keys, inst), np.float64)
    return (total / K).astype(np.float32)


def _with_batch(data_cfg, batch_size):
    import dataclasses

    return dataclasses.replace(data_cfg, batch_size=batch_size)


def select_best(params, losses: np.ndarray, n_settings: int, restarts: int):
    """Keep the lowest-loss restart of each setting. Returns (params with n_settings instances,
    chosen restart index per setting)."""
    best = np.asarray(losses).reshape(n_settings, restarts).argmin(1)
    idx = np.arange(n_settings) * restarts + best
    return jax.tree.map(lambda a: a[idx], params), best


@dataclass
class Pretraining:
    """A pretraining, set up and not yet run (:func:`setup`): everything :func:`train` and :func:`finish`
    need. ``state`` is the fresh engine state; a resumed run replaces it with a saved one of the same
    structure (:mod:`toymodels.io.checkpoint`)."""

    cfg: Any
    graphdef: Any
    tx: optax.GradientTransformation
    inst: dict
    objective: Objective
    state: TrainState


def setup(cfg, *, init=None, tx=None) -> Pretraining:
    """Build the pretraining of ``cfg``: initial parameters of every setting's restarts, optimiser,
    per-instance data, objective and engine state (see :func:`pretrain`)."""
    total = cfg.n_inst * cfg.train.restarts
    root = jax.random.key(cfg.seed)
    k_init, k_data = jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)
    if init is None:
        def init(cfg, total, key):
            return planting.init_params(cfg, total, key, restarts=cfg.train.restarts)

    graphdef, params = init(cfg, total, k_init)
    tx = planting.pretraining_optimizer(cfg) if tx is None else tx
    inst = instance_data(cfg)
    keys = jax.vmap(lambda i: jax.random.fold_in(k_data, i))(jnp.arange(total))
    state = init_state(params, tx, keys)
    objective = reconstruction_objective(graphdef, tdata.make_sampler(cfg.data), cfg.data.task, active_penalty(cfg))
    return Pretraining(cfg, graphdef, tx, inst, objective, state)


def train(pre: Pretraining, state: TrainState | None = None, *, on_log=None, on_chunk=None,
          progress=True) -> TrainState:
    """Run the pretraining's remaining steps from ``state`` (default: the fresh state; a saved state at
    step s runs the steps s+1 … ``train.steps``, chunked exactly as an uninterrupted run)."""
    cfg, r = pre.cfg, pre.cfg.train.restarts
    state = pre.state if state is None else state
    try:
        state = fit(state, pre.objective, pre.tx, pre.inst, cfg.train.steps - state.step,
                    chunk_size=cfg.train.chunk_size, log_every=cfg.train.log_every, on_log=on_log, on_chunk=on_chunk,
                    progress=progress if progress is not True else cfg.name)
    except TrainingDiverged as e:  # instance s * r + k is setting s, restart k
        raise e.located(f"setting {e.instance // r}, restart {e.instance % r} of {r}") from None
    jax.block_until_ready(state.params)
    return state


def finish(pre: Pretraining, state: TrainState, seconds: float):
    """Rank the restarts and keep the best of each setting: ``(graphdef, params, info)`` as :func:`pretrain`."""
    cfg, graphdef, inst = pre.cfg, pre.graphdef, pre.inst
    r = cfg.train.restarts
    root = jax.random.key(cfg.seed)
    k_select, k_report = jax.random.fold_in(root, 2), jax.random.fold_in(root, 3)
    # Restarts compete on ONE shared batch per setting, on the objective they were trained on
    # (reconstruction + λ P). The kept restart's reported loss comes from an independent fresh batch:
    # the minimum over restarts on the batch they were ranked on is biased low (the luckiest batch wins).
    # That fresh batch is drawn from one key for every setting (common random numbers): settings with the
    # same data distribution, e.g. the λ sweep of a penalty and its λ = 0 baseline, are then compared on
    # identical inputs, so a paired difference of their losses is not batch noise.
    losses = eval_losses(graphdef, state.params, cfg, inst, k_select, restarts=r)
    pen = eval_penalty(graphdef, state.params, cfg, inst, k_select, restarts=r)
    trained_on = losses if pen is None else losses + np.asarray(inst["penalty_strength"]) * pen
    best_params, best = select_best(state.params, trained_on, cfg.n_inst, r)
    kept = instance_data(cfg, restarts=1)
    info = {
        "eval_loss": eval_losses(graphdef, best_params, cfg, kept, k_report, restarts=None),
        "restart": best,
        "all_eval_loss": losses.reshape(cfg.n_inst, r),
        "seconds": seconds,
    }
    if pen is not None:
        info["eval_penalty"] = eval_penalty(graphdef, best_params, cfg, kept, k_report, restarts=None)
        info["penalty_strength"] = np.broadcast_to(np.asarray(cfg.train.penalty_strength, np.float64), (cfg.n_inst,))
    return graphdef, best_params, info


def pretrain(cfg, *, on_log=None, on_chunk=None, progress=True, init=None, tx=None):
    """Train every setting of ``cfg`` (with restarts) and keep the best restart of each:
    :func:`setup`, :func:`train`, :func:`finish`.

    A ``[features]`` section plants (and, for ``pinned``, pins) the named features' geometry: the
    initialisation is :func:`.planting.init_params` and the optimiser :func:`.planting.pretraining_optimizer`.
    ``init(cfg, total, key) -> (graphdef, params)`` and ``tx`` replace those for experiments that need
    another start or optimiser, with everything else here unchanged.

    Restarts are ranked on ONE shared evaluation batch per setting, by reconstruction + λ·P there
    (``all_eval_loss``); the kept restart's ``eval_loss`` is then measured on an independent fresh
    batch, so it is not biased low by the selection (``shared/ENGINEERING.md``).

    Returns ``(graphdef, params, info)``: params have ``cfg.n_inst`` instances; ``info`` has
    ``eval_loss`` (n_inst,, the kept restart's reconstruction loss on the fresh batch), ``restart``
    (n_inst,), ``all_eval_loss`` (n_inst, restarts; every restart on its setting's shared selection
    batch) and ``seconds``; with an active ``train.penalty`` also ``eval_penalty`` (n_inst,, P of the kept
    restart on the fresh batch) and ``penalty_strength`` (n_inst,), λ.
    """
    pre = setup(cfg, init=init, tx=tx)
    t = time.perf_counter()
    state = train(pre, on_log=on_log, on_chunk=on_chunk, progress=progress)
    return finish(pre, state, time.perf_counter() - t)
