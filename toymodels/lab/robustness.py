"""What survives the optimiser, the basis and the stopping point: the robustness table and its verdicts.

Built only from a run's saved ``summary["finetune"]`` (its ``by_group`` section, written by
:func:`toymodels.lab.summary.group_summaries` when the run has an optimiser or orientation axis), so the
table, the figure and the README's claims are regenerated from the same numbers.

One row per (starting geometry, regime, optimiser, orientation class): the axis-aligned fine-tunes, and
the fine-tunes of the same models with the hidden space rotated by K − 1 random orthogonal matrices.
Columns: the per-unit push Δpre_j / (α ‖W0_j‖) beside cos θ (what the first-order claim predicts), the
angle between target and harmful before → after, the change of the toxic output rate [pp] with its paired
95% t interval over the G pretrained models of the cell (:mod:`.inference`), how many distinct runs went
up, the target gain, and the rate change at matched gains (with G).

A *direction* is ``up`` when the interval lies above 0, ``down`` when below, ``no evidence`` otherwise or
when G < ``inference.MIN_CLUSTERS``. A conclusion about a regime *survives* when every optimiser and
orientation gives the same direction and that direction is up or down; it *flips* when some go up and
others down. Cells that only repeat another up to a rotation are left out of the verdicts.
"""

from __future__ import annotations

from pathlib import Path

from .. import stats
from ..core.planting import barely_represented_counts
from . import inference

PUSH_TOLERANCE = 0.01   # |per-unit push − cos θ| below this: "the push is cos θ per unit"
NO_EVIDENCE = "no evidence"


def direction(ci) -> str:
    """``up``, ``down`` or ``no evidence`` from a 95% interval [lo, hi] of a mean change."""
    return stats.direction(ci)


def group_rows(ft: dict, harmful: str | None = None, features: dict | None = None) -> list[dict]:
    """Flat rows about one harmful feature (default: the first), one per (stratum of starting geometry,
    regime, optimiser, orientation class), from the per-fine-tune records (:func:`.inference.cells`:
    paired t intervals over pretrained models, duplicates counted once)."""
    rows = []
    for c in inference.cells(ft, features, harmful):
        at = {g: {"rate_change_pp": a["mean"], "ci": a["ci95"], "n_clusters": a["n_clusters"],
                  "n_reached": a["n_reached"], "n": c["n"], "step": a["step"], "direction": a["direction"]}
              for g, a in c["at_gain"].items()}
        rc = c["rate_change"]
        rows.append({
            "stratum": c["stratum"], "regime": c["regime"], "optimizer": c["optimizer"],
            "orientation": c["orientation"], "data": c["data"], "loss_scope": c["loss_scope"], "n": c["n"],
            "n_distinct": c["n_distinct"], "n_clusters": c["n_clusters"], "duplicate_of": c["duplicate_of"],
            "cos_before": c["cos_before"], "per_unit_push": c["per_unit_push"],
            "per_unit_push_range": c["per_unit_push_range"],
            "angle_before": c["angle_before"], "angle_after": c["angle_after"],
            "rate_change_pp": rc["mean"], "rate_ci": rc["ci95"], "n_up": c["n_up_distinct"],
            "target_gain": c["target_gain"], "max_eval_se_pp": c["max_eval_se_pp"],
            "direction": rc["direction"], "at_gain": at,
        })
    return rows


def cell_key(row: dict, n_strata: int) -> str:
    """A verdict's key: the regime, with the stratum when a member has several."""
    return row["regime"] if n_strata == 1 else f"{row['regime']} · {row['stratum']}"


def label(row: dict) -> str:
    return f"{row['optimizer']}, {'axis-aligned' if row['orientation'] == 'axis' else 'rotated'}"


