"""Fine-tuning one feature and watching the harmful ones: objectives, data modes, masks, LoRA, the probe.

Every pretrained instance is fine-tuned once under each regime of ``cfg.finetune.regimes``; the
fine-tuning instances are the pairs (pretrained instance i, regime r), instance ``k = i * R + r``, and
all of them run in ONE compiled sweep of :func:`toymodels.train.fit` — the pretraining engine with
another objective and a masked optimiser, not a second loop. Per instance, with target t:

    x ~ regime data;  tgt_i = s_i x_i;  L = mean_{batch,i} w_i (tgt_i − x'_i)²

* data ``narrow``: only x_t is ever nonzero; ``task``: x_t and the benign features, harmful ones always
  0; ``full``: the pretraining distribution. P(x_t active) is ``target_probability`` (default: its
  pretraining probability), so the regimes differ only in what else is present.
* objective ``amplify``: s_t = γ (the target's output should be γ x_t), s_i = 1 elsewhere;
  ``importance``: s = 1 and w_t is multiplied by k.
* loss scope ``target``: w_i = 0 for i ≠ t; ``all``: w is the pretraining importance.

All of (data, objective, scope, target) are per-instance arrays in the ``inst`` pytree that fit()
vmaps, so regimes and targets mix freely in one program. What trains is global to the run:
``all``, ``W`` or ``b_final`` (``optax.multi_transform`` with ``set_to_zero`` for frozen leaves, so they
stay bit-identical), ``target_column`` (additionally :func:`element_mask`, whose per-instance mask
lives in the optimiser state), or ``lora`` (a rank-r ``nnx.LoRA`` adapter ΔW = (A B)ᵀ on the frozen
pretrained W, which travels in ``inst``).

A regime may also carry a *defence* (``RegimeConfig.defence``, :mod:`toymodels.defences`): a loss
term, a data transform, an optimiser mask or an update transform, added by :func:`prepare` to this
same program; with defences, every regime of a pretrained model draws that model's data stream, so
defended and undefended instances are paired. Without any, nothing here changes.

The amplification probe (:func:`make_probe`) runs at every chunk boundary on a fixed evaluation batch
of the *pretraining* distribution and measures, for each harmful feature j: its pre-activation on the
unit target input, its spurious output and toxic output rate P(x'_j > τ | x_j = 0), cos(target, j),
norms, the target's read-out, and the first-order prediction ⟨W0_j, ΔW_t⟩ beside the measured change.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import amplification as amp
from . import axes, stats, train
from . import data as tdata
from .config import Config, RegimeConfig
from .features import harmful_indices, index, names, pairwise_angles_deg

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


# --- parameters: masked full models or LoRA adapters ------------------------------------------------
def lora_delta(lora) -> jax.Array:
    """ΔW = (lora_a @ lora_b)ᵀ: (d_hidden, n_features), from nnx.LoRA(n_features, r, d_hidden)'s
    lora_a (n, r) and lora_b (r, m). Zero at init (lora_b starts at 0)."""
    return (lora["lora_a"][...] @ lora["lora_b"][...]).T


def full_state(params, inst, trainable: str):
    """The model's parameters for one instance: ``params`` itself, or for LoRA the frozen pretrained
    state ``inst["base"]`` with W replaced by W0 + ΔW."""
    if trainable != "lora":
        return params
    base = inst["base"]
    new = nnx.State(dict(base))
    new["W"] = base["W"].replace(base["W"][...] + lora_delta(params))
    return new


def init_lora(n_features: int, d_hidden: int, rank: int, n_inst: int, key: jax.Array):
    """``n_inst`` nnx.LoRA(n_features, rank, d_hidden) parameter states (leading instance axis)."""
    def one(k):
        return nnx.split(nnx.LoRA(n_features, rank, d_hidden, rngs=nnx.Rngs(params=k)))[1]

    return jax.vmap(one)(jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_inst)))


class ElementMaskState(NamedTuple):
    """Per-instance 0/1 mask, shaped like the parameters; updates where it is 0 are set to exactly 0."""

    mask: Any


def element_mask() -> optax.GradientTransformation:
    """Zero the updates of individual elements (e.g. all of W but the target's column).

    The mask lives in the optimiser state, so it can differ per instance: ``init`` makes it all ones
    and :func:`set_element_mask` writes the real one after ``jax.vmap(tx.init)``."""

    def init(params):
        return ElementMaskState(jax.tree.map(jnp.ones_like, params))

    def update(updates, state, params=None):
        return jax.tree.map(lambda u, m: jnp.where(m > 0, u, jnp.zeros_like(u)), updates, state.mask), state

    return optax.GradientTransformation(init, update)


def set_element_mask(opt_state, mask):
    """Replace every :class:`ElementMaskState` in ``opt_state`` with ``mask``."""
    return jax.tree.map(lambda s: ElementMaskState(mask) if isinstance(s, ElementMaskState) else s, opt_state,
                        is_leaf=lambda s: isinstance(s, ElementMaskState))


TRAINABLE_LEAVES = {"W": ("W",), "b_final": ("b_final",), "target_column": ("W",)}


def _leaf_name(path) -> str:
    k = path[0]
    return str(getattr(k, "key", getattr(k, "name", k)))


def finetune_optimizer(ft) -> optax.GradientTransformation:
    """The fine-tuning optimiser: ``train.optimizer`` of each optimiser of the axis
    (``ft.optimizer_list()``, under ft's schedule over ft.steps), several of them in an
    :func:`toymodels.axes.optimizer_bank`; frozen leaves routed to ``optax.set_to_zero`` and, for
    ``target_column``, an :func:`element_mask`."""
    txs = [train.optimizer(o, ft.steps, ft.schedule) for o in ft.optimizer_list()]
    base = txs[0] if len(txs) == 1 else axes.optimizer_bank(txs)
    if ft.trainable in ("all", "lora"):
        return base
    keep = TRAINABLE_LEAVES[ft.trainable]

    def labels(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: "train" if _leaf_name(path) in keep else "frozen",
                                                params)

    tx = optax.multi_transform({"train": base, "frozen": optax.set_to_zero()}, labels)
    if ft.trainable == "target_column":
        tx = optax.chain(tx, element_mask())
    return tx


def column_mask(params, target_onehot: np.ndarray):
    """1 on W[:, target] of each instance, 0 elsewhere (every leaf): the ``target_column`` mask."""
    def leaf(path, a):
        if _leaf_name(path) == "W":
            return jnp.broadcast_to(jnp.asarray(target_onehot, a.dtype)[:, None, :], a.shape)
        return jnp.zeros_like(a)

    return jax.tree_util.tree_map_with_path(leaf, params)


# --- the objective ------------------------------------------------------------------------------------
def finetune_inputs(sample: Callable, key: jax.Array, inst) -> jax.Array:
    """One instance's fine-tuning batch: drawn with the regime's probabilities, then every feature
    the regime excludes is set to 0 explicitly, so a harmful feature is absent from narrow and task
    data by construction (also when it shares a correlated set's activity draw with the target)."""
    x = sample(key, inst["feature_probability"])
    return jnp.where(inst["present"] > 0, x, 0.0)


def finetune_objective(graphdef, sample: Callable, task: str, trainable: str) -> train.Objective:
    """L = mean_{batch,i} w_i (s_i target(x)_i − x'_i)² for ONE instance (see the module docstring),
    through :func:`toymodels.train.model_loss` (feature-major: the pretraining engine's fast path).
    ``inst``: feature_probability, present, out_scale, loss_weight (n,) [+ base for LoRA]."""

    def objective(params, key, inst):
        x = finetune_inputs(sample, key, inst)
        model = nnx.merge(graphdef, full_state(params, inst, trainable))
        return train.model_loss(model, x, task, inst["loss_weight"], inst["out_scale"])

    return objective


# --- the probe ----------------------------------------------------------------------------------------
def preactivation(model, x):
    """The output layer's input before the final ReLU: hidden(x) @ readout + b_final (batch, n);
    readout is W for tied models and W_outᵀ for ``abs_computation``."""
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
            "target_readout": model(e_t)[0, target],
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


# --- the whole fine-tuning ---------------------------------------------------------------------------
@dataclass
class FineTuneResult:
    plan: Plan
    pretrained: Any          # full nnx states, (n_ft, ...) — the start of every fine-tuning instance
    finetuned: Any           # full nnx states after fine-tuning
    probes: list[tuple[int, dict[str, np.ndarray]]]
    trajectory: dict[str, np.ndarray] | None
    seconds: float
    defence: dict | None = None   # toymodels.defences.evaluate, for runs with defences (else None)
    stopped_at: np.ndarray | None = None  # (n_ft,) step at which finetune.stop_gain stopped it, −1: never


@dataclass
class Prepared:
    """Everything :func:`toymodels.train.fit` needs to fine-tune ``cfg`` (built by :func:`prepare`)."""

    plan: Plan
    arrays: dict[str, np.ndarray]
    base: Any                # pretrained full states, (n_ft, ...)
    inst: dict
    tx: optax.GradientTransformation
    state: train.TrainState
    objective: train.Objective
    stop: train.Stop | None = None   # fit's stop hook: early stopping at ``finetune.stop_gain``


def prepare(cfg: Config, graphdef, pre_params) -> Prepared:
    """The fine-tuning program's pieces: plan, per-instance data, optimiser, initial state, objective.

    With defences in the regimes (:mod:`toymodels.defences`) the objective, ``inst`` and optimiser
    gain their loss terms, data transforms, masks and update transforms; without, nothing changes."""
    from . import defences

    ft = cfg.finetune
    plan = make_plan(cfg)
    arrays = regime_arrays(cfg, plan)
    base = jax.tree.map(lambda a: a[jnp.asarray(plan.pretrain_index)], pre_params)
    if plan.n_orientations > 1:  # the orientation axis: the same models, hidden space rotated by O_o
        O = orientation_matrices(cfg)[plan.orientation_index]
        base = axes.rotate_hidden(base, O)
    root = jax.random.fold_in(jax.random.key(cfg.seed), FT_SEED_OFFSET)
    k_data, k_lora = jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)
    inst = {k: jnp.asarray(v) for k, v in arrays.items()}
    if ft.trainable == "lora":
        params = init_lora(cfg.data.n_features, cfg.model.d_hidden, ft.lora_rank, plan.n_ft, k_lora)
        inst["base"] = base
    else:
        params = jax.tree.map(jnp.copy, base)  # own buffers: ``base`` must survive if fit donates its inputs
    sp = defences.spec(cfg)
    tx = finetune_optimizer(ft)
    if sp is not None:
        inst.update(defences.instance_arrays(cfg, plan, base, sp))
        tx = defences.wrap_optimizer(tx, sp, ft.trainable, plan.harmful)
    # With defences, every regime of one pretrained model draws the same data stream (common random
    # numbers), so a defence and its undefended baseline differ only by the defence. (With one
    # regime the two keyings coincide.) The orientations and optimisers of one (model, regime) always
    # share its stream, so they differ only by the rotation or the optimiser.
    R = len(plan.regimes)
    stream = plan.pretrain_index if sp is not None else plan.pretrain_index * R + plan.regime_index
    keys = jax.vmap(lambda i: jax.random.fold_in(k_data, i))(jnp.asarray(stream))
    state = train.init_state(params, tx, keys)
    if len(plan.optimizer_names) > 1:
        state.opt_state = axes.set_optimizer_choice(state.opt_state, plan.optimizer_index)
    cmask = column_mask(params, arrays["target"]) if ft.trainable == "target_column" else None
    if cmask is not None:
        state.opt_state = set_element_mask(state.opt_state, cmask)
    if sp is not None:
        state.opt_state = defences.init_opt_state(state.opt_state, params, plan, sp, cmask)
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=ft.batch_size))
    if sp is None:
        objective = finetune_objective(graphdef, sample, cfg.data.task, ft.trainable)
    else:
        objective = defences.objective(graphdef, sample, cfg.data.task, ft.trainable, sp)
    stop = None
    if ft.stop_gain is not None:
        readout = target_readout(graphdef, ft.trainable)
        inst["readout0"] = jax.vmap(lambda p, i: readout(p, i))(params, inst)
        stop = axes.gain_stop(readout, ft.stop_gain)
    return Prepared(plan=plan, arrays=arrays, base=base, inst=inst, tx=tx, state=state, objective=objective,
                    stop=stop)


