"""The training engine: one pure step, vmapped over instances, scanned over steps, run in chunks.

Per instance the step is

    x ~ data(key_t);   L(θ) = mean_{batch, i} I_i (target(x)_i − f_θ(x)_i)²       (TMS §Demonstrating Superposition)
    θ ← θ + optax_update(∇L)

The notebook sums the instances' losses before backprop; since instances share no parameters that
gives the same gradients as training each alone, which is what ``vmap`` does here.

``chunk(state, t0)`` runs ``chunk_size`` steps under ``lax.scan`` for every instance at once and is
jitted once for the whole sweep. Python only loops over chunks: that is where progress bars,
``metrics.jsonl`` rows, NaN checks and checkpoints go.

Fine-tuning (``toymodels.finetune``) uses the same :func:`fit` with another ``objective`` and a
masked optimizer; there is no second loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import data as tdata
from . import penalties

Objective = Callable[[Any, jax.Array, Any], jax.Array]
"""``objective(params, key, inst) -> scalar loss`` for ONE instance; ``inst`` is that instance's slice
of the per-instance data (feature probability, importance, ...)."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf. ``step`` and ``instance`` name the first bad one (``instance`` is the
    engine's flat index); ``where`` says what that instance is, e.g. "setting 3, restart 1"."""

    def __init__(self, step: int, instance: int, value: float, where: str = "", hint: str = "train.lr"):
        self.step, self.instance, self.value, self.where, self.hint = step, instance, value, where, hint
        super().__init__(f"loss became {value} at step {step} in instance {instance}"
                         f"{f' ({where})' if where else ''}; stopped (metrics written so far are kept). "
                         f"Try a smaller {hint}.")

    def located(self, where: str, hint: str | None = None) -> TrainingDiverged:
        """The same error, saying what the instance is."""
        return TrainingDiverged(self.step, self.instance, self.value, where, hint or self.hint)


# --- losses and optimisers ---------------------------------------------------------------------
def weighted_mse(out: jax.Array, tgt: jax.Array, importance: jax.Array) -> jax.Array:
    """mean_{batch, i} I_i (tgt_i − out_i)²; out, tgt (batch, n); importance (n,)."""
    return jnp.mean(importance * (tgt - out) ** 2)


def model_loss(model, x, task: str, weight, scale=None) -> jax.Array:
    """mean_{batch, i} w_i (s_i target(x)_i − f(x)_i)² for one instance: x (batch, n), w and s (n,)
    (s = 1 when ``scale`` is None). Pretraining and fine-tuning both call this.

    When the model has ``forward_t`` (all of :mod:`toymodels.models` do) the loss is computed
    feature-major, on xᵀ (n_features, batch): the batch is then the contiguous axis that XLA
    vectorises, which made the step 4-7× faster on CPU (``benchmarks/README.md``). The value is
    the same mean either way. ``optimization_barrier`` makes XLA materialise x once: without it, it
    fuses the hash generator into each of x's consumers and recomputes every random number there.
    """
    forward_t = getattr(model, "forward_t", None)
    if forward_t is None:
        tgt = tdata.target(x, task)
        return weighted_mse(model(x), tgt if scale is None else tgt * scale, weight)
    xt = jax.lax.optimization_barrier(x.T)
    tgt = tdata.target(xt, task)
    return weighted_mse(forward_t(xt), tgt if scale is None else tgt * scale[:, None], weight[:, None])


