"""The one-screen text table that ``toymodels run`` prints, read from a run's ``summary.json``."""

from __future__ import annotations

from ..core.planting import barely_represented_counts, representation_measure
from . import inference
from .robustness import text_table


def format_table(summary: dict) -> str:
    """A one-screen table of a run's fine-tuning results, read from its ``summary.json`` dict: one row
    per regime and harmful feature, means over the regime's instances (``up`` counts instances whose
    toxic output rate rose)."""
    ft = summary.get("finetune", summary)   # a run's summary.json, or just its "finetune" section
    weak = weak_features(summary)

    def m(stat, scale=1.0, fmt="{:.3f}"):
        return "n/a" if stat is None or stat.get("mean") is None else fmt.format(scale * stat["mean"])

    head = (f"{'regime':<12} {'data':<7}{'loss':<7}{'harmful':<9}{'n':>3} {'gain':>6}  {'angle b→a':>12}  {'pre-act b→a':>15} "
            f"{'(1st-order)':>11}  {'per-unit':>8}  {'rate% b→a':>13} {'Δpp':>6} {'rel':>6}  {'95% CI (G models)':<22} {'direction':<11}")
    lines = [(f"fine-tuning '{ft['target']}' ({ft['objective']}, trainable={ft['trainable']}, {ft['steps']} steps). "
              f"harmful feature j, means over instances:"),
             ("pre-act = j's output pre-activation on the unit target input; 1st-order = pre0 + "
              + ("the composed prediction (a JVP through every layer); " if ft.get("by_layer") else "<W0_j, dW_t>; ")
              + "per-unit = d(pre-act) / (push along target x |W0_j|)"),
             (f"rate = P(x'_j > {ft['tau']:g} | x_j = 0) on the pretraining distribution (Δpp: percentage points; "
              f"rel: mean relative increase); gain = target read-out after / before"),
             ("direction: up/down only when the 95% CI of the mean change (a t interval over the G pretrained models, "
              f"each model's rates on its own inputs) excludes 0 and G >= {inference.MIN_CLUSTERS}; otherwise "
              "'no evidence'"),
             head, "-" * len(head)]
    for rname, r in ft["by_regime"].items():
        for hname, h in r["harmful"].items():
            pred_after = (None if h["preact_before"]["mean"] is None else
                          {"mean": h["preact_before"]["mean"] + h["predicted_change"]["mean"]})
            lines.append(
                f"{rname:<12} {r['data']:<7}{r['loss_scope']:<7}{(hname[:7] + '!' if hname in weak else hname[:8]):<9}{r['n']:>3} "
                f"{m(r['target_gain'], fmt='{:.2f}'):>6}  "
                f"{m(h['angle_before'], fmt='{:.1f}') + '°→' + m(h['angle_after'], fmt='{:.1f}') + '°':>12}  "
                f"{m(h['preact_before'], fmt='{:+.3f}') + '→' + m(h['preact_after'], fmt='{:+.3f}'):>15} "
                f"{'(' + m(pred_after, fmt='{:+.3f}') + ')':>11}  {m(h['per_unit_push'], fmt='{:+.3f}'):>8}  "
                f"{m(h['rate_before'], 100, '{:.2f}') + '→' + m(h['rate_after'], 100, '{:.2f}'):>13} "
                f"{m(h['rate_change_pp'], fmt='{:+.2f}'):>6} {m(h['rate_rel_increase_pct'], fmt='{:+.0f}%'):>6}  "
                f"{_paired_ci(h.get('rate_change_pp_paired')):<22} {_direction(h.get('rate_change_pp_paired'))}")
    corr_lines = []
    for rname, r in ft["by_regime"].items():
        for hname, h in r["harmful"].items():
            c = h.get("correlations")
            if c and len({round(e["harmful"][hname]["cos"]["before"], 4) for e in ft["instances"]
                          if e["regime"] == rname}) > 2:  # only when the pretrained angles actually vary
                pr, rt = c["preact_change_vs_cos"], c["rate_change_pp_vs_cos"]
                corr_lines.append(f"{rname:<12} {hname}: Δpre-act vs cos θ  Pearson {pr['pearson']:+.2f} Spearman "
                                  f"{pr['spearman']:+.2f};  Δrate vs cos θ  Pearson {rt['pearson']:+.2f} Spearman "
                                  f"{rt['spearman']:+.2f}  (n={pr['n']})")
    if corr_lines:
        lines += ["", "correlation with the pretrained cos(target, harmful):"] + corr_lines
    feats = summary.get("features")
    if feats is not None:  # a gain is only meaningful from a represented start (norm >= 0.5)
        names_ = feats["names"]
        what, rows, bound = representation_measure(feats)  # the own read-out for models with layers
        shown = "own read-outs x'_j(e_j) - x'_j(0)" if what == "own read-out" else "norms"
        vals = " ".join("(" + ", ".join(f"{v:.2f}" for v in row) + ")" for row in rows)
        lines += ["", f"pretrained {shown} ({', '.join(names_)}) per model: {vals}"]
        for name, (k, n) in weak.items():
            lines.append(f"! {name} ended pretraining barely represented ({what} < {bound:g}) "
                         f"in {k} of {n} models: its row describes a feature the model hardly carries")
    if ft.get("by_group"):
        K = ft.get("orientations", 1)
        lines += ["", "the robustness axes: regime x optimiser x orientation (axis-aligned; rotated = the same "
                      f"models with the hidden space turned by {K - 1} random orthogonal matrices); means, 95% CI "
                      "is a t interval over the G pretrained models. The table above is the axis-aligned run of the first optimiser.",
                  text_table(ft, features=feats)]
    return "\n".join(lines)


def _direction(p: dict | None) -> str:
    """The direction a regime's paired test allows (none below ``inference.MIN_CLUSTERS`` models)."""
    return "n/a" if not p else inference.claim(p)["direction"]


def _paired_ci(p: dict | None) -> str:
    if not p or p.get("ci95") is None:
        return "n/a"
    lo, hi = p["ci95"]
    return f"[{lo:+.2f}, {hi:+.2f}] (G={p['n_clusters']})"


def weak_features(summary: dict) -> dict[str, tuple[int, int]]:
    """{feature: (models where it is barely represented, models)} from ``features.barely_represented``."""
    return barely_represented_counts((summary.get("features") or {}).get("barely_represented"))