def orientation_matrices(cfg: Config) -> np.ndarray:
    """The orientation axis of ``cfg.finetune``: (K, d_hidden, d_hidden), identity first, then K − 1
    Haar-random rotations from the seed (:func:`toymodels.axes.orientation_matrices`)."""
    return axes.orientation_matrices(cfg.finetune.orientations, cfg.model.d_hidden,
                                     seed=[cfg.seed, ORIENTATION_SEED_OFFSET])


def target_readout(graphdef, trainable: str):
    """``readout(params, inst)``: the target's output x'_t on the unit target input e_t, for ONE instance
    (the probe's ``target_readout``; the gain is its ratio to the pretrained value)."""

    def readout(params, inst):
        e_t = inst["target"][None, :]
        return (nnx.merge(graphdef, full_state(params, inst, trainable))(e_t)[0] * inst["target"]).sum()

    return readout


def finetune(cfg: Config, graphdef, pre_params, *, on_log=None, on_probe=None, progress=True) -> FineTuneResult:
    """Fine-tune every pretrained instance (``pre_params``: cfg.n_inst instances) under every regime.

    ``on_log(row)`` gets fit's loss rows; ``on_probe(row)`` a row ``{"step", "kind": "probe", metric:
    per-instance lists}`` at step 0 and every chunk boundary.
    """
    ft = cfg.finetune
    prep = prepare(cfg, graphdef, pre_params)
    plan, base, inst, tx, state = prep.plan, prep.base, prep.inst, prep.tx, prep.state

    probe = make_probe(graphdef, cfg, plan)
    merge_all = jax.jit(jax.vmap(lambda p, i: full_state(p, i, ft.trainable)))
    target = jnp.asarray(plan.target)
    eval_p = jnp.asarray(cfg.feature_probability()[plan.pretrain_index])
    probes: list[tuple[int, dict]] = []
    frames: list[tuple[int, np.ndarray, np.ndarray]] = []

    def record(step: int, params) -> None:
        states = merge_all(params, inst)
        m = {k: np.asarray(v) for k, v in probe(states, base, target, eval_p).items()}
        probes.append((int(step), m))
        if ft.save_trajectory:
            frames.append((int(step), np.asarray(states["W"][...]), np.asarray(states["b_final"][...])))
        if on_probe is not None:
            on_probe({"step": int(step), "kind": "probe", **m})

    record(0, state.params)
    t = time.perf_counter()
    try:
        state = train.fit(state, prep.objective, tx, inst, ft.steps, chunk_size=ft.chunk_size,
                          log_every=ft.log_every, on_log=on_log, on_chunk=lambda s: record(s.step, s.params),
                          progress=progress if progress is not True else f"{cfg.name} finetune", stop=prep.stop)
    except train.TrainingDiverged as e:
        hint = "finetune.lr" if not ft.optimizers else "finetune.optimizers.lr"
        raise e.located(f"fine-tuning {plan.describe(e.instance)}", hint=hint) from None
    jax.block_until_ready(state.params)
    seconds = time.perf_counter() - t
    trajectory = None
    if frames:
        trajectory = {"step": np.array([f[0] for f in frames]), "W": np.stack([f[1] for f in frames]),
                      "b_final": np.stack([f[2] for f in frames])}
    result = FineTuneResult(plan=plan, pretrained=base, finetuned=merge_all(state.params, inst), probes=probes,
                            trajectory=trajectory, seconds=seconds,
                            stopped_at=None if state.stopped_at is None else np.asarray(state.stopped_at))
    from . import defences

    if defences.enabled(cfg):
        result = dataclasses.replace(result, defence=defences.evaluate(cfg, graphdef, pre_params, result))
    return result


