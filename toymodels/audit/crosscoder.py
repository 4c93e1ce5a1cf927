"""Model diffing with ground truth: a crosscoder on (pretrained, fine-tuned) activation pairs, scored.

For each fine-tune, one crosscoder reads the pair of hidden activations of the same input x under the
pretrained and the fine-tuned model, h = [h⁰; h¹] = [W⁰x; W¹x] ∈ R^{2d}, into L shared latents and
writes both back with per-model decoders D⁰, D¹ (Lindsey et al. 2024)::

    z = W_encᵀ (h − b_dec) + b_enc,     ĥᵐ = Σ_i f_i Dᵐ_i + b_decᵐ          (m = 0, 1)

It is an SAE (:mod:`.sae`) on the concatenated activation, with the decoder row D_i = [D⁰_i; D¹_i]:

* ``relu_l1``: L = Σ_m ‖hᵐ − ĥᵐ‖² + λ Σ_i f_i (‖D⁰_i‖ + ‖D¹_i‖), the sum of the per-model decoder norms
  of Anthropic's crosscoders. That penalty favours latents that live in one model only, which is why
  L1 crosscoders are known to report "new" latents of the fine-tuned model that are not new.
* ``batch_topk`` (and the other variants): the SAE's rule on the joint code, with the joint decoder row
  D_i normalised, ‖D_i‖ = 1, no penalty (Minder et al. 2025 use BatchTopK against these artefacts).

A latent's change is its relative decoder norm (‖D¹_i‖ − ‖D⁰_i‖) / (‖D¹_i‖ + ‖D⁰_i‖) ∈ [−1, 1] (+1: only in
the fine-tuned model). Ground truth: feature j was *amplified* when ‖W¹_j‖ / ‖W⁰_j‖ − 1 exceeds
``audit.amplified``. Each latent is matched to a true feature (Hungarian on the norm-weighted |cos| of
D⁰_i with W⁰_j and D¹_i with W¹_j); a latent is *relevant* when its feature was amplified. The ranking of
latents by change is scored by precision and recall at k (recall counts features found) and AUROC.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

from ..config import Config
from ..core import data as tdata
from ..core.engine import fit, init_state
from . import metrics
from . import sae as S
from .train import SAE_SEED_OFFSET, kmax

CROSSCODER_SEED_OFFSET = 810    # fold_in(seed key, ·): crosscoder init (0) and data (1)
KS = (1, 3, 5)                  # precision and recall at these k
EXCLUSIVE = 0.9                 # |relative norm| above this: a latent of one model only


def loss(params, ht, inst, variant: str, d: int, k_max: int, eps: float):
    """The crosscoder loss for one instance; ht = [h⁰; h¹]ᵀ (2d, B), normalised."""
    if variant != "relu_l1":
        return S.loss(params, ht, inst, variant, k_max, eps)
    f = S.codes(params, ht, inst, variant)
    rec = jnp.mean(jnp.sum((ht - S.decode(params, f, variant)) ** 2, axis=0))
    W = params["W_dec"]
    norms = jnp.linalg.norm(W[:, :d], axis=1) + jnp.linalg.norm(W[:, d:], axis=1)
    return rec + inst["sparsity"] * jnp.mean(norms @ f)


def pair_arrays(cfg: Config, W0: np.ndarray, W1: np.ndarray, pretrain_index: np.ndarray) -> dict:
    """Per fine-tune: its (rotated) pretrained and fine-tuned W, the data distribution of its model, and
    the activation scale c = √(2d / E‖[h⁰; h¹]‖²) from a fixed batch."""
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=8192))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), CROSSCODER_SEED_OFFSET), 2)
    p = jnp.asarray(cfg.feature_probability()[pretrain_index])

    def scale(w0, w1, pi, m):
        x = sample(jax.random.fold_in(key, m), pi)
        e = jnp.mean(jnp.sum((x @ w0.T) ** 2, axis=1) + jnp.sum((x @ w1.T) ** 2, axis=1))
        return jnp.sqrt(2 * w0.shape[0] / jnp.maximum(e, 1e-12))

    W0, W1 = jnp.asarray(W0), jnp.asarray(W1)
    c = jax.jit(jax.vmap(scale))(W0, W1, p, jnp.asarray(pretrain_index))
    return {"W0": W0, "W1": W1, "feature_probability": p, "scale": c}


def train(cfg: Config, variant: str, W0: np.ndarray, W1: np.ndarray, pretrain_index: np.ndarray, *,
          on_log=None, progress=True) -> tuple[dict, dict, float]:
    """One crosscoder per fine-tune (W0, W1: (n_ft, d, n)), in one compiled sweep of the engine. The
    dictionary size is the first of ``sae.dict_sizes`` (2 n by default); sparsity the first value of the
    variant's list; ``sae.steps`` steps. Returns (params, inst, seconds)."""
    if cfg.model.kind not in ("relu_output", "linear"):
        raise ValueError("crosscoders read h = W x: model.kind must be relu_output or linear")
    sc, n_ft, d = cfg.sae, W0.shape[0], W0.shape[1]
    L = sc.sizes(cfg.data.n_features)[0]
    inst = pair_arrays(cfg, W0, W1, pretrain_index)
    inst |= {"mask": jnp.ones((n_ft, L)), "sparsity": jnp.full((n_ft,), sc.sparsities(variant)[0], jnp.float32)}
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=sc.batch_size))
    k_max, eps = kmax(cfg), sc.bandwidth

    def objective(params, key, i):
        xt = jax.lax.optimization_barrier(sample(key, i["feature_probability"]).T)
        ht = jnp.concatenate([i["W0"] @ xt, i["W1"] @ xt], axis=0) * i["scale"]
        return loss(params, ht, i, variant, d, k_max, eps)

    root = jax.random.fold_in(jax.random.key(cfg.seed), CROSSCODER_SEED_OFFSET)
    k_init = jax.random.fold_in(jax.random.fold_in(root, 0), S.VARIANTS.index(variant))
    params = jax.vmap(lambda k: S.init_params(jax.random.fold_in(k_init, k), 2 * d, L, sc.threshold_init))(
        jnp.arange(n_ft))
    revive_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), SAE_SEED_OFFSET), 4)
    tx = S.revive(optax.adam(sc.lr), sc.revive_after, int(sc.revive_until * sc.steps), sc.threshold_init, revive_key)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, 1), i))(jnp.asarray(pretrain_index))
    state = init_state(params, tx, keys)
    t = time.perf_counter()
    state = fit(state, objective, tx, inst, sc.steps, chunk_size=sc.chunk_size, log_every=sc.log_every, on_log=on_log,
                progress=progress if progress is not True else f"crosscoder {variant}")
    jax.block_until_ready(state.params)
    return jax.tree.map(np.asarray, state.params), inst, time.perf_counter() - t


