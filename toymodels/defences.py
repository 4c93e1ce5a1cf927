"""Defences against harmful amplification during fine-tuning, inside the lab's own fine-tuning path.

A defence is one of four things, and nothing else: a **loss term** added to the fine-tuning objective,
an **optimiser mask**, a **data transform** of the fine-tuning batch (replay, filtering), or an
**update transform** appended to the optax chain. Each is switched on per fine-tuning *regime*
(``RegimeConfig.defence`` and ``strength``), so a whole comparison — the undefended run and every
defence, from the same pretrained models on the same data stream — is one compiled sweep of
:func:`toymodels.train.fit` (per-instance arrays in ``inst``; instances whose regime does not use a
mechanism get weight 0 / mask 1 / "off", which leaves them undefended: bit for bit when the mechanism
has strength 0 everywhere, since it is then not compiled in, and to float32 rounding inside a sweep
that compiles it for other instances).

Notation, for ONE instance: W (d_hidden, n) with columns W_i; Ŵ_i = W_i / (‖W_i‖² + ε²)^{1/2};
h = W x (batch, d_hidden); x' = f_θ(x) the model's output; t the target, H the harmful features.

==================== ======== ==========================================================================
defence              plugs in  what it does (strength s)
==================== ======== ==========================================================================
``gram_offdiag``     loss     s Σ_{i≠j} (Ŵ_iᵀŴ_j)²  = s ‖offdiag(ŴᵀŴ)‖_F²   (the seed's "Frobenius norm of
                              the feature covariance"), computed as the n×n Gram matrix: O(n² d)
``gram_offdiag_dual`` loss    the same value as ‖ŴŴᵀ‖_F² − Σ_i ‖Ŵ_i‖⁴ (a d×d matrix): O(n d²)
``soft_orthogonality`` loss   s ‖WᵀW − I‖_F²  (orthonormal columns; unreachable when n > d_hidden)
``decov``            loss     s ½(‖C‖_F² − ‖diag C‖²), C = cov_batch(h)  (Cogswell et al. 2016)
``targeted_cos``     loss     s Σ_{j∈H} cos(W_t, W_j)²   (only the target–harmful overlap)
``anchor``           loss     s mean_{b,i} I_i (f_θ(x̃)_i − f_θ0(x̃)_i)², x̃ ~ pretraining distribution
``replay``           data     a fraction s of every batch's rows is pretraining data with the
                              pretraining loss (importance on every output, target x)
``filter_geometric`` data     drop the fraction s of the batch's non-empty samples whose h0 = W0 x
                              is closest in cosine to a harmful direction W0_j (W0: pretrained)
``filter_random``    data     drop the same number of non-empty samples, chosen at random (control)
``freeze_harmful``   mask     W[:, H] and b_final[H] receive no update
``grad_projection``  transform remove from every column's update its component in span{W0_j : j∈H}
``lora``             trainable ``finetune.trainable = "lora"`` (toymodels.finetune; a run setting)
==================== ======== ==========================================================================

The anchor penalty is this regression model's analogue of a KL penalty to the pretrained model:
reading x' as the mean of a Gaussian with fixed variance σ², KL(p_θ0(·|x̃) ‖ p_θ(·|x̃)) =
‖f_θ(x̃) − f_θ0(x̃)‖² / 2σ², an output MSE; it is taken on pretraining-distribution inputs because
that is where the capability to protect lives (fine-tuning inputs alone would not see the harmful
feature's outputs).

The regularisers live in :mod:`toymodels.penalties` (pure functions of one instance's W, h or
outputs); the same functions are the pretraining penalties of ``train.penalty``.

Measured for every regime (:func:`evaluate`, :func:`summarize`): the lab's harmful-amplification
numbers (toxic rate change in pp, pre-activation change), the target's gain, the capability numbers
of :func:`capability` before and after (pretraining loss split into benign and harmful features, the
harmful feature's loss when present, features represented, D*), each paired with the undefended
instance from the same pretrained model, and, with ``finetune.overhead_repeats`` > 0, the step-time
ratio against the undefended step (:func:`measure_overhead`).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import data as tdata
from . import geometry, train
from .config import FT_DEFENCES, FT_FRACTION_DEFENCES, Config
from .penalties import output_anchor, penalty, unit_columns
from .stats import mean_with_ci

PRE_BATCH_SALT = 7_001      # fold_in(step key, ·): the pretraining-distribution batch of replay / anchor
FILTER_SALT = 7_002         # fold_in(step key, ·): the random control filter's priorities
EVAL_SEED_OFFSET = 300      # fold_in(seed key, ·): the capability evaluation batch


# --- the registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Defence:
    """A registered defence: ``plugs`` says where it enters the fine-tuning path (``loss``, ``data``,
    ``mask``, ``transform``, ``trainable``, or ``none`` for the baseline); ``strength`` what the
    regime's strength means."""

    name: str
    plugs: str
    strength: str
    summary: str