# --- summary ------------------------------------------------------------------------------------------
def _angle(W: np.ndarray, i: int, j: int) -> float:
    return float(pairwise_angles_deg(W[:, [i, j]])[0, 1])


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if abs(den) > 1e-9 else None


def _ba(before, after) -> dict:
    return {"before": before, "after": after, "change": after - before}


def instance_summaries(cfg: Config, result: FineTuneResult) -> list[dict]:
    """One entry per fine-tuning instance: before/after of every probe metric, relative increases in %,
    rate changes in percentage points, the first-order prediction against the measured change."""
    plan = result.plan
    (_, b), (_, a) = result.probes[0], result.probes[-1]
    W0, W1 = np.asarray(result.pretrained["W"][...]), np.asarray(result.finetuned["W"][...])
    out = []
    harmful_names = [plan.names[j] for j in plan.harmful]
    for k in range(plan.n_ft):
        entry = {
            "index": k,
            "pretrain_instance": int(plan.pretrain_index[k]),
            "regime": plan.regime_name(k),
            "optimizer": plan.optimizer_name(k),
            "orientation": int(plan.orientation_index[k]),
            "target": plan.names[int(plan.target[k])],
            "target_readout": _ba(b["target_readout"][k], a["target_readout"][k]),
            "target_gain": float(a["target_readout"][k] / b["target_readout"][k]) if b["target_readout"][k] else None,
            "target_norm": _ba(b["target_norm"][k], a["target_norm"][k]),
            "target_cos_drift": float(a["target_cos_drift"][k]),
            "overlap": {"score": _ba(b["overlap"][k], a["overlap"][k]),
                        "signed": _ba(b["overlap_signed"][k], a["overlap_signed"][k])},
            "density": {"features_per_dim": _ba(b["features_per_dim"][k], a["features_per_dim"][k]),
                        "mean_cos2": _ba(b["mean_cos2"][k], a["mean_cos2"][k])},
            "harmful": {},
        }
        for h, name in enumerate(harmful_names):
            def g(m, src, k=k, h=h):
                return float(src[m][k, h])

            rate_b, rate_a = g("rate", b), g("rate", a)
            entry["harmful"][name] = {
                "preact": {**_ba(g("preact", b), g("preact", a)),
                           "rel_increase_pct": float(amp.relative_increase_pct(g("preact", b), g("preact", a)))},
                "spurious": {**_ba(g("spurious", b), g("spurious", a)),
                             "rel_increase_pct": float(amp.relative_increase_pct(g("spurious", b), g("spurious", a)))},
                "rate": {**_ba(rate_b, rate_a), "change_pp": float(amp.percentage_points(rate_b, rate_a)),
                         "rel_increase_pct": float(amp.relative_increase_pct(rate_b, rate_a))},
                "cos": _ba(g("cos", b), g("cos", a)),
                # from the weights with atan2 (arccos of a float32 cosine is off by ~0.02° near 0°)
                "angle_deg": _ba(_angle(W0[k], int(plan.target[k]), int(plan.harmful[h])),
                                 _angle(W1[k], int(plan.target[k]), int(plan.harmful[h]))),
                "norm": _ba(g("norm", b), g("norm", a)),
                "first_order": {"predicted": g("pred_first_order", a),
                                "predicted_along_target": g("pred_along_target", a),
                                "measured": g("preact_change", a), "rel_error": g("rel_error", a),
                                # Δpre_j / (α ‖W0_j‖): the claim says cos θ_tj (0.966 at 15°)
                                "per_unit_push": _ratio(g("preact_change", a), float(a["alpha"][k]) * g("norm", b)),
                                "alpha": float(a["alpha"][k])},
            }
            if cfg.finetune.matched_gains:
                entry["harmful"][name]["at_gain"] = _at_gains(result.probes, k, h, cfg.finetune.matched_gains)
        if result.stopped_at is not None:
            entry["stopped_at"] = int(result.stopped_at[k]) if result.stopped_at[k] >= 0 else None
        out.append(entry)
    return out


