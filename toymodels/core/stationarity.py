"""Is a trained model at a stationary point of its pretraining objective? Its gradient on a large fresh batch.

For one instance with parameters θ = (W, b_final) (and whatever else the model has), the pretraining
objective is (:func:`toymodels.core.pretrain.reconstruction_objective`, :func:`toymodels.core.engine.model_loss`)

    L(θ) = E_x [ (1/n) Σ_i I_i (x_i − x'_i(θ))² ]    (+ λ P(θ) with an active ``train.penalty``)

This module estimates ∇_θ L on N fresh samples, drawn in K equal chunks of c = N / K so that memory
stays small (a chunk's x holds at most ``CHUNK_ELEMENTS`` numbers over all instances):

    ĝ = (1/K) Σ_k g_k,   g_k = ∇_θ L_k(θ),   L_k the objective on chunk k      (= the mean over all N)

per instance; shapes W (m, n) → ∇_W L (m, n), b_final (n,) → ∇_b L (n,). It reports, per instance,

* ``grad_norm``    ‖ĝ‖₂ over all parameters; ``grad_norm_W``, ``grad_norm_b_final``: per parameter;
* ``grad_noise``   the standard error of ĝ, sqrt( Σ_j Var_k(g_kj) / K ), from the spread of the chunk
                   gradients: the size ‖ĝ‖ has at an exact stationary point, from sampling alone;
* ``grad_rel``     ‖ĝ‖ / σ₁ with σ₁ = grad_noise·√N, the spread of ONE sample's gradient: the mean
                   gradient relative to the gradient noise of the data. It estimates an N-free number and
                   reads directly against training: the mean gradient is grad_rel·√B of the noise of a
                   training batch of B samples (B = 1024: 32·grad_rel);
* ``grad_z``       ‖ĝ‖ / grad_noise = grad_rel·√N: the gradient in units of this measurement's own noise;
* ``loss``         L on the same N samples; ``grad_samples``: N.

**Stationary** means ``grad_z < STATIONARY_Z`` = 8: the gradient is not distinguishable from zero on N
samples with a margin. The threshold comes from the measured noise floor: at the *exact* optimum of
each of the 256 tms-phase cells (2 features in 1-D; found with the closed-form expected loss
:func:`expected_loss_2in1` and Newton's method, ‖∇L‖ < 1e-14), on independent batches,

    N      draws (batches x cells)   max grad_z   99.9 % quantile   mean grad_z²
    2^18   15 x 256                  4.9          3.3               1.0
    2^20   10 x 256                  3.6          2.9               1.0
    2^21   10 x 256                  3.6          3.1               1.0

(mean grad_z² = 1: the noise estimate is right; the tail at 2^18 comes from the sparsest cells, where
only p²N ≈ 26 samples have both features on). 8 is 1.6x the largest draw at any N and 2.2x at 2^21.
A trained model never sits exactly at the optimum: Adam's last steps leave it ~1e-4 off in stiff
directions, which reads grad_z ≈ 2–6 at 2^21 in the tms-phase cells.

What N can see: a flat direction makes a far-from-stationary point's gradient small. The issue's kept
W = [−0.22, −0.98] (dense, importance ≈ 1, b at its best for that W; the stationary point is
W = [0, ±1]) has ‖∇L‖ = 2.7e-3 exactly, grad_rel ≈ 0.008: grad_z ≈ 4 at N = 2^18 (invisible) and ≈ 12
at N = 2^21 (caught). Along the flattest direction there (Hessian eigenvalue ≈ 0.008) a displacement
of ≲ 0.1 stays below the threshold even at 2^21 (W = [−0.995, −0.107] at importance 0.86 reads
grad_z ≈ 5): the test bounds the gradient, not the distance. So N is as large as the budget allows:
N = 2^21 when n_inst·n_features·d_hidden·N ≤ ``SAMPLE_BUDGET`` = 2^30 (tms-phase: 256 × 2 × 1, ~3 s
on 2 cores), fewer (down to 2^16) for larger runs; the threshold in grad_z units holds at every N.

The batch comes from fold_in(seed key, ``SEED_OFFSET``) (pretraining uses 0–3, fine-tuning 100 and
200, the defences' evaluation 300; 500 is free), then fold_in(·, instance) and fold_in(·, chunk): it is independent
of every training and evaluation batch. With ``pinned`` feature geometry the directions were held
fixed in training, so the full gradient reported here need not vanish along them. A batch-level
penalty (``decov``) is evaluated per chunk and averaged.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import data as tdata
from .models import MODELS
from . import pretrain as train

SEED_OFFSET = 500          # fold_in(seed key, ·): the stationarity batch (no other part uses 500)
N_SAMPLES = 1 << 21        # samples per instance, at most
MIN_SAMPLES = 1 << 16      # ... and at least
# ... except for large models (n_features·d_hidden >= LARGE_PARAMS, e.g. 16,384 x 768, where 2^16 samples
# cost ~10 TFLOP, minutes on a CPU): there the budget may go down to LARGE_MIN_SAMPLES. No model of the
# committed results is that large, so their N is unchanged.
LARGE_PARAMS = 1 << 20
LARGE_MIN_SAMPLES = 1 << 10
SAMPLE_BUDGET = 1 << 30    # n_inst · n_features · d_hidden · N at most (2^30: ~3 s at the tms-phase size)
MIN_CHUNKS = 16            # at least this many chunks, for the noise estimate
CHUNK_ELEMENTS = 1 << 19   # at most this many numbers in one chunk's x (all instances): 2 MB, in cache
STATIONARY_Z = 8.0         # grad_z below this is stationary; see the module docstring


def n_samples_for(n_inst: int, n_features: int, d_hidden: int = 1) -> int:
    """N: the largest power of two ≤ N_SAMPLES with n_inst·n_features·d_hidden·N ≤ SAMPLE_BUDGET (the work
    of one pass), and at least MIN_SAMPLES (LARGE_MIN_SAMPLES for models of LARGE_PARAMS or more)."""
    n = N_SAMPLES
    least = LARGE_MIN_SAMPLES if n_features * max(d_hidden, 1) >= LARGE_PARAMS else MIN_SAMPLES
    while n > least and n_inst * n_features * max(d_hidden, 1) * n > SAMPLE_BUDGET:
        n //= 2
    return n


def chunking(n_samples: int, n_inst: int, n_features: int) -> tuple[int, int]:
    """(chunk size c, chunks K) with c·K = n_samples (both powers of two when n_samples is), K ≥
    MIN_CHUNKS, and n_inst·c·n_features ≤ CHUNK_ELEMENTS where possible."""
    k = MIN_CHUNKS
    while n_samples % (2 * k) == 0 and n_inst * (n_samples // k) * n_features > CHUNK_ELEMENTS:
        k *= 2
    if n_samples % k:
        raise ValueError(f"n_samples={n_samples} must be a multiple of {MIN_CHUNKS}")
    return n_samples // k, k


@functools.lru_cache(maxsize=32)
def _runner(graphdef, data_cfg, penalty: str, n_chunks: int):
    """The jitted ``run(params, keys, inst) -> (loss, mean gradient, per-coordinate variance of the chunk
    gradients)``, built once per (model, data, penalty, chunking) so repeated calls reuse the compile."""
    objective = train.reconstruction_objective(graphdef, tdata.make_sampler(data_cfg), data_cfg.task, penalty)
    value_and_grad = jax.vmap(jax.value_and_grad(objective))

    @jax.jit
    def run(params, keys, inst):
        def grads(k):
            return value_and_grad(params, jax.vmap(lambda kk: jax.random.fold_in(kk, k))(keys), inst)

        # Sums of d_k = g_k − g_0 (shifted by the first chunk, so the variance does not cancel in float32).
        loss0, g0 = grads(0)

        def step(carry, k):
            loss_sum, d_sum, d_sq = carry
            loss, g = grads(k)
            d = jax.tree.map(jnp.subtract, g, g0)
            return (loss_sum + loss, jax.tree.map(jnp.add, d_sum, d), jax.tree.map(lambda a, b: a + b * b, d_sq, d)), None

        zeros = jax.tree.map(jnp.zeros_like, g0)
        (loss_sum, d_sum, d_sq), _ = jax.lax.scan(step, (loss0, zeros, zeros), jnp.arange(1, n_chunks))
        d_mean = jax.tree.map(lambda s: s / n_chunks, d_sum)
        mean = jax.tree.map(jnp.add, g0, d_mean)
        # unbiased variance of the chunk gradients, per coordinate; the variance of their mean is that / K
        var = jax.tree.map(lambda q, m: jnp.maximum(q / n_chunks - m * m, 0.0) * n_chunks / (n_chunks - 1), d_sq, d_mean)
        return loss_sum / n_chunks, mean, var

    return run


def gradient_stats(graphdef, params, data_cfg, inst, key: jax.Array, *, penalty: str = "none",
                   n_samples: int = N_SAMPLES, frozen: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """∇_θ L per instance on ``n_samples`` fresh samples (see the module docstring). Pure: the batch is a
    function of ``key`` only.

    Args:
      graphdef, params: the models (params leaves have a leading instance axis, n_inst).
      data_cfg: the run's :class:`~toymodels.config.DataConfig` (distribution, task, generator; its
        ``batch_size`` is ignored).
      inst: per-instance data as :func:`toymodels.core.pretrain.instance_data` (``feature_probability`` and
        ``importance`` (n_inst, n), penalty fields when ``penalty`` is not "none").
      key: instance i, chunk k draws from fold_in(fold_in(key, i), k).
      frozen: parameters pretraining holds fixed (a model's ``FROZEN_LEAVES``): their gradient is reported
        (``grad_norm_<param>``) but left out of the totals, since training never follows it.
    Returns numpy arrays of shape (n_inst,): ``loss``, ``grad_norm``, ``grad_norm_<param>`` for each
    parameter (``W``, ``b_final``, ...), ``grad_noise``, ``grad_rel``, ``grad_z``, ``grad_samples``,
    ``param_norm``; and ``grad``, ĝ itself as ``{param: (n_inst, *shape)}`` (e.g. W (n_inst, m, n)).
    """
    n_inst = jax.tree.leaves(params)[0].shape[0]
    chunk, n_chunks = chunking(n_samples, n_inst, data_cfg.n_features)
    run = _runner(graphdef, dataclasses.replace(data_cfg, batch_size=chunk), penalty, n_chunks)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_inst))

    loss, mean, var = run(params, keys, inst)

    def per_inst_sq(a):  # (n_inst, ...) -> (n_inst,) sum of squares, in float64
        return (np.asarray(a, np.float64).reshape(n_inst, -1) ** 2).sum(1)

    mean_d, var_d = nnx.to_pure_dict(mean), nnx.to_pure_dict(var)
    theta_d = nnx.to_pure_dict(params)
    out: dict = {"loss": np.asarray(loss, np.float64), "grad": {k: np.asarray(v) for k, v in _flat(mean_d).items()}}
    sq = {k: per_inst_sq(v) for k, v in out["grad"].items()}
    for name, s in sq.items():
        out[f"grad_norm_{name}"] = np.sqrt(s)
    out["grad_norm"] = np.sqrt(sum(s for name, s in sq.items() if name not in frozen))
    total_var = sum(np.asarray(v, np.float64).reshape(n_inst, -1).sum(1) for name, v in _flat(var_d).items()
                    if name not in frozen)
    out["grad_noise"] = np.sqrt(total_var / n_chunks)
    out["param_norm"] = np.sqrt(sum(per_inst_sq(v) for v in _flat(theta_d).values()))
    # a zero gradient with zero noise (a perfect fit: every sample's gradient vanishes) is stationary
    out["grad_z"] = np.where(out["grad_norm"] > 0, out["grad_norm"] / np.maximum(out["grad_noise"], 1e-30), 0.0)
    out["grad_rel"] = out["grad_z"] / np.sqrt(n_samples)
    out["grad_samples"] = np.full(n_inst, n_samples)
    return out


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested pure dict → {"W": leaf, "b_final": leaf, "sub_W": leaf, ...}."""
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        out.update(_flat(v, f"{name}_") if isinstance(v, dict) else {name: v})
    return out


def run_key(seed: int) -> jax.Array:
    """fold_in(key(seed), SEED_OFFSET): the root of a run's stationarity batch."""
    return jax.random.fold_in(jax.random.key(seed), SEED_OFFSET)


def for_run(cfg, graphdef, params, n_samples: int | None = None) -> dict[str, np.ndarray]:
    """:func:`gradient_stats` of a run's kept instances (``cfg.n_inst``), on the objective they were
    pretrained on (reconstruction + λ P with an active ``train.penalty``), from ``cfg.seed``, on
    :func:`n_samples_for` samples unless ``n_samples`` is given."""
    inst = train.instance_data(cfg, restarts=1)
    n = n_samples_for(cfg.n_inst, cfg.data.n_features, cfg.model.d_hidden) if n_samples is None else n_samples
    frozen = getattr(MODELS[cfg.model.kind], "FROZEN_LEAVES", ())
    return gradient_stats(graphdef, params, cfg.data, inst, run_key(cfg.seed), penalty=train.active_penalty(cfg),
                          n_samples=n, frozen=frozen)


def is_stationary(stats: dict[str, np.ndarray], threshold: float = STATIONARY_Z) -> np.ndarray:
    """(n_inst,) bool: ``grad_z < threshold``."""
    return np.asarray(stats["grad_z"]) < threshold


SUMMARY_KEYS = ("grad_norm", "grad_norm_W", "grad_norm_b_final", "grad_rel", "grad_z", "grad_samples")


def instance_entries(cfg, graphdef, params) -> list[dict]:
    """Per-instance stationarity numbers for ``summary.json``: :data:`SUMMARY_KEYS` (those the model
    has) and ``stationary`` (``grad_z < STATIONARY_Z``)."""
    stats = for_run(cfg, graphdef, params)
    ok = is_stationary(stats)
    keys = [k for k in SUMMARY_KEYS if k in stats]
    return [{**{k: (int(stats[k][i]) if k == "grad_samples" else float(stats[k][i])) for k in keys},
             "stationary": bool(ok[i])} for i in range(cfg.n_inst)]


# --- the exact expected loss of 2 features in 1 dimension (a reference for tests and for the threshold) ---
def _segment(alpha, beta, a, c):
    """∫_0^1 (α + βx − ReLU(a + cx))² dx in closed form (any shapes that broadcast). ReLU(a + cx) is
    a + cx on one sub-interval [lo, hi] of [0, 1], so every piece is the integral of a quadratic."""
    safe_c = jnp.where(c == 0, 1.0, c)
    root = jnp.clip(-a / safe_c, 0.0, 1.0)
    lo = jnp.where(c > 0, root, 0.0)
    hi = jnp.where(c > 0, 1.0, jnp.where(c < 0, root, jnp.where(a > 0, 1.0, 0.0)))

    def mom(k):  # ∫_lo^hi x^k dx
        return (hi ** (k + 1) - lo ** (k + 1)) / (k + 1)

    target_sq = alpha**2 + alpha * beta + beta**2 / 3
    cross = alpha * a * mom(0) + (alpha * c + beta * a) * mom(1) + beta * c * mom(2)
    out_sq = a * a * mom(0) + 2 * a * c * mom(1) + c * c * mom(2)
    return target_sq - 2 * cross + out_sq


def expected_loss_2in1(W, b, p, importance, n_outer: int = 4096):
    """The exact expected pretraining loss of ONE relu_output instance with n = 2 features in m = 1
    dimension (the tms-phase model), x' = ReLU(Wᵀ W x + b):

        L = E_x ½ Σ_i I_i (x_i − x'_i)²,   x_i = 0 w.p. 1 − p_i, else U[0, 1], independent,

    summed over the four patterns of active features. Each pattern's integral over x_1 is done in closed
    form (:func:`_segment`); the both-active pattern's remaining integral over x_0 uses the midpoint
    rule on ``n_outer`` points, whose integrand is continuous with continuous slope, so L and its
    gradient are accurate to O(n_outer^-2) (gradient within ~2e-9 of n_outer = 16 384 at the default). Shapes: W (1, 2), b (2,), p and importance (2,)
    (or scalars). Differentiable: ``jax.grad`` of it is the exact expected gradient."""
    w0, w1 = W[0, 0], W[0, 1]
    b0, b1 = b[0], b[1]
    p0, p1 = jnp.broadcast_to(jnp.asarray(p), (2,))
    i0, i1 = jnp.broadcast_to(jnp.asarray(importance), (2,))
    relu = jax.nn.relu
    none = i0 * relu(b0) ** 2 + i1 * relu(b1) ** 2
    only0 = i0 * _segment(0.0, 1.0, b0, w0 * w0) + i1 * _segment(0.0, 0.0, b1, w1 * w0)
    only1 = i0 * _segment(0.0, 0.0, b0, w0 * w1) + i1 * _segment(0.0, 1.0, b1, w1 * w1)
    x0 = (jnp.arange(n_outer) + 0.5) / n_outer
    both = jnp.mean(i0 * _segment(x0, 0.0, b0 + w0 * w0 * x0, w0 * w1)
                    + i1 * _segment(0.0, 1.0, b1 + w1 * w0 * x0, w1 * w1))
    return 0.5 * ((1 - p0) * (1 - p1) * none + p0 * (1 - p1) * only0 + (1 - p0) * p1 * only1 + p0 * p1 * both)