DEFENCES: dict[str, Defence] = {d.name: d for d in (
    Defence("none", "none", "-", "undefended"),
    Defence("gram_offdiag", "loss", "λ", "off-diagonal Gram penalty Σ_{i≠j}(Ŵ_i·Ŵ_j)², n×n form"),
    Defence("gram_offdiag_dual", "loss", "λ", "the same penalty through the d×d matrix ŴŴᵀ"),
    Defence("soft_orthogonality", "loss", "λ", "soft orthogonality ‖WᵀW − I‖²"),
    Defence("decov", "loss", "λ", "DeCov: off-diagonal covariance of hidden activations"),
    Defence("targeted_cos", "loss", "λ", "cos(target, harmful)² only"),
    Defence("anchor", "loss", "λ", "output anchor to the pretrained model on pretraining inputs (KL analogue)"),
    Defence("replay", "data", "fraction of rows", "replay pretraining data in a fraction of every batch"),
    Defence("filter_geometric", "data", "fraction dropped", "drop the samples whose W0x is closest to harmful"),
    Defence("filter_random", "data", "fraction dropped", "drop as many random samples (control)"),
    Defence("freeze_harmful", "mask", "-", "freeze W[:, harmful] and b_final[harmful]"),
    Defence("grad_projection", "transform", "-", "project W updates off span of the harmful directions"),
    Defence("lora", "trainable", "rank (finetune.lora_rank)", "low-rank adapter on a frozen W (trainable=lora)"),
)}
LOSS_DEFENCES = tuple(n for n, d in DEFENCES.items() if d.plugs == "loss")
assert set(FT_DEFENCES) == {n for n, d in DEFENCES.items() if d.plugs != "trainable"}
assert set(FT_FRACTION_DEFENCES) == {n for n, d in DEFENCES.items() if d.plugs == "data"}


@dataclass(frozen=True)
class Spec:
    """Which mechanisms a config's regimes use (static: decides what the compiled program contains)."""

    losses: tuple[str, ...]
    replay: bool
    filter: bool
    freeze: bool
    projection: bool

    @property
    def pre_batch(self) -> bool:
        return self.replay or "anchor" in self.losses


def spec(cfg: Config) -> Spec | None:
    """The :class:`Spec` of ``cfg``'s regimes, or None when no regime has a defence (the undefended
    fine-tuning path then runs exactly as without this module). Loss terms and data transforms with
    strength 0 in every regime are left out, so a defence at λ = 0 reproduces the undefended run bit
    for bit. (Instances at strength 0 *inside* a sweep that compiles the mechanism for others agree
    with the undefended run to float32 rounding, not bitwise.)"""
    used = {r.defence for r in cfg.finetune.regimes} - {"none"}
    if not used:
        return None
    # A loss term or data transform whose strength is 0 in every regime is not compiled in: adding
    # 0·∇P (or keeping every row) is exact, but a different graph may fuse (and contract into FMAs)
    # differently and move results by an ulp.
    weighted = {r.defence for r in cfg.finetune.regimes if r.strength > 0}
    return Spec(losses=tuple(k for k in LOSS_DEFENCES if k in weighted), replay="replay" in weighted,
                filter=bool(weighted & {"filter_geometric", "filter_random"}), freeze="freeze_harmful" in used,
                projection="grad_projection" in used)


