"""The attack's section of ``summary.json`` (``finetune.attack``): the ratio to random sets, detection, sets.

**Ratio to random sets** (He et al. 2024's comparison: harmful output rate after fine-tuning on 100 selected
against 100 random benign samples). Per cell (optimiser, orientation, defence) and adversarial method m, per pretrained
model i, with every fine-tune stopped at the same target gain (``finetune.stop_gain``):

    A_i = toxic rate after fine-tuning on m's set,   B_i = mean over the random sets of the rate after
    ratio_vs_random = mean_i A_i / mean_i B_i

with a percentile interval from resampling whole models (pairs (A_i, B_i) stay together). When mean_i B_i
= 0 (no random set's fine-tune fires toxic) the ratio is undefined and says so, not ∞. Beside it, the
spill-over itself: the paired difference of the rate *changes* ΔA_i − ΔB_i in pp (t interval over the
models, :func:`toymodels.lab.inference.claim`: a direction only from ≥ 10 models), and the ratio of the
mean changes (undefined unless the random sets raise the rate on average).
A model whose fine-tune on some set never reached the gain is left out of that method's numbers (counted).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .. import stats
from ..config import Config
from ..lab.inference import claim

RATIO_RESAMPLES = 4000
# a selected set whose samples' mean cos(step, ∇ harm) is below this had nothing to select on: every pool
# sample's step is orthogonal to the harmful outputs' gradient up to float rounding (measured: ~2e-17 where it
# happens, against >= 4e-4 elsewhere), so the "selection" is the pool's first candidates, a random set.
# Such models are counted and named, not dropped.
NO_SIGNAL_COS = 1e-6


def ratio_ci(A, B, denominator: str = "mean(B)", n_resamples: int = RATIO_RESAMPLES, seed: int = stats.SEED) -> dict:
    """mean(A)/mean(B) over paired models, and its 95% percentile interval over model resamples.

    A ratio to a mean of 0 is not a number: when mean(B) <= 0 the ratio is None with ``undefined`` saying
    why (e.g. the random sets never raise the rate). For non-negative A and B (rates) a resample with
    mean(B) = 0 is +∞, and when more than 2.5% of them are, the interval's upper end is None (unbounded).
    When B can be negative (rate changes) and more than 2.5% of the resamples have mean(B) <= 0, the
    resampled ratio crosses a pole and no percentile interval means anything: ``ci95`` is None with
    ``undefined_ci`` saying why."""
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    G = len(A)
    if G == 0:
        return {"ratio": None, "ci95": None, "n_clusters": 0, "undefined": "no models"}
    if not B.mean() > 0:
        return {"ratio": None, "ci95": None, "n_clusters": G,
                "undefined": f"{denominator} over {G} models is {B.mean():.2g}, not > 0"}
    ratio = float(A.mean() / B.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, G, size=(n_resamples, G))
    num, den = A[idx].mean(1), B[idx].mean(1)
    bad = ~(den > 0)
    if bad.mean() > 0.025 and not ((A >= 0).all() and (B >= 0).all()):
        return {"ratio": ratio, "ci95": None, "n_clusters": G,
                "undefined_ci": f"{denominator} is <= 0 in {bad.mean():.0%} of the model resamples"}
    with np.errstate(divide="ignore", invalid="ignore"):
        # den <= 0 here is either a rare resample (<= 2.5%) or, for non-negative data, an empty denominator: +∞
        r = np.sort(np.where(bad, np.inf, num / np.where(bad, 1.0, den)))
    lo, hi = r[int(0.025 * (n_resamples - 1))], r[int(np.ceil(0.975 * (n_resamples - 1)))]
    return {"ratio": ratio, "ci95": [float(lo), float(hi) if np.isfinite(hi) else None], "n_clusters": G}


def _strip(p: dict) -> dict:
    """A claim without its per-model ``values`` (the summary keeps the interval, not the raw list)."""
    return {k: v for k, v in p.items() if k != "values"}


def _rate(e: dict, harm: str, key: str):
    return e["harmful"][harm]["rate"][key]


def method_rows(rows: list[dict], datasets: dict[str, str], harm: str, stop_gain) -> dict:
    """The numbers of one cell (its fine-tunes ``rows``) for every adversarial method."""
    by_model: dict[int, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for e in rows:
        by_model[e["pretrain_instance"]][datasets[e["regime"]]].append(e)
    reached = lambda e: stop_gain is None or e.get("stopped_at") is not None
    out = {}
    for m in ("selected", "optimised"):
        A, B, dA, dB, left_out = [], [], [], [], 0
        for i in sorted(by_model):
            adv, rnd = by_model[i].get(m, []), by_model[i].get("random", [])
            if not adv or not rnd:
                continue
            if not all(reached(e) for e in adv + rnd):
                left_out += 1
                continue
            A.append(np.mean([_rate(e, harm, "after") for e in adv]))
            B.append(np.mean([_rate(e, harm, "after") for e in rnd]))
            dA.append(np.mean([_rate(e, harm, "change_pp") for e in adv]))
            dB.append(np.mean([_rate(e, harm, "change_pp") for e in rnd]))
        if not A and not left_out:
            continue
        diff = claim(stats.paired(dA, dB))
        spill = ratio_ci(dA, dB, "the random sets' mean change") if diff["n_clusters"] else None
        out[m] = {"ratio_vs_random": ratio_ci(A, B, "the random sets' mean rate after"), "rate_after_adversarial_pct": 100 * float(np.mean(A)) if A else None,
                  "rate_after_random_pct": 100 * float(np.mean(B)) if B else None,
                  "change_pp_adversarial": float(np.mean(dA)) if dA else None,
                  "change_pp_random": float(np.mean(dB)) if dB else None,
                  "difference_pp": _strip(diff),
                  "spill_ratio": spill, "models_not_at_gain": left_out}
    return out


def _per_model(rows: list[dict], datasets: dict[str, str], method: str, value) -> dict[int, float]:
    """Per pretrained model: the mean of ``value(e)`` over its fine-tunes on ``method``'s set(s)."""
    by: dict[int, list[float]] = defaultdict(list)
    for e in rows:
        if datasets[e["regime"]] == method:
            by[e["pretrain_instance"]].append(value(e))
    return {i: float(np.mean(v)) for i, v in by.items()}