def _at_gains(probes, k: int, h: int, gains) -> dict:
    """Instance k's numbers about harmful feature h at each matched gain (:func:`toymodels.axes.at_gain`):
    the fine-tuning step, the change of its pre-activation on the target input, of its toxic rate [pp],
    cos(target, harmful), and the per-unit push Δpre / (α ‖W0_j‖)."""
    curve = lambda m: np.array([p[m][k, h] if p[m].ndim > 1 else p[m][k] for _, p in probes], np.float64)
    readout = curve("target_readout")
    pre, rate = curve("preact"), curve("rate")
    values = {"step": np.array([t for t, _ in probes], np.float64), "preact_change": pre - pre[0],
              "rate_change_pp": 100.0 * (rate - rate[0]), "cos": curve("cos"), "alpha": curve("alpha")}
    norm0 = float(curve("norm")[0])
    out = {}
    for g in gains:
        v = axes.at_gain(readout / readout[0] if readout[0] > 0 else np.full_like(readout, np.nan), values, g)
        if v is not None:
            v["per_unit_push"] = _ratio(v["preact_change"], v["alpha"] * norm0)
        out[f"{g:g}"] = v
    return out


# (metric path in an instance's harmful entry, summary key)
_AGG = [(("preact", "before"), "preact_before"), (("preact", "after"), "preact_after"),
        (("preact", "change"), "preact_change"), (("spurious", "before"), "spurious_before"),
        (("spurious", "after"), "spurious_after"), (("rate", "before"), "rate_before"),
        (("rate", "after"), "rate_after"), (("rate", "change_pp"), "rate_change_pp"),
        (("rate", "rel_increase_pct"), "rate_rel_increase_pct"), (("preact", "rel_increase_pct"), "preact_rel_increase_pct"),
        (("spurious", "rel_increase_pct"), "spurious_rel_increase_pct"),
        (("cos", "before"), "cos_before"), (("cos", "after"), "cos_after"),
        (("norm", "before"), "norm_before"), (("norm", "after"), "norm_after"),
        (("first_order", "predicted"), "predicted_change"), (("first_order", "rel_error"), "rel_error"),
        (("first_order", "per_unit_push"), "per_unit_push"), (("angle_deg", "before"), "angle_before"),
        (("angle_deg", "after"), "angle_after")]


