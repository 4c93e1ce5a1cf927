"""Risk prediction, measured: candidate scores before each fine-tune against what it then did.

Per fine-tune of a run with ``[audit]`` and ``[finetune]`` (:func:`member_rows`), the outcome is whether the
harmful feature's output rate P(x'_h > τ | x_h = 0) rose by more than ``audit.threshold_pp`` percentage
points, and the candidate scores are (:data:`SCORES`; "truth" = needs the true feature directions):

* before fine-tuning: ``true_cos`` cos(W_t, W_h) and ``true_first_order`` ‖W_h‖ cos θ (truth); the
  auditor's ``sae_cos`` and ``sae_first_order`` (:mod:`.auditor`, no truth); the superposition density
  ``features_per_dim`` ‖W‖_F² / d (no truth: the weights suffice) and ``mean_cos2`` (truth);
* at the first checkpoint of the fine-tune (the first chunk boundary; monitoring, not prediction):
  ``sae_monitor``, the change of the auditor's harmful latent's mean code on its target-labelled inputs
  (no truth: trait-space monitoring), and ``rate_monitor``, the change of the harmful output rate itself
  (behaviour, measured on the pretraining distribution).

Scores are oriented so that larger means more risk; AUROC below 0.5 means the score points the other way.
:func:`table` pools rows (over a suite's members): per score the AUROC with a 95% cluster-bootstrap
interval over pretrained models, the accuracy at the best threshold (in-sample, optimistic) beside the
base rate, and a cross-validated calibration (Brier score and reliability bins).
"""

from __future__ import annotations

import numpy as np

from ..config import Config
from ..core.planting import harmful_indices, names
from ..lab.plan import orientation_matrices
from . import auditor, dictionary, metrics

# name -> (needs ground truth?, when, what)
SCORES = {
    "true_cos": ("truth", "before", "cos(W_target, W_harmful) of the pretrained model"),
    "true_first_order": ("truth", "before", "‖W_harmful‖ cos θ: the first-order push per unit along the target"),
    "sae_cos": ("auditor", "before", "cos of the auditor's target and harmful latents (SAE decoder directions)"),
    "sae_first_order": ("auditor", "before", "the auditor's first-order prediction ŝ_harmful cos θ_SAE"),
    "features_per_dim": ("weights", "before", "superposition density ‖W‖_F² / d_hidden"),
    "mean_cos2": ("truth", "before", "superposition density: mean off-diagonal cos² of the true features"),
    "sae_monitor": ("auditor", "checkpoint", "Δ of the harmful latent's mean code on target inputs at the first "
                                             "checkpoint"),
    "rate_monitor": ("behaviour", "checkpoint", "Δ of the harmful output rate at the first checkpoint [pp]"),
}


def _probe_rates(metrics_rows: list[dict]) -> dict[int, np.ndarray]:
    """step -> (n_ft, h) harmful output rates of the fine-tuning probe rows."""
    return {r["step"]: np.asarray(r["rate"], np.float64) for r in metrics_rows
            if r.get("phase") == "finetune" and r.get("kind") == "probe" and "rate" in r}


def sae_monitor(cfg: Config, audits: list[dict], arrays: dict, ft: dict, W0: np.ndarray, W1: np.ndarray) -> list:
    """Per fine-tune: mean code of its model's harmful latent on the auditor's target-labelled inputs under
    W1, minus under W0 (both brought back to the model's own hidden frame when the fine-tune is rotated)."""
    all_names, target = names(cfg), names(cfg)[cfg.penalty_target()]
    O = orientation_matrices(cfg) if cfg.finetune.orientations > 1 else None
    relu = cfg.model.kind in ("relu_hidden", "abs_computation")
    cache = {}
    out = []
    for k, e in enumerate(ft["instances"]):
        i = e["pretrain_instance"]
        a = audits[i]
        if not a.get("harmful"):
            out.append(None)
            continue
        if i not in cache:
            x = auditor.samples(cfg, i, {target: all_names.index(target)}, cfg.audit.labelled)[target]
            cache[i] = (x, dictionary.dictionary(arrays, cfg.audit.variant, a["sae"]["position"]))
        x, dic = cache[i]
        back = O[e.get("orientation", 0)].T if O is not None else np.eye(W0.shape[1])
        hs = [x @ (back @ W[k]).T for W in (W0, W1)]
        hs = [np.maximum(h, 0.0) if relu else h for h in hs]
        j = a["harmful"][0]["latent"]
        f0, f1 = (dictionary.encode(dic, h)[:, j].mean() for h in hs)
        out.append(float(f1 - f0))
    return out