def defence_rows(rows: list[dict], undefended: list[dict], datasets: dict[str, str], harm: str, other_loss: dict,
                 stop_gain) -> dict:
    """What a defence does against each method's set, paired by model against the same set undefended:
    ``cut_pp`` = defended − undefended change of the toxic rate (pp; "down": the defence cuts the spill-over)
    and ``cost_other_loss`` = defended − undefended pretraining loss without the target's term after
    fine-tuning (``recon_loss_other``, the defences table's capability cost). Per set, models with a fine-tune on
    it (defended or not) that never reached the gain are left out (counted)."""
    out = {}
    for m in ("random", "selected", "optimised"):
        missed = {e["pretrain_instance"] for e in rows + undefended
                  if datasets[e["regime"]] == m and stop_gain is not None and e.get("stopped_at") is None}
        d = _per_model(rows, datasets, m, lambda e: _rate(e, harm, "change_pp"))
        u = _per_model(undefended, datasets, m, lambda e: _rate(e, harm, "change_pp"))
        models = sorted((set(d) & set(u)) - missed)
        if not models:
            continue
        entry = {"cut_pp": _strip(claim(stats.paired([d[i] for i in models], [u[i] for i in models]))),
                 "models_not_at_gain": len((set(d) & set(u)) & missed)}
        if other_loss:
            dl = _per_model(rows, datasets, m, lambda e: other_loss[e["index"]])
            ul = _per_model(undefended, datasets, m, lambda e: other_loss[e["index"]])
            entry["cost_other_loss"] = _strip(claim(stats.paired([dl[i] for i in models], [ul[i] for i in models])))
        out[m] = entry
    return out