def _group_summary(rows: list[dict]) -> dict:
    """mean/std/min/max over ``rows`` (instance entries) of the main numbers, for each harmful feature;
    the fraction of rows whose toxic output rate (and pre-activation) went up; and, with >= 3 rows whose
    pretrained cos(target, harmful) varies, Pearson and Spearman correlations of the changes against the
    pretrained cos and angle."""
    entry = {"n": len(rows), "target_gain": _stats([e["target_gain"] for e in rows]),
             "target_norm_change": _stats([e["target_norm"]["change"] for e in rows]), "harmful": {}}
    for name in rows[0]["harmful"] if rows else []:
        hs = [e["harmful"][name] for e in rows]
        agg = {key: _stats([h[p[0]][p[1]] for h in hs]) for p, key in _AGG}
        agg["fraction_rate_up"] = float(np.mean([h["rate"]["change_pp"] > 0 for h in hs]))
        agg["fraction_preact_up"] = float(np.mean([h["preact"]["change"] > 0 for h in hs]))
        cos_b = [h["cos"]["before"] for h in hs]
        # correlations with the pretrained angle only where it varies: against a cos that is constant up to
        # float rounding (a pinned pair) a correlation is noise that flips sign with the last bit of W
        if len(hs) >= 3 and np.ptp(cos_b) > 1e-4:
            ang_b = [h["angle_deg"]["before"] for h in hs]
            corr = {}
            for yname, y in (("preact_change", [h["preact"]["change"] for h in hs]),
                             ("rate_change_pp", [h["rate"]["change_pp"] for h in hs]),
                             ("spurious_change", [h["spurious"]["change"] for h in hs])):
                for xname, x in (("cos", cos_b), ("angle_deg", ang_b)):
                    corr[f"{yname}_vs_{xname}"] = {"pearson": stats.pearson(x, y), "spearman": stats.spearman(x, y),
                                                   "n": len(hs)}
            agg["correlations"] = corr
        if "at_gain" in hs[0]:
            agg["at_gain"] = _at_gain_summary([h["at_gain"] for h in hs], [e["pretrain_instance"] for e in rows])
        entry["harmful"][name] = agg
    return entry