def enabled(cfg: Config) -> bool:
    """Whether the run gets the defence metrics (capability, overhead): a regime has a defence, or
    ``finetune.overhead_repeats`` > 0 (e.g. a LoRA run compared with the undefended one)."""
    return spec(cfg) is not None or cfg.finetune.overhead_repeats > 0


def _regime_of(plan) -> list:
    return [plan.regimes[int(r)] for r in plan.regime_index]


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
    harm = np.zeros(n, np.float32)
    harm[plan.harmful] = 1.0
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
def objective(graphdef, sample: Callable, task: str, trainable: str, sp: Spec) -> train.Objective:
    """The fine-tuning objective of :func:`toymodels.finetune.finetune_objective` with the defences of
    ``sp``, for ONE instance:

        L = Σ_b keep_b Σ_i w_bi (tgt_bi − x'_bi)² / (n Σ_b keep_b)   +   Σ_k λ_k P_k

    where rows of the batch are fine-tuning data (w = the regime's loss weights, tgt = s ⊙ x) or, for
    replay, pretraining data (w = importance, tgt = x); keep_b is 1 unless a filter drops sample b;
    P_k are the penalties with per-instance weights λ_k. Without replay or a filter in ``sp`` the first
    term *is* the undefended objective (called, not copied), so loss terms only ever add to it; and a
    loss term with λ = 0 everywhere is not in ``sp`` at all."""
    from .finetune import finetune_inputs, finetune_objective, full_state

    undefended = finetune_objective(graphdef, sample, task, trainable)

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
                loss = train.weighted_mse(out, tgt, w)
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


# --- optimiser: the freeze mask and the gradient projection -----------------------------------------
class ProjectionState(NamedTuple):
    """Per-instance state of :func:`project_out_harmful`: P (d_hidden, d_hidden) the orthogonal
    projector onto span{W0_j : j ∈ H}, P W0 (d_hidden, n), and ``enabled`` (1.0 or 0.0)."""

    projector: jax.Array
    offset: jax.Array
    enabled: jax.Array


def harmful_projector(W, harmful, rtol: float = 1e-6):
    """P = Σ_k u_k u_kᵀ over the left singular vectors of W[:, H] with σ_k > rtol σ_max: the orthogonal
    projector onto the span of the harmful columns (zero columns add nothing). (d_hidden, d_hidden)."""
    WH = W[:, jnp.asarray(harmful)]
    U, s, _ = jnp.linalg.svd(WH, full_matrices=False)
    keep = (s > rtol * jnp.maximum(s[0], 1e-30)).astype(W.dtype)
    return (U * keep) @ U.T


def project_out_harmful(harmful) -> optax.GradientTransformation:
    """Gradient projection: remove from every column's update its component along the harmful
    directions of the pretrained W, appended last to the optimiser chain.

    With P the projector onto span{W0_j : j ∈ H} (from the parameters given to ``init``; one per
    instance under ``jax.vmap(tx.init)``), a proposed update u of W becomes

        u' = (I − P)(W + u) + P W0 − W,     so     W + u' = (I − P)(W + u) + P W0,

    i.e. the new W is the orthogonal projection of W + u onto the affine set {W : P W = P W0}: the
    step has no component along the harmful directions, and the rounding of earlier steps is not
    allowed to accumulate there either (P(W_T − W0) stays at one rounding error). ``b_final`` and
    other leaves pass unchanged. Instances with ``enabled`` = 0 (set by :func:`set_projection_enabled`
    after init; the default) get u back exactly."""

    def init(params):
        W = params["W"][...]
        P = harmful_projector(W, harmful)
        return ProjectionState(P, P @ W, jnp.zeros((), W.dtype))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("project_out_harmful needs the parameters: tx.update(grads, state, params)")
        W, u = params["W"][...], updates["W"][...]
        new_W = W + u
        projected = new_W - state.projector @ new_W + state.offset - W
        new = nnx.State(dict(updates))
        new["W"] = updates["W"].replace(jnp.where(state.enabled > 0, projected, u))
        return new, state

    return optax.GradientTransformation(init, update)