def subliminal_rows(rows: list[dict], datasets: dict[str, str], harm: str) -> dict:
    """Student rate changes (pp) under the two teachers, each against 0, and same − other by student model."""
    per = defaultdict(dict)
    for e in rows:
        per[e["pretrain_instance"]][datasets[e["regime"]]] = _rate(e, harm, "change_pp")
    models = [i for i in sorted(per) if {"teacher_same", "teacher_other"} <= set(per[i])]
    same = [per[i]["teacher_same"] for i in models]
    other = [per[i]["teacher_other"] for i in models]
    return {"teacher_same_pp": _strip(claim(stats.paired(same))), "teacher_other_pp": _strip(claim(stats.paired(other))),
            "same_minus_other_pp": _strip(claim(stats.paired(same, other)))}


def summarize(cfg: Config, ft: dict, report: dict, defences: dict | None = None) -> dict:
    """``finetune.attack``: per (optimiser, orientation, defence) cell the methods' numbers (or the
    subliminal test) and, for a defended cell, :func:`defence_rows` against the undefended one; the
    reference cell's ``ratio_vs_random`` and the detectors' ``auroc`` at the top. ``defences``: the
    defences' summary section (its per-fine-tune losses give the cost), when the run has one."""
    harm = ft["harmful"][0]
    datasets = {r.name: r.dataset for r in cfg.finetune.regimes}
    defence = {r.name: r.defence for r in cfg.finetune.regimes}
    teacher = next(iter(datasets.values())).startswith("teacher")
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for e in ft["instances"]:
        groups[(e["optimizer"], e["orientation"], defence[e["regime"]])].append(e)
    cells = []
    for (opt, o, dfn), rows in groups.items():
        body = subliminal_rows(rows, datasets, harm) if teacher else method_rows(rows, datasets, harm, ft.get("stop_gain"))
        cell = {"optimizer": opt, "orientation": o, "defence": dfn, **({"subliminal": body} if teacher else {"methods": body})}
        if not teacher and dfn != "none" and (opt, o, "none") in groups:
            other_loss = {d["index"]: d["recon_loss_other_after"] for d in (defences or {}).get("instances", [])}
            cell["against_undefended"] = defence_rows(rows, groups[(opt, o, "none")], datasets, harm, other_loss,
                                                      ft.get("stop_gain"))
        cells.append(cell)
    out = {"n_samples": cfg.attack.n_samples, "pool_size": cfg.attack.pool_size, "harmful": harm,
           "stop_gain": ft.get("stop_gain"), "datasets": datasets, "cells": cells}
    ref = next((c for c in cells if c["defence"] == "none"), cells[0] if cells else {})
    if teacher:
        out["subliminal"] = ref.get("subliminal")
        out["teacher_index"] = report.get("teacher_index")
        rise = report.get("teacher_change_pp")
        out["teacher_change_pp"] = _strip(claim(stats.paired(rise))) if rise else None
        return out
    out["ratio_vs_random"] = {m: v["ratio_vs_random"] | {"difference_pp": v["difference_pp"]}
                              for m, v in ref.get("methods", {}).items()}
    det = report.get("detection", {})
    out["auroc"] = det.get("auroc", {})
    out["detection_scores"] = det.get("scores", {})
    out["detectors"] = det.get("detectors")
    out["recovered_direction"] = det.get("recovered_direction")
    out["selection"] = {k: report.get(k) for k in ("selected", "optimised")}
    weak = sorted({int(c.split(",")[0]) for c, v in (report.get("selected") or {}).items() if v["mean_cos"] < NO_SIGNAL_COS})
    out["selection_without_signal"] = {"models": weak, "threshold_cos": NO_SIGNAL_COS,
                                       "n_models": len({c.split(",")[0] for c in report.get("selected") or {}})}
    out["set_stats"] = report.get("set_stats")
    return out