def verdicts(rows: list[dict]) -> dict:
    """Per regime: the direction of the mean toxic-rate change in every (optimiser, orientation), at the
    end of fine-tuning and at each matched gain; whether it survives (one direction everywhere) or flips
    (both up and down occur); the agreed direction at each stopping point (matched gains and the end) and
    whether that flips; and whether the per-unit push equals cos θ everywhere."""
    out = {}
    n_strata = len({r.get("stratum") for r in rows})
    for reg in dict.fromkeys(cell_key(r, n_strata) for r in rows):
        # a cell that only repeats another (rotation-equivariant optimiser, rotated) is not new evidence
        sel = [r for r in rows if cell_key(r, n_strata) == reg and not r.get("duplicate_of")]
        dirs = {label(r): r["direction"] for r in sel}
        at = {}
        for gain in sel[0]["at_gain"]:
            d = {label(r): r["at_gain"][gain]["direction"] for r in sel if r["at_gain"][gain]["n_reached"] >= 2}
            at[gain] = {"directions": d, "n_cells": len(sel), "survives": _agreed(d.values()),
                        "flips": {"up", "down"} <= set(d.values())}
        push_ok = [abs(r["per_unit_push"] - r["cos_before"]) < PUSH_TOLERANCE for r in sel
                   if r["per_unit_push"] is not None]
        # the stopping point: the direction that every optimiser and orientation agree on at each matched
        # gain and at the end ("mixed" where they disagree); it flips when both up and down occur
        # a matched gain that some cells never reached has no agreed direction
        by_point = {f"gain {g}": (next(iter(a["directions"].values())) if a["survives"]
                                  and len(a["directions"]) == len(sel) else "mixed") for g, a in at.items()}
        by_point["end"] = next(iter(dirs.values())) if _agreed(dirs.values()) else "mixed"
        out[reg] = {"regime": sel[0]["regime"], "stratum": sel[0].get("stratum"),
                    "n_clusters": sorted({r["n_clusters"] for r in sel}),
                    "directions": dirs, "survives": _agreed(dirs.values()),
                    "flips": {"up", "down"} <= set(dirs.values()), "at_gain": at,
                    "over_stopping": by_point, "flips_with_stopping": {"up", "down"} <= set(by_point.values()),
                    "push_equals_cos": bool(push_ok) and all(push_ok),
                    "push_equals_cos_in": [label(r) for r in sel if r["per_unit_push"] is not None
                                           and abs(r["per_unit_push"] - r["cos_before"]) < PUSH_TOLERANCE]}
    return out


def _agreed(directions) -> bool:
    """Every cell gives the same direction, and it is up or down."""
    d = set(directions)
    return len(d) == 1 and d <= {"up", "down"}