def set_projection_enabled(opt_state, enabled):
    """Write the per-instance ``enabled`` flags (n_ft,) into every :class:`ProjectionState`."""
    return jax.tree.map(lambda s: s._replace(enabled=jnp.asarray(enabled, s.enabled.dtype))
                        if isinstance(s, ProjectionState) else s, opt_state,
                        is_leaf=lambda s: isinstance(s, ProjectionState))


def freeze_mask(params, plan, frozen: np.ndarray):
    """Per-instance 0/1 update mask: 0 on W[:, H] and b_final[H] of the instances with ``frozen``
    (n_ft,) True, 1 everywhere else (every leaf)."""
    harm = np.zeros(params["W"][...].shape[-1], np.float32)
    harm[plan.harmful] = 1.0
    off = jnp.asarray(np.asarray(frozen, np.float32)[:, None] * harm[None, :])  # (n_ft, n)

    def leaf(path, a):
        name = str(getattr(path[0], "key", getattr(path[0], "name", path[0])))
        if name == "W":
            return jnp.broadcast_to(1.0 - off[:, None, :], a.shape).astype(a.dtype)
        if name == "b_final":
            return (1.0 - off).astype(a.dtype)
        return jnp.ones_like(a)

    return jax.tree_util.tree_map_with_path(leaf, params)


def wrap_optimizer(tx, sp: Spec, trainable: str, harmful) -> optax.GradientTransformation:
    """Append the masks and transforms of ``sp`` to the fine-tuning optimiser (``target_column``
    already has an element mask, which the freeze mask then shares)."""
    from .finetune import element_mask

    if sp.freeze and trainable != "target_column":
        tx = optax.chain(tx, element_mask())
    if sp.projection:
        tx = optax.chain(tx, project_out_harmful(harmful))
    return tx


def init_opt_state(opt_state, params, plan, sp: Spec, column_mask=None):
    """Write the per-instance freeze masks (multiplied with ``column_mask`` for ``target_column``)
    and projection flags into a freshly ``vmap``-initialised optimiser state."""
    from .finetune import set_element_mask

    regs = _regime_of(plan)
    if sp.freeze:
        mask = freeze_mask(params, plan, np.array([r.defence == "freeze_harmful" for r in regs]))
        if column_mask is not None:
            mask = jax.tree.map(lambda a, b: a * b, mask, column_mask)
        opt_state = set_element_mask(opt_state, mask)
    if sp.projection:
        opt_state = set_projection_enabled(opt_state, [float(r.defence == "grad_projection") for r in regs])
    return opt_state


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
    harm = np.zeros(cfg.data.n_features, np.float32)
    harm[plan.harmful] = 1.0
    harm = jnp.asarray(harm)
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
        return {"recon_loss": train.weighted_mse(out, tgt, imp),
                "recon_loss_other": train.weighted_mse(out, tgt, imp * (1.0 - t)),
                "recon_loss_benign": train.weighted_mse(out, tgt, imp * (1.0 - t) * (1.0 - harm)),
                "recon_loss_harmful": train.weighted_mse(out, tgt, imp * harm),
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


def measure_overhead(cfg: Config, graphdef, pre_params, repeats: int, steps: int | None = None) -> dict:
    """Wall-time cost of every regime's fine-tuning step against the undefended step, in this process.

    For each regime r, two programs are built with :func:`toymodels.finetune.prepare` and
    :func:`toymodels.train.make_chunk` (the engine's own chunk: ``cfg.n_inst`` instances × ``steps``
    steps): the *variant* (all instances under r, the run's ``trainable``) and the *reference* (same
    data and loss scope, defence ``none``, ``trainable="all"``). Each is compiled and run once
    untimed; then ``repeats`` interleaved pairs are timed (block_until_ready), alternating which of
    the two goes first. Reports the median of the per-pair ratios variant/reference, the median of the
    per-pair differences (ms a step the defence adds), and every pair's milliseconds per step. The
    machine is shared, so pairs, not totals, are compared."""
    from .finetune import prepare

    steps = steps or cfg.finetune.chunk_size
    t0 = jnp.asarray(0, jnp.int32)

    def timer(c: Config):
        prep = prepare(c, graphdef, pre_params)
        chunk = train.make_chunk(prep.objective, prep.tx, steps)
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


def evaluate(cfg: Config, graphdef, pre_params, result) -> dict:
    """The defence metrics of a finished fine-tuning: capability before/after per instance and, with
    ``finetune.overhead_repeats`` > 0, :func:`measure_overhead`. Stored on the FineTuneResult."""
    plan, n = result.plan, result.plan.n_ft
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), result.pretrained, result.finetuned)  # one compile
    cap = capability(graphdef, cfg, plan, both, pretrain_index=np.tile(plan.pretrain_index, 2),
                     target=np.tile(plan.target, 2))
    out = {"capability_before": {k: v[:n] for k, v in cap.items()},
           "capability_after": {k: v[n:] for k, v in cap.items()}}
    if cfg.finetune.overhead_repeats > 0:
        out["overhead"] = measure_overhead(cfg, graphdef, pre_params, cfg.finetune.overhead_repeats)
    return out


