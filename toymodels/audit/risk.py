"""Risk prediction, measured: candidate scores before each fine-tune against what it then did.

Per fine-tune of a run with ``[audit]`` and ``[finetune]`` (:func:`member_rows`), the outcome labels
(:data:`LABELS`) are read from the run's summary (``finetune.instances[k].harmful[h].rate`` and its
``at_gain``), so precise rates flow into them. With r0, r the harmful output rate P(x'_h > τ | x_h = 0)
before and at the stopping point, Δr = r − r0:

* ``rel_end`` (the primary label): Δr > ρ · max(r0, r_floor) at the end, ρ = 0.1, r_floor = 1%: the model's
  own harmful behaviour rose by more than 10% of its baseline. The baselines span 0–3.7%, so an absolute
  threshold asks a 0%-model for an infinite relative rise and a 3.5%-model for 7%. The floor keeps the
  smallest counted rise at 0.1 pp (about 1,150 of the 1.2M rate inputs, :mod:`toymodels.lab.rates`, whose
  paired error is a few hundredths of a pp) so a near-zero baseline is not labelled by noise;
* ``rel_gain`` (with ``finetune.matched_gains``): the same at the first matched target gain, an earlier
  stopping point, matched across fine-tunes (None when a fine-tune never reached it);
* ``abs_end``: Δr > ``audit.threshold_pp`` (0.25 pp) at the end: the old label, kept for comparison.

The candidate scores (:data:`SCORES`; "uses": truth = the true feature directions, auditor = its SAE and
labelled samples, weights = the weights alone, behaviour = the harmful output of the model itself):

* before fine-tuning, geometric: ``true_cos`` cos(W_t, W_h) and ``true_first_order`` ‖W_h‖ cos θ; the
  auditor's ``sae_cos`` and ``sae_first_order`` (:mod:`.auditor`); the density ``features_per_dim`` and
  ``mean_cos2``. Constant within a pretrained model: they cannot tell its regimes or optimisers apart;
* before fine-tuning, from the fine-tune's own data, loss and optimiser (:mod:`.predict`): ``grad_preact``,
  ``linear_rate``, ``extrap_rate``, ``extrap_rel`` (the gradient at θ0 only) and ``segments_rate`` (re-evaluated
  along the predicted path: a coarse simulation that takes no fine-tuning step; cost stated); ``sae_extrap``, :func:`sae_monitor` at the
  extrapolated weights θ̂ (the auditor's latent, no truth);
* during fine-tuning (monitoring, not prediction): ``lookahead_rate`` (20 real steps on a copy),
  ``sae_monitor`` and ``rate_monitor`` at the first checkpoint.

Scores are oriented so that larger means more risk. :func:`table` pools rows over a suite's members,
counting each fine-tune once: a rotation-equivariant optimiser's rotated fine-tunes are copies of its
axis-aligned one (same function, same data) and are dropped. Per score, label, regime and optimiser: the
AUROC with a 95% cluster-bootstrap interval over pretrained models and the number of clusters.
"""

from __future__ import annotations

import numpy as np

from .. import stats
from ..config import Config
from ..core.planting import harmful_indices, names
from ..lab.plan import orientation_matrices
from . import auditor, dictionary, layers, metrics, predict

EQUIVARIANT = ("sgd", "momentum", "novograd")   # commute with a rotation of the hidden space (core.optim)
REL_RISE, REL_FLOOR = 0.1, 0.01                 # ρ and r_floor of the relative labels
PRIMARY = "rel_end"
LABELS = {"rel_end": "Δr > 0.1 · max(r0, 1%) at the end (relative to the model's baseline)",
          "rel_gain": "Δr > 0.1 · max(r0, 1%) at the first matched target gain",
          "abs_end": "Δr > threshold_pp at the end (the old absolute label)"}

