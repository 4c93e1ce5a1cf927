"""Detection before training: score a candidate fine-tuning set without fine-tuning on it.

Two detectors, each a number per set (larger = more suspicious), and the AUROC of separating adversarial
sets from random ones (chance 0.5):

* ``gradient``: the set's first fine-tuning step projected on the labelled harmful direction,
  ⟨ḡ_S, ∇P⟩ / ‖ḡ_S‖ with ḡ_S = −∇_θ mean_{x∈S} ℓ(x; θ0) (:mod:`.pool`). This is the first-order
  spill-over predictor of the audit, with the harmful direction read from the pretrained model's
  harmful columns, as the geometric filter does (labelled, not SAE-recovered).
* ``distance``: the set's distance from the task distribution, the unbiased squared MMD with a Gaussian
  kernel (bandwidth: the median pairwise squared distance of the reference) between the set and
  :data:`REFERENCE` fresh task samples. It needs no model and no label.

The AUROC's interval resamples whole pretrained models (a cluster bootstrap: every set of a model shares
its pool and geometry).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from flax import nnx

from .. import stats
from ..core.engine import model_loss
from .pool import _flat

REFERENCE = 1000   # task samples the distance detector compares a set with


@partial(jax.jit, static_argnums=(0, 5))
def gradient_score(graphdef, state, S, inst: dict, g_harm, task: str) -> jax.Array:
    """⟨ḡ_S, ∇P⟩ / ‖ḡ_S‖ for one set S (N, n)."""
    def loss(st):
        return model_loss(nnx.merge(graphdef, st), S, task, inst["loss_weight"], inst["out_scale"])
    g = -_flat(jax.grad(loss)(state))
    return jnp.dot(g, g_harm) / jnp.maximum(jnp.linalg.norm(g), 1e-30)


def _sq(a, b):
    return jnp.maximum(jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2 * a @ b.T, 0.0)


@jax.jit
def bandwidth(R) -> jax.Array:
    """2σ² with σ the median pairwise distance within the reference R (the median heuristic)."""
    return jnp.maximum(jnp.median(_sq(R, R)), 1e-12)


@jax.jit
def mmd2(S, R, two_sigma2, krr=None) -> jax.Array:
    """Unbiased MMD² between samples S (N, n) and R (M, n), Gaussian kernel exp(−‖a−b‖²/(2σ²))
    (Gretton et al. 2012, eq. 3); ``two_sigma2`` from :func:`bandwidth`; ``krr`` the reference's own
    term when already known."""
    k = lambda d: jnp.exp(-d / two_sigma2)
    N, M = S.shape[0], R.shape[0]
    kss = (jnp.sum(k(_sq(S, S))) - N) / (N * (N - 1))
    if krr is None:
        krr = (jnp.sum(k(_sq(R, R))) - M) / (M * (M - 1))
    return kss + krr - 2 * jnp.mean(k(_sq(S, R)))


@partial(jax.jit, static_argnums=(0, 6))
def score_sets(graphdef, state, sets, inst: dict, g_harm, ref, task: str):
    """Both detectors' scores of every set in ``sets`` (K, N, n) of one model: (gradient (K,), distance (K,))."""
    two_sigma2 = bandwidth(ref)
    M = ref.shape[0]
    krr = (jnp.sum(jnp.exp(-_sq(ref, ref) / two_sigma2)) - M) / (M * (M - 1))
    grad = jax.vmap(lambda S: gradient_score(graphdef, state, S, inst, g_harm, task))(sets)
    dist = jax.lax.map(lambda S: mmd2(S, ref, two_sigma2, krr), sets)
    return grad, dist


def auroc(pos, neg) -> float:
    """P(score of a positive > score of a negative), ties counted 1/2 (Mann-Whitney U / (n_pos n_neg))."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float(scipy.stats.mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def auroc_with_ci(pos, neg, pos_model, neg_model, n_resamples: int = stats.N_RESAMPLES, seed: int = stats.SEED) -> dict:
    """The AUROC of ``pos`` against ``neg`` and a percentile interval from resampling whole models
    (``*_model``: the pretrained model of each score). Returns {auroc, ci95, n_clusters, n_pos, n_neg, chance}."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    pm, nm = np.asarray(pos_model), np.asarray(neg_model)
    models = np.unique(np.concatenate([pm, nm]))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_resamples):
        pick = rng.choice(models, len(models), replace=True)
        p = np.concatenate([pos[pm == g] for g in pick])
        q = np.concatenate([neg[nm == g] for g in pick])
        if len(p) and len(q):
            boots.append(auroc(p, q))
    ci = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))] if boots else None
    return {"auroc": auroc(pos, neg), "ci95": ci, "n_clusters": int(len(models)), "n_pos": int(len(pos)),
            "n_neg": int(len(neg)), "chance": 0.5}
