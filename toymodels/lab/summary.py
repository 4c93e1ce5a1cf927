"""The ``finetune`` section of ``summary.json``: one entry per fine-tune, aggregates per regime and per
(regime, optimiser, orientation), and numbers at matched gains.

Layout (written by :func:`summarize`, read by the tables, figures and the README generator; its keys in
order are :data:`SUMMARY_KEYS`): the run's settings, ``by_regime`` (the reference slice: axis-aligned and
the first optimiser, i.e. every fine-tune of a run without those axes), ``by_group`` (only with an
optimiser or orientation axis), and ``instances``. Each instance's harmful entry holds before/after
numbers (:data:`HARMFUL_AGGREGATES` lists the ones aggregated per group).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import stats
from ..config import Config
from ..directions import pairwise_angles_deg
from . import layers as lab_layers
from . import metrics as amp
from .finetune import FineTuneResult
from .hooks import NO_HOOKS, FineTuneHooks
from .plan import Plan
from .progress import at_gain, gain_curve, step_curve

SUMMARY_KEYS = ("target", "harmful", "objective", "gamma", "importance_factor", "trainable", "tau", "rate_evaluation", "steps",
                "n_instances", "instance_order", "regimes", "train_seconds", "optimizers", "orientations",
                "stop_gain", "matched_gains", "by_regime", "instances")

# --- summary ------------------------------------------------------------------------------------------
def regime_record(r) -> dict:
    """A regime as the summary lists it; ``dataset`` only when it is not the stream (so the layout of runs
    without the attack's sets is unchanged)."""
    d = dataclasses.asdict(r)
    if d.get("dataset") == "stream":
        del d["dataset"]
    return d


def _angle(W: np.ndarray, i: int, j: int) -> float:
    return float(pairwise_angles_deg(W[:, [i, j]])[0, 1])


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if abs(den) > 1e-9 else None


def _ba(before, after) -> dict:
    return {"before": before, "after": after, "change": after - before}


def instance_summaries(cfg: Config, result: FineTuneResult) -> list[dict]:
    """One entry per fine-tuning instance: before/after of every probe metric, relative increases in %,
    rate changes in percentage points, the first-order prediction against the measured change."""
    plan = result.plan
    (_, b), (_, a) = result.probes[0], result.probes[-1]
    W0, W1 = np.asarray(result.pretrained["W"][...]), np.asarray(result.finetuned["W"][...])
    R = result.rates
    out = []
    harmful_names = [plan.names[j] for j in plan.harmful]
    for k in range(plan.n_ft):
        entry = {
            "index": k,
            "pretrain_instance": int(plan.pretrain_index[k]),
            "regime": plan.regime_name(k),
            "optimizer": plan.optimizer_name(k),
            "orientation": int(plan.orientation_index[k]),
            "target": plan.names[int(plan.target[k])],
            "target_readout": _ba(b["target_readout"][k], a["target_readout"][k]),
            "target_gain": float(a["target_readout"][k] / b["target_readout"][k]) if b["target_readout"][k] else None,
            "target_norm": _ba(b["target_norm"][k], a["target_norm"][k]),
            "target_cos_drift": float(a["target_cos_drift"][k]),
            "overlap": {"score": _ba(b["overlap"][k], a["overlap"][k]),
                        "signed": _ba(b["overlap_signed"][k], a["overlap_signed"][k])},
            "density": {"features_per_dim": _ba(b["features_per_dim"][k], a["features_per_dim"][k]),
                        "mean_cos2": _ba(b["mean_cos2"][k], a["mean_cos2"][k])},
            "harmful": {},
        }
        for h, name in enumerate(harmful_names):
            def g(m, src, k=k, h=h):
                return float(src[m][k, h])

            rate_b, rate_a = g("rate", b), g("rate", a)
            if R is not None:  # measured on finetune.rate_samples inputs of this model (lab.rates)
                rate_b, rate_a = float(R["rate"][0, k, h]), float(R["rate"][-1, k, h])
            entry["harmful"][name] = {
                "preact": {**_ba(g("preact", b), g("preact", a)),
                           "rel_increase_pct": float(amp.relative_increase_pct(g("preact", b), g("preact", a)))},
                "spurious": {**_ba(g("spurious", b), g("spurious", a)),
                             "rel_increase_pct": float(amp.relative_increase_pct(g("spurious", b), g("spurious", a)))},
                "rate": {**_ba(rate_b, rate_a), "change_pp": float(amp.percentage_points(rate_b, rate_a)),
                         "rel_increase_pct": float(amp.relative_increase_pct(rate_b, rate_a)),
                         "se_change_pp": None if R is None else float(100.0 * R["se_change"][-1, k, h])},
                "cos": _ba(g("cos", b), g("cos", a)),
                # from the weights with atan2 (arccos of a float32 cosine is off by ~0.02° near 0°)
                "angle_deg": _ba(_angle(W0[k], int(plan.target[k]), int(plan.harmful[h])),
                                 _angle(W1[k], int(plan.target[k]), int(plan.harmful[h]))),
                "norm": _ba(g("norm", b), g("norm", a)),
                "first_order": {"predicted": g("pred_first_order", a),
                                "predicted_along_target": g("pred_along_target", a),
                                "measured": g("preact_change", a), "rel_error": g("rel_error", a),
                                # Δpre_j / (α ‖W0_j‖): the claim says cos θ_tj (0.966 at 15°)
                                "per_unit_push": _ratio(g("preact_change", a), float(a["alpha"][k]) * g("norm", b)),
                                "alpha": float(a["alpha"][k])},
            }
            if cfg.finetune.matched_gains:
                entry["harmful"][name]["at_gain"] = _at_gains(result.probes, k, h, cfg.finetune.matched_gains, R)
        if result.layers is not None:  # per-layer records of a deep model (lab.layers)
            entry["layers"] = {name: lab_layers.instance_record(result.layers, k, h)
                               for h, name in enumerate(harmful_names)}
            for name, rec in entry["layers"].items():
                # the output's first-order prediction through every layer (the JVP), not the one-layer
                # ⟨W0_j, ΔW_t⟩ of the planted layer alone
                fo = entry["harmful"][name]["first_order"]
                fo["predicted"] = rec["predicted"][-1]
                fo["rel_error"] = float(amp.relative_error(fo["measured"], fo["predicted"]))
                fo["prediction"] = "composed (JVP through every layer)"
                # the per-unit push and the along-target prediction are the planted layer's W alone: one-layer
                # quantities with no meaning at the output of a stack
                fo["per_unit_push"] = fo["predicted_along_target"] = None
        if result.stopped_at is not None:
            entry["stopped_at"] = int(result.stopped_at[k]) if result.stopped_at[k] >= 0 else None
        out.append(entry)
    return out


def _at_gains(probes, k: int, h: int, gains, rates: dict | None = None) -> dict:
    """Instance k's numbers about harmful feature h at each matched gain (:func:`.progress.at_gain`):
    the fine-tuning step, the change of its pre-activation on the target input, of its toxic rate [pp]
    (from ``rates``, :func:`.rates.for_probes`, when given: measured at the two probes around the
    crossing), cos(target, harmful), and the per-unit push Δpre / (α ‖W0_j‖)."""
    curve = lambda m: np.array([p[m][k, h] if p[m].ndim > 1 else p[m][k] for _, p in probes], np.float64)
    readout = curve("target_readout")
    pre, rate = curve("preact"), curve("rate")
    change = 100.0 * (rate - rate[0]) if rates is None else 100.0 * rates["change"][:, k, h]
    values = {"step": np.array([t for t, _ in probes], np.float64), "preact_change": pre - pre[0],
              "rate_change_pp": change, "cos": curve("cos"), "alpha": curve("alpha")}
    norm0 = float(curve("norm")[0])
    out = {}
    for g in gains:
        v = at_gain(readout / readout[0] if readout[0] > 0 else np.full_like(readout, np.nan), values, g)
        if v is not None:
            v["per_unit_push"] = _ratio(v["preact_change"], v["alpha"] * norm0)
        out[f"{g:g}"] = v
    return out


# (metric path in an instance's harmful entry, summary key)
HARMFUL_AGGREGATES = [(("preact", "before"), "preact_before"), (("preact", "after"), "preact_after"),
        (("preact", "change"), "preact_change"), (("spurious", "before"), "spurious_before"),
        (("spurious", "after"), "spurious_after"), (("rate", "before"), "rate_before"),
        (("rate", "after"), "rate_after"), (("rate", "change_pp"), "rate_change_pp"),
        (("rate", "rel_increase_pct"), "rate_rel_increase_pct"), (("preact", "rel_increase_pct"), "preact_rel_increase_pct"),
        (("spurious", "rel_increase_pct"), "spurious_rel_increase_pct"),
        (("cos", "before"), "cos_before"), (("cos", "after"), "cos_after"),
        (("norm", "before"), "norm_before"), (("norm", "after"), "norm_after"),
        (("first_order", "predicted"), "predicted_change"), (("first_order", "rel_error"), "rel_error"),
        (("first_order", "per_unit_push"), "per_unit_push"), (("angle_deg", "before"), "angle_before"),
        (("angle_deg", "after"), "angle_after")]


def _group_summary(rows: list[dict]) -> dict:
    """mean/std/min/max over ``rows`` (instance entries) of the main numbers, for each harmful feature;
    the fraction of rows whose toxic output rate (and pre-activation) went up; and, with >= 3 rows whose
    pretrained cos(target, harmful) varies, Pearson and Spearman correlations of the changes against the
    pretrained cos and angle."""
    entry = {"n": len(rows), "target_gain": _stats([e["target_gain"] for e in rows]),
             "target_norm_change": _stats([e["target_norm"]["change"] for e in rows]), "harmful": {}}
    for name in rows[0]["harmful"] if rows else []:
        hs = [e["harmful"][name] for e in rows]
        agg = {key: _stats([h[p[0]][p[1]] for h in hs]) for p, key in HARMFUL_AGGREGATES}
        agg["fraction_rate_up"] = float(np.mean([h["rate"]["change_pp"] > 0 for h in hs]))
        # the test behind "up"/"down": per-model mean change, t interval over the pretrained models
        agg["rate_change_pp_paired"] = stats.paired([h["rate"]["change_pp"] for h in hs],
                                                    clusters=[e["pretrain_instance"] for e in rows])
        agg["fraction_preact_up"] = float(np.mean([h["preact"]["change"] > 0 for h in hs]))
        cos_b = [h["cos"]["before"] for h in hs]
        # correlations with the pretrained angle only where it varies: against a cos that is constant up to
        # float rounding (a pinned pair) a correlation is noise that flips sign with the last bit of W
        if len(hs) >= 3 and np.ptp(cos_b) > 1e-4:
            ang_b = [h["angle_deg"]["before"] for h in hs]
            corr = {}
            for yname, y in (("preact_change", [h["preact"]["change"] for h in hs]),
                             ("rate_change_pp", [h["rate"]["change_pp"] for h in hs]),
                             ("spurious_change", [h["spurious"]["change"] for h in hs])):
                for xname, x in (("cos", cos_b), ("angle_deg", ang_b)):
                    corr[f"{yname}_vs_{xname}"] = {"pearson": stats.pearson(x, y), "spearman": stats.spearman(x, y),
                                                   "n": len(hs)}
            agg["correlations"] = corr
        if "at_gain" in hs[0]:
            agg["at_gain"] = _at_gain_summary([h["at_gain"] for h in hs], [e["pretrain_instance"] for e in rows])
        entry["harmful"][name] = agg
    return entry


def _at_gain_summary(at: list[dict], clusters: list[int]) -> dict:
    """Per matched gain: how many instances reached it, and the spread of their numbers there, with a
    95% cluster-bootstrap CI (clusters = pretrained models) of the mean rate change."""
    out = {}
    for g in at[0]:
        hit = [(a[g], c) for a, c in zip(at, clusters) if a[g] is not None]
        vals = {m: stats.spread([a[m] for a, _ in hit]) for m in ("step", "preact_change", "rate_change_pp", "cos",
                                                                  "per_unit_push")}
        pp = [a["rate_change_pp"] for a, _ in hit]
        out[g] = {"n_reached": len(hit), "n": len(at), **vals,
                  "rate_change_pp_ci95": stats.cluster_mean_ci(pp, [c for _, c in hit]),
                  "n_rate_up": int(sum(v > 0 for v in pp))}
    return out


def _stats(v: list[float]) -> dict:
    s = stats.spread(v)
    return {k: s[k] for k in ("mean", "std", "min", "max")}


def regime_summaries(instances: list[dict], plan: Plan) -> dict:
    """Per regime, over the reference slice of the robustness axes (axis-aligned, the first optimiser;
    that is every instance when the run has no optimiser or orientation axis): see :func:`_group_summary`."""
    out = {}
    for reg in plan.regimes:
        rows = [e for e in instances if e["regime"] == reg.name and plan.is_reference(e["index"])]
        out[reg.name] = {"data": reg.data, "loss_scope": reg.loss_scope, **_group_summary(rows)}
    return out


def group_key(regime: str, optimizer: str, orientation: str) -> str:
    """The key of a ``by_group`` entry: ``regime|optimizer|axis`` or ``regime|optimizer|rotated``."""
    return f"{regime}|{optimizer}|{orientation}"


def group_summaries(instances: list[dict], plan: Plan, probes=None, curve_top: float | None = None) -> dict:
    """Per (regime, optimiser, orientation class), in the config's order: the axis-aligned instances
    (``axis``) and, with ``finetune.orientations`` > 1, the K − 1 rotated ones together (``rotated``;
    rate CIs resample pretrained models), each summarised by :func:`_group_summary`; the rotated group
    also gives the spread over rotations of the per-rotation mean rate change. With ``probes`` and
    ``curve_top``, each group also gets its :func:`gain_curve` per harmful feature."""
    out = {}
    classes = ("axis",) + (("rotated",) if plan.n_orientations > 1 else ())
    harm = [plan.names[j] for j in plan.harmful]
    for reg in plan.regimes:
        for opt in plan.optimizer_names:
            for cls in classes:
                rows = [e for e in instances if e["regime"] == reg.name and e["optimizer"] == opt
                        and (e["orientation"] == 0) == (cls == "axis")]
                g = {"regime": reg.name, "optimizer": opt, "orientation": cls, "data": reg.data,
                     "loss_scope": reg.loss_scope, **_group_summary(rows)}
                for name in harm:
                    pp = [e["harmful"][name]["rate"]["change_pp"] for e in rows]
                    h = g["harmful"][name]
                    h["rate_change_pp_ci95"] = stats.cluster_mean_ci(pp, [e["pretrain_instance"] for e in rows])
                    h["n_rate_up"] = int(sum(v > 0 for v in pp))
                    if cls == "rotated":
                        per_rot = {}
                        for e, v in zip(rows, pp):
                            per_rot.setdefault(e["orientation"], []).append(v)
                        h["rate_change_pp_over_rotations"] = stats.spread([np.mean(v) for v in per_rot.values()])
                        pu = {}
                        for e in rows:
                            pu.setdefault(e["orientation"], []).append(e["harmful"][name]["first_order"]["per_unit_push"])
                        h["per_unit_push_over_rotations"] = stats.spread(
                            [stats.spread(v)["mean"] for v in pu.values()])
                    if probes is not None and curve_top is not None:
                        h["gain_curve"] = gain_curve(probes, [e["index"] for e in rows], harm.index(name), curve_top)
                        h["step_curve"] = step_curve(probes, [e["index"] for e in rows], harm.index(name))
                out[group_key(reg.name, opt, cls)] = g
    return out


def _rate_evaluation(ft, rates: dict | None) -> dict:
    """Where the reported rates come from: rate_samples inputs per pretrained model (lab.rates), or the
    probe's one shared batch when the probe could not keep its states."""
    if rates is None:
        return {"source": "probe batch (shared by all runs)", "samples": ft.eval_batch_size}
    return {"source": "independent inputs per pretrained model, shared by its fine-tunes",
            "samples_per_model": int(rates["n_samples"]), "min_inputs_with_feature_absent": int(rates["min_absent"])}


def summarize(cfg: Config, result: FineTuneResult, hooks: FineTuneHooks = NO_HOOKS) -> dict:
    """The ``finetune`` section of ``summary.json`` (its layout: :data:`SUMMARY_KEYS`), plus the keys
    of ``hooks.summary_section`` (e.g. ``defences``) when the hooks evaluated the run."""
    ft, plan = cfg.finetune, result.plan
    instances = instance_summaries(cfg, result)
    out = {
        "target": ft.target,
        "harmful": [plan.names[j] for j in plan.harmful],
        "objective": ft.objective,
        "gamma": ft.gamma if ft.objective == "amplify" else None,
        "importance_factor": ft.importance_factor if ft.objective == "importance" else None,
        "trainable": ft.trainable,
        "tau": ft.tau,
        "rate_evaluation": _rate_evaluation(ft, result.rates),
        "steps": ft.steps,
        "n_instances": plan.n_ft,
        "instance_order": "k = ((pretrain_instance * n_orientations + orientation) * n_optimizers + optimizer) "
                          "* n_regimes + regime",
        "regimes": [regime_record(r) for r in plan.regimes],
        "train_seconds": round(result.seconds, 3),
        "optimizers": [dataclasses.asdict(o) for o in ft.optimizer_list()],
        "orientations": plan.n_orientations,
        "stop_gain": ft.stop_gain,
        "matched_gains": list(ft.matched_gains),
        "by_regime": regime_summaries(instances, plan),
        **({"by_group": group_summaries(instances, plan, result.probes, max(ft.matched_gains, default=None))}
           if plan.n_orientations > 1 or len(plan.optimizer_names) > 1 else {}),
        **({"by_layer": lab_layers.by_layer(instances, lambda e: group_key(
            e["regime"], e["optimizer"], "axis" if e["orientation"] == 0 else "rotated"))}
           if result.layers is not None else {}),
        "instances": instances,
    }
    if ft.layer:  # the objective read layer ft.layer's output (gains too); rates are at the output
        out["objective_layer"] = ft.layer
    assert tuple(k for k in out if k not in ("by_group", "by_layer", "objective_layer")) == SUMMARY_KEYS, "the summary layout is SUMMARY_KEYS"
    if result.evaluation is not None:
        out |= hooks.summary_section(out, result.evaluation)
    return out