def latent_changes(params: dict, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(relative norm change (n_ft, L), D⁰ (n_ft, L, d), D¹ (n_ft, L, d)) of trained crosscoders."""
    W = np.asarray(params["W_dec"], np.float64)
    D0, D1 = W[..., :d], W[..., d:]
    n0, n1 = np.linalg.norm(D0, axis=-1), np.linalg.norm(D1, axis=-1)
    return (n1 - n0) / np.maximum(n0 + n1, 1e-12), D0, D1


def score_one(change: np.ndarray, D0: np.ndarray, D1: np.ndarray, W0: np.ndarray, W1: np.ndarray, fired: np.ndarray,
              amplified: float, min_norm: float = 0.5) -> dict:
    """One fine-tune's diff against the truth: which features were amplified, the latents matched to them,
    precision/recall at k and the AUROC of ranking the (fired) latents by change."""
    n0, n1 = np.linalg.norm(W0, axis=0), np.linalg.norm(W1, axis=0)
    truly = (n1 / np.maximum(n0, 1e-12) - 1.0 > amplified) & (np.maximum(n0, n1) >= min_norm)
    w0, w1 = np.linalg.norm(D0, axis=1), np.linalg.norm(D1, axis=1)
    C = (metrics.cosines(D0, W0) * w0[:, None] + metrics.cosines(D1, W1) * w1[:, None]) / np.maximum(w0 + w1, 1e-12)[:, None]
    alive = np.flatnonzero(fired)
    feature_of = np.full(len(change), -1)
    if len(alive):
        rows, cols = scipy.optimize.linear_sum_assignment(C[alive], maximize=True)
        good = C[alive][rows, cols] >= 0.5
        feature_of[alive[rows[good]]] = cols[good]
    relevant = (feature_of >= 0) & truly[np.maximum(feature_of, 0)]
    s = np.where(fired, change, np.nan)
    out = {"n_amplified": int(truly.sum()), "amplified": np.flatnonzero(truly).tolist(),
           "auroc": metrics.auroc(s, relevant), "n_exclusive_new": int(np.sum(fired & (change > EXCLUSIVE))),
           "n_exclusive_old": int(np.sum(fired & (change < -EXCLUSIVE))), "n_alive": int(len(alive)),
           "top_latent_feature": int(feature_of[np.nanargmax(s)]) if len(alive) else -1}
    for k in KS:
        p, r = metrics.precision_recall_at_k(np.where(fired, change, -np.inf), relevant, k, feature_of)
        out[f"precision_at_{k}"], out[f"recall_at_{k}"] = p, r
    out["_scores"], out["_relevant"] = s, relevant
    return out


def fired_latents(cfg: Config, variant: str, params: dict, inst: dict) -> np.ndarray:
    """Which latents fire on a fixed batch of 8192 pairs, (n_ft, L) bool."""
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=8192))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), CROSSCODER_SEED_OFFSET), 3)
    k_max, eps = kmax(cfg), cfg.sae.bandwidth

    def one(p, i, m):
        xt = sample(jax.random.fold_in(key, m), i["feature_probability"]).T
        ht = jnp.concatenate([i["W0"] @ xt, i["W1"] @ xt], axis=0) * i["scale"]
        return (S.codes(p, ht, i, variant, k_max, eps) > 0).any(1)

    p = jax.tree.map(jnp.asarray, params)
    return np.asarray(jax.jit(jax.vmap(one))(p, inst, jnp.arange(inst["scale"].shape[0])))


def diff_summary(cfg: Config, variant: str, W0, W1, pretrain_index, *, on_log=None, progress=True) -> dict:
    """Train the crosscoders of ``variant`` on every fine-tune and score them: per fine-tune rows, and the
    means over fine-tunes with an amplified feature plus the AUROC over all their latents pooled."""
    params, inst, seconds = train(cfg, variant, W0, W1, pretrain_index, on_log=on_log, progress=progress)
    change, D0, D1 = latent_changes(params, W0.shape[1])
    fired = fired_latents(cfg, variant, params, inst)
    rows = [score_one(change[k], D0[k], D1[k], np.asarray(W0[k]), np.asarray(W1[k]), fired[k], cfg.audit.amplified)
            for k in range(len(change))]
    with_truth = [r for r in rows if r["n_amplified"] > 0]
    pooled_s = np.concatenate([r["_scores"] for r in with_truth]) if with_truth else np.array([])
    pooled_y = np.concatenate([r["_relevant"] for r in with_truth]) if with_truth else np.array([], bool)
    mean = lambda key: float(np.nanmean([r[key] for r in with_truth])) if with_truth else None
    summary = {"variant": variant, "seconds": round(seconds, 3), "n_finetunes": len(rows),
               "n_with_amplified": len(with_truth), "auroc_pooled": metrics.auroc(pooled_s, pooled_y),
               "auroc_mean": mean("auroc"), "exclusive_new_per_finetune": float(np.mean([r["n_exclusive_new"] for r in rows])),
               "exclusive_old_per_finetune": float(np.mean([r["n_exclusive_old"] for r in rows])),
               **{f"precision_at_{k}": mean(f"precision_at_{k}") for k in KS},
               **{f"recall_at_{k}": mean(f"recall_at_{k}") for k in KS}}
    for r in rows:
        del r["_scores"], r["_relevant"]
    return {**summary, "instances": rows}
