"""Detection before training: score a candidate fine-tuning set without fine-tuning on it.

Three detectors, each a number per set (larger = more suspicious), and the AUROC of separating adversarial
sets from random ones (chance 0.5). With ḡ_S = −∇_θ mean_{x∈S} ℓ(x; θ0) the set's first fine-tuning step:

* ``gradient``: ḡ_S projected on the gradient of the harmful *outputs*, ⟨ḡ_S, ∇P⟩ / ‖ḡ_S‖, with P the
  harmful pre-activations averaged over the defender's :data:`REFERENCE` task samples
  (:func:`.pool.harm_direction`). It needs the labelled harmful output (what a red-teamer measures), not
  the feature's direction. It is nearly
  the criterion the gradient selection maximises (the same ∇P, estimated on the reference sample rather
  than the attacker's pool): read its AUROC against the selected sets as close to an upper bound, not as
  a detector's result.
* ``recovered``: the first-order move of the target input's hidden code along the auditor's recovered
  harmful direction û_h, per unit step: ⟨û_h, J_h(e_t) ḡ_S⟩ / ‖ḡ_S‖ with J_h(e_t) = ∂h(e_t)/∂θ (a JVP).
  û_h is the audit's headline direction (:func:`toymodels.audit.auditor.labelled_directions`: a median
  contrast of the hidden activations of a small labelled sample, no true W); in 2-D this is the
  inference issue's predictor ŝ_h cos(û_h, û_t) with the step in place of the unit push. Its angle to
  the true W_h is reported beside a random direction's chance of coming as close.
* ``distance``: the set's distance from the task distribution, the unbiased squared MMD with a Gaussian
  kernel (bandwidth: the median pairwise squared distance of the reference) between the set and
  :data:`REFERENCE` fresh task samples. It needs no model and no label.

The AUROC is computed within each pretrained model (a detector is used on one model at a time) and
averaged over the models; its interval resamples whole models.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from flax import nnx

from .. import stats
from ..audit import auditor, layers, metrics
from ..config import Config
from ..config.sae import AuditConfig
from ..core.engine import model_loss
from ..core.planting import names
from .pool import _flat

REFERENCE = 1000   # task samples the distance detector compares a set with
DETECTORS = ("gradient", "recovered", "distance")   # the order of score_sets' outputs


@partial(jax.jit, static_argnums=(0, 5))
def gradient_score(graphdef, state, S, inst: dict, g_harm, task: str) -> jax.Array:
    """⟨ḡ_S, ∇P⟩ / ‖ḡ_S‖ for one set S (N, n)."""
    def loss(st):
        return model_loss(nnx.merge(graphdef, st), S, task, inst["loss_weight"], inst["out_scale"])
    g = -_flat(jax.grad(loss)(state))
    return jnp.dot(g, g_harm) / jnp.maximum(jnp.linalg.norm(g), 1e-30)


def recovered_direction(cfg: Config, graphdef, state, model: int, target: int, harm: int) -> tuple[np.ndarray, dict]:
    """The auditor's harmful direction û_h (d,) of pretrained model ``model`` (``state``: its parameters),
    from ``audit.labelled`` labelled inputs per class (the audit's samples and median contrast), and its
    truth for scoring only: angle to W_h, whether it is "found" (within FOUND_DEG and nearest), and the
    chance that a random direction is within FOUND_DEG."""
    all_names = names(cfg)
    labelled = (cfg.audit or AuditConfig()).labelled
    x = auditor.samples(cfg, model, {all_names[target]: target, all_names[harm]: harm}, labelled)
    h = {c: auditor.hidden(graphdef, state, a) for c, a in x.items()}
    u = auditor.labelled_directions(h, all_names[target], [all_names[harm]])["harmful"][0]["direction"]
    W = np.asarray(layers.true_directions(nnx.merge(graphdef, state)), np.float64)
    truth = auditor.direction_found(u, W, harm) | {
        "chance": metrics.cap_probability(auditor.FOUND_DEG, W.shape[0]), "found_deg": auditor.FOUND_DEG}
    return np.asarray(u, np.float32), truth


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
def recovered_score(graphdef, state, S, inst: dict, u_harm, e_target, task: str) -> jax.Array:
    """⟨û_h, J_h(e_t) ḡ_S⟩ / ‖ḡ_S‖ for one set S (N, n): û_h (d,) the recovered harmful direction, e_t (n,)
    the target's unit input; h at the layer û_h was recovered from (:func:`.layers.activations`, ``W``'s)."""
    def loss(st):
        return model_loss(nnx.merge(graphdef, st), S, task, inst["loss_weight"], inst["out_scale"])
    g = jax.tree.map(jnp.negative, jax.grad(loss)(state))
    _, dh = jax.jvp(lambda st: layers.activations(nnx.merge(graphdef, st), e_target[None])[0], (state,), (g,))
    return jnp.dot(u_harm, dh) / jnp.maximum(jnp.linalg.norm(_flat(g)), 1e-30)


@partial(jax.jit, static_argnums=(0, 8))
def score_sets(graphdef, state, sets, inst: dict, g_harm, u_harm, e_target, ref, task: str):
    """The detectors' scores of every set in ``sets`` (K, N, n) of one model: gradient, recovered and
    distance, each (K,)."""
    two_sigma2 = bandwidth(ref)
    M = ref.shape[0]
    krr = (jnp.sum(jnp.exp(-_sq(ref, ref) / two_sigma2)) - M) / (M * (M - 1))
    grad = jax.vmap(lambda S: gradient_score(graphdef, state, S, inst, g_harm, task))(sets)
    rec = jax.vmap(lambda S: recovered_score(graphdef, state, S, inst, u_harm, e_target, task))(sets)
    dist = jax.lax.map(lambda S: mmd2(S, ref, two_sigma2, krr), sets)
    return grad, rec, dist


def auroc(pos, neg) -> float:
    """P(score of a positive > score of a negative), ties counted 1/2 (Mann-Whitney U / (n_pos n_neg))."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float(scipy.stats.mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def auroc_with_ci(pos, neg, pos_model, neg_model, n_resamples: int = stats.N_RESAMPLES, seed: int = stats.SEED) -> dict:
    """The AUROC within each pretrained model (``*_model``: the model of each score), averaged over the
    models that have both kinds of set, with a percentile interval over resampled models
    (:func:`toymodels.stats.mean_ci`).

    Within a model, because a detector is used on one model: scores of different models sit on different
    scales (their gradients' norms differ), so a pooled AUROC would also rank the models against each
    other. The pooled value is kept beside it (``pooled``). Returns {auroc, ci95, n_clusters, n_pos,
    n_neg, chance, per_model, pooled}."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    pm, nm = np.asarray(pos_model), np.asarray(neg_model)
    models = [g for g in np.unique(np.concatenate([pm, nm])) if (pm == g).any() and (nm == g).any()]
    per = [auroc(pos[pm == g], neg[nm == g]) for g in models]
    return {"auroc": float(np.mean(per)) if per else float("nan"),
            "ci95": stats.mean_ci(per, n_resamples=n_resamples, seed=seed),
            "n_clusters": len(models), "n_pos": int(len(pos)), "n_neg": int(len(neg)), "chance": 0.5,
            "per_model": per, "pooled": auroc(pos, neg)}
