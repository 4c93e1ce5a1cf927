"""Training SAEs on the pretrained models' hidden activations, in the engine, and measuring them.

Per variant of ``[sae]`` one compiled sweep of :func:`toymodels.core.engine.fit`, whose instances are

    s = ((model · n_sizes + size) · n_sparsities + sparsity) · n_seeds + seed      (:class:`SAEPlan`)

(``sae.seeds = 1``, the default, is the grid without a seed axis; an instance's init key is fold_in(·, s)).

Each instance's objective draws x from its pretrained model's data distribution (the run's sampler,
fresh every step), computes the frozen model's hidden activation h = hidden(x) (W x for the tied models),
normalises it, h ← c h with c = √(d / E‖h‖²) of that model, and takes one SAE loss (:mod:`.sae`). The model
is data of the instance (``inst["model"]``), never a parameter, so nothing but the SAE trains. A deep model's
SAEs can read any layer l instead, h_l = W_l x_{l−1} (``layer``; :mod:`.layers`), and are then scored
against W_l's columns.

Measured on a fixed evaluation batch per model (:func:`evaluate`): explained variance
1 − Σ‖h − ĥ‖² / Σ‖h − h̄‖², L0 (active latents per sample, also over non-empty samples), dead latents
(never active on the batch), each latent's mean code when active, and BatchTopK's inference threshold.
Against ground truth (:func:`recovery`): MCC and mean max cosine of the alive latents' decoder directions
with the true columns W_j (:mod:`.metrics`), signed and |cos|, beside their chance levels
(:func:`chance_fields`).
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
from flax import nnx

from ..config import Config
from ..core import data as tdata
from ..core.engine import fit, init_state
from ..core.geometry import feature_norms
from . import layers, metrics
from . import sae as S

SAE_SEED_OFFSET = 800   # fold_in(seed key, ·): the SAEs' init (0), data (1), evaluation batch (2), revival (3)
SCALE_BATCH = 16_384    # samples that fix each model's activation scale c


@dataclass(frozen=True)
class SAEPlan:
    """Which SAE instance is what, for one variant: instance s trains on model ``model[s]`` with ``size[s]``
    latents (of ``L``, the largest size), sparsity setting ``sparsity[s]`` and init seed ``seed[s]``;
    ``position[s]``: its index in the variant's full grid (its init key; differs from s only when
    :func:`train_variant` trains a subset)."""

    variant: str
    model: np.ndarray
    size: np.ndarray
    sparsity: np.ndarray
    L: int
    seed: np.ndarray | None = None
    position: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.model)
        if self.seed is None:
            object.__setattr__(self, "seed", np.zeros(n, np.int64))
        if self.position is None:
            object.__setattr__(self, "position", np.arange(n))

    def subset(self, idx) -> SAEPlan:
        """The instances ``idx`` of this plan (their positions kept)."""
        idx = np.asarray(idx, np.int64)
        return SAEPlan(self.variant, self.model[idx], self.size[idx], self.sparsity[idx], self.L, self.seed[idx],
                       self.position[idx])

    @property
    def n(self) -> int:
        return len(self.model)


def make_plan(cfg: Config, variant: str, models=None) -> SAEPlan:
    """Every (model, dictionary size, sparsity, seed) of ``cfg.sae`` for ``variant`` (``models``: which
    pretrained instances; default all)."""
    sizes = cfg.sae.sizes(cfg.data.n_features)
    sp = cfg.sae.sparsities(variant)
    models = np.arange(cfg.n_inst) if models is None else np.asarray(models)
    axes = (models, np.arange(len(sizes)), np.arange(len(sp)), np.arange(cfg.sae.seeds))
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 4)
    return SAEPlan(variant, grid[:, 0], np.asarray(sizes)[grid[:, 1]], np.asarray(sp, np.float64)[grid[:, 2]],
                   int(max(sizes)), grid[:, 3])


def root_key(cfg: Config) -> jax.Array:
    return jax.random.fold_in(jax.random.key(cfg.seed), SAE_SEED_OFFSET)


# the kinds whose hidden activation is W x (through a ReLU for two of them): read feature-major, fast
SINGLE_LAYER_KINDS = layers.SINGLE_LAYER_KINDS


def hidden_fn(graphdef, layer: int | None = None):
    """``hidden(model_state, x) -> h`` (B, d) of one pretrained model at ``layer`` (None: ``W``'s layer;
    :func:`.layers.activations`)."""
    return lambda state, x: layers.activations(nnx.merge(graphdef, state), x, layer)


def hidden_t_fn(cfg: Config, graphdef=None, layer: int | None = None):
    """``hidden_t(model_state, x) -> hᵀ`` (d, B): the model's hidden activation at ``layer`` (None: ``W``'s),
    feature-major. For the single-layer kinds W xᵀ (through a ReLU for the models with a hidden ReLU), with xᵀ
    materialised once (as the engine's ``model_loss``); for the other kinds the model's own
    :func:`.layers.activations` (needs ``graphdef``), transposed."""
    if cfg.model.kind not in SINGLE_LAYER_KINDS:
        if graphdef is None:
            raise ValueError(f"hidden_t_fn: model.kind={cfg.model.kind!r} needs the graphdef")
        return lambda state, x: layers.activations(nnx.merge(graphdef, state), x, layer).T
    relu = cfg.model.kind in ("relu_hidden", "abs_computation")

    def hidden_t(state, x):
        ht = state["W"][...] @ jax.lax.optimization_barrier(x.T)
        return jax.nn.relu(ht) if relu else ht

    return hidden_t


def activation_scale(cfg: Config, graphdef, params, layer: int | None = None) -> np.ndarray:
    """c = √(d / E‖h‖²) per pretrained model, from a fixed batch of SCALE_BATCH samples (key fold_in(root,
    2) and the model index): the SAEs see c h, whose mean squared norm is d. h: the activations at ``layer``
    (None: ``W``'s)."""
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=SCALE_BATCH))
    key = jax.random.fold_in(root_key(cfg), 2)
    hidden = hidden_fn(graphdef, layer)

    def one(state, p, i):
        h = hidden(state, sample(jax.random.fold_in(key, i), p))
        return jnp.sqrt(h.shape[1] / jnp.maximum(jnp.mean(jnp.sum(h**2, axis=1)), 1e-12))

    p = jnp.asarray(cfg.feature_probability())
    return np.asarray(jax.jit(jax.vmap(one))(params, p, jnp.arange(cfg.n_inst)))