def reconstruction_objective(graphdef, sample, task: str, penalty: str = "none") -> Objective:
    """The TMS pretraining objective for one instance; ``inst`` has ``feature_probability`` and
    ``importance``, both (n_features,).

    With a ``penalty`` of :mod:`toymodels.penalties` (``train.penalty``) it is

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


def schedule(kind: str, lr: float, steps: int) -> optax.Schedule:
    """constant; linear from lr to 0; cosine from lr to 0 (optax's cosine decay)."""
    if kind == "constant":
        return optax.constant_schedule(lr)
    if kind == "linear":
        return optax.linear_schedule(lr, 0.0, max(steps, 1))
    if kind == "cosine":
        return optax.cosine_decay_schedule(lr, max(steps, 1))
    raise ValueError(f"train.schedule={kind!r}: must be constant, linear or cosine")


def optimizer(train_cfg, steps: int | None = None, schedule_kind: str | None = None) -> optax.GradientTransformation:
    """The optimiser named by ``train_cfg.optimizer`` (a TrainConfig, FineTuneConfig or OptimizerConfig),
    with ``lr`` under the schedule ``schedule_kind`` (default ``train_cfg.schedule``) over ``steps``.

    * ``sgd``:       θ ← θ − η g                                         (rotation-equivariant)
    * ``momentum``:  m ← g + μ m;  θ ← θ − η m     (optax.sgd(momentum=μ); rotation-equivariant)
    * ``adam``:      per-coordinate m/√v                                (NOT rotation-equivariant)
    * ``adamw``:     adam + decoupled weight decay; pass it explicitly: optax's default is 1e-4,
                     the notebook's (torch AdamW) 0.01
    * ``novograd``:  m ← β₁ m + g/√(v) + λθ with ONE second moment v ← β₂ v + (1−β₂)‖g‖² per parameter
                     tensor (optax.novograd): adaptive, yet it commutes with a rotation of the hidden
                     space (‖O g‖ = ‖g‖), which separates "adaptive" from "per-coordinate".
    """
    kind = train_cfg.optimizer
    lr = schedule(schedule_kind or train_cfg.schedule, train_cfg.lr, steps if steps is not None else train_cfg.steps)
    if kind == "adamw":
        return optax.adamw(lr, weight_decay=train_cfg.weight_decay)
    if kind == "adam":
        return optax.adam(lr)
    if kind == "sgd":
        return optax.sgd(lr)
    if kind == "momentum":
        return optax.sgd(lr, momentum=train_cfg.momentum)
    if kind == "novograd":
        return optax.novograd(lr, weight_decay=train_cfg.weight_decay)
    raise ValueError(f"optimizer={kind!r}: must be adamw, adam, sgd, momentum or novograd")


# --- the engine ----------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Everything that changes during training; every leaf has a leading instance axis."""

    params: Any
    opt_state: Any
    keys: jax.Array  # (n_inst,) PRNG keys; the step-t data key is fold_in(keys[i], t)
    step: int = 0
    # (n_inst,) int32: the step at which each instance stopped (fit's ``stop`` hook), −1 while it runs;
    # None when training has no stop hook.
    stopped_at: Any = None


def init_state(params, tx: optax.GradientTransformation, keys: jax.Array) -> TrainState:
    return TrainState(params=params, opt_state=jax.vmap(tx.init)(params), keys=keys)


Stop = Callable[[Any, Any], jax.Array]
"""``stop(params, inst) -> bool`` for ONE instance: True once that instance has reached its goal. It is
evaluated on the parameters *before* each step; from the first step where it holds, the instance's
parameters and optimiser state are frozen (the step's update is discarded), and that step is recorded
in ``TrainState.stopped_at``. Early stopping at a target gain (:mod:`toymodels.finetune`) is this hook."""


# Instances are trained in groups whose largest per-step array holds about this many numbers (2 MB
# of float32), so that a step's intermediates stay in cache; see make_chunk and benchmarks/README.md.
GROUP_ELEMENTS = 1 << 19


def make_chunk(objective: Objective, tx: optax.GradientTransformation, chunk_size: int, stop: Stop | None = None):
    """Jitted ``chunk(params, opt_state, keys, inst, t0) -> (params, opt_state, losses)``, losses
    (n_inst, chunk_size). One compile serves every chunk of the run. With a ``stop`` hook (:data:`Stop`)
    it is ``chunk(params, opt_state, keys, inst, t0, stopped_at) -> (params, opt_state, losses,
    stopped_at)``; without one the program is exactly the unstoppable one.

    Per instance the chunk is a ``lax.scan`` over steps, and instances are vmapped. Large sweeps run
    their instances in groups: ``lax.map`` over groups of the vmapped scan, each group doing all
    the chunk's steps before the next group starts. Instances share nothing, so the numbers are the
    same, but a step's intermediates (at the 100 × (20→5) sweep, 25 instances × 20 features × 1024
    batch) then stay in cache instead of streaming the whole sweep's arrays through memory several
    times a step: 2× faster there (``benchmarks/README.md``). A group's largest array is about
    ``GROUP_ELEMENTS`` numbers; small sweeps are one group.
    """

    def one_instance(params, opt_state, key, inst, t0):
        def step(carry, t):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(objective)(params, jax.random.fold_in(key, t), inst)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), t0 + jnp.arange(chunk_size))
        return params, opt_state, losses

    def one_stoppable(params, opt_state, key, inst, t0, stopped_at):
        def step(carry, t):
            params, opt_state, stopped_at = carry
            done = (stopped_at >= 0) | stop(params, inst)
            loss, grads = jax.value_and_grad(objective)(params, jax.random.fold_in(key, t), inst)
            updates, new_opt = tx.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            keep = lambda old, new: jax.tree.map(lambda a, b: jnp.where(done, a, b), old, new)
            stopped_at = jnp.where(done & (stopped_at < 0), t, stopped_at)
            return (keep(params, new_params), keep(opt_state, new_opt), stopped_at), loss

        (params, opt_state, stopped_at), losses = jax.lax.scan(step, (params, opt_state, stopped_at),
                                                               t0 + jnp.arange(chunk_size))
        return params, opt_state, losses, stopped_at

    one = one_instance if stop is None else one_stoppable

    def chunk(params, opt_state, keys, inst, t0, *stopped):
        n_inst = keys.shape[0]
        group = _group_size(objective, params, keys, inst, n_inst)
        if group >= n_inst:
            return jax.vmap(one, in_axes=(0, 0, 0, 0, None) + (0,) * len(stopped))(params, opt_state, keys, inst,
                                                                                     t0, *stopped)
        return jax.lax.map(lambda a: one(*a[:4], t0, *a[4:]), (params, opt_state, keys, inst, *stopped),
                           batch_size=group)

    return jax.jit(chunk)


