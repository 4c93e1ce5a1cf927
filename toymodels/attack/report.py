"""The ``adversarial`` suite's own summary and table, from its members' ``finetune.attack`` sections."""

from __future__ import annotations

import math

from ..stats import fmt_paired


def _r(x) -> str:
    if x is None:
        return "n/a"
    return "∞" if math.isinf(x) else f"{x:.2f}"


def fmt_ratio(r: dict | None) -> str:
    if not r or r.get("ratio") is None:
        return "n/a"
    ci = r.get("ci95") or [None, None]
    return f"{_r(r['ratio'])}× [{_r(ci[0])}, {_r(ci[1])}] (G={r['n_clusters']})"


def suite_summary(members) -> tuple[dict, str]:
    """({member: attack section without the raw scores}, the markdown table)."""
    out, lines = {}, ["# adversarial: benign-looking fine-tuning sets", ""]
    for run in members:
        a = run.summary["finetune"].get("attack")
        if a is None:
            continue
        out[run.config.name] = {k: v for k, v in a.items() if k not in ("detection_scores",)}
        if "subliminal" in a:
            s = a["subliminal"]
            lines += [f"## {run.config.name}: subliminal control (toxic rate change of the students, pp)", "",
                      f"- teacher's initialisation: {fmt_paired(s['teacher_same_pp'])}, {s['teacher_same_pp']['direction']}",
                      f"- another model's: {fmt_paired(s['teacher_other_pp'])}, {s['teacher_other_pp']['direction']}",
                      f"- same − other: {fmt_paired(s['same_minus_other_pp'])}, {s['same_minus_other_pp']['direction']}", ""]
            continue
        lines += [f"## {run.config.name}", "",
                  "| defence | method | toxic rate after, adversarial / random (%) | ratio_vs_random | "
                  "Δ rate adversarial − random (pp) | models not at gain |", "|---|---|---|---|---|---|"]
        for c in a["cells"]:
            for m, v in c.get("methods", {}).items():
                adv, rnd = v["rate_after_adversarial_pct"], v["rate_after_random_pct"]
                lines.append(f"| {c['defence']} | {m} | {_r(adv)} / {_r(rnd)} | {fmt_ratio(v['ratio_vs_random'])} | "
                             f"{fmt_paired(v['difference_pp'])}, {v['difference_pp']['direction']} | "
                             f"{v['models_not_at_gain']} |")
        if a.get("auroc"):
            lines += ["", "Detection before training (AUROC, adversarial sets against random ones; chance 0.5):", ""]
            rd = a.get("recovered_direction") or {}
            if rd.get("models"):
                lines.append(f"- the auditor's recovered harmful direction found toxic (within {rd['models'][0]['found_deg']:g}°) "
                             f"in {rd['found']:.0%} of {len(rd['models'])} models (a random direction: {rd['chance']:.1%})")
            for m, dets in a["auroc"].items():
                for d, v in dets.items():
                    ci = v["ci95"] or [float("nan")] * 2
                    lines.append(f"- {m}, {d}: {v['auroc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] (G={v['n_clusters']}, "
                                 f"{v['n_pos']} adversarial and {v['n_neg']} random sets)")
        lines.append("")
    return out, "\n".join(lines)