def instance_arrays(cfg: Config, plan: SAEPlan, params, scale) -> dict:
    """Per SAE instance: the frozen model, its feature probability, the latent mask (1 for the first
    ``size`` latents), the sparsity setting, the activation scale c."""
    idx = jnp.asarray(plan.model)
    mask = (np.arange(plan.L)[None, :] < plan.size[:, None]).astype(np.float32)
    return {"model": jax.tree.map(lambda a: a[idx], params),
            "feature_probability": jnp.asarray(cfg.feature_probability()[plan.model]),
            "mask": jnp.asarray(mask), "sparsity": jnp.asarray(plan.sparsity, jnp.float32),
            "scale": jnp.asarray(np.asarray(scale)[plan.model], jnp.float32)}


def kmax(cfg: Config) -> int:
    return int(max(cfg.sae.k))


def objective(cfg: Config, graphdef, variant: str, layer: int | None = None):
    """The SAE loss of one instance on a fresh batch of its model's normalised activations (at ``layer``)."""
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=cfg.sae.batch_size))
    hidden_t, k, eps = hidden_t_fn(cfg, graphdef, layer), kmax(cfg), cfg.sae.bandwidth

    def fn(params, key, inst):
        ht = hidden_t(inst["model"], sample(key, inst["feature_probability"])) * inst["scale"]
        return S.loss(params, ht, inst, variant, k, eps)

    return fn