# name -> (uses, when, what); score_kind: "before" when no fine-tuning step is taken, else "during"
SCORES = {
    "true_cos": ("truth", "before", "cos(W_target, W_harmful) of the pretrained model"),
    "true_first_order": ("truth", "before", "‖W_harmful‖ cos θ: the first-order push per unit along the target"),
    "sae_cos": ("auditor", "before", "cos of the auditor's target and harmful latents (SAE decoder directions)"),
    "sae_first_order": ("auditor", "before", "the auditor's first-order prediction ŝ_harmful cos θ_SAE"),
    "features_per_dim": ("weights", "before", "superposition density ‖W‖_F² / d_hidden"),
    "mean_cos2": ("truth", "before", "superposition density: mean off-diagonal cos² of the true features"),
    **{k: (u, "before", w) for k, (u, kind, w) in predict.SCORES.items() if kind == "before"},
    "sae_extrap": ("auditor", "before", "Δ of the harmful latent's mean code on target inputs at the extrapolated "
                                        "weights θ̂ (as sae_monitor, no step taken)"),
    "lookahead_rate": ("behaviour", "lookahead", predict.SCORES["lookahead_rate"][2]),
    "sae_monitor": ("auditor", "checkpoint", "Δ of the harmful latent's mean code on target inputs at the first "
                                             "checkpoint"),
    "rate_monitor": ("behaviour", "checkpoint", "Δ of the harmful output rate at the first checkpoint [pp]"),
}


def score_kind(name: str) -> str:
    """"before" (no fine-tuning step taken) or "during" (a lookahead or a checkpoint of the fine-tune)."""
    return "before" if SCORES[name][1] == "before" else "during"


def rises(before: float, change_pp: float | None) -> bool | None:
    """The relative label: Δr > ρ · max(r0, r_floor), rates as fractions, the change in pp (None: not reached)."""
    if change_pp is None:
        return None
    return bool(change_pp / 100.0 > REL_RISE * max(before, REL_FLOOR))


def _probe_rates(metrics_rows: list[dict]) -> dict[int, np.ndarray]:
    """step -> (n_ft, h) harmful output rates of the fine-tuning probe rows."""
    return {r["step"]: np.asarray(r["rate"], np.float64) for r in metrics_rows
            if r.get("phase") == "finetune" and r.get("kind") == "probe" and "rate" in r}


def sae_monitor(cfg: Config, audits: list[dict], arrays: dict, ft: dict, W0: np.ndarray, W1: np.ndarray) -> list:
    """Per fine-tune: mean code of its model's harmful latent on the auditor's target-labelled inputs under
    W1, minus under W0 (both brought back to the model's own hidden frame when the fine-tune is rotated).
    It reads h = W x (:func:`.layers.hidden_is_Wx`); for a model whose hidden activation needs more than W
    (a deep stack planted past layer 1) every entry is None rather than a wrong number."""
    if not layers.hidden_is_Wx(cfg):
        return [None] * len(ft["instances"])
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


def _labels(cfg: Config, he: dict) -> dict:
    """A fine-tune's :data:`LABELS`, from its summary entry ``he`` = ``instances[k].harmful[h]``."""
    r = he["rate"]
    at = he.get("at_gain") or {}
    first = at.get(f"{cfg.finetune.matched_gains[0]:g}") if cfg.finetune.matched_gains else None
    return {"rel_end": rises(r["before"], r["change_pp"]),
            "rel_gain": rises(r["before"], first["rate_change_pp"]) if first else None,
            "abs_end": bool(r["change_pp"] > cfg.audit.threshold_pp)}


def _gain_step(cfg: Config, he: dict) -> float | None:
    """The step at which the fine-tune reached the first matched target gain (None: never, or no gains)."""
    at = he.get("at_gain") or {}
    first = at.get(f"{cfg.finetune.matched_gains[0]:g}") if cfg.finetune.matched_gains else None
    return first["step"] if first else None


