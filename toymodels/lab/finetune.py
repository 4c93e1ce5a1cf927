"""Fine-tuning one feature and watching the harmful ones, in the pretraining engine.

All fine-tunes of a config (:mod:`.plan`) run in ONE compiled sweep of :func:`toymodels.core.engine.fit`:
the pretraining engine with another objective (:mod:`.objective`), a masked optimiser
(:mod:`.trainable`) and optionally a ``stop`` hook (:mod:`.progress`), not a second loop. The probe
(:mod:`.probe`) runs at every chunk boundary. Plug-ins change the run only through
:class:`~toymodels.lab.hooks.FineTuneHooks`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..config import Config
from ..core import data as tdata
from ..core.engine import Objective, Stop, TrainState, fit, init_state
from ..core.optim import set_optimizer_choice
from ..core.models import hidden_leaves
from ..core.planting import rotate_hidden
from ..errors import TrainingDiverged
from .hooks import NO_HOOKS, FineTuneHooks
from .objective import finetune_objective, target_readout
from .plan import FT_SEED_OFFSET, Plan, make_plan, orientation_matrices, regime_arrays
from .probe import make_probe
from . import layers as lab_layers
from . import rates as lab_rates
from .progress import gain_stop
from .trainable import column_mask, finetune_optimizer, full_state, init_lora, set_element_mask


# --- the whole fine-tuning ---------------------------------------------------------------------------
@dataclass
class FineTuneResult:
    plan: Plan
    pretrained: Any          # full nnx states, (n_ft, ...) — the start of every fine-tuning instance
    finetuned: Any           # full nnx states after fine-tuning
    probes: list[tuple[int, dict[str, np.ndarray]]]
    trajectory: dict[str, np.ndarray] | None
    seconds: float
    evaluation: dict | None = None   # the hooks' evaluate(), e.g. the defences' capability numbers
    stopped_at: np.ndarray | None = None  # (n_ft,) step at which finetune.stop_gain stopped it, −1: never
    rates: dict | None = None        # :func:`.rates.for_probes`: the reported rates, from rate_samples inputs
    layers: dict | None = None       # :func:`.layers.measure`: per-layer pre-activations and their prediction


@dataclass
class Prepared:
    """Everything :func:`toymodels.core.engine.fit` needs to fine-tune ``cfg`` (built by :func:`prepare`)."""

    plan: Plan
    arrays: dict[str, np.ndarray]
    base: Any                # pretrained full states, (n_ft, ...)
    inst: dict
    tx: optax.GradientTransformation
    state: TrainState
    objective: Objective
    stop: Stop | None = None   # fit's stop hook: early stopping at ``finetune.stop_gain``


def prepare(cfg: Config, graphdef, pre_params, hooks: FineTuneHooks = NO_HOOKS) -> Prepared:
    """The fine-tuning program's pieces: plan, per-instance data, optimiser, initial state, objective.

    A plug-in (e.g. :func:`toymodels.defences.hooks_for`) changes them through ``hooks``
    (:class:`~toymodels.lab.hooks.FineTuneHooks`); with :data:`~toymodels.lab.hooks.NO_HOOKS` nothing
    changes. A config whose regimes name defences needs the defences' hooks: running it without them
    would silently fine-tune undefended, so that is an error."""
    ft = cfg.finetune
    used = sorted({r.defence for r in ft.regimes} - {"none"})
    if used and hooks is NO_HOOKS:
        raise ValueError(f"finetune.regimes use defences ({', '.join(used)}); pass "
                         f"hooks=toymodels.defences.hooks_for(cfg) (toymodels.run does)")
    plan = make_plan(cfg)
    arrays = regime_arrays(cfg, plan)
    base = jax.tree.map(lambda a: a[jnp.asarray(plan.pretrain_index)], pre_params)
    if plan.n_orientations > 1:  # the orientation axis: the same models, hidden space rotated by O_o
        O = orientation_matrices(cfg)[plan.orientation_index]
        base = rotate_hidden(base, O, hidden_leaves(cfg.model.kind))
    root = jax.random.fold_in(jax.random.key(cfg.seed), FT_SEED_OFFSET)
    k_data, k_lora = jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)
    inst = {k: jnp.asarray(v) for k, v in arrays.items()}
    if ft.trainable == "lora":
        params = init_lora(cfg.data.n_features, cfg.model.d_hidden, ft.lora_rank, plan.n_ft, k_lora)
        inst["base"] = base
    else:
        params = jax.tree.map(jnp.copy, base)  # own buffers: ``base`` must survive if fit donates its inputs
    tx = hooks.wrap_optimizer(finetune_optimizer(ft), plan)
    inst.update(hooks.instance_arrays(plan, base))
    sets = sorted({r.dataset for r in ft.regimes} - {"stream"})
    if sets and "dataset" not in inst and "teacher" not in inst:
        raise ValueError(f"finetune.regimes use the attack's data sets ({', '.join(sets)}); pass "
                         f"hooks=toymodels.attack.hooks(cfg, toymodels.defences.hooks_for(cfg)) (toymodels.run does)")
    # With defences, every regime of one pretrained model draws the same data stream (common random
    # numbers), so a defence and its undefended baseline differ only by the defence. (With one
    # regime the two keyings coincide.) The orientations and optimisers of one (model, regime) always
    # share its stream, so they differ only by the rotation or the optimiser.
    R = len(plan.regimes)
    stream = plan.pretrain_index if hooks.shared_stream else plan.pretrain_index * R + plan.regime_index
    keys = jax.vmap(lambda i: jax.random.fold_in(k_data, i))(jnp.asarray(stream))
    state = init_state(params, tx, keys)
    if len(plan.optimizer_names) > 1:
        state.opt_state = set_optimizer_choice(state.opt_state, plan.optimizer_index)
    cmask = column_mask(params, arrays["target"]) if ft.trainable == "target_column" else None
    if cmask is not None:
        state.opt_state = set_element_mask(state.opt_state, cmask)
    state.opt_state = hooks.init_opt_state(state.opt_state, params, plan, cmask)
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=ft.batch_size))
    objective = hooks.wrap_objective(finetune_objective(graphdef, sample, cfg.data.task, ft.trainable, ft.layer),
                                     graphdef, sample)
    stop = None
    if ft.stop_gain is not None:
        readout = target_readout(graphdef, ft.trainable, ft.layer)
        inst["readout0"] = jax.vmap(lambda p, i: readout(p, i))(params, inst)
        stop = gain_stop(readout, ft.stop_gain)
    return Prepared(plan=plan, arrays=arrays, base=base, inst=inst, tx=tx, state=state, objective=objective,
                    stop=stop)


def finetune(cfg: Config, graphdef, pre_params, *, on_log=None, on_probe=None, progress=True,
             hooks: FineTuneHooks = NO_HOOKS, resume=None, on_checkpoint=None) -> FineTuneResult:
    """Fine-tune every pretrained instance (``pre_params``: cfg.n_inst instances) under every regime
    (and optimiser, and orientation: :mod:`toymodels.lab.plan`).

    ``on_log(row)`` gets fit's loss rows; ``on_probe(row)`` a row ``{"step", "kind": "probe", metric:
    per-instance lists}`` at step 0 and every chunk boundary. ``hooks``: see :func:`prepare`; their
    ``evaluate`` runs after fine-tuning and is stored as ``result.evaluation``.

    Checkpoints: ``on_checkpoint(state, probes, frames)`` runs after every chunk's probe;
    ``resume(fresh_state) -> (state, probes, frames)`` continues a saved fine-tuning (its state has the
    fresh state's structure) from its step, chunked exactly as an uninterrupted run, so the result is
    bit-identical (:mod:`toymodels.io.checkpoint`).
    """
    ft = cfg.finetune
    prep = prepare(cfg, graphdef, pre_params, hooks)
    plan, base, inst, tx, state = prep.plan, prep.base, prep.inst, prep.tx, prep.state

    probe = make_probe(graphdef, cfg, plan)
    merge_all = jax.jit(jax.vmap(lambda p, i: full_state(p, i, ft.trainable)))
    target = jnp.asarray(plan.target)
    eval_p = jnp.asarray(cfg.feature_probability()[plan.pretrain_index])
    probes: list[tuple[int, dict]] = []
    frames: list[tuple[int, np.ndarray, np.ndarray]] = []
    # the probe keeps the full states so that the reported rates are measured afterwards on
    # finetune.rate_samples inputs at exactly the probes the summary reads (:mod:`.rates`)
    keep_states = ft.rate_samples > 0 and lab_rates.snapshot_fits(base, -(-ft.steps // ft.chunk_size) + 1)

    def record(step: int, params) -> None:
        states = merge_all(params, inst)
        m = {k: np.asarray(v) for k, v in probe(states, base, target, eval_p).items()}
        probes.append((int(step), m | (lab_rates.snapshot(states) if keep_states else {})))
        if ft.save_trajectory:
            frames.append((int(step), np.asarray(states["W"][...]), np.asarray(states["b_final"][...])))
        if on_probe is not None:
            on_probe({"step": int(step), "kind": "probe", **m})

    if resume is None:
        record(0, state.params)
    else:
        state, saved_probes, saved_frames = resume(state)
        probes[:], frames[:] = saved_probes, saved_frames

    def after_chunk(s) -> None:
        record(s.step, s.params)
        if on_checkpoint is not None:
            on_checkpoint(s, probes, frames)

    t = time.perf_counter()
    try:
        state = fit(state, prep.objective, tx, inst, ft.steps - state.step, chunk_size=ft.chunk_size,
                    log_every=ft.log_every, on_log=on_log, on_chunk=after_chunk,
                    progress=progress if progress is not True else f"{cfg.name} finetune", stop=prep.stop)
    except TrainingDiverged as e:
        hint = "finetune.lr" if not ft.optimizers else "finetune.optimizers.lr"
        raise e.located(f"fine-tuning {plan.describe(e.instance)}", hint=hint) from None
    jax.block_until_ready(state.params)
    seconds = time.perf_counter() - t
    trajectory = None
    if frames:
        trajectory = {"step": np.array([f[0] for f in frames]), "W": np.stack([f[1] for f in frames]),
                      "b_final": np.stack([f[2] for f in frames])}
    finetuned = merge_all(state.params, inst)
    result = FineTuneResult(plan=plan, pretrained=base, finetuned=finetuned, probes=probes,
                            trajectory=trajectory, seconds=seconds,
                            stopped_at=None if state.stopped_at is None else np.asarray(state.stopped_at),
                            rates=lab_rates.for_probes(cfg, graphdef, plan, probes, jax.tree.structure(finetuned)),
                            layers=lab_layers.measure(cfg, graphdef, plan, base, finetuned))
    evaluation = hooks.evaluate(graphdef, pre_params, result)
    if evaluation is not None:
        result = dataclasses.replace(result, evaluation=evaluation)
    return result