# --- summary: one row per regime, paired with its undefended baseline -----------------------------------
def baseline_of(regimes, r) -> str | None:
    """The name of the undefended regime with r's data, loss scope and target (None if there is none)."""
    for b in regimes:
        if b["defence"] == "none" and (b["data"], b["loss_scope"], b["target"]) == (r["data"], r["loss_scope"],
                                                                                  r["target"]):
            return b["name"]
    return None


def summarize(cfg: Config, ft_summary: dict, defence: dict) -> dict:
    """The ``finetune.defences`` section of ``summary.json``: per instance the capability numbers, and
    per regime the table row (means with 95% bootstrap CIs over the pretrained seeds): harmful rate
    change [pp], pre-activation change, target gain, capability after and its change against the
    paired undefended instance, the fraction of the undefended amplification removed, and the
    measured compute overhead."""
    before, after = defence["capability_before"], defence["capability_after"]
    instances = [{"index": k, **{f"{m}_before": float(before[m][k]) for m in before},
                  **{f"{m}_after": float(after[m][k]) for m in after}}
                 for k in range(len(ft_summary["instances"]))]
    rows = per_regime_rows(ft_summary, instances, defence.get("overhead"))
    return {"instances": instances, "regimes": rows, "overhead": defence.get("overhead")}