def _group_size(objective: Objective, params, keys, inst, n_inst: int) -> int:
    """Instances per group: GROUP_ELEMENTS over the size of the largest array one instance's loss
    creates (read off its traced jaxpr), with the groups made as equal as possible."""
    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), (params, keys, inst))
    try:
        largest = _largest_array(jax.make_jaxpr(objective)(*one).jaxpr)
    except Exception:  # noqa: BLE001 - an objective that cannot be traced alone: one group, as before
        return n_inst
    widest = max(1, min(n_inst, GROUP_ELEMENTS // max(largest, 1)))
    n_groups = math.ceil(n_inst / widest)
    return math.ceil(n_inst / n_groups)  # 100 instances, widest 51 -> 2 x 50 rather than 51 + 49


def _largest_array(jaxpr) -> int:
    """Number of elements of the largest intermediate in a jaxpr, nested jaxprs included."""
    largest = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            largest = max(largest, int(np.prod(getattr(v.aval, "shape", ()), dtype=np.int64)))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    largest = max(largest, _largest_array(inner))
    return largest


def fit(
    state: TrainState,
    objective: Objective,
    tx: optax.GradientTransformation,
    inst: Any,
    steps: int,
    *,
    chunk_size: int = 500,
    log_every: int = 100,
    on_log: Callable[[dict], None] | None = None,
    on_chunk: Callable[[TrainState], None] | None = None,
    progress: bool | str = True,
    stop: Stop | None = None,
) -> TrainState:
    """Run ``steps`` optimisation steps on every instance.

    ``on_log(row)`` receives ``{"step", "loss" (per instance, mean over the last log_every steps),
    "loss_mean", "elapsed_s"}`` at chunk boundaries; ``on_chunk(state)`` runs after every chunk
    (checkpoints, probes). ``stop`` (:data:`Stop`) freezes each instance once it holds; the returned
    state's ``stopped_at`` says when. Raises :class:`TrainingDiverged` at the first non-finite loss,
    after logging the rows before it.
    """
    if stop is not None and state.stopped_at is None:
        state = TrainState(state.params, state.opt_state, state.keys, state.step,
                           jnp.full(state.keys.shape[:1], -1, jnp.int32))
    chunk_size = max(1, min(chunk_size, steps)) if steps else 1
    n_chunks = math.ceil(steps / chunk_size) if steps else 0
    runners: dict[int, Callable] = {}
    bar = None
    if progress and n_chunks > 1:
        from tqdm.auto import tqdm

        desc = progress if isinstance(progress, str) else "train"
        bar = tqdm(total=steps, desc=desc, unit="step", delay=2.0, leave=False, dynamic_ncols=True,
                   disable=None)  # None: no bar when stderr is not a terminal
    t_start = time.perf_counter()
    try:
        done = 0
        while done < steps:
            n = min(chunk_size, steps - done)
            if n not in runners:  # at most two compiles: the chunk size and the remainder
                runners[n] = make_chunk(objective, tx, n, stop)
            t0 = state.step
            extra = () if stop is None else (state.stopped_at,)
            out = runners[n](state.params, state.opt_state, state.keys, inst, jnp.asarray(t0, jnp.int32), *extra)
            params, opt_state, losses = out[:3]
            stopped_at = out[3] if stop is not None else None
            losses = np.asarray(losses)
            bad = ~np.isfinite(losses)
            _log_rows(losses, t0, log_every, on_log, t_start, stop_at=bad)
            if bad.any():
                inst_i, step_i = np.argwhere(bad)[np.argmin(np.argwhere(bad)[:, 1])]
                raise TrainingDiverged(int(t0 + step_i), int(inst_i), float(losses[inst_i, step_i]))
            state = TrainState(params, opt_state, state.keys, t0 + n, stopped_at)
            done += n
            if on_chunk is not None:
                on_chunk(state)
            if bar is not None:
                bar.update(n)
                bar.set_postfix(loss=f"{losses[:, -1].mean():.4g}")
    finally:
        if bar is not None:
            bar.close()
    return state


def _log_rows(losses: np.ndarray, t0: int, log_every: int, on_log, t_start: float, stop_at: np.ndarray):
    """Emit one row per completed ``log_every`` window inside this chunk (steps are 1-based in rows)."""
    if on_log is None:
        return
    n = losses.shape[1]
    first_bad = np.argmax(stop_at.any(0)) if stop_at.any() else n
    for end in range(1, n + 1):
        step = t0 + end
        if step % log_every and end != n:
            continue
        if end > first_bad:
            break
        window = losses[:, max(0, end - log_every):end]
        row_loss = window.mean(1)
        on_log({"step": int(step), "loss": [float(v) for v in row_loss], "loss_mean": float(row_loss.mean()),
                "elapsed_s": round(time.perf_counter() - t_start, 3)})


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


def eval_losses(graphdef, params, cfg, inst, key: jax.Array, restarts: int = 1) -> np.ndarray:
    """Per-instance reconstruction loss on an evaluation batch of ``train.eval_batch_size`` (same
    distribution; without the penalty term). Instance k belongs to setting k // ``restarts``; all
    restarts of one setting are scored on ONE shared batch, drawn from fold_in(key, setting), so they
    are compared on the same inputs (:func:`_chunked_eval`). A batch too large for one chunk is drawn
    and scored in K equal chunks (the loss is then the mean over K·⌈B/K⌉ >= B samples)."""
    obj = lambda sample: reconstruction_objective(graphdef, sample, cfg.data.task)
    return _chunked_eval(cfg, params, inst, key, restarts, obj)


def eval_penalty(graphdef, params, cfg, inst, key: jax.Array, restarts: int = 1) -> np.ndarray | None:
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


def pretrain(cfg, *, on_log=None, on_chunk=None, progress=True, init=None, tx=None):
    """Train every setting of ``cfg`` (with restarts) and keep the best restart of each.

    ``init(cfg, total, key) -> (graphdef, params)`` and ``tx`` replace the default initialisation
    (:func:`toymodels.models.init_instances`) and optimiser (:func:`optimizer`); planted and pinned
    geometry (:mod:`toymodels.features`) use them, with everything else here unchanged.

    Restarts are ranked on ONE shared evaluation batch per setting, by reconstruction + λ·P there
    (``all_eval_loss``); the kept restart's ``eval_loss`` is then measured on an independent fresh
    batch, so it is not biased low by the selection (``shared/ENGINEERING.md``).

    Returns ``(graphdef, params, info)``: params have ``cfg.n_inst`` instances; ``info`` has
    ``eval_loss`` (n_inst,, the kept restart's reconstruction loss on the fresh batch), ``restart``
    (n_inst,), ``all_eval_loss`` (n_inst, restarts; every restart on its setting's shared selection
    batch) and ``seconds``; with an active ``train.penalty`` also ``eval_penalty`` (n_inst,, P of the kept
    restart on the fresh batch) and ``penalty_strength`` (n_inst,), λ.
    """
    r = cfg.train.restarts
    total = cfg.n_inst * r
    root = jax.random.key(cfg.seed)
    k_init, k_data, k_select, k_report = (jax.random.fold_in(root, i) for i in range(4))
    if init is None:
        from .models import init_instances

        def init(cfg, total, key):
            return init_instances(cfg.model, cfg.data.n_features, total, key)

    graphdef, params = init(cfg, total, k_init)
    tx = optimizer(cfg.train) if tx is None else tx
    inst = instance_data(cfg)
    keys = jax.vmap(lambda i: jax.random.fold_in(k_data, i))(jnp.arange(total))
    state = init_state(params, tx, keys)
    objective = reconstruction_objective(graphdef, tdata.make_sampler(cfg.data), cfg.data.task, active_penalty(cfg))
    t = time.perf_counter()
    try:
        state = fit(state, objective, tx, inst, cfg.train.steps, chunk_size=cfg.train.chunk_size,
                    log_every=cfg.train.log_every, on_log=on_log, on_chunk=on_chunk,
                    progress=progress if progress is not True else cfg.name)
    except TrainingDiverged as e:  # instance s * r + k is setting s, restart k
        raise e.located(f"setting {e.instance // r}, restart {e.instance % r} of {r}") from None
    jax.block_until_ready(state.params)
    seconds = time.perf_counter() - t
    # Restarts compete on ONE shared batch per setting, on the objective they were trained on
    # (reconstruction + λ P). The kept restart's reported loss comes from an independent fresh batch:
    # the minimum over restarts on the batch they were ranked on is biased low (the luckiest batch wins).
    losses = eval_losses(graphdef, state.params, cfg, inst, k_select, restarts=r)
    pen = eval_penalty(graphdef, state.params, cfg, inst, k_select, restarts=r)
    trained_on = losses if pen is None else losses + np.asarray(inst["penalty_strength"]) * pen
    best_params, best = select_best(state.params, trained_on, cfg.n_inst, r)
    kept = instance_data(cfg, restarts=1)
    info = {
        "eval_loss": eval_losses(graphdef, best_params, cfg, kept, k_report),
        "restart": best,
        "all_eval_loss": losses.reshape(cfg.n_inst, r),
        "seconds": seconds,
    }
    if pen is not None:
        info["eval_penalty"] = eval_penalty(graphdef, best_params, cfg, kept, k_report)
        info["penalty_strength"] = np.broadcast_to(np.asarray(cfg.train.penalty_strength, np.float64), (cfg.n_inst,))
    return graphdef, best_params, info
