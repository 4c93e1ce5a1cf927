"""What survives the optimiser, the basis and the stopping point: the robustness table and its verdicts.

Built only from a run's saved ``summary["finetune"]`` (its ``by_group`` section, written by
:func:`toymodels.lab.summary.group_summaries` when the run has an optimiser or orientation axis), so the
table, the figure and the README's claims are regenerated from the same numbers.

One row per (regime, optimiser, orientation class): the axis-aligned fine-tunes, and the fine-tunes
of the same models with the hidden space rotated by K − 1 random orthogonal matrices. Columns: the
per-unit push Δpre_j / (α ‖W0_j‖) beside cos θ (what the first-order claim predicts), the angle
between target and harmful before → after, the change of the toxic output rate [pp] with a 95%
cluster-bootstrap CI over pretrained models, how many runs went up, the target gain, and the rate
change at matched gains.

A *direction* is ``up`` when the 95% CI of the mean rate change lies above 0, ``down`` when below,
``flat`` otherwise. A conclusion about a regime *survives* when every optimiser and orientation gives
the same direction; it *flips* when some go up and others down.
"""

from __future__ import annotations

from pathlib import Path

from ..core.planting import barely_represented_counts

PUSH_TOLERANCE = 0.01   # |per-unit push − cos θ| below this: "the push is cos θ per unit"


def direction(ci) -> str:
    """``up``, ``down`` or ``flat`` from a 95% interval [lo, hi] of a mean change."""
    if not ci:
        return "flat"
    return "up" if ci[0] > 0 else "down" if ci[1] < 0 else "flat"


def group_rows(ft: dict, harmful: str | None = None) -> list[dict]:
    """Flat rows of ``ft["by_group"]`` about one harmful feature (default: the first)."""
    harm = harmful or ft["harmful"][0]
    rows = []
    for g in ft.get("by_group", {}).values():
        h = g["harmful"][harm]
        at = {gain: {"rate_change_pp": a["rate_change_pp"]["mean"], "ci": a["rate_change_pp_ci95"],
                     "n_reached": a["n_reached"], "n_up": a["n_rate_up"], "n": a["n"], "step": a["step"]["mean"],
                     "per_unit_push": a["per_unit_push"]["mean"]}
              for gain, a in h.get("at_gain", {}).items()}
        rows.append({
            "regime": g["regime"], "optimizer": g["optimizer"], "orientation": g["orientation"],
            "data": g["data"], "loss_scope": g["loss_scope"], "n": g["n"],
            "cos_before": h["cos_before"]["mean"],
            "per_unit_push": h["per_unit_push"]["mean"],
            "per_unit_push_range": [h["per_unit_push"]["min"], h["per_unit_push"]["max"]],
            "angle_before": h["angle_before"]["mean"], "angle_after": h["angle_after"]["mean"],
            "rate_change_pp": h["rate_change_pp"]["mean"], "rate_ci": h["rate_change_pp_ci95"],
            "n_up": h["n_rate_up"], "target_gain": g["target_gain"]["mean"],
            "rate_over_rotations": h.get("rate_change_pp_over_rotations"),
            "direction": direction(h["rate_change_pp_ci95"]),
            "at_gain": at,
        })
    return rows


def label(row: dict) -> str:
    return f"{row['optimizer']}, {'axis-aligned' if row['orientation'] == 'axis' else 'rotated'}"