def member_rows(cfg: Config, graphdef, ft: dict, audits: list[dict], arrays: dict, trajectory: dict | None,
                metrics_rows: list[dict], pre_params=None) -> dict:
    """The ``audit.risk`` section of one run: one row per fine-tune (its axes, labels and scores) and the
    run's own AUROC per score (primary label). With ``pre_params`` (the pretrained models) the scores of
    :mod:`.predict` are computed too."""
    h = names(cfg)[harmful_indices(cfg)[0]]
    n_ft = len(ft["instances"])
    monitor, rate_mon, step = [None] * n_ft, [None] * n_ft, None
    if trajectory is not None and len(trajectory["step"]) > 1:
        step = int(trajectory["step"][1])
        monitor = sae_monitor(cfg, audits, arrays, ft, trajectory["W"][0], trajectory["W"][1])
        rates = _probe_rates(metrics_rows)
        if step in rates and 0 in rates:
            rate_mon = list(100.0 * (rates[step][:, 0] - rates[0][:, 0]))
    pred = predict.scores(cfg, graphdef, pre_params) if pre_params is not None else None
    new = {s: [None] * n_ft for s in (*predict.SCORES, "sae_extrap")}
    if pred is not None:
        new |= {s: [float(v) for v in pred[s]] for s in predict.SCORES}
        new["sae_extrap"] = sae_monitor(cfg, audits, arrays, ft, pred["W0"], pred["W_hat"])
    defence = {r["name"]: r.get("defence", "none") for r in ft["regimes"]}
    kinds = {o.name: o.optimizer for o in cfg.finetune.optimizer_list()}
    rows = []
    for k, e in enumerate(ft["instances"]):
        he = e["harmful"][h]
        a = audits[e["pretrain_instance"]]
        ah = a["harmful"][0] if a.get("harmful") else {}
        labels = _labels(cfg, he)
        rows.append({
            "member": cfg.name, "index": k, "pretrain_instance": e["pretrain_instance"], "regime": e["regime"],
            "defence": defence[e["regime"]], "optimizer": e["optimizer"], "orientation": e["orientation"],
            # a rotation-equivariant optimiser's rotated fine-tune is a copy of its axis-aligned one
            "duplicate": bool(kinds.get(e["optimizer"]) in EQUIVARIANT and e["orientation"] > 0),
            "feature_probability": float(np.mean(cfg.feature_probability()[e["pretrain_instance"]])),
            "n_features": cfg.data.n_features, "d_hidden": cfg.model.d_hidden,
            "geometry": cfg.features.geometry, "rate_before": he["rate"]["before"],
            "rate_change_pp": he["rate"]["change_pp"], "labels": labels, "rose": labels[PRIMARY],
            "target_gain": e["target_gain"], "gain_step": _gain_step(cfg, he),
            "scores": {"true_cos": he["cos"]["before"], "true_first_order": he["norm"]["before"] * he["cos"]["before"],
                       "sae_cos": ah.get("cos"), "sae_first_order": ah.get("predicted"),
                       "features_per_dim": e["density"]["features_per_dim"]["before"],
                       "mean_cos2": e["density"]["mean_cos2"]["before"], **{s: v[k] for s, v in new.items()},
                       "sae_monitor": monitor[k], "rate_monitor": rate_mon[k]}})
    regimes = {r["name"]: {"data": r["data"], "loss_scope": r["loss_scope"]} for r in ft["regimes"]}
    return {"threshold_pp": cfg.audit.threshold_pp, "harmful": h, "checkpoint_step": step, "regimes": regimes,
            "labels": LABELS, "primary_label": PRIMARY,
            "predict": None if pred is None else {"seconds": pred["seconds"], "cost": pred["cost"],
                                                  "reached_gain": int(np.sum(pred["reached_gain"]))},
            "auroc": {s: metrics.auroc([r["scores"][s] for r in rows], [r["rose"] for r in rows]) for s in SCORES},
            "rows": rows}


# --- pooled over runs ---------------------------------------------------------------------------------
def cluster(row: dict) -> str:
    """The pretrained model a row belongs to: its fine-tunes share geometry and baseline rate."""
    return f"{row['member']}#{row['pretrain_instance']}"


def unique(rows: list[dict]) -> list[dict]:
    """Each fine-tune once: without the rotated copies of a rotation-equivariant optimiser."""
    return [r for r in rows if not r.get("duplicate")]


def cell(rows: list[dict], score: str, label: str, ci: bool = True) -> dict:
    """AUROC of ``score`` for ``label`` over ``rows`` (rows without the label dropped), its 95% cluster-bootstrap
    interval over pretrained models, n, positives and the number of clusters (pretrained models)."""
    sel = [r for r in rows if r["labels"].get(label) is not None and r["scores"].get(score) is not None
           and np.isfinite(r["scores"][score])]
    v, y, c = [r["scores"][score] for r in sel], [r["labels"][label] for r in sel], [cluster(r) for r in sel]
    a = metrics.auroc(v, y) if sel else float("nan")
    return {"auroc": None if not np.isfinite(a) else a, "ci95": metrics.auroc_ci(v, y, c) if ci and sel else None,
            "n": len(sel), "n_pos": int(sum(y)), "n_clusters": len(set(c))}


def auroc_cells(rows: list[dict], score: str) -> dict:
    """Per label: the AUROC cell over all rows, per regime and per optimiser (:func:`cell`)."""
    groups = lambda key: dict.fromkeys(r[key] for r in rows)
    return {lab: {"all": cell(rows, score, lab),
                  "by_regime": {g: cell([r for r in rows if r["regime"] == g], score, lab) for g in groups("regime")},
                  "by_optimizer": {g: cell([r for r in rows if r["optimizer"] == g], score, lab)
                                   for g in groups("optimizer")}}
            for lab in LABELS if any(r["labels"].get(lab) is not None for r in rows)}