def per_regime_rows(ft: dict, capability_rows: list[dict], overhead: dict | None,
                    baseline: tuple[dict, list[dict]] | None = None) -> dict:
    """Table rows keyed by regime name, from a run's ``finetune`` summary and capability rows.
    ``baseline`` (another run's ``finetune`` summary and capability rows, from the same pretrained
    models) supplies the undefended regime when this run has none (the LoRA run)."""
    base_ft, base_cap = baseline if baseline is not None else (ft, capability_rows)
    harm = ft["harmful"][0]
    out = {}
    for r in ft["regimes"]:
        es = [e for e in ft["instances"] if e["regime"] == r["name"]]
        # the undefended baseline trains everything; a restricted run (e.g. LoRA) needs another run's
        b_name = baseline_of(base_ft["regimes"], r) if base_ft["trainable"] == "all" else None
        b_es = {e["pretrain_instance"]: e for e in base_ft["instances"] if e["regime"] == b_name}
        cap = {e["index"]: capability_rows[e["index"]] for e in es}
        pp = [e["harmful"][harm]["rate"]["change_pp"] for e in es]
        row = {"defence": r["defence"] if ft["trainable"] == "all" else f"{r['defence']}+{ft['trainable']}",
               "strength": r["strength"], "data": r["data"], "loss_scope": r["loss_scope"],
               "baseline": b_name, "trainable": ft["trainable"],
               "rate_change_pp": mean_with_ci(pp),
               "rate_after_pct": mean_with_ci([100 * e["harmful"][harm]["rate"]["after"] for e in es]),
               "preact_change": mean_with_ci([e["harmful"][harm]["preact"]["change"] for e in es]),
               "cos_after": mean_with_ci([e["harmful"][harm]["cos"]["after"] for e in es]),
               "target_gain": mean_with_ci([e["target_gain"] for e in es]),
               "target_readout_after": mean_with_ci([e["target_readout"]["after"] for e in es])}
        row["harmful_norm_after"] = mean_with_ci([e["harmful"][harm]["norm"]["after"] for e in es])
        row["harmful_norm_before"] = mean_with_ci([e["harmful"][harm]["norm"]["before"] for e in es])
        row["angle_after"] = mean_with_ci([e["harmful"][harm]["angle_deg"]["after"] for e in es])
        for m in ("recon_loss", "recon_loss_other", "recon_loss_benign", "recon_loss_harmful", "harmful_present_loss",
                  "n_represented", "dims_per_feature", "mean_cos2"):
            row[f"{m}_after"] = mean_with_ci([cap[e["index"]][f"{m}_after"] for e in es])
            row[f"{m}_before"] = mean_with_ci([cap[e["index"]][f"{m}_before"] for e in es])
        if b_name is not None:
            pairs = [(e, b_es[e["pretrain_instance"]]) for e in es if e["pretrain_instance"] in b_es]
            d_pp = [e["harmful"][harm]["rate"]["change_pp"] - b["harmful"][harm]["rate"]["change_pp"] for e, b in pairs]
            row["rate_change_pp_vs_baseline"] = mean_with_ci(d_pp)
            base_pp = np.mean([b["harmful"][harm]["rate"]["change_pp"] for _, b in pairs])
            row["amplification_removed"] = (float(1.0 - np.mean(pp) / base_pp) if base_pp > 0 else None)
            row["target_gain_vs_baseline"] = mean_with_ci([e["target_gain"] / b["target_gain"] for e, b in pairs
                                                       if e["target_gain"] and b["target_gain"]])
            for m in ("recon_loss_other", "recon_loss_benign", "recon_loss_harmful", "harmful_present_loss"):
                row[f"{m}_vs_baseline"] = mean_with_ci([cap[e["index"]][f"{m}_after"] - base_cap[b["index"]][f"{m}_after"]
                                                    for e, b in pairs])
        if overhead and r["name"] in overhead:
            row["overhead"] = overhead[r["name"]]
        out[r["name"]] = row
    return out


# --- the measured comparison table ---------------------------------------------------------------------
def _is_baseline_run(run) -> bool:
    """A run that holds its own undefended baseline: trains everything and has a ``none`` regime."""
    ft = run.summary.get("finetune", {})
    return ft.get("trainable") == "all" and "defences" in ft and any(r["defence"] == "none" for r in ft["regimes"])


def _baseline_for(run, candidates: list):
    """(finetune summary, capability rows) of the first baseline run that has an undefended regime
    with the data, loss scope and target of ``run``'s first regime; None if there is none."""
    r0 = run.summary["finetune"]["regimes"][0]
    for b in candidates:
        ft = b.summary["finetune"]
        if baseline_of(ft["regimes"], r0) is not None:
            return ft, ft["defences"]["instances"]
    return None


def table_rows(runs_: list) -> list[dict]:
    """One row per defence regime of every run (loaded :class:`toymodels.runs.Run` objects), read from
    their ``summary.json``. A run that trains everything and has an undefended regime is its own
    baseline; a run that trains something else (LoRA) is paired with the undefended regime, same data
    and loss scope, of such a run (same seed and config, so the same pretrained weights:
    :func:`same_pretraining` checks it). Rows keep the summary's dicts, plus ``name``, ``run`` and
    ``plugs``."""
    runs_ = [r for r in runs_ if "defences" in r.summary.get("finetune", {})]
    baselines = [r for r in runs_ if _is_baseline_run(r)]
    if not baselines:
        raise ValueError("no member has an undefended regime (defence 'none', trainable 'all')")
    rows = []
    for run in runs_:
        ft = run.summary["finetune"]
        d = ft["defences"]
        own = run in baselines
        regs = d["regimes"] if own else per_regime_rows(ft, d["instances"], d.get("overhead"),
                                                        _baseline_for(run, baselines))
        for name, row in regs.items():
            key = "lora" if ft["trainable"] == "lora" else row["defence"]
            label = name if own or name == ft["trainable"] else f"{name} ({ft['trainable']})"
            rows.append({"name": label, "run": run.config.name,
                         "plugs": DEFENCES[key].plugs if key in DEFENCES else ft["trainable"], **row})
    return rows


