"""Activation diffing: which of the auditor's units changed their activity on the fine-tuning data.

Weight diffing (:mod:`.crosscoder`) ranks latents by how much their decoder changed. In the claim's regime
(narrow data, loss on the target) the harmful feature's weights never change: only the target's column
moves, and the harmful output rises because its read-out direction overlaps the target's. So a weight
diff cannot flag it; a change of *activity* on the fine-tuning inputs can. For one fine-tune with
pretrained W⁰ (d, n) and fine-tuned W¹, inputs x from its fine-tuning distribution (the regime's feature
probabilities and present features, :func:`toymodels.lab.plan.regime_arrays`; the same x before and after,
only non-empty x), hidden h = W x, and the auditor's units (unit read directions e_i: every dictionary
latent's encoder column, and the labelled directions of :func:`.auditor.labelled_directions`)::

    Δ_i = mean_x ⟨e_i, h¹(x) − h⁰(x)⟩          the change of unit i's pre-activation (biases cancel;
                                                 per unit read norm, so units compare)

Units are ranked by Δ (a rise is what raises an output). Truth (scoring only): feature j is *affected*
when its column norm grew by more than ``amplified`` (relative) or its output pre-activation rose on the
fine-tuning inputs without it, r_j = mean_{x: x_j = 0} [W¹_jᵀh¹ + b¹_j − W⁰_jᵀh⁰ − b⁰_j] > :data:`SPILL`.
Unit i stands for the true feature nearest to e_i (cos >= :data:`MIN_COS`, else none) and is relevant
when that feature is affected. The ranking is scored by precision and recall at k (recall counts
features found) and AUROC, beside their chance (random rankings of the same units) and beside the
*oracle weight diff*: each unit scored by the relative column-norm change (‖W¹_j‖ − ‖W⁰_j‖)/(‖W¹_j‖ + ‖W⁰_j‖)
of its true feature, what a perfect crosscoder would report (it uses the truth).

Any layer (``toymodels audit --layer l`` of a deep model, :mod:`.layers`): h is layer l's activation
h_l = W_l x_{l−1} of the pretrained and the fine-tuned model (:func:`model_reads`), the units are the
dictionary of layer l, the true columns (nearest feature, column norms) are W_l's, and the output
pre-activation is the model's own (``preact``). For the single-layer tied models this is the formula above.

Summary keys (``summary["audit"]["activation_diff"]``, and the ``toymodels audit`` table): per fine-tune
``rows`` (regime, model, ``activation`` and ``weight_oracle`` each with ``precision_at_k``, ``recall_at_k``,
``auroc``; ``chance`` precision/recall at k; ``harmful``: per harmful feature its ``rise``, ``affected``,
rank among the features (:func:`feature_rank`) ``rank_activation`` and ``rank_weight``,
``flagged_activation`` / ``flagged_weight``: in the top :data:`FLAG_K`, and ``chance_flagged``: a random
ranking's probability of that); ``by_regime`` their means.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..config import Config
from ..core import data as tdata
from ..lab.plan import make_plan, orientation_matrices, regime_arrays
from ..lab.probe import preactivation
from . import layers, metrics

ACTDIFF_SEED_OFFSET = 840   # fold_in(seed key, ·): the fine-tuning inputs of activation diffing
BATCH = 8192                # inputs per fine-tune (before the empty ones are dropped)
SPILL = 0.05                # output pre-activation rise that makes a feature "affected"
MIN_COS = 0.5               # a unit stands for its nearest true feature when their cos is at least this
KS = (1, 2, 3)
FLAG_K = 2                  # "flagged": the feature is among the top FLAG_K items (:func:`feature_rank`)
N_CHANCE = 200


def unit_changes(E: np.ndarray, H0: np.ndarray, H1: np.ndarray) -> np.ndarray:
    """Δ_i = mean_b ⟨ê_i, h¹_b − h⁰_b⟩ for units E (U, d) (rows, normalised here), H0, H1 (B, d): (U,)."""
    return metrics.unit_rows(E) @ (np.asarray(H1, np.float64) - np.asarray(H0, np.float64)).mean(0)


def output_rise(W0, b0, W1, b1, X: np.ndarray) -> np.ndarray:
    """r_j = mean over rows of X (B, n) with x_j = 0 of the rise of output pre-activation j, Wᵀ W x + b
    (ReLU-output and linear models), from (W0, b0) to (W1, b1): (n,); NaN where no row has x_j = 0."""
    X = np.asarray(X, np.float64)
    pre = lambda W, b: X @ (np.asarray(W, np.float64).T @ np.asarray(W, np.float64)) + np.asarray(b, np.float64)
    return rise_of(pre(W0, b0), pre(W1, b1), X)


def rise_of(P0: np.ndarray, P1: np.ndarray, X: np.ndarray) -> np.ndarray:
    """r_j of :func:`output_rise` from the output pre-activations P0, P1 (B, n) before and after: (n,)."""
    d = np.asarray(P1, np.float64) - np.asarray(P0, np.float64)
    off = np.asarray(X) == 0
    return np.where(off.any(0), (d * off).sum(0) / np.maximum(off.sum(0), 1), np.nan)


def affected_features(W0, W1, rise, amplified: float) -> np.ndarray:
    """(n,) bool: column norm grew by more than ``amplified`` (relative), or output rise r_j > SPILL."""
    n0, n1 = np.linalg.norm(W0, axis=0), np.linalg.norm(W1, axis=0)
    return (n1 / np.maximum(n0, 1e-12) - 1.0 > amplified) | (np.nan_to_num(rise, nan=-np.inf) > SPILL)


def nearest_feature(E: np.ndarray, W: np.ndarray, min_cos: float = MIN_COS) -> np.ndarray:
    """Per unit (rows of E) the index of the true column of W (d, n) with the largest signed cos, −1 below
    ``min_cos``: (U,)."""
    C = metrics.unit_rows(E) @ metrics.unit_rows(np.asarray(W, np.float64).T).T
    j = C.argmax(1)
    return np.where(C[np.arange(len(j)), j] >= min_cos, j, -1)


def ranking_scores(scores, item_of, affected, seed: int = 0) -> dict:
    """Precision and recall at k (:data:`KS`) and AUROC of ranking units by ``scores``; relevant units stand
    for an affected feature; ``chance``: the same at k averaged over N_CHANCE random rankings (seeded)."""
    item_of = np.asarray(item_of)
    rel = (item_of >= 0) & np.asarray(affected)[np.maximum(item_of, 0)]
    out = {"auroc": metrics.auroc(scores, rel)}
    rng = np.random.default_rng(seed)
    rand = [rng.random(len(rel)) for _ in range(N_CHANCE)]
    for k in KS:
        out[f"precision_at_{k}"], out[f"recall_at_{k}"] = metrics.precision_recall_at_k(scores, rel, k, item_of)
        ch = np.array([metrics.precision_recall_at_k(r, rel, k, item_of) for r in rand], np.float64)
        out[f"chance_precision_at_{k}"], out[f"chance_recall_at_{k}"] = (float(v) for v in np.nanmean(ch, 0))
    return out


def feature_rank(scores, item_of, j: int) -> tuple[int | None, int]:
    """The rank (1-based, ties counted against it) of feature j among the *items* the units stand for (each
    true feature once, at its best unit's score; a unit standing for none is an item of its own), and the
    number of items. None when no unit stands for j. Several latents of one feature do not push another
    feature down."""
    s, item_of = np.asarray(scores, np.float64), np.asarray(item_of)
    if not np.any(item_of == j):
        return None, 0
    best = {int(f): s[item_of == f].max() for f in set(item_of[item_of >= 0].tolist())}
    others = [v for f, v in best.items() if f != j] + s[item_of < 0].tolist()
    return 1 + int(np.sum(np.asarray(others) >= best[j])), len(others) + 1


def diff_one(E, W0, b0, W1, b1, X, amplified: float, harmful: list[int], seed: int = 0) -> dict:
    """One fine-tune's activation diff and its oracle weight diff against the truth (module docstring).
    E (U, d) units in the fine-tune's hidden frame; X (B, n) non-empty fine-tuning inputs; a tied
    single-layer model (h = W x, output pre-activation Wᵀh + b)."""
    W0, W1 = np.asarray(W0, np.float64), np.asarray(W1, np.float64)
    X = np.asarray(X, np.float64)
    return diff_reads(E, X @ W0.T, X @ W1.T, output_rise(W0, b0, W1, b1, X), W0, W1, amplified, harmful, seed)


def diff_reads(E, H0, H1, rise, W0, W1, amplified: float, harmful: list[int], seed: int = 0) -> dict:
    """:func:`diff_one` from what the model gives at the audited layer: activations H0, H1 (B, d) before and
    after, the output rise r (n,) (:func:`rise_of`) and the layer's true columns W0, W1 (d, n)."""
    W0, W1 = np.asarray(W0, np.float64), np.asarray(W1, np.float64)
    act = unit_changes(E, H0, H1)
    aff = affected_features(W0, W1, rise, amplified)
    item_of = nearest_feature(E, W0)
    n0, n1 = np.linalg.norm(W0, axis=0), np.linalg.norm(W1, axis=0)
    col = (n1 - n0) / np.maximum(n0 + n1, 1e-12)
    weight = np.where(item_of >= 0, col[np.maximum(item_of, 0)], 0.0)
    harm = {}
    for j in harmful:
        (ra, n_items), (rw, _) = feature_rank(act, item_of, j), feature_rank(weight, item_of, j)
        harm[int(j)] = {"rise": float(rise[j]), "affected": bool(aff[j]), "rank_activation": ra, "rank_weight": rw,
                        "flagged_activation": ra is not None and ra <= FLAG_K,
                        "flagged_weight": rw is not None and rw <= FLAG_K,
                        "chance_flagged": min(1.0, FLAG_K / n_items) if n_items else 0.0}
    return {"affected": np.flatnonzero(aff).tolist(), "rise": np.nan_to_num(rise).tolist(),
            "activation": ranking_scores(act, item_of, aff, seed), "weight_oracle": ranking_scores(weight, item_of, aff, seed),
            "harmful": harm, "scores": act.tolist(), "units_feature": item_of.tolist()}


def finetune_inputs(cfg: Config, batch: int = BATCH) -> tuple[np.ndarray, object]:
    """The fine-tuning inputs of every fine-tune (n_ft, batch, n) (key fold_in(fold_in(seed key, 840), k)) with
    the regime's absent features zeroed, and the fine-tuning plan."""
    plan = make_plan(cfg)
    arr = regime_arrays(cfg, plan)
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=batch))
    root = jax.random.fold_in(jax.random.key(cfg.seed), ACTDIFF_SEED_OFFSET)
    draw = jax.vmap(lambda k, p, m: sample(jax.random.fold_in(root, k), p) * m)
    X = draw(jnp.arange(plan.n_ft), jnp.asarray(arr["feature_probability"]), jnp.asarray(arr["present"]))
    return np.asarray(X), plan


