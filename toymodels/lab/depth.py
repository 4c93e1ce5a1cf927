"""The "later layers" question: does spill-over grow with the depth at which the pair lives?

The ``deep`` suite plants helpful and toxic at layer l of an L-layer stack (:mod:`toymodels.core.deep`), one
member per l, and fine-tunes helpful at the output under the robustness axes (regime × optimiser ×
orientation × stopping point). Built only from the members' saved summaries:

* per member, the robustness rows and verdicts (:mod:`.robustness`: the toxic-rate change with its paired
  t interval over the G pretrained models, at the end and at each matched gain);
* per member and cell, the per-layer records (:mod:`.layers`): where the harmful pre-activation changes
  most, and the composed first-order prediction beside the measured change;
* across members, the deepest plant layer against the shallowest, cell by cell: d_i = Δrate(l = L, model i)
  − Δrate(l = 1, model i), a paired t interval over the indices i whose pair is represented in both members
  (:func:`.inference.represented`; strata are never pooled). The members' model i share the seed, the
  initialisation key and the data stream (not the model: the plant layer differs), so the pairing is by
  index and the interval is valid without assuming it removes any variance.

The verdict on the seed's "spill-over is worse in later layers" (:func:`verdict`): per regime **confirmed**
where every distinct cell says the deeper plant raises the toxic rate more (interval above 0), **refuted**
where every one says less, **axis-dependent** where cells disagree in sign, **no evidence** otherwise; overall
**regime-dependent** only when one regime confirms and another refutes. Only the deepest and the shallowest
plant layers are compared; the middle layers are in the table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import stats
from . import inference
from . import layers as lab_layers
from . import robustness as rob


def _per_model(instances: list[dict], harmful: str, regime: str, optimizer: str, orient: str,
               gain: str | None = None) -> dict[int, float]:
    """Model index -> mean toxic-rate change [pp] of its fine-tunes in one cell (at a matched gain when
    ``gain`` is given; fine-tunes that never reached it are left out)."""
    vals: dict[int, list[float]] = {}
    for e in instances:
        if e["regime"] != regime or e["optimizer"] != optimizer or (e["orientation"] == 0) != (orient == "axis"):
            continue
        h = e["harmful"][harmful]
        v = h["rate"]["change_pp"] if gain is None else (h.get("at_gain", {}).get(gain) or {}).get("rate_change_pp")
        if v is not None:
            vals.setdefault(e["pretrain_instance"], []).append(v)
    return {i: float(np.mean(v)) for i, v in vals.items()}


def deeper_minus_shallower(deep: dict, shallow: dict, harmful: str, gains: list[str]) -> list[dict]:
    """Per distinct (regime, optimiser, orientation class): the paired difference of the per-model toxic-rate
    change, deepest plant layer minus shallowest, at the end and each matched gain, over the model indices
    whose pair is represented in both runs (strata are never pooled)."""
    out = []
    keep = inference.represented(deep) & inference.represented(shallow)
    seen = set()
    for r in rob.group_rows(deep["finetune"], harmful, deep.get("features")):
        key = (r["regime"], r["optimizer"], r["orientation"])
        if r["duplicate_of"] or key in seen:
            continue
        seen.add(key)
        cell = {"regime": r["regime"], "optimizer": r["optimizer"], "orientation": r["orientation"],
                "models": "pair represented in both plant layers", "n_models": len(keep)}
        for point in [None, *gains]:
            a = _per_model(deep["finetune"]["instances"], harmful, r["regime"], r["optimizer"], r["orientation"], point)
            b = _per_model(shallow["finetune"]["instances"], harmful, r["regime"], r["optimizer"], r["orientation"],
                           point)
            both = sorted(set(a) & set(b) & keep)
            p = stats.paired([a[i] for i in both], [b[i] for i in both], clusters=both)
            p = inference.claim(p)
            cell["end" if point is None else f"gain {point}"] = {
                "mean": p["mean"], "ci95": p["ci95"], "n_clusters": p["n_clusters"], "direction": p["direction"]}
        out.append(cell)
    return out


def verdict(cells: list[dict], point: str = "end") -> dict:
    """Per regime: **confirmed** (every distinct cell up), **refuted** (every one down), **axis-dependent**
    (some up, some down: it flips with the optimiser or the orientation) or **no evidence**. Overall:
    confirmed or refuted when every regime says so; **regime-dependent** only when one regime confirms and
    another refutes; "confirmed in R only" (or refuted) when the other regimes show no evidence."""
    by_regime: dict[str, set] = {}
    for c in cells:
        by_regime.setdefault(c["regime"], set()).add(c[point]["direction"])
    per = {reg: ("confirmed" if d == {"up"} else "refuted" if d == {"down"} else
                 "axis-dependent" if {"up", "down"} <= d else "no evidence") for reg, d in by_regime.items()}
    vals = set(per.values())
    if len(vals) == 1:
        overall = next(iter(vals))
    elif {"confirmed", "refuted"} <= vals:
        overall = "regime-dependent"
    elif vals & {"confirmed", "refuted"}:
        word = next(iter(vals & {"confirmed", "refuted"}))
        overall = f"{word} in {', '.join(r for r, v in per.items() if v == word)} only"
    else:
        overall = "axis-dependent" if "axis-dependent" in vals else "no evidence"
    return {"per_regime": per, "overall": overall}


def _row_layers(ft: dict, row: dict, stratum_of: list[str], harmful: str) -> list[dict]:
    """The per-layer records (:func:`.layers.by_layer`) of one robustness row: its regime, optimiser,
    orientation class and stratum of starting geometry only."""
    sel = [e for e in ft["instances"] if "layers" in e and e["regime"] == row["regime"]
           and e["optimizer"] == row["optimizer"] and (e["orientation"] == 0) == (row["orientation"] == "axis")
           and stratum_of[e["pretrain_instance"]] == row["stratum"]]
    return lab_layers.by_layer(sel, lambda e: "row").get("row", {}).get(harmful, [])


def member_section(run) -> dict:
    """One member (one plant layer): its robustness section, per-layer records per row (same stratum) and
    the pretrained norms."""
    sec = rob.member_section(run)
    ft = run.summary["finetune"]
    sec["plant_layer"] = run.config.model.plant_layer
    sec["n_layers"] = run.config.model.n_layers
    stratum_of = inference.strata(run.summary.get("features"), run.config.n_inst)
    for r in sec["rows"]:
        r["layers"] = _row_layers(ft, r, stratum_of, sec["harmful"])
    errs = [e["harmful"][sec["harmful"]]["first_order"]["rel_error"] for e in ft["instances"]]
    sec["composed_prediction_rel_error_median"] = float(np.median(errs))
    return sec


def depth_summary(members, suite: dict) -> tuple[dict, str]:
    """The deep suite's ``summary.json`` (and its terminal report; :func:`markdown` is its
    ``depth_table.md``): per plant layer the robustness rows, the per-layer records, and the
    deepest-minus-shallowest comparison with its verdict."""
    runs = sorted(members, key=lambda m: m.config.model.plant_layer)
    sections = [member_section(m) for m in runs]
    harmful = sections[0]["harmful"]
    gains = [f"{g:g}" for g in runs[0].config.finetune.matched_gains]
    cells = deeper_minus_shallower(runs[-1].summary, runs[0].summary, harmful, gains) if len(runs) > 1 else []
    points = ["end", *[f"gain {g}" for g in gains]]
    summary = {
        "suite": suite["suite"], "members": [s["name"] for s in sections],
        "plant_layers": [s["plant_layer"] for s in sections], "n_layers": sections[0]["n_layers"],
        "sections": sections, "deeper_minus_shallower": cells,
        "later_layers": {p: verdict(cells, p) for p in points} if cells else {},
        "direction_rule": "up/down: the 95% t interval over pretrained models lies above/below 0, from at least "
                          f"{inference.MIN_CLUSTERS} models; across plant layers the models are paired by index "
                          "(same seed, init key and data stream)",
    }
    return summary, report(summary)


def _ci(d: dict) -> str:
    return rob._ci(d["mean"], d["ci95"], d["n_clusters"]) + f" {d['direction']}"


def layer_table(summary: dict) -> str:
    """Markdown: per plant layer and distinct cell, Δ toxic rate at the end and each matched gain (paired
    CI, G), the layer where the harmful pre-activation moved most, and the composed prediction's error."""
    gains = [k for k in (summary["sections"][0]["rows"][0]["at_gain"] if summary["sections"][0]["rows"] else {})]
    head = ["plant layer", "models", "regime", "optimiser", "orientation", "Δ toxic rate at the end [pp] (95% CI, G)"] + [
        f"at gain {g}" for g in gains] + ["largest Δ pre-act at layer (share)", "Δ pre-act per layer: measured "
                                          "(composed prediction)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary["sections"]:
        for r in s["rows"]:
            if r["duplicate_of"]:
                continue
            per = r["layers"]
            top = max(per, key=lambda x: x["argmax_share"]) if per else None
            cells = [str(s["plant_layer"]), r["stratum"], f"`{r['regime']}`", r["optimizer"], rob._orient(r),
                     rob._ci(r["rate_change_pp"], r["rate_ci"], r["n_clusters"]) + f" {r['direction']}"]
            cells += [rob._ci(r["at_gain"][g]["rate_change_pp"], r["at_gain"][g]["ci"], r["at_gain"][g]["n_clusters"])
                      + f" {r['at_gain'][g]['direction']}" for g in gains]
            cells.append(f"{top['layer']} ({top['argmax_share']:.0%})" if top else "n/a")
            cells.append("; ".join(f"{x['change']['mean']:+.3f} ({x['predicted_mean']:+.3f})" for x in per) or "n/a")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(summary: dict) -> str:
    """Markdown: deepest minus shallowest plant layer, per distinct cell and stopping point."""
    cells = summary["deeper_minus_shallower"]
    if not cells:
        return ""
    points = [k for k in cells[0] if k == "end" or k.startswith("gain ")]
    head = ["regime", "optimiser", "orientation"] + [f"Δ rate(l={summary['plant_layers'][-1]}) − Δ rate(l="
                                                     f"{summary['plant_layers'][0]}) [pp], {p}" for p in points]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        lines.append("| " + " | ".join([f"`{c['regime']}`", c["optimizer"], "axis-aligned" if c["orientation"] == "axis"
                                        else "rotated"] + [_ci(c[p]) for p in points]) + " |")
    return "\n".join(lines)


def markdown(summary: dict) -> str:
    v = summary["later_layers"]
    lines = ["# deep: spill-over by the layer the pair is planted at", "",
             f"{summary['n_layers']}-layer stacks; the pair planted at layer "
             f"{', '.join(map(str, summary['plant_layers']))}; helpful fine-tuned at the output.", "",
             layer_table(summary), "", "## Deepest minus shallowest plant layer (paired by model index)", "",
             comparison_table(summary), ""]
    for p, d in v.items():
        lines.append(f"- 'later layers spill over more', {p}: **{d['overall']}** ("
                     + ", ".join(f"{r}: {x}" for r, x in d["per_regime"].items()) + ")")
    return "\n".join(lines) + "\n"


def report(summary: dict) -> str:
    lines = [f"{s['name']}: plant layer {s['plant_layer']}/{s['n_layers']}, composed prediction median rel. error "
             f"{s['composed_prediction_rel_error_median']:.3f}" for s in summary["sections"]]
    for p, d in summary["later_layers"].items():
        lines.append(f"later layers spill over more ({p}): {d['overall']} "
                     f"({', '.join(f'{r}: {x}' for r, x in d['per_regime'].items())})")
    return "\n".join(lines)