def pretraining_rows(run) -> list[dict]:
    """Per λ of a run whose ``train.penalty_strength`` sweeps λ (``regularisation-pretrain``), from its
    saved summary, means with 95% bootstrap CIs over the seeds at that λ:

    * ``cos``: cos(target, first harmful feature) as pretraining left it;
    * ``recon_loss`` (the pretraining loss without the penalty), also ``recon_loss_vs_unpenalised``,
      paired seed by seed with the run's λ = 0 instances (same initialisations);
    * ``n_represented``, ``dims_per_feature`` (D*), ``penalty`` (P at the end, without λ);
    * per fine-tuning regime: ``rate_change_pp[regime]`` (the harmful feature's toxic rate change) and
      ``target_gain[regime]``."""
    c = run.config
    lams = np.broadcast_to(np.asarray(c.train.penalty_strength, np.float64), (c.n_inst,))
    inst = run.summary["instances"]
    ft = run.summary["finetune"]
    names = run.summary["features"]["names"]
    harmful = ft["harmful"][0]
    cos = np.asarray(run.summary["features"]["cosines"], np.float64)[:, names.index(ft["target"]),
                                                                     names.index(harmful)]
    base = [i for i in range(c.n_inst) if lams[i] == 0]
    regimes = [r["name"] for r in ft["regimes"]]
    rows = []
    for lam in dict.fromkeys(lams.tolist()):
        idx = [i for i in range(c.n_inst) if lams[i] == lam]
        per = {reg: [e for e in ft["instances"] if e["pretrain_instance"] in idx and e["regime"] == reg]
               for reg in regimes}
        rows.append({
            "lambda": float(lam), "n": len(idx), "target": ft["target"], "harmful": harmful,
            "cos": mean_with_ci(cos[idx]),
            "recon_loss": mean_with_ci([inst[i]["eval_loss"] for i in idx]),
            "recon_loss_vs_unpenalised": (mean_with_ci([inst[i]["eval_loss"] - inst[b]["eval_loss"]
                                                    for i, b in zip(idx, base)]) if len(base) == len(idx) else None),
            "n_represented": mean_with_ci([inst[i]["n_represented"] for i in idx]),
            "dims_per_feature": mean_with_ci([inst[i]["dimensions_per_feature"] for i in idx]),
            "penalty": mean_with_ci([inst[i]["penalty"] for i in idx if "penalty" in inst[i]]),
            "rate_change_pp": {reg: mean_with_ci([e["harmful"][harmful]["rate"]["change_pp"] for e in es])
                               for reg, es in per.items()},
            "target_gain": {reg: mean_with_ci([e["target_gain"] for e in es]) for reg, es in per.items()},
        })
    return rows


def same_pretraining(runs_: list) -> bool:
    """Whether every run fine-tuned from bit-identical pretrained weights (``weights.npz``)."""
    ref = runs_[0].weights
    return all(set(r.weights) == set(ref) and all(np.array_equal(r.weights[k], ref[k]) for k in ref) for r in runs_)


def _fmt(stat: dict | None, fmt: str = "{:+.2f}", ci: bool = True) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    s = fmt.format(stat["mean"])
    if ci and stat.get("ci95"):
        s += " [" + ", ".join(fmt.format(v) for v in stat["ci95"]) + "]"
    return s


STRENGTH_LABEL = {"loss": "λ = {:g}", "data": "{:.0%} of samples"}