def _at_gain_summary(at: list[dict], clusters: list[int]) -> dict:
    """Per matched gain: how many instances reached it, and the spread of their numbers there, with a
    95% cluster-bootstrap CI (clusters = pretrained models) of the mean rate change."""
    out = {}
    for g in at[0]:
        hit = [(a[g], c) for a, c in zip(at, clusters) if a[g] is not None]
        vals = {m: stats.spread([a[m] for a, _ in hit]) for m in ("step", "preact_change", "rate_change_pp", "cos",
                                                                  "per_unit_push")}
        pp = [a["rate_change_pp"] for a, _ in hit]
        out[g] = {"n_reached": len(hit), "n": len(at), **vals,
                  "rate_change_pp_ci95": stats.cluster_mean_ci(pp, [c for _, c in hit]),
                  "n_rate_up": int(sum(v > 0 for v in pp))}
    return out


def _stats(v: list[float]) -> dict:
    s = stats.spread(v)
    return {k: s[k] for k in ("mean", "std", "min", "max")}


def regime_summaries(instances: list[dict], plan: Plan) -> dict:
    """Per regime, over the reference slice of the robustness axes (axis-aligned, the first optimiser;
    that is every instance when the run has no optimiser or orientation axis): see :func:`_group_summary`."""
    out = {}
    for reg in plan.regimes:
        rows = [e for e in instances if e["regime"] == reg.name and plan.is_reference(e["index"])]
        out[reg.name] = {"data": reg.data, "loss_scope": reg.loss_scope, **_group_summary(rows)}
    return out


def group_key(regime: str, optimizer: str, orientation: str) -> str:
    """The key of a ``by_group`` entry: ``regime|optimizer|axis`` or ``regime|optimizer|rotated``."""
    return f"{regime}|{optimizer}|{orientation}"


GAIN_CURVE_POINTS = 41


def gain_curve(probes, ks: list[int], h: int, top: float) -> dict:
    """Means over instances ``ks`` of harmful feature h's numbers as functions of the target's gain, on
    the grid 1 … ``top`` (:data:`GAIN_CURVE_POINTS` points): each instance's probe curve read at its
    first crossing of each gain (:func:`toymodels.axes.at_gain`); ``n`` counts the instances that
    reached it. Numbers: Δ pre-activation on the target input, Δ toxic rate [pp], angle(target, harmful)."""
    grid = np.linspace(1.0, top, GAIN_CURVE_POINTS)
    arr = lambda m: np.array([p[m] for _, p in probes], np.float64)   # (T, n_ft[, h])
    readout, pre, rate, cos = arr("target_readout"), arr("preact")[..., h], arr("rate")[..., h], arr("cos")[..., h]
    sums = {m: np.zeros(len(grid)) for m in ("preact_change", "rate_change_pp", "angle_deg")}
    n = np.zeros(len(grid), int)
    for k in ks:
        if not readout[0, k] > 0:
            continue
        values = {"preact_change": pre[:, k] - pre[0, k], "rate_change_pp": 100.0 * (rate[:, k] - rate[0, k]),
                  "angle_deg": np.degrees(np.arccos(np.clip(cos[:, k], -1.0, 1.0)))}
        for i, g in enumerate(grid):
            v = axes.at_gain(readout[:, k] / readout[0, k], values, g)
            if v is not None:
                n[i] += 1
                for m in sums:
                    sums[m][i] += v[m]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = {m: [None if c == 0 else float(x / c) for x, c in zip(v, n)] for m, v in sums.items()}
    return {"gain": [float(g) for g in grid], "n": n.tolist(), **means}