@dataclass
class Trained:
    """One variant's trained SAEs: plan, parameters (leading axis n), re-initialisations per latent,
    training seconds, and the layer whose activations they read (None: ``W``'s)."""

    plan: SAEPlan
    params: Any
    revived: np.ndarray
    seconds: float
    inst: dict
    layer: int | None = None


def train_variant(cfg: Config, graphdef, params, variant: str, scale=None, *, models=None, on_log=None,
                  progress=True, layer: int | None = None, instances=None) -> Trained:
    """Train every SAE of ``variant`` (:func:`make_plan`) in one compiled sweep of the engine, on the
    activations at ``layer`` (None: ``W``'s layer; ``scale`` must be that layer's). ``instances``: train only
    these positions of the grid (each with the init, data and masks it has in the full sweep), e.g. one SAE
    alone to compare it with the vmapped sweep."""
    sc = cfg.sae
    plan = make_plan(cfg, variant, models)
    if instances is not None:
        plan = plan.subset(instances)
    scale = activation_scale(cfg, graphdef, params, layer) if scale is None else scale
    inst = instance_arrays(cfg, plan, params, scale)
    root = root_key(cfg)
    d = cfg.model.d_hidden
    k_init = jax.random.fold_in(jax.random.fold_in(root, 0), S.VARIANTS.index(variant))
    k_data = jax.random.fold_in(root, 1)
    sae_params = jax.vmap(lambda i: S.init_params(jax.random.fold_in(k_init, i), d, plan.L, sc.threshold_init))(
        jnp.asarray(plan.position))
    until = int(sc.revive_until * sc.steps)
    tx = S.revive(optax.adam(sc.lr), sc.revive_after, until, sc.threshold_init, jax.random.fold_in(root, 3))
    # the data stream of instance s is its model's: every SAE of one model sees the same activations
    keys = jax.vmap(lambda m: jax.random.fold_in(k_data, m))(jnp.asarray(plan.model))
    state = init_state(sae_params, tx, keys)
    state.opt_state = S.set_revive_mask(state.opt_state, inst["mask"])
    t = time.perf_counter()
    state = fit(state, objective(cfg, graphdef, variant, layer), tx, inst, sc.steps, chunk_size=sc.chunk_size,
                log_every=sc.log_every, on_log=on_log, progress=progress if progress is not True else f"sae {variant}")
    jax.block_until_ready(state.params)
    return Trained(plan, state.params, np.asarray(state.opt_state.revived), time.perf_counter() - t, inst, layer)


def eval_fn(cfg: Config, graphdef, trained: Trained, detect: bool = False):
    """``one(params, inst, model_index[, best]) -> dict`` of :func:`evaluate` for one SAE instance. With
    ``detect``, it also takes ``best`` (L,) (each latent's true feature) and returns the detection counts
    ``tp``, ``fp``, ``fn`` (L,): on the evaluation batch, latent i fires (f_i > 0) with / without its feature
    x_best(i) > 0 active, or its feature is active while it is silent (:mod:`.synthbench`)."""
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=cfg.sae.eval_batch_size))
    key = jax.random.fold_in(root_key(cfg), 2)
    hidden_t, k, eps = hidden_t_fn(cfg, graphdef, trained.layer), kmax(cfg), cfg.sae.bandwidth
    variant = trained.plan.variant

    def one(p, inst, m, best=None):
        x = sample(jax.random.fold_in(jax.random.fold_in(key, 1), m), inst["feature_probability"])
        ht = hidden_t(inst["model"], x) * inst["scale"]
        if variant in S.THRESHOLDED:
            f, thr = S.batch_topk_codes(S.preactivations(p, ht, inst["mask"]), inst["sparsity"])
        else:
            f, thr = S.codes(p, ht, inst, variant, k, eps), jnp.zeros(())
        err = jnp.sum((ht - S.decode(p, f, variant)) ** 2)
        var = jnp.sum((ht - ht.mean(1, keepdims=True)) ** 2)
        active = f > 0
        nonempty = jnp.sum(ht**2, axis=0) > 0
        n_active = active.sum(0)
        dirs = S.directions(p, variant)
        out = {"explained_variance": 1.0 - err / jnp.maximum(var, 1e-12), "l0": n_active.mean(),
               "l0_nonempty": jnp.sum(n_active * nonempty) / jnp.maximum(nonempty.sum(), 1),
               "fired": active.any(1) & (inst["mask"] > 0),
               "mean_code": jnp.sum(f, 1) / jnp.maximum(active.sum(1), 1), "threshold": thr,
               "directions": dirs / jnp.maximum(jnp.linalg.norm(dirs, axis=1, keepdims=True), S.EPS),
               "bias": p["b_dec"]}
        if detect:   # (L, B): latent i's feature active in sample b
            truth = jnp.take(x, best, axis=1).T > 0
            out |= {"tp": jnp.sum(active & truth, 1), "fp": jnp.sum(active & ~truth, 1),
                    "fn": jnp.sum(~active & truth, 1)}
        return out

    return one


