"""The training engine: one pure step, vmapped over instances, scanned over steps, run in chunks.

Per instance the step is

    x ~ data(key_t);   L(θ) = mean_{batch, i} I_i (target(x)_i − f_θ(x)_i)²       (TMS §Demonstrating Superposition)
    θ ← θ + optax_update(∇L)

The notebook sums the instances' losses before backprop; since instances share no parameters that
gives the same gradients as training each alone, which is what ``vmap`` does here.

``chunk(state, t0)`` runs ``chunk_size`` steps under ``lax.scan`` for every instance at once and is
jitted once for the whole sweep. Python only loops over chunks: that is where progress bars,
``metrics.jsonl`` rows, NaN checks and checkpoints go.

Pretraining (:mod:`.pretrain`), fine-tuning (:mod:`toymodels.lab`) and the defences use this same
:func:`fit` with another ``objective``, optimiser mask or ``stop`` hook; there is no second loop.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import faults
from ..errors import TrainingDiverged
from . import data as tdata
from . import sharding

__all__ = ["GROUP_ELEMENTS", "Objective", "Stop", "TrainState", "TrainingDiverged", "fit", "init_state", "make_chunk",
           "model_loss", "weighted_mse"]

Objective = Callable[[Any, jax.Array, Any], jax.Array]


# --- losses and optimisers ---------------------------------------------------------------------
def weighted_mse(out: jax.Array, tgt: jax.Array, importance: jax.Array) -> jax.Array:
    """mean_{batch, i} I_i (tgt_i − out_i)²; out, tgt (batch, n); importance (n,)."""
    return jnp.mean(importance * (tgt - out) ** 2)


def model_loss(model, x, task: str, weight, scale=None) -> jax.Array:
    """mean_{batch, i} w_i (s_i target(x)_i − f(x)_i)² for one instance: x (batch, n), w and s (n,)
    (s = 1 when ``scale`` is None). Pretraining and fine-tuning both call this.

    When the model has ``forward_t`` (all of :mod:`toymodels.core.models` do) the loss is computed
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


# Instances are trained in groups whose largest per-step array holds about this many numbers (2 MB
# of float32), so that a step's intermediates stay in cache; see make_chunk and benchmarks/README.md.
GROUP_ELEMENTS = 1 << 19