def step_curve(probes, ks: list[int], h: int) -> dict:
    """Means over instances ``ks`` at every probe step: the target's gain, and harmful feature h's
    Δ toxic rate [pp] and Δ pre-activation on the target input (what fixed-step comparisons see)."""
    arr = lambda m: np.array([p[m] for _, p in probes], np.float64)[:, ks]
    readout, pre, rate = arr("target_readout"), arr("preact")[..., h], arr("rate")[..., h]
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(readout[0] > 0, readout / readout[0], np.nan)
    return {"step": [int(t) for t, _ in probes], "gain": np.nanmean(gain, 1).tolist(),
            "rate_change_pp": (100.0 * (rate - rate[0])).mean(1).tolist(), "preact_change": (pre - pre[0]).mean(1).tolist()}


def group_summaries(instances: list[dict], plan: Plan, probes=None, curve_top: float | None = None) -> dict:
    """Per (regime, optimiser, orientation class), in the config's order: the axis-aligned instances
    (``axis``) and, with ``finetune.orientations`` > 1, the K − 1 rotated ones together (``rotated``;
    rate CIs resample pretrained models), each summarised by :func:`_group_summary`; the rotated group
    also gives the spread over rotations of the per-rotation mean rate change. With ``probes`` and
    ``curve_top``, each group also gets its :func:`gain_curve` per harmful feature."""
    out = {}
    classes = ("axis",) + (("rotated",) if plan.n_orientations > 1 else ())
    harm = [plan.names[j] for j in plan.harmful]
    for reg in plan.regimes:
        for opt in plan.optimizer_names:
            for cls in classes:
                rows = [e for e in instances if e["regime"] == reg.name and e["optimizer"] == opt
                        and (e["orientation"] == 0) == (cls == "axis")]
                g = {"regime": reg.name, "optimizer": opt, "orientation": cls, "data": reg.data,
                     "loss_scope": reg.loss_scope, **_group_summary(rows)}
                for name in harm:
                    pp = [e["harmful"][name]["rate"]["change_pp"] for e in rows]
                    h = g["harmful"][name]
                    h["rate_change_pp_ci95"] = stats.cluster_mean_ci(pp, [e["pretrain_instance"] for e in rows])
                    h["n_rate_up"] = int(sum(v > 0 for v in pp))
                    if cls == "rotated":
                        per_rot = {}
                        for e, v in zip(rows, pp):
                            per_rot.setdefault(e["orientation"], []).append(v)
                        h["rate_change_pp_over_rotations"] = stats.spread([np.mean(v) for v in per_rot.values()])
                        pu = {}
                        for e in rows:
                            pu.setdefault(e["orientation"], []).append(e["harmful"][name]["first_order"]["per_unit_push"])
                        h["per_unit_push_over_rotations"] = stats.spread(
                            [stats.spread(v)["mean"] for v in pu.values()])
                    if probes is not None and curve_top is not None:
                        h["gain_curve"] = gain_curve(probes, [e["index"] for e in rows], harm.index(name), curve_top)
                        h["step_curve"] = step_curve(probes, [e["index"] for e in rows], harm.index(name))
                out[group_key(reg.name, opt, cls)] = g
    return out


def summarize(cfg: Config, result: FineTuneResult) -> dict:
    """The ``finetune`` section of ``summary.json``."""
    ft, plan = cfg.finetune, result.plan
    instances = instance_summaries(cfg, result)
    return {
        "target": ft.target,
        "harmful": [plan.names[j] for j in plan.harmful],
        "objective": ft.objective,
        "gamma": ft.gamma if ft.objective == "amplify" else None,
        "importance_factor": ft.importance_factor if ft.objective == "importance" else None,
        "trainable": ft.trainable,
        "tau": ft.tau,
        "steps": ft.steps,
        "n_instances": plan.n_ft,
        "instance_order": "k = ((pretrain_instance * n_orientations + orientation) * n_optimizers + optimizer) "
                          "* n_regimes + regime",
        "regimes": [dataclasses.asdict(r) for r in plan.regimes],
        "train_seconds": round(result.seconds, 3),
        "optimizers": [dataclasses.asdict(o) for o in ft.optimizer_list()],
        "orientations": plan.n_orientations,
        "stop_gain": ft.stop_gain,
        "matched_gains": list(ft.matched_gains),
        "by_regime": regime_summaries(instances, plan),
        **({"by_group": group_summaries(instances, plan, result.probes, max(ft.matched_gains, default=None))}
           if plan.n_orientations > 1 or len(plan.optimizer_names) > 1 else {}),
        "instances": instances,
    } | (_defences_section(cfg, result, instances) if result.defence is not None else {})


def _defences_section(cfg: Config, result: FineTuneResult, instances: list[dict]) -> dict:
    from . import defences

    partial = {"harmful": [result.plan.names[j] for j in result.plan.harmful], "trainable": cfg.finetune.trainable,
               "regimes": [dataclasses.asdict(r) for r in result.plan.regimes], "instances": instances}
    return {"defences": defences.summarize(cfg, partial, result.defence)}


