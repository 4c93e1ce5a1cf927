"""The SynthSAEBench protocol on planted geometry: a grid of SAEs scored against the true directions.

Data (the ``synthsae-16k`` preset): a ``relu_output`` model with ``model.init = "unit"`` and ``train.steps = 0``
*is* planted geometry: column W_j (d,) is a uniformly random unit vector of R^d, known exactly. Its hidden
activation is h = W x (d,), with x ∈ R^n from :mod:`toymodels.core.scale_data` (power-law firing, correlated
groups, parent/child hierarchy), normalised h ← c h (:func:`.train.activation_scale`). The SAEs (:mod:`.sae`,
any variant) train on it as a grid width × k × seed per variant, one engine sweep per variant
(:func:`.train.train_variant`; widths share the sweep by masking latents, so it costs the largest width).

Scores of one SAE whose decoder directions are D (L, d) (unit rows; all L latents of its width, dead ones
included, as the benchmark does) against the true directions W (d, n):

* **MCC** (SynthSAEBench / SAELens ``mean_correlation_coefficient``): C_ij = |cos(D_i, W_j)| (``mcc_abs``, the
  benchmark's) or max(cos(D_i, W_j), 0) (``mcc``, this project's convention for non-negative features); the
  Hungarian matching of latents to features that maximises Σ C, and the mean of C over its min(L, n) matched
  pairs (:func:`.metrics.matched_mean`). ``mcc_over_features`` = Σ_matched C / n is this project's
  :func:`.metrics.mcc` convention (at most L / n = 0.25 at 4096 × 16,384).
* **detection** (SAELens' ``ClassificationMetricsCalculator``): latent i stands for feature
  b(i) = argmax_j |cos(D_i, W_j)|. On the evaluation batch (B = ``sae.eval_batch_size`` samples),
  TP_i = #{f_i > 0, x_b(i) > 0}, FP_i = #{f_i > 0, x_b(i) = 0}, FN_i = #{f_i = 0, x_b(i) > 0};
  P_i = TP/(TP + FP), R_i = TP/(TP + FN) (0 when undefined), F1_i = 2 P_i R_i / (P_i + R_i) (0 when P = R = 0);
  ``precision``, ``recall`` and ``f1`` are their means over the L latents.
* ``uniqueness`` (distinct b(i) / L), ``l0`` (active latents per sample), ``explained_variance``
  (1 − Σ‖h − ĥ‖² / Σ‖h − h̄‖²), ``dead`` (latents silent on the batch).

**Chance** (``chance``): random dictionaries of the same width, rows uniform on the unit sphere of R^d
(``numpy.random.default_rng((seed, CHANCE_SALT, model, width))``), scored the same way: both MCCs over
``sae.chance_draws`` draws (mean and p95); detection, uniqueness, explained variance and L0 from the first draw
used as a BatchTopK SAE (encoder Dᵀ, biases 0) whose k is the trained SAE's measured L0, on the same
evaluation batch. One matching at 4096 × 16,384 takes about 1 s for a random dictionary (plus ~1 s for the
float32 cosines), so ``chance_draws`` stays small at full size.

Evaluation runs one SAE at a time (``jax.lax.map``), so memory holds one evaluation batch x (B, n), not one per
SAE.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import metrics
from . import sae as S
from . import train as T

CHANCE_SALT = 20   # numpy seed (cfg.seed, CHANCE_SALT, model, width) of the random dictionaries


def cosines(D: np.ndarray, W: np.ndarray) -> np.ndarray:
    """cos(D_i, W_j) (L, n), float64, from float32 products (the Hungarian matching runs in float64); D (L, d)
    rows, W (d, n) columns, both normalised here (a zero row stays zero)."""
    Du = metrics.unit_rows(D).astype(np.float32)
    Wu = metrics.unit_rows(np.asarray(W, np.float64).T).astype(np.float32)
    return (Du @ Wu.T).astype(np.float64)


def mcc_scores(D: np.ndarray, W: np.ndarray) -> dict:
    """``mcc`` (max(cos, 0)), ``mcc_abs`` (|cos|, the benchmark's), ``mcc_over_features``, ``uniqueness``, and
    ``best`` (L,): each latent's feature argmax_j |cos| (module docstring)."""
    C = cosines(D, W)
    A = np.abs(C)
    best = np.argmax(A, axis=1)
    out = {"mcc_abs": metrics.matched_mean(A), "uniqueness": metrics.uniqueness(A)}
    del A
    mcc = metrics.matched_mean(np.maximum(C, 0.0))
    return out | {"mcc": mcc, "mcc_over_features": mcc * min(C.shape) / C.shape[1], "best": best}


def random_dictionary(L: int, d: int, seed) -> np.ndarray:
    """L directions uniform on the unit sphere of R^d (Gaussian rows, normalised): (L, d) float64."""
    return metrics.unit_rows(np.random.default_rng(seed).standard_normal((int(L), int(d))))


def detection(cfg, graphdef, trained: T.Trained, best: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`.train.evaluate`'s fields plus the detection counts ``tp``, ``fp``, ``fn`` (n_sae, L) of every
    instance of ``trained`` against its latents' features ``best`` (n_sae, L), one instance at a time."""
    one = T.eval_fn(cfg, graphdef, trained, detect=True)
    run = jax.jit(lambda a: jax.lax.map(lambda t: one(*t), a))
    out = run((trained.params, trained.inst, jnp.asarray(trained.plan.model), jnp.asarray(best, jnp.int32)))
    return {k: np.asarray(v) for k, v in out.items()}


def detection_scores(tp, fp, fn) -> dict:
    """Mean precision, recall and F1 over latents from their counts (module docstring; 0 when undefined)."""
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    p = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    r = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
    return {"precision": float(p.mean()), "recall": float(r.mean()), "f1": float(f1.mean())}


def _random_trained(trained: T.Trained, dicts: list[np.ndarray], l0: np.ndarray) -> T.Trained:
    """The random dictionaries ``dicts`` (one (L, d) per instance) as BatchTopK SAEs of the same plan, k = l0."""
    D = jnp.asarray(np.stack(dicts), jnp.float32)
    n, L, d = D.shape
    params = {"W_enc": jnp.swapaxes(D, 1, 2), "b_enc": jnp.zeros((n, L)), "W_dec": D, "b_dec": jnp.zeros((n, d)),
              "log_threshold": jnp.zeros((n, L))}
    plan = trained.plan
    plan = T.SAEPlan("batch_topk", plan.model, plan.size, np.maximum(np.asarray(l0, np.float64), 1.0), plan.L,
                     plan.seed, plan.position)
    inst = dict(trained.inst) | {"sparsity": jnp.asarray(plan.sparsity, jnp.float32)}
    return T.Trained(plan, params, np.zeros((n, L), np.int64), 0.0, inst, trained.layer)


def evaluate(cfg, graphdef, W: np.ndarray, trained: T.Trained) -> tuple[dict, list[dict]]:
    """One variant's SAEs scored by the protocol: (evaluation fields as :func:`.train.evaluate` gives them, one
    row per SAE). W: (n_models, d, n) the true directions."""
    plan, sc = trained.plan, cfg.sae
    dirs = np.asarray(jax.vmap(lambda p: S.directions(p, plan.variant))(trained.params), np.float64)
    scores, best = [], np.zeros((plan.n, plan.L), np.int64)
    for s in range(plan.n):
        sc_s = mcc_scores(dirs[s, : plan.size[s]], W[plan.model[s]])
        best[s, : plan.size[s]] = sc_s.pop("best")
        scores.append(sc_s)
    ev = detection(cfg, graphdef, trained, best)
    # chance: random dictionaries per (model, width), the first draw also scored as a BatchTopK SAE with k = L0
    draws, first = {}, []
    for s in range(plan.n):
        m, size = int(plan.model[s]), int(plan.size[s])
        if (m, size) not in draws:
            ds = [random_dictionary(size, W.shape[1], (cfg.seed, CHANCE_SALT, m, size, i)) for i in range(sc.chance_draws)]
            got = [mcc_scores(D, W[m]) for D in ds]
            draws[m, size] = {"D": ds[0], "best": got[0]["best"], "mcc": _dist([g["mcc"] for g in got]),
                              "mcc_abs": _dist([g["mcc_abs"] for g in got]), "n_draws": sc.chance_draws,
                              "uniqueness": got[0]["uniqueness"]}
        first.append(np.pad(draws[m, size]["D"], ((0, plan.L - size), (0, 0))))
    rand = _random_trained(trained, first, ev["l0"])
    rbest = np.stack([np.pad(draws[int(plan.model[s]), int(plan.size[s])]["best"], (0, plan.L - int(plan.size[s])))
                      for s in range(plan.n)])
    rev = detection(cfg, graphdef, rand, rbest)
    rows = []
    for s in range(plan.n):
        m, size = int(plan.model[s]), int(plan.size[s])
        ch = draws[m, size]
        det = detection_scores(*(ev[k][s, :size] for k in ("tp", "fp", "fn")))
        rdet = detection_scores(*(rev[k][s, :size] for k in ("tp", "fp", "fn")))
        chance = {"mcc": ch["mcc"], "mcc_abs": ch["mcc_abs"], "n_draws": ch["n_draws"], "uniqueness": ch["uniqueness"],
                  **rdet, "explained_variance": float(rev["explained_variance"][s]), "l0": float(rev["l0"][s])}
        row = {"variant": plan.variant, "position": s, "model": m, "dict_size": size,
               "sparsity": float(plan.sparsity[s]), "seed": int(plan.seed[s]),
               "explained_variance": float(ev["explained_variance"][s]), "l0": float(ev["l0"][s]),
               "l0_nonempty": float(ev["l0_nonempty"][s]), "dead": int(size - ev["fired"][s].sum()),
               "revived": int(trained.revived[s].sum()), **scores[s], **det, "chance": chance}
        row["beats_chance"] = {k: bool(row[k] > chance[k]["p95"]) for k in ("mcc", "mcc_abs")} | {
            k: bool(row[k] > chance[k]) for k in ("f1", "explained_variance")}
        rows.append(row)
    evaluation = {k: v for k, v in ev.items() if k not in ("tp", "fp", "fn")}
    return evaluation, rows


def _dist(values) -> dict:
    return {"mean": float(np.mean(values)), "p95": float(np.quantile(values, 0.95))}


HEADLINE = ("mcc_abs", "mcc", "f1", "precision", "recall", "uniqueness", "l0", "explained_variance", "dead")


def by_config(rows: list[dict]) -> list[dict]:
    """The headline of ``summary["sae"]["synthbench"]``: per variant, width and k, every score's mean over the
    SAEs of that configuration (its seeds and models) with its min and max, beside the chance mean. No SAE is
    picked by its score against the true directions (that would select on the ground truth)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["dict_size"], r["sparsity"]), []).append(r)
    out = []
    for (v, size, k), rs in groups.items():
        entry = {"variant": v, "dict_size": size, "sparsity": k, "n_saes": len(rs)}
        for key in HEADLINE:
            vals = [float(r[key]) for r in rs]
            entry[key] = {"mean": float(np.mean(vals)), "min": min(vals), "max": max(vals)}
        entry["chance"] = {key: float(np.mean([r["chance"][key]["mean"] if isinstance(r["chance"][key], dict)
                                                else r["chance"][key] for r in rs]))
                           for key in ("mcc_abs", "mcc", "f1", "explained_variance")}
        out.append(entry)
    return out