def make_chunk(objective: Objective, tx: optax.GradientTransformation, chunk_size: int, stop: Stop | None = None,
               mesh=None):
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

    With a ``mesh`` (:func:`.sharding.instance_mesh`, several devices) the chunk runs under
    ``jax.shard_map``: every device runs this same program on its slice of the instances (grouped by
    its own slice's size); every instance-axis argument must then be a multiple of the mesh size long.
    Without one (one device) the program is exactly the unsharded one.
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

    if mesh is None:
        return jax.jit(chunk)
    spec = sharding.PartitionSpec(sharding.AXIS)
    in_specs = (spec, spec, spec, spec, sharding.PartitionSpec()) + ((spec,) if stop is not None else ())
    return jax.jit(jax.shard_map(chunk, mesh=mesh, in_specs=in_specs, out_specs=spec, check_vma=False))


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

    With several devices (or processes) the instances are split over all of them
    (:mod:`.sharding`); ``on_chunk`` and the caller still see the whole state, on one device.
    """
    if stop is not None and state.stopped_at is None:
        state = TrainState(state.params, state.opt_state, state.keys, state.step,
                           jnp.full(state.keys.shape[:1], -1, jnp.int32))
    mesh = sharding.instance_mesh()
    n_inst = state.keys.shape[0]
    if mesh is not None:
        state, inst = _distribute(state, inst, mesh)
    chunk_size = max(1, min(chunk_size, steps)) if steps else 1
    n_chunks = math.ceil(steps / chunk_size) if steps else 0
    runners: dict[int, Callable] = {}
    bar = None
    if progress and n_chunks > 1:
        desc = progress if isinstance(progress, str) else "train"
        bar = _progress_bar(desc, steps, state.step)
    t_start = time.perf_counter()
    try:
        done = 0
        while done < steps:
            n = min(chunk_size, steps - done)
            if n not in runners:  # at most two compiles: the chunk size and the remainder
                faults.point("compile")
                runners[n] = make_chunk(objective, tx, n, stop, mesh)
            t0 = state.step
            extra = () if stop is None else (state.stopped_at,)
            out = runners[n](state.params, state.opt_state, state.keys, inst, jnp.asarray(t0, jnp.int32), *extra)
            params, opt_state, losses = out[:3]
            stopped_at = out[3] if stop is not None else None
            losses = np.asarray(losses if mesh is None else sharding.gather(losses))[:n_inst]
            bad = ~np.isfinite(losses)
            _log_rows(losses, t0, log_every, on_log, t_start, stop_at=bad)
            if bad.any():
                inst_i, step_i = np.argwhere(bad)[np.argmin(np.argwhere(bad)[:, 1])]
                raise TrainingDiverged(int(t0 + step_i), int(inst_i), float(losses[inst_i, step_i]))
            state = TrainState(params, opt_state, state.keys, t0 + n, stopped_at)
            done += n
            if on_chunk is not None:
                on_chunk(state if mesh is None else _collect(state, n_inst))
            if bar is not None:
                bar.update(n)
                bar.set_postfix(loss=f"{losses[:, -1].mean():.4g}")
    finally:
        if bar is not None:
            bar.close()
    return state if mesh is None else _collect(state, n_inst)


def _distribute(state: TrainState, inst, mesh) -> tuple[TrainState, Any]:
    """The state and per-instance data padded to a multiple of the mesh size and split over it."""
    n = state.keys.shape[0]
    total = sharding.padded_size(n, mesh)
    put = lambda tree: sharding.shard(sharding.pad(tree, n, total), mesh)
    stopped = None if state.stopped_at is None else put(state.stopped_at)
    return TrainState(put(state.params), put(state.opt_state), put(state.keys), state.step, stopped), put(inst)


def _collect(state: TrainState, n: int) -> TrainState:
    """The inverse of :func:`_distribute`: the first ``n`` instances, whole, on one device."""
    whole = lambda tree: sharding.unpad(sharding.gather(tree), n)
    stopped = None if state.stopped_at is None else whole(state.stopped_at)
    return TrainState(whole(state.params), whole(state.opt_state), whole(state.keys), state.step, stopped)


def _progress_bar(desc: str, steps: int, start: int):
    """A tqdm bar on a terminal; elsewhere (a log file, a pipe, CI) plain progress lines."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=steps, desc=desc, unit="step", delay=2.0, leave=False, dynamic_ncols=True)
    return TextProgress(desc, steps, start)


class TextProgress:
    """Progress for logs: one plain line on stderr every ``every_pct`` percent or ``every_s`` seconds,
    whichever comes first, with step, rate, ETA and the loss: no terminal control characters."""

    def __init__(self, desc: str, steps: int, start: int = 0, every_pct: float = 5.0, every_s: float = 10.0,
                 stream=None):
        self.desc, self.steps, self.start, self.done = desc, steps, start, 0
        self.every, self.every_s, self.stream = max(1, int(steps * every_pct / 100)), every_s, stream or sys.stderr
        self.t0 = self.t_last = time.perf_counter()
        self.last_done = 0
        self.loss = ""

    def set_postfix(self, loss: str = "") -> None:
        self.loss = loss
        self._maybe_print()

    def update(self, n: int) -> None:
        self.done += n

    def _maybe_print(self) -> None:
        now = time.perf_counter()
        if self.done - self.last_done < self.every and now - self.t_last < self.every_s and self.done < self.steps:
            return
        rate = self.done / max(now - self.t0, 1e-9)
        eta = (self.steps - self.done) / max(rate, 1e-9)
        step = self.start + self.done
        print(f"{self.desc}: step {step}/{self.start + self.steps} ({100 * self.done / self.steps:.0f}%), "
              f"{rate:.0f} steps/s, ETA {eta:.0f} s, loss {self.loss}", file=self.stream, flush=True)
        self.t_last, self.last_done = now, self.done

    def close(self) -> None:
        return None


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