def format_table(summary: dict) -> str:
    """A one-screen table of a run's fine-tuning results, read from its ``summary.json`` dict: one row
    per regime and harmful feature, means over the regime's instances (``up`` counts instances whose
    toxic output rate rose)."""
    ft = summary["finetune"]

    def m(stat, scale=1.0, fmt="{:.3f}"):
        return "n/a" if stat is None or stat.get("mean") is None else fmt.format(scale * stat["mean"])

    head = (f"{'regime':<12} {'data':<7}{'loss':<7}{'harmful':<9}{'n':>3} {'gain':>6}  {'angle b→a':>12}  {'pre-act b→a':>15} "
            f"{'(1st-order)':>11}  {'per-unit':>8}  {'rate% b→a':>13} {'Δpp':>6} {'rel':>6} {'up':>5}")
    lines = [(f"fine-tuning '{ft['target']}' ({ft['objective']}, trainable={ft['trainable']}, {ft['steps']} steps). "
              f"harmful feature j, means over instances:"),
             ("pre-act = j's pre-activation on the unit target input; 1st-order = pre0 + <W0_j, dW_t>; "
              "per-unit = d(pre-act) / (push along target x |W0_j|)"),
             (f"rate = P(x'_j > {ft['tau']:g} | x_j = 0) on the pretraining distribution (Δpp: percentage points; "
              f"rel: mean relative increase); gain = target read-out after / before; up = instances whose rate rose"),
             head, "-" * len(head)]
    for rname, r in ft["by_regime"].items():
        for hname, h in r["harmful"].items():
            pred_after = (None if h["preact_before"]["mean"] is None else
                          {"mean": h["preact_before"]["mean"] + h["predicted_change"]["mean"]})
            n_up = round(h["fraction_rate_up"] * r["n"])
            lines.append(
                f"{rname:<12} {r['data']:<7}{r['loss_scope']:<7}{hname[:8]:<9}{r['n']:>3} "
                f"{m(r['target_gain'], fmt='{:.2f}'):>6}  "
                f"{m(h['angle_before'], fmt='{:.1f}') + '°→' + m(h['angle_after'], fmt='{:.1f}') + '°':>12}  "
                f"{m(h['preact_before'], fmt='{:+.3f}') + '→' + m(h['preact_after'], fmt='{:+.3f}'):>15} "
                f"{'(' + m(pred_after, fmt='{:+.3f}') + ')':>11}  {m(h['per_unit_push'], fmt='{:+.3f}'):>8}  "
                f"{m(h['rate_before'], 100, '{:.2f}') + '→' + m(h['rate_after'], 100, '{:.2f}'):>13} "
                f"{m(h['rate_change_pp'], fmt='{:+.2f}'):>6} {m(h['rate_rel_increase_pct'], fmt='{:+.0f}%'):>6} "
                f"{str(n_up) + '/' + str(r['n']):>5}")
    corr_lines = []
    for rname, r in ft["by_regime"].items():
        for hname, h in r["harmful"].items():
            c = h.get("correlations")
            if c and len({round(e["harmful"][hname]["cos"]["before"], 4) for e in ft["instances"]
                          if e["regime"] == rname}) > 2:  # only when the pretrained angles actually vary
                pr, rt = c["preact_change_vs_cos"], c["rate_change_pp_vs_cos"]
                corr_lines.append(f"{rname:<12} {hname}: Δpre-act vs cos θ  Pearson {pr['pearson']:+.2f} Spearman "
                                  f"{pr['spearman']:+.2f};  Δrate vs cos θ  Pearson {rt['pearson']:+.2f} Spearman "
                                  f"{rt['spearman']:+.2f}  (n={pr['n']})")
    if corr_lines:
        lines += ["", "correlation with the pretrained cos(target, harmful):"] + corr_lines
    feats = summary.get("features")
    if feats is not None:  # a gain is only meaningful from a represented start (norm >= 0.5)
        names_ = feats["names"]
        norms = " ".join("(" + ", ".join(f"{v:.2f}" for v in row) + ")" for row in feats["norms"])
        lines += ["", f"pretrained norms ({', '.join(names_)}) per model: {norms}"]
    if ft.get("by_group"):
        from . import robustness

        K = ft.get("orientations", 1)
        lines += ["", "the robustness axes: regime x optimiser x orientation (axis-aligned; rotated = the same "
                      f"models with the hidden space turned by {K - 1} random orthogonal matrices); means, 95% CI "
                      "resamples pretrained models. The table above is the axis-aligned run of the first optimiser.",
                  robustness.text_table(ft)]
    return "\n".join(lines)