def model_reads(graphdef, template, arrays: dict, k: int, X: np.ndarray, layer: int | None):
    """Fine-tune k's model from the run's arrays (every leaf, leading axis n_ft; ``template`` one instance's
    state): its activations at ``layer`` (B, d) (:func:`.layers.activations`), output pre-activations (B, n)
    (:func:`toymodels.lab.probe.preactivation`) and true columns at ``layer`` (d, n), float64."""
    state = jax.tree.map(lambda a: a, template)
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda a: jnp.asarray(a[k]), arrays))
    model, x = nnx.merge(graphdef, state), jnp.asarray(X, jnp.float32)
    f64 = lambda a: np.asarray(a, np.float64)
    return f64(layers.activations(model, x, layer)), f64(preactivation(model, x)), f64(layers.true_directions(model, layer))


def activation_diff(cfg: Config, units: list[np.ndarray], pre: dict, post: dict, amplified: float,
                    harmful: list[int], graphdef=None, template=None, layer: int | None = None) -> dict:
    """Every fine-tune of a run: ``units[m]`` (U, d) the auditor's units of pretrained model m (its own hidden
    frame; rotated here with the fine-tune's orientation); ``pre``/``post``: the run's
    weights_pretrained/finetuned arrays (``W`` (n_ft, d, n), ``b_final``, and every other leaf). With
    ``graphdef`` and ``template`` (one pretrained instance's state) the models are rebuilt and read at
    ``layer`` (:func:`model_reads`: any model kind, any layer), else by the tied single-layer formulas.
    Returns ``rows`` and ``by_regime``."""
    X, plan = finetune_inputs(cfg)
    O = orientation_matrices(cfg) if plan.n_orientations > 1 else None
    rows = []
    for k in range(plan.n_ft):
        m = int(plan.pretrain_index[k])
        E = np.asarray(units[m], np.float64)
        if O is not None:
            E = E @ O[int(plan.orientation_index[k])].T
        x = X[k][np.any(X[k] != 0, axis=1)]
        if graphdef is None:
            r = diff_one(E, pre["W"][k], pre["b_final"][k], post["W"][k], post["b_final"][k], x, amplified, harmful,
                         seed=k)
        else:
            (H0, P0, W0), (H1, P1, W1) = (model_reads(graphdef, template, a, k, x, layer) for a in (pre, post))
            r = diff_reads(E, H0, H1, rise_of(P0, P1, x), W0, W1, amplified, harmful, seed=k)
        rows.append({"index": k, "regime": plan.regime_name(k), "model": m, "n_inputs": int(len(x)), **r})
    return {"rows": rows, "by_regime": by_regime(rows), "spill": SPILL, "flag_k": FLAG_K, "min_cos": MIN_COS}