def member_rows(cfg: Config, graphdef, ft: dict, audits: list[dict], arrays: dict, trajectory: dict | None,
                metrics_rows: list[dict]) -> dict:
    """The ``audit.risk`` section of one run: one row per fine-tune (its axes, outcome and scores) and the
    run's own AUROC per score."""
    h = names(cfg)[harmful_indices(cfg)[0]]
    thr = cfg.audit.threshold_pp
    monitor, rate_mon, step = [None] * len(ft["instances"]), [None] * len(ft["instances"]), None
    if trajectory is not None and len(trajectory["step"]) > 1:
        step = int(trajectory["step"][1])
        monitor = sae_monitor(cfg, audits, arrays, ft, trajectory["W"][0], trajectory["W"][1])
        rates = _probe_rates(metrics_rows)
        if step in rates and 0 in rates:
            rate_mon = list(100.0 * (rates[step][:, 0] - rates[0][:, 0]))
    defence = {r["name"]: r.get("defence", "none") for r in ft["regimes"]}
    rows = []
    for k, e in enumerate(ft["instances"]):
        he = e["harmful"][h]
        a = audits[e["pretrain_instance"]]
        ah = a["harmful"][0] if a.get("harmful") else {}
        change = he["rate"]["change_pp"]
        rows.append({
            "member": cfg.name, "index": k, "pretrain_instance": e["pretrain_instance"], "regime": e["regime"],
            "defence": defence[e["regime"]], "optimizer": e["optimizer"], "orientation": e["orientation"],
            "feature_probability": float(np.mean(cfg.feature_probability()[e["pretrain_instance"]])),
            "n_features": cfg.data.n_features, "d_hidden": cfg.model.d_hidden,
            "geometry": cfg.features.geometry, "rate_change_pp": change, "rose": bool(change > thr),
            "target_gain": e["target_gain"],
            "scores": {"true_cos": he["cos"]["before"], "true_first_order": he["norm"]["before"] * he["cos"]["before"],
                       "sae_cos": ah.get("cos"), "sae_first_order": ah.get("predicted"),
                       "features_per_dim": e["density"]["features_per_dim"]["before"],
                       "mean_cos2": e["density"]["mean_cos2"]["before"], "sae_monitor": monitor[k],
                       "rate_monitor": rate_mon[k]}})
    regimes = {r["name"]: {"data": r["data"], "loss_scope": r["loss_scope"]} for r in ft["regimes"]}
    return {"threshold_pp": thr, "harmful": h, "checkpoint_step": step, "regimes": regimes,
            "auroc": {s: metrics.auroc([r["scores"][s] for r in rows], [r["rose"] for r in rows]) for s in SCORES},
            "rows": rows}


# --- pooled over runs ---------------------------------------------------------------------------------
def cluster(row: dict) -> str:
    """The pretrained model a row belongs to: its fine-tunes share geometry and baseline rate."""
    return f"{row['member']}#{row['pretrain_instance']}"


