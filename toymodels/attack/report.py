"""The ``adversarial`` suite's own summary and table, from its members' ``finetune.attack`` sections."""

from __future__ import annotations

import json
import math

from ..stats import fmt_paired


def _r(x) -> str:
    if x is None:
        return "n/a"
    return "∞" if math.isinf(x) else f"{x:.2f}"


def fmt_ratio(r: dict | None) -> str:
    """``1.16× [1.12, 1.19] (G=10)``; ``n/a (reason)`` when the ratio is undefined; an unbounded upper end ∞."""
    if not r or r.get("ratio") is None:
        return f"n/a ({r['undefined']})" if r and r.get("undefined") else "n/a"
    if r.get("undefined_ci"):
        return f"{_r(r['ratio'])}× (no interval: {r['undefined_ci']}) (G={r['n_clusters']})"
    ci = r.get("ci95") or [None, None]
    hi = "∞" if ci[1] is None and ci[0] is not None else _r(ci[1])
    return f"{_r(r['ratio'])}× [{_r(ci[0])}, {hi}] (G={r['n_clusters']})"


def suite_summary(members) -> tuple[dict, str]:
    """({member: attack section without the raw scores}, the markdown table)."""
    out, lines = {}, ["# adversarial: benign-looking fine-tuning sets", ""]
    shown: dict[str, str] = {}   # detection results already printed -> the member that printed them
    for run in members:
        a = run.summary["finetune"].get("attack")
        if a is None:
            continue
        out[run.config.name] = {k: v for k, v in a.items() if k not in ("detection_scores",)}
        if "subliminal" in a:
            s = a["subliminal"]
            lines += [f"## {run.config.name}: subliminal control (toxic rate change of the students, pp)", "",
                      f"- {_teacher(a)}",
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
        same = shown.get(json.dumps(a.get("auroc"), sort_keys=True))
        if a.get("auroc") and same:
            lines += ["", f"Detection before training: as {same} (the same pretrained models, pools and sets)."]
        elif a.get("auroc"):
            shown[json.dumps(a["auroc"], sort_keys=True)] = run.config.name
            lines += ["", "Detection before training (AUROC within each model, averaged over models; chance 0.5):", ""]
            rd = a.get("recovered_direction") or {}
            if rd.get("models"):
                lines.append(f"- the auditor's recovered harmful direction found toxic (within {rd['models'][0]['found_deg']:g}°) "
                             f"in {rd['found']:.0%} of {len(rd['models'])} models (a random direction: {rd['chance']:.1%})")
            if weak := _no_signal(a):
                lines.append(f"- {weak}")
            for m, dets in a["auroc"].items():
                for d, v in dets.items():
                    ci = v["ci95"] or [float("nan")] * 2
                    lines.append(f"- {m}, {d}: {v['auroc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] (G={v['n_clusters']}, "
                                 f"{v['n_pos']} adversarial and {v['n_neg']} random sets)")
        lines.append("")
    return out, "\n".join(lines)


def _auroc(v: dict) -> str:
    ci = v.get("ci95") or [float("nan")] * 2
    low = " (below chance: these sets score lower than random ones)" if ci[1] < v.get("chance", 0.5) else ""
    return f"{v['auroc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]{low}"


def _pp(d: dict) -> str:
    """``+0.70 [+0.55, +0.85] pp (G=10), up``."""
    return fmt_paired(d).replace(" (G=", " pp (G=") + f", {d.get('direction', 'no evidence')}"


DETECTOR_WORDS = {"gradient": "gradient on the harmful outputs (the selection's own criterion)",
                  "recovered": "step along the auditor's recovered direction",
                  "distance": "distance from the task data (MMD²)"}


def _no_signal(a: dict) -> str:
    """The sentence on models whose gradient selection had nothing to select on ('' when none)."""
    w = a.get("selection_without_signal") or {}
    if not w.get("models"):
        return ""
    return (f"the gradient selection had no first-order signal in {len(w['models'])} of {w['n_models']} models "
            f"(models {', '.join(map(str, w['models']))}: mean cos of the chosen samples' steps with the harmful "
            f"gradient < {w['threshold_cos']:g}: zero up to rounding), so their 'selected' set is the pool's first "
            "candidates, a random set; they stay in the numbers")


def _teacher(a: dict) -> str:
    t = a.get("teacher_change_pp")
    return "the teachers' own *toxic* rate change: n/a" if not t else f"the teachers' own *toxic* rate change {_pp(t)}"


def models(s: dict) -> int:
    """The number of pretrained models of the suite (the first attack member's; a method's G can be
    smaller, when some models never reached the gain on its set)."""
    for a in s["members"].values():
        if (a.get("recovered_direction") or {}).get("models"):
            return len(a["recovered_direction"]["models"])
    return 0


def results_block(s: dict, source: str = "results/adversarial/summary.json") -> str:
    """The docs block: every member's numbers from the suite's ``summary.json`` ``s``."""
    mem = s["members"]
    first = next(a for a in mem.values() if "cells" in a and "subliminal" not in a)
    out = [f"From `{source}`: N = {first['n_samples']} benign samples per set, a pool of {first['pool_size']}, every "
           f"fine-tune stopped at gain {first['stop_gain']}; G = pretrained models (paired; a direction only when the "
           "95% interval excludes 0 and G ≥ 10). Rates are *toxic*'s, in %.", "",
           "| member | defence | method | toxic rate after, adversarial / random | `ratio_vs_random` | adversarial − random change | "
           "ratio of the changes | models not at gain |", "|---|---|---|---|---|---|---|---|"]
    for name, a in mem.items():
        for c in a.get("cells", []):
            for m, v in c.get("methods", {}).items():
                out.append(f"| `{name}` | {c['defence']} | {m} | {_r(v['rate_after_adversarial_pct'])} / "
                           f"{_r(v['rate_after_random_pct'])} | {fmt_ratio(v['ratio_vs_random'])} | {_pp(v['difference_pp'])} | "
                           f"{fmt_ratio(v.get('spill_ratio'))} | {v['models_not_at_gain']} |")
    weak: dict[str, list[str]] = {}   # one sentence per set of models, with every member it applies to
    for name, a in mem.items():
        if w := _no_signal(a):
            weak.setdefault(w, []).append(f"`{name}`")
    out += [""] + [f"- {', '.join(names)}: {w}." for w, names in weak.items()] if weak else []
    defended = [(name, c) for name, a in mem.items() for c in a.get("cells", []) if c.get("against_undefended")]
    if defended:
        out += ["", "**Defences against the sets** (paired by model against the same set undefended; the cost is the "
                "pretraining loss without the target's term after fine-tuning, defended − undefended, ×10⁻³):", "",
                "| member | defence | set | change of the toxic rate, defended − undefended | cost (×10⁻³) |",
                "|---|---|---|---|---|"]
        for name, c in defended:
            for m, v in c["against_undefended"].items():
                cost = v.get("cost_other_loss")
                cost_s = "n/a" if not cost else _pp({**cost, "mean": 1e3 * cost["mean"],
                                                     "ci95": [1e3 * x for x in cost["ci95"]] if cost.get("ci95") else None}
                                                    ).replace(" pp", "")
                out.append(f"| `{name}` | {c['defence']} | {m} | {_pp(v['cut_pp'])} | {cost_s} |")
    seen = set()
    for name, a in mem.items():
        key = json.dumps(a.get("auroc"), sort_keys=True)
        if not a.get("auroc") or key in seen:
            continue
        seen.add(key)
        rd = a.get("recovered_direction") or {}
        out += ["", f"**Detection before training, `{name}`** (AUROC of adversarial sets against random ones within each "
                "pretrained model, averaged over the G models; chance 0.5; interval over resampled models; the AUROC "
                "of all models' sets pooled in the json as `pooled`). The auditor's recovered direction lands within "
                f"{rd['models'][0]['found_deg']:g}° of the true *toxic* column in {rd['found']:.0%} of {len(rd['models'])} "
                f"models (a random direction: {rd['chance']:.1%}).", "",
                "| method | " + " | ".join(DETECTOR_WORDS.get(d, d) for d in a["detectors"]) + " | sets (adversarial / random), G |",
                "|---|" + "---|" * (len(a["detectors"]) + 1)]
        for m, dets in a["auroc"].items():
            any_ = next(iter(dets.values()))
            out.append(f"| {m} | " + " | ".join(_auroc(dets[d]) for d in a["detectors"]) +
                       f" | {any_['n_pos']} / {any_['n_neg']}, {any_['n_clusters']} |")
    for name, a in mem.items():
        if "subliminal" in a:
            sub = a["subliminal"]
            out += ["", f"**Subliminal control, `{name}`** ({_teacher(a)}; change of the students' *toxic* rate): from "
                    f"the teacher's initialisation {_pp(sub['teacher_same_pp'])}; from another model's "
                    f"{_pp(sub['teacher_other_pp'])}; same − other {_pp(sub['same_minus_other_pp'])}."]
    return "\n".join(out)


def headline(s: dict) -> str:
    """The README block: the ratio, the spill-over and every detector's AUROC at each angle, in a few lines."""
    lines = []
    for name, a in s["members"].items():
        if "defences" in name or "lora" in name or "ratio_vs_random" not in a:
            continue
        for m, v in a["ratio_vs_random"].items():
            dets = a["auroc"].get(m, {})
            low = lambda v: " (below chance)" if (v.get("ci95") or [0, 1])[1] < v.get("chance", 0.5) else ""
            det = "; detection AUROC " + ", ".join(f"{d} {dets[d]['auroc']:.2f}{low(dets[d])}" for d in a["detectors"] if d in dets)
            lines.append(f"- `{name}`, {m} set: `ratio_vs_random` {fmt_ratio(v)}; adversarial − random change of the "
                         f"rate {_pp(v['difference_pp'])}{det if dets else ''}")
        if weak := _no_signal(a):
            lines.append(f"- `{name}`: {weak}")
    for name, a in s["members"].items():
        if "subliminal" in a:
            sub = a["subliminal"]
            lines.append(f"- `{name}`, students distilling the filtered outputs of a teacher that amplified *toxic*'s read-out ({_teacher(a)}): "
                         f"change of *toxic*'s rate from the teacher's initialisation {_pp(sub['teacher_same_pp'])}; from "
                         f"another model's {_pp(sub['teacher_other_pp'])}")
    return "\n".join(lines)