def evaluate(cfg: Config, graphdef, trained: Trained) -> dict[str, np.ndarray]:
    """Per SAE instance, on a fixed evaluation batch of ``sae.eval_batch_size`` samples of its model
    (the same batch for every SAE of one model): ``explained_variance``, ``l0``, ``l0_nonempty``, ``fired``
    (L,) bool, ``mean_code`` (L,) mean code when active, ``threshold`` (BatchTopK's inference θ; 0
    otherwise), ``directions`` (L, d) unit decoder directions, ``bias`` (d,) b_dec (normalised units)."""
    one = eval_fn(cfg, graphdef, trained)
    out = jax.jit(jax.vmap(one))(trained.params, trained.inst, jnp.asarray(trained.plan.model))
    return {k: np.asarray(v) for k, v in out.items()}


def recovery(W: np.ndarray, directions: np.ndarray, fired: np.ndarray, min_norm: float = 0.5,
             signed: bool = True) -> dict:
    """Ground-truth recovery of one SAE: W (d, n) the model's true columns, directions (L, d), fired (L,).
    ``mcc`` over all n features (an unrepresented feature cannot be recovered and lowers it),
    ``mcc_represented`` over the features with ‖W_j‖ >= min_norm, ``mean_max_cos``, the matching
    (``matched_latent`` per feature, −1 for none, and ``matched_cos``). ``signed``: a latent along −W_j does
    not recover feature j (:func:`.metrics.cosines`; False for signed features, task 'abs'). ``mcc_abs`` and
    ``mean_max_cos_abs``: the same under SAELens' |cos| convention (never lower)."""
    W = np.asarray(W, np.float64)
    latent, value = metrics.match(directions, W, fired, signed)
    rep = np.asarray(feature_norms(W)) >= min_norm
    return {"mcc": float(value.mean()), "mcc_represented": float(value[rep].mean()) if rep.any() else None,
            "mean_max_cos": metrics.mean_max_cosine(directions, W, fired, signed), "n_represented": int(rep.sum()),
            "mcc_abs": metrics.mcc(directions, W, fired, signed=False),
            "mean_max_cos_abs": metrics.mean_max_cosine(directions, W, fired, signed=False),
            "matched_latent": latent.tolist(), "matched_cos": value.tolist()}


def chance_fields(rec: dict, chance: dict, signed: bool = True) -> dict:
    """A recovery row's chance columns (:func:`.metrics.chance_recovery` of its width and model): ``chance``
    (mean and 95th percentile of MCC / mean max cos, signed and |cos|) and ``beats_chance`` per score
    (score > its chance p95). Under ``signed=False`` (task 'abs') the "signed" scores are |cos| ones."""
    c = {k: chance[k if signed else k.split("_")[0] + "_abs"] for k in ("mcc", "mmcs")}
    c |= {k: chance[k] for k in ("mcc_abs", "mmcs_abs")}
    score = {"mcc": rec["mcc"], "mmcs": rec["mean_max_cos"], "mcc_abs": rec["mcc_abs"],
             "mmcs_abs": rec["mean_max_cos_abs"]}
    return {"chance": c, "beats_chance": {k: bool(score[k] > c[k]["p95"]) for k in score}}