def _num(v, fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


def _ci(mean, ci, G=None) -> str:
    if mean is None:
        return "n/a"
    few = G is not None and G < inference.MIN_CLUSTERS
    return (f"{mean:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
            + (f" (G={G}{' < ' + str(inference.MIN_CLUSTERS) + ': not claimed' if few else ''})" if G else ""))


def _orient(r: dict) -> str:
    return "axis-aligned" if r["orientation"] == "axis" else "rotated"


def markdown_table(ft: dict, harmful: str | None = None, features: dict | None = None) -> str:
    """The robustness table in markdown: one row per (stratum, regime, optimiser, orientation). The rate
    change is the paired mean with its t interval over the G pretrained models of the cell; a rotated
    cell that only repeats the axis-aligned runs says so and counts nothing new."""
    rows = group_rows(ft, harmful, features)
    if not rows:
        return ""
    strata = len({r["stratum"] for r in rows}) > 1
    gains = list(rows[0]["at_gain"])
    head = (["start"] if strata else []) + [
        "regime", "optimiser", "orientation", "per-unit push (cos θ)", "angle b→a",
        "Δ toxic rate [pp] (95% CI, G models)", "direction", "distinct runs up", "target gain"] + [
        f"Δ rate at gain {g} [pp] (reached)" for g in gains]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        first = ([r["stratum"]] if strata else []) + [f"`{r['regime']}` (data={r['data']}, loss={r['loss_scope']})",
                                                      r["optimizer"], _orient(r)]
        if r["duplicate_of"]:
            lines.append("| " + " | ".join(first + ["= axis-aligned: the same runs up to the rotation "
                                                    "(rotation-equivariant optimiser), counted once"]
                                           + [""] * (len(head) - len(first) - 1)) + " |")
            continue
        push = _num(r["per_unit_push"], "{:+.3f}") + f" ({r['cos_before']:.3f})"
        cells = first + [push, f"{r['angle_before']:.1f}° → {r['angle_after']:.1f}°",
                         _ci(r["rate_change_pp"], r["rate_ci"], r["n_clusters"]), r["direction"],
                         f"{r['n_up']}/{r['n_distinct']}", _num(r["target_gain"], "{:.2f}")]
        for g in gains:
            a = r["at_gain"][g]
            cells.append(_ci(a["rate_change_pp"], a["ci"], a["n_clusters"]) + f" ({a['n_reached']}/{a['n']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(ft: dict, harmful: str | None = None, features: dict | None = None) -> str:
    """A compact terminal version of :func:`markdown_table` (end-of-fine-tuning numbers)."""
    rows = group_rows(ft, harmful, features)
    if not rows:
        return ""
    head = (f"{'regime':<11} {'optimiser':<10} {'orient.':<8} {'per-unit':>8} {'angle b→a':>14} "
            f"{'Δrate pp [95% CI] (G)':>30} {'distinct up':>11} {'gain':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["duplicate_of"]:
            lines.append(f"{r['regime']:<11} {r['optimizer']:<10} {r['orientation']:<8} = axis-aligned (the same "
                         f"runs up to the rotation; counted once)")
            continue
        lines.append(f"{r['regime']:<11} {r['optimizer']:<10} {r['orientation']:<8} "
                     f"{_num(r['per_unit_push'], '{:+.3f}'):>8} "
                     f"{r['angle_before']:>5.1f}°→{r['angle_after']:>5.1f}°  "
                     f"{_ci(r['rate_change_pp'], r['rate_ci'], r['n_clusters']):>30} "
                     f"{str(r['n_up']) + '/' + str(r['n_distinct']):>11} {_num(r['target_gain'], '{:.2f}'):>6}")
    return "\n".join(lines)


# --- the robustness suite's summary -------------------------------------------------------------------
def member_section(run) -> dict:
    """One member's rows, verdicts and pretrained norms of the named features."""
    ft = run.summary["finetune"]
    feats = run.summary.get("features", {})
    rows = group_rows(ft, features=feats)
    return {"name": run.config.name, "target": ft["target"], "harmful": ft["harmful"][0],
            "optimizers": [o["name"] for o in ft["optimizers"]], "orientations": ft["orientations"],
            "matched_gains": ft["matched_gains"], "n_pretrained": run.config.n_inst,
            "pretrained_norms": {"names": feats.get("names"), "norms": feats.get("norms"),
                                 "barely_represented": feats.get("barely_represented")},
            "rows": rows, "verdicts": verdicts(rows)}


def robustness_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    """The robustness suite's ``summary.json`` (every member's rows and verdicts) and
    ``robustness_table.md`` (one table per member)."""
    sections = [member_section(m) for m in members]
    summary = {"suite": suite["suite"], "members": [s["name"] for s in sections], "sections": sections,
               "direction_rule": "up/down: the 95% t interval over pretrained models (clusters; each model's mean "
                                 "change, rates on its own finetune.rate_samples inputs) lies above/below 0, from at "
                                 f"least {inference.MIN_CLUSTERS} models; 'no evidence' otherwise. "
                                 "Runs identical up to a rotation are counted once; models of different starting "
                                 "geometry are never pooled"}
    md = ["# robustness", ""]
    for s, m in zip(sections, members):
        norms = "; ".join("(" + ", ".join(f"{v:.2f}" for v in row) + ")" for row in s["pretrained_norms"]["norms"])
        md += [f"## `{s['name']}`", "", f"Pretrained norms ({', '.join(s['pretrained_norms']['names'])}) per model: "
               f"{norms}.", *_weak_note(s), "", markdown_table(m.summary["finetune"], features=s["pretrained_norms"]), ""]
    (Path(run_dir) / "robustness_table.md").write_text("\n".join(md))
    return summary, report(summary)


def _weak_note(section: dict) -> list[str]:
    """A marked line when a named feature ended pretraining barely represented in some model."""
    counts = barely_represented_counts(section["pretrained_norms"].get("barely_represented"))
    return ["", "**Barely represented** (norm < 0.5, so its rows describe a feature the model hardly carries): "
            + "; ".join(f"{n} in {k} of {m} models" for n, (k, m) in sorted(counts.items())) + "."] if counts else []


def report(summary: dict) -> str:
    """A few lines for the terminal: per member and regime, survives or flips, and where."""
    lines = []
    for s in summary["sections"]:
        lines.append(f"{s['name']}: {s['n_pretrained']} models x {len(s['optimizers'])} optimisers x "
                     f"{s['orientations']} orientations")
        for reg, v in s["verdicts"].items():
            dirs = sorted(set(v["directions"].values()))
            what = "survives" if v["survives"] else "FLIPS" if v["flips"] else "mixed"
            stops = ", ".join(f"{p}: {d}" for p, d in v["over_stopping"].items())
            lines.append(f"  {reg:<11} toxic rate at the end {'/'.join(dirs):<10} {what:<8} per-unit push = cos θ "
                         f"in {len(v['push_equals_cos_in'])}/{len(v['directions'])}; by stopping point: {stops}")
    return "\n".join(lines)