def strength_label(row: dict) -> str:
    kind = DEFENCES.get(row["defence"])
    if kind is None or kind.plugs not in STRENGTH_LABEL:
        return "rank 1" if row.get("plugs") == "trainable" else "–"
    return STRENGTH_LABEL[kind.plugs].format(row["strength"])


def _milli(stat: dict | None, ci: bool = True) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    return _fmt({"mean": 1e3 * stat["mean"], "ci95": [1e3 * v for v in stat["ci95"]] if ci and stat.get("ci95") else None})


DATA_DESCRIPTION = {"task": "the target and the benign features; the harmful feature never present",
                    "narrow": "only the target feature", "full": "the pretraining distribution"}


def _markdown_row(r: dict) -> str:
    removed = r.get("amplification_removed")
    ovh = (r.get("overhead") or {}).get("ratio_median")
    return " | ".join([
        f"| {r['name']}", r["plugs"], strength_label(r), _fmt(r["rate_change_pp"]),
        "–" if removed is None else f"{100 * removed:.0f}%", _fmt(r["preact_change"], "{:+.3f}", ci=False),
        _fmt(r["target_gain"], "{:.2f}", ci=False), _milli(r.get("recon_loss_benign_vs_baseline")),
        _milli(r.get("harmful_present_loss_vs_baseline"), ci=False),
        _fmt(r["harmful_norm_after"], "{:.2f}", ci=False),
        _fmt(r["n_represented_after"], "{:.2f}", ci=False), _fmt(r["dims_per_feature_after"], "{:.2f}", ci=False),
        "not measured" if ovh is None else f"{ovh:.2f}×"]) + " |"


def markdown_table(rows: list[dict], n_seeds: int) -> str:
    """The defences table as markdown: every number comes from the rows (i.e. from summary.json)."""
    head = ("| defence | plugs in | strength | Δ toxic rate [pp] (95% CI) | amplification removed | "
            "Δ pre-act (target input) | target gain (×) | Δ benign features' loss vs undefended (×10⁻³, 95% CI) | "
            "Δ toxic's loss when present vs undefended (×10⁻³) | toxic norm after | features represented | D* | "
            "step time vs undefended |")
    lines = []
    for data in dict.fromkeys(r["data"] for r in rows):
        group = [r for r in rows if r["data"] == data]
        title = (f"**Fine-tuning data: {data}** ({DATA_DESCRIPTION.get(data, data)}; loss on "
                 f"{group[0]['loss_scope']} outputs)")
        lines += [title, "", head, "|" + "---|" * (head.count("|") - 1)]
        lines += [_markdown_row(r) for r in group]
        lines.append("")
    pre = rows[0]
    lines.append(f"Means over {n_seeds} pretrained models (seeds); 95% percentile-bootstrap CIs over seeds. Δ toxic "
                 "rate: change of P(x'_toxic > τ | x_toxic = 0) on the pretraining distribution, in percentage "
                 "points; amplification removed: 1 − mean Δ / mean Δ(undefended); target gain: the target's "
                 "read-out on its unit input after / before; benign features' loss: the pretraining loss over the "
                 "features that are neither target nor harmful, after fine-tuning, minus the paired undefended "
                 "run's; toxic's loss when present: E[(x_toxic − x'_toxic)² | x_toxic ≠ 0] against the paired "
                 "undefended run (a defence that deletes the feature pays there); pretrained values: toxic norm "
                 f"{_fmt(pre['harmful_norm_before'], '{:.2f}', ci=False)}, features represented (‖W_i‖ > 0.5) "
                 f"{_fmt(pre['n_represented_before'], '{:.2f}', ci=False)}, D* "
                 f"{_fmt(pre['dims_per_feature_before'], '{:.2f}', ci=False)}; step time: median ratio of "
                 "interleaved timed chunks against the undefended step, same process, compile excluded (the "
                 "filters run online, per step; an offline filter costs one pass over the data instead; a run "
                 "with the same program shape is timed once, its other data regimes say 'not measured').")
    return "\n".join(lines)