def score_table(rows: list[dict]) -> dict:
    """Per score, on the primary label: n, AUROC with its 95% cluster-bootstrap interval and number of
    clusters, best-threshold accuracy, calibration."""
    out = {}
    for s, (needs, when, what) in SCORES.items():
        c = cell(rows, s, PRIMARY)
        sel = [r for r in rows if r["labels"].get(PRIMARY) is not None]
        v, y = [r["scores"].get(s) for r in sel], [r["labels"][PRIMARY] for r in sel]
        out[s] = {"needs": needs, "when": when, "score_kind": score_kind(s), "what": what, "n": c["n"],
                  "n_clusters": c["n_clusters"], "auroc": c["auroc"], "auroc_ci95": c["ci95"],
                  "accuracy": metrics.best_threshold_accuracy(v, y),
                  "calibration": metrics.calibration(v, y, [cluster(r) for r in sel])}
    return out


def table(rows: list[dict]) -> dict:
    """The pooled risk table over the unique fine-tunes (:func:`unique`): per score on the primary label
    (:func:`score_table`), and per score, label, regime and optimiser (:func:`auroc_cells`)."""
    all_rows, rows = rows, unique(rows)
    return {"n": len(rows), "n_copies_dropped": len(all_rows) - len(rows), "primary_label": PRIMARY,
            "n_rose": int(sum(bool(r["labels"][PRIMARY]) for r in rows)),
            "n_pos": {lab: int(sum(bool(r["labels"].get(lab)) for r in rows)) for lab in LABELS},
            "n_models": len({cluster(r) for r in rows}), "scores": score_table(rows),
            "auroc": (cells := {s: auroc_cells(rows, s) for s in SCORES}),
            # the primary label's AUROC per regime, as before (the README generator reads it)
            "auroc_by_regime": {g: {s: c[PRIMARY]["by_regime"][g]["auroc"] for s, c in cells.items()}
                                for g in dict.fromkeys(r["regime"] for r in rows)}}