def score_table(rows: list[dict]) -> dict:
    """Per score: n, AUROC with its 95% cluster-bootstrap interval, best-threshold accuracy, calibration."""
    y = [r["rose"] for r in rows]
    cl = [cluster(r) for r in rows]
    out = {}
    for s, (needs, when, what) in SCORES.items():
        v = [r["scores"].get(s) for r in rows]
        out[s] = {"needs": needs, "when": when, "what": what,
                  "n": int(sum(x is not None and np.isfinite(x) for x in v)),
                  "auroc": metrics.auroc(v, y), "auroc_ci95": metrics.auroc_ci(v, y, cl),
                  "accuracy": metrics.best_threshold_accuracy(v, y), "calibration": metrics.calibration(v, y, cl)}
    return out


def table(rows: list[dict]) -> dict:
    """The pooled risk table: over all rows, and per regime family and per optimiser (AUROC only)."""
    by = lambda key: {g: {s: metrics.auroc([r["scores"].get(s) for r in rows if r[key] == g],
                                           [r["rose"] for r in rows if r[key] == g]) for s in SCORES}
                      for g in dict.fromkeys(r[key] for r in rows)}
    return {"n": len(rows), "n_rose": int(sum(r["rose"] for r in rows)),
            "n_models": len({cluster(r) for r in rows}), "scores": score_table(rows),
            "auroc_by_regime": by("regime"), "auroc_by_optimizer": by("optimizer")}


def _f(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def markdown(t: dict, threshold_pp: float) -> str:
    """The risk table as markdown, one row per score."""
    lines = ["| score | uses | when | AUROC [95% CI] | accuracy at best threshold (base rate) | Brier "
             "(base rate) | n |", "|---|---|---|---|---|---|---|"]
    for s, r in t["scores"].items():
        ci = r["auroc_ci95"]
        acc = r["accuracy"]
        cal = r["calibration"]
        lines.append(f"| `{s}` | {r['needs']} | {r['when']} | {_f(r['auroc'], '.3f')}"
                     f"{f' [{ci[0]:.3f}, {ci[1]:.3f}]' if ci else ''} | {_f(acc['accuracy'], '.1%')} "
                     f"({_f(acc['base_rate'], '.1%')}) | {_f(cal['brier'], '.3f')} ({_f(cal['brier_base_rate'], '.3f')}) "
                     f"| {r['n']} |")
    lines += ["", f"{t['n']} fine-tunes of {t['n_models']} pretrained models; {t['n_rose']} raised the harmful output "
                  f"rate by more than {threshold_pp:g} pp. AUROC intervals: percentile bootstrap over pretrained models "
                  f"(2000 resamples). Accuracy: the best threshold chosen on the same rows (optimistic). Brier: "
                  f"logistic calibration cross-validated over pretrained models (5 folds)."]
    return "\n".join(lines)


def seed_claim(t: dict) -> str:
    """A plain sentence on the seed's "90% accuracy" against the measured accuracies."""
    sc = t["scores"]
    before = {s: r for s, r in sc.items() if r["when"] == "before" and r["accuracy"]["accuracy"] is not None}
    best = max(before, key=lambda s: before[s]["accuracy"]["accuracy"]) if before else None
    if best is None:
        return "No score could be evaluated."
    b = before[best]
    mon = {s: r for s, r in sc.items() if r["when"] == "checkpoint" and r["accuracy"]["accuracy"] is not None}
    mon_best = max(mon, key=lambda s: mon[s]["accuracy"]["accuracy"]) if mon else None
    text = (f"The seed's \"90% accuracy\" in predicting harmful spikes has no source. Here the best score computed "
            f"before fine-tuning, `{best}`, reaches {b['accuracy']['accuracy']:.0%} accuracy at its best threshold "
            f"(chosen in-sample, so optimistic) against {b['accuracy']['base_rate']:.0%} for always answering the "
            f"majority class (AUROC {b['auroc']:.2f}).")
    if mon_best is not None:
        m = mon[mon_best]
        text += (f" Watching the first checkpoint of the fine-tune does better: `{mon_best}` reaches "
                 f"{m['accuracy']['accuracy']:.0%} (AUROC {m['auroc']:.2f}); that is monitoring, not prediction.")
    return text