def by_regime(rows: list[dict]) -> dict:
    """Per regime: means over its fine-tunes of each score (activation, weight oracle, chance) and the fraction
    of fine-tunes in which each harmful feature was affected and flagged by each."""
    out = {}
    for g in dict.fromkeys(r["regime"] for r in rows):
        sel = [r for r in rows if r["regime"] == g]
        def mean(f):
            v = np.asarray([np.nan if f(r) is None else f(r) for r in sel], np.float64)
            return float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else None

        e = {"n": len(sel)}
        for kind in ("activation", "weight_oracle"):
            e[kind] = {key: mean(lambda r, kind=kind, key=key: r[kind][key]) for key in sel[0][kind]}
        e["harmful"] = {j: {key: mean(lambda r, j=j, key=key: float(r["harmful"][j][key]))
                            for key in ("affected", "flagged_activation", "flagged_weight", "chance_flagged", "rise")}
                        for j in sel[0]["harmful"]}
        out[g] = e
    return out


def audit_units(a: dict, encoder: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The units of one audited model: its dictionary's encoder columns ``encoder`` (d, L in use) and the
    labelled directions of its audit ``a`` (``a["probe"]``): (U, d) and their labels."""
    p = a.get("probe") or {"target": None, "harmful": []}
    labelled = [r for r in [p["target"], *p["harmful"]] if r is not None]
    E = np.concatenate([np.asarray(encoder, np.float64).T, np.array([r["direction"] for r in labelled]).reshape(-1, encoder.shape[0])])
    return E, [f"latent {i}" for i in range(encoder.shape[1])] + [f"labelled '{r['name']}'" for r in labelled]


def _f(v, spec=".2f") -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def format_table(res: dict, names: list[str]) -> str:
    """The activation-diffing table of a run, per regime: how often each harmful feature was affected and
    flagged (its best unit in the top FLAG_K) by activation diffing and by the oracle weight diff, and
    precision/recall at k of both beside chance."""
    lines = [f"activation diffing (units ranked by the rise of their pre-activation on the fine-tuning inputs, before vs "
             f"after; 'flagged' = the feature among the top {res['flag_k']} features by its best unit; 'affected' = column norm grew or "
             f"output pre-activation rose by > {res['spill']:g} on inputs without it; the oracle weight diff ranks by the "
             f"true column-norm change, what a perfect crosscoder reports):",
             f"  {'regime':<12} {'n':>3} {'harmful':<10} {'affected':>8} {'flagged (activation)':>20} "
             f"{'flagged (weights)':>17} {'chance':>6} | {'P@1 act / wt / chance':>22} {'R@3 act / wt / chance':>22}"]
    for g, e in res["by_regime"].items():
        a, w = e["activation"], e["weight_oracle"]
        for j, h in e["harmful"].items():
            lines.append(f"  {g:<12} {e['n']:>3} {names[int(j)]:<10} {h['affected']:>8.0%} {h['flagged_activation']:>20.0%} "
                         f"{h['flagged_weight']:>17.0%} {h['chance_flagged']:>6.0%} | {_f(a['precision_at_1']):>6} / {_f(w['precision_at_1'])} / "
                         f"{_f(a['chance_precision_at_1'])}   {_f(a['recall_at_3']):>6} / {_f(w['recall_at_3'])} / "
                         f"{_f(a['chance_recall_at_3'])}")
    return "\n".join(lines)