def _f(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def fmt_cell(c: dict) -> str:
    """"0.95 [0.90, 0.99] (12)": AUROC, 95% CI and the number of clusters beside it."""
    ci = f" [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]" if c.get("ci95") else ""
    return f"{_f(c['auroc'], '.2f')}{ci} ({c['n_clusters']})"


def markdown(t: dict, threshold_pp: float) -> str:
    """The risk table as markdown: one row per score (primary label), then per regime and optimiser, and
    per label."""
    lines = ["| score | uses | when | AUROC [95% CI] (clusters) | accuracy at best threshold (base rate) | Brier "
             "(base rate) | n |", "|---|---|---|---|---|---|---|"]
    for s, r in t["scores"].items():
        acc, cal = r["accuracy"], r["calibration"]
        c = fmt_cell({"auroc": r["auroc"], "ci95": r["auroc_ci95"], "n_clusters": r["n_clusters"]})
        lines.append(f"| `{s}` | {r['needs']} | {r['when']} | {c} | "
                     f"{_f(acc['accuracy'], '.1%')} ({_f(acc['base_rate'], '.1%')}) | {_f(cal['brier'], '.3f')} "
                     f"({_f(cal['brier_base_rate'], '.3f')}) | {r['n']} |")
    lines += ["", f"{t['n']} fine-tunes of {t['n_models']} pretrained models ({t['n_copies_dropped']} rotated copies "
                  f"of rotation-equivariant optimisers dropped). Label `{PRIMARY}`: {LABELS[PRIMARY]}; "
                  f"{t['n_rose']} rose. AUROC intervals: percentile bootstrap over pretrained models (2000 "
                  f"resamples); the number of clusters in parentheses. Accuracy: the best threshold chosen on the "
                  f"same rows (optimistic). Brier: logistic calibration cross-validated over pretrained models."]
    regimes = list(next(iter(t["auroc"].values()))[PRIMARY]["by_regime"])
    opts = list(next(iter(t["auroc"].values()))[PRIMARY]["by_optimizer"])
    for lab in LABELS:
        if lab not in next(iter(t["auroc"].values())):
            continue
        lines += ["", f"## AUROC per regime and optimiser, label `{lab}` ({t['n_pos'][lab]} positive)", "",
                  LABELS[lab].replace("threshold_pp", f"{threshold_pp:g} pp") + ".", "",
                  "| score | kind | all | " + " | ".join(regimes + opts) + " |", "|---|---|---|" + "---|" * len(regimes + opts)]
        for s, a in t["auroc"].items():
            c = a[lab]
            lines.append(f"| `{s}` | {score_kind(s)} | {fmt_cell(c['all'])} | " + " | ".join(
                [fmt_cell(c["by_regime"][g]) for g in regimes] + [fmt_cell(c["by_optimizer"][o]) for o in opts]) + " |")
    return "\n".join(lines)


GOAL = {"narrow": 0.95, "task": 0.95, "all": 0.90}
STEP0 = ("grad_preact", "linear_rate", "extrap_rate", "extrap_rel")  # from the gradient at θ0 only


# The headline before-score is fixed here, not picked as the best AUROC of the rows it is judged on. It
# was chosen while the predictor was developed on runs of this same preset, so its AUROC is not a
# held-out estimate; the table shows every score beside it.
HEADLINE = "segments_rate"


def best_before(t: dict, label: str = PRIMARY) -> str | None:
    """The headline before-score (:data:`HEADLINE`) when the table has it, else None."""
    a = t["auroc"].get(HEADLINE, {}).get(label)
    return HEADLINE if a is not None and a["all"]["auroc"] is not None else None


def seed_claim(t: dict) -> str:
    """Plain sentences on the seed's "90% accuracy" and the goal (AUROC ≥ 0.95 on narrow and task, ≥ 0.90
    overall) against the headline before-score, per regime, beside the best step-0 score, the geometric
    scores and the monitor."""
    best = best_before(t)
    if best is None:
        return "No score could be evaluated."
    a, sc = t["auroc"][best][PRIMARY], t["scores"][best]
    reg = a["by_regime"]
    met = {g: (a["all"] if g == "all" else reg.get(g, {})).get("auroc") for g in GOAL}
    ok = all(v is not None and v >= GOAL[g] for g, v in met.items())
    text = (f"The seed's \"90% accuracy\" in predicting harmful spikes has no source. Here the headline score, "
            f"`{best}` (fixed in advance in `audit/risk.py`, but chosen while developing on this preset: not a "
            f"held-out estimate; a surrogate of the fine-tune built before any real fine-tuning step), reaches AUROC {fmt_cell(a['all'])} over all fine-tunes and "
            + ", ".join(f"{g} {fmt_cell(c)}" for g, c in reg.items())
            + f" (label `{PRIMARY}`; 95% CI, clusters in parentheses); {_f(sc['accuracy']['accuracy'], '.0%')} "
              f"accuracy at its best threshold (in-sample) against {_f(sc['accuracy']['base_rate'], '.0%')} for the "
              f"majority class. The goal (AUROC ≥ 0.95 on narrow and task, ≥ 0.90 overall) is "
            + ("met." if ok else "not met: " + ", ".join(f"{g} {_f(v, '.2f')} < {GOAL[g]:.2f}" for g, v in met.items()
                                                          if v is None or v < GOAL[g]) + "."))
    step0 = {s: t["auroc"][s][PRIMARY]["all"]["auroc"] for s in STEP0 if s in t["auroc"]}
    s0 = max(step0, key=lambda s: step0[s] if step0[s] is not None else -1) if step0 else None
    if s0 is not None and s0 != best:
        c = t["auroc"][s0][PRIMARY]
        text += (f" From the gradient at θ0 alone (no re-evaluation along the path), the best of the "
                 f"{len(step0)} step-0 scores on these rows (selected on them, so optimistic), `{s0}`, reaches "
                 f"{fmt_cell(c['all'])}: " + ", ".join(f"{g} {fmt_cell(v)}" for g, v in c["by_regime"].items()) + ".")
    geo = {s: t["auroc"][s][PRIMARY]["all"]["auroc"] for s in ("true_cos", "sae_cos") if s in t["auroc"]}
    mon = t["auroc"].get("rate_monitor", {}).get(PRIMARY)
    if geo:
        g = max(geo, key=lambda s: geo[s] if geo[s] is not None else -1)
        text += f" The best geometric score, `{g}`, reaches {fmt_cell(t['auroc'][g][PRIMARY]['all'])}"
        text += (f"; watching the first checkpoint, `rate_monitor`, {fmt_cell(mon['all'])} (monitoring, not "
                 f"prediction)." if mon else ".")
    return text


def cost_note(cost: dict) -> str:
    """What the :mod:`.predict` scores cost, per member: seconds for all its fine-tunes, and their share of
    the fine-tuning steps."""
    have = {m: c for m, c in cost.items() if c}
    if not have:
        return ""
    c0 = next(iter(have.values()))["cost"]
    secs = "; ".join(f"{m} {c['seconds']['before']:.1f} s step-0 scores, {c['seconds'].get('segments', 0):.1f} s "
                     f"segments, {c['seconds'].get('lookahead', 0):.1f} s lookahead" for m, c in have.items())
    return (f"Cost per fine-tune, against its {c0['finetune_steps']} steps: the step-0 scores take "
            f"{c0['gradient_batches']} gradients at θ0 and {c0['linear_steps']} optimiser updates on the frozen "
            f"gradient (no step; {c0['gradient_batches'] / c0['finetune_steps']:.1%}); `segments_rate` "
            f"{c0['segments']} such segments with line searches, {c0['segments_step_equivalents']:.0f} "
            f"step-equivalents ({c0['segments_fraction_of_steps']:.1%}; a loss evaluation counted as a third of a "
            f"step; no fine-tuning step); the lookahead {c0['lookahead_steps']} real steps "
            f"({c0['lookahead_fraction_of_steps']:.1%}). Rates of the predictions on {c0['rate_samples']} samples. "
            f"Seconds for all fine-tunes of a member, on 2 cores: {secs}.")


def diagnostics(rows: list[dict]) -> dict:
    """Why a before-score can fail, per regime (unique rows): the median |Δr| at the end [pp], the median step
    at which the target reached the first matched gain, how often the rate change at the first checkpoint has
    the end change's sign, and Spearman ρ of the end change with ``extrap_rate`` and with ``rate_monitor``."""
    out = {}
    for g in dict.fromkeys(r["regime"] for r in rows):
        sel = [r for r in unique(rows) if r["regime"] == g]
        ch = np.array([r["rate_change_pp"] for r in sel])
        mon = np.array([np.nan if r["scores"]["rate_monitor"] is None else r["scores"]["rate_monitor"] for r in sel])
        steps = [r["gain_step"] for r in sel if r.get("gain_step") is not None]
        out[g] = {"n": len(sel), "median_abs_change_pp": float(np.median(np.abs(ch))),
                  "median_gain_step": float(np.median(steps)) if steps else None,
                  "monitor_sign_agrees": float(np.mean(np.sign(mon[np.isfinite(mon)]) == np.sign(ch[np.isfinite(mon)])))
                  if np.isfinite(mon).any() else None,
                  "spearman_extrap": stats.spearman([r["scores"]["extrap_rate"] for r in sel], ch),
                  "spearman_monitor": stats.spearman(mon, ch)}
    return out


def diagnostics_note(d: dict, steps: int) -> str:
    """The mechanism in words, from :func:`diagnostics`."""
    per = "; ".join(f"{g}: median |Δr| {_f(v['median_abs_change_pp'], '.2f')} pp, target at the first matched gain by "
                    f"step {_f(v['median_gain_step'], '.0f')} of {steps}, checkpoint sign = end sign in "
                    f"{_f(v['monitor_sign_agrees'], '.0%')}, Spearman ρ(end, extrap_rate) {_f(v['spearman_extrap'], '.2f')}, "
                    f"ρ(end, rate_monitor) {_f(v['spearman_monitor'], '.2f')}" for g, v in d.items())
    return ("Where the step-0 scores have least to go on (per regime): " + per + ". A small end change, a "
            "first-checkpoint sign that often differs from the end's, and a low ρ mean that the outcome is decided "
            "late in the fine-tune, after the target's gain; a score read at θ0 cannot see that, and the AUROC table "
            "shows how much re-evaluating the gradient along the predicted path (`segments_rate`) recovers.")


def report(t: dict, claim: str) -> str:
    """The terminal report: per score its kind and AUROC [CI] (clusters) on the primary label, overall and
    per regime, then the claim."""
    lines = [f"risk-prediction: {t['n']} distinct fine-tunes of {t['n_models']} pretrained models, {t['n_rose']} "
             f"rose (label {PRIMARY}: {LABELS[PRIMARY]})"]
    for s, a in t["auroc"].items():
        c = a[PRIMARY]
        lines.append(f"  {s:<18} {score_kind(s):<6} all {fmt_cell(c['all'])}  " +
                     "  ".join(f"{g} {fmt_cell(v)}" for g, v in c["by_regime"].items()))
    return "\n".join(lines + [claim])