def verdicts(rows: list[dict]) -> dict:
    """Per regime: the direction of the mean toxic-rate change in every (optimiser, orientation), at the
    end of fine-tuning and at each matched gain; whether it survives (one direction everywhere) or flips
    (both up and down occur); the agreed direction at each stopping point (matched gains and the end) and
    whether that flips; and whether the per-unit push equals cos θ everywhere."""
    out = {}
    for reg in dict.fromkeys(r["regime"] for r in rows):
        sel = [r for r in rows if r["regime"] == reg]
        dirs = {label(r): r["direction"] for r in sel}
        at = {}
        for gain in sel[0]["at_gain"]:
            d = {label(r): direction(r["at_gain"][gain]["ci"]) for r in sel if r["at_gain"][gain]["n_reached"] >= 2}
            at[gain] = {"directions": d, "survives": len(set(d.values())) == 1,
                        "flips": {"up", "down"} <= set(d.values())}
        push_ok = [abs(r["per_unit_push"] - r["cos_before"]) < PUSH_TOLERANCE for r in sel
                   if r["per_unit_push"] is not None]
        # the stopping point: the direction that every optimiser and orientation agree on at each matched
        # gain and at the end ("mixed" where they disagree); it flips when both up and down occur
        by_point = {f"gain {g}": (next(iter(a["directions"].values())) if a["survives"] and a["directions"]
                                  else "mixed") for g, a in at.items()}
        by_point["end"] = next(iter(dirs.values())) if len(set(dirs.values())) == 1 else "mixed"
        out[reg] = {"directions": dirs, "survives": len(set(dirs.values())) == 1,
                    "flips": {"up", "down"} <= set(dirs.values()), "at_gain": at,
                    "over_stopping": by_point, "flips_with_stopping": {"up", "down"} <= set(by_point.values()),
                    "push_equals_cos": bool(push_ok) and all(push_ok),
                    "push_equals_cos_in": [label(r) for r in sel if r["per_unit_push"] is not None
                                           and abs(r["per_unit_push"] - r["cos_before"]) < PUSH_TOLERANCE]}
    return out


def _num(v, fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


def _ci(mean, ci) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def markdown_table(ft: dict, harmful: str | None = None) -> str:
    """The robustness table in markdown: one row per (regime, optimiser, orientation)."""
    rows = group_rows(ft, harmful)
    if not rows:
        return ""
    gains = list(rows[0]["at_gain"])
    head = ["regime", "optimiser", "orientation", "per-unit push (cos θ)", "angle b→a", "Δ toxic rate [pp] (95% CI)",
            "runs up", "target gain"] + [f"Δ rate at gain {g} [pp] (reached)" for g in gains]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        push = _num(r["per_unit_push"], "{:+.3f}") + f" ({r['cos_before']:.3f})"
        orient = "axis-aligned" if r["orientation"] == "axis" else "rotated"
        cells = [f"`{r['regime']}` (data={r['data']}, loss={r['loss_scope']})", r["optimizer"], orient, push,
                 f"{r['angle_before']:.1f}° → {r['angle_after']:.1f}°", _ci(r["rate_change_pp"], r["rate_ci"]),
                 f"{r['n_up']}/{r['n']}", _num(r["target_gain"], "{:.2f}")]
        for g in gains:
            a = r["at_gain"][g]
            cells.append(_ci(a["rate_change_pp"], a["ci"]) + f" ({a['n_reached']}/{a['n']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(ft: dict, harmful: str | None = None) -> str:
    """A compact terminal version of :func:`markdown_table` (end-of-fine-tuning numbers)."""
    rows = group_rows(ft, harmful)
    if not rows:
        return ""
    head = (f"{'regime':<11} {'optimiser':<10} {'orient.':<8} {'per-unit':>8} {'angle b→a':>14} "
            f"{'Δrate pp [95% CI]':>24} {'up':>7} {'gain':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ci = r["rate_ci"]
        lines.append(f"{r['regime']:<11} {r['optimizer']:<10} {r['orientation']:<8} "
                     f"{_num(r['per_unit_push'], '{:+.3f}'):>8} "
                     f"{r['angle_before']:>5.1f}°→{r['angle_after']:>5.1f}°  "
                     f"{r['rate_change_pp']:>+6.2f} " + (f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "") .rjust(17) +
                     f" {str(r['n_up']) + '/' + str(r['n']):>7} {_num(r['target_gain'], '{:.2f}'):>6}")
    return "\n".join(lines)


# --- the robustness suite's summary -------------------------------------------------------------------
def member_section(run) -> dict:
    """One member's rows, verdicts and pretrained norms of the named features."""
    ft = run.summary["finetune"]
    rows = group_rows(ft)
    feats = run.summary.get("features", {})
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
               "direction_rule": "up/down: the 95% cluster-bootstrap CI (over pretrained models) of the mean "
                                 "toxic-rate change lies above/below 0; flat otherwise"}
    md = ["# robustness", ""]
    for s, m in zip(sections, members):
        norms = "; ".join("(" + ", ".join(f"{v:.2f}" for v in row) + ")" for row in s["pretrained_norms"]["norms"])
        md += [f"## `{s['name']}`", "", f"Pretrained norms ({', '.join(s['pretrained_norms']['names'])}) per model: "
               f"{norms}.", *_weak_note(s), "", markdown_table(m.summary["finetune"]), ""]
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
