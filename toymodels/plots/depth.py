"""Figures of the deep stack (:mod:`toymodels.lab.layers`, :mod:`toymodels.lab.depth`).

* ``depth_layers`` (one run): per regime, the change of toxic's pre-activation on the target input at every
  layer, measured (mean with its paired 95% interval over pretrained models) beside the composed
  first-order prediction (open marker); one colour per optimiser × orientation class.
* ``depth_summary`` (the ``deep`` suite): the toxic-rate change [pp] against the layer the pair is planted
  at, at the end of fine-tuning and at each matched gain, with paired intervals and G, over the models
  whose pair is represented.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import runs
from ..lab import robustness as rob
from .registry import figure, plt, run_label, save, suite_figure


@figure("depth_layers")
def depth_layers(run: runs.Run, out: Path) -> list[Path]:
    ft = run.summary.get("finetune") or {}
    by_layer = ft.get("by_layer")
    if not by_layer:
        return []
    harm = ft["harmful"][0]
    regimes = list(dict.fromkeys(k.split("|")[0] for k in by_layer))
    groups = list(dict.fromkeys("|".join(k.split("|")[1:]) for k in by_layer))
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(regimes), figsize=(4.2 * len(regimes), 3.4), squeeze=False)
    width = 0.8 / max(len(groups), 1)
    for c, reg in enumerate(regimes):
        ax = axes[0, c]
        for gi, g in enumerate(groups):
            per = by_layer.get(f"{reg}|{g}", {}).get(harm)
            if not per:
                continue
            x = np.array([p["layer"] for p in per], float) + (gi - (len(groups) - 1) / 2) * width
            m = np.array([p["change"]["mean"] for p in per])
            lo = np.array([p["change"]["ci95"][0] for p in per])
            hi = np.array([p["change"]["ci95"][1] for p in per])
            ax.bar(x, m, width=width * 0.9, color=cmap(gi % 10), alpha=0.75,
                   label=f"{g.replace('|', ', ')} (G={per[0]['change']['n_clusters']})")
            ax.errorbar(x, m, yerr=[m - lo, hi - m], fmt="none", ecolor="k", lw=0.8, capsize=2)
            ax.plot(x, [p["predicted_mean"] for p in per], "o", mfc="none", mec="k", ms=5)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xticks(range(1, run.config.model.n_layers + 1))
        ax.set_xlabel("layer")
        ax.set_title(reg, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"Δ {harm} pre-activation on e_{ft['target']}\nbars: measured (95% CI); o: composed "
                          f"1st-order", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.suptitle(f"where the spill-over goes: per layer, pair planted at layer {run.config.model.plant_layer} "
                 f"(all {run.config.n_inst} models)\n"
                 f"{run_label(run)}", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 0.92))
    return [save(fig, out, f"{run.config.name}_depth_layers")]


@suite_figure("depth_summary")
def depth_summary(members: list[runs.Run], suite: dict, out: Path) -> list[Path]:
    members = sorted((m for m in members if (m.summary.get("finetune") or {}).get("by_group")),
                     key=lambda m: m.config.model.plant_layer)
    if not members:
        return []
    harm = members[0].summary["finetune"]["harmful"][0]
    # the models whose pair is represented (a barely represented start is its own stratum, never pooled)
    rows = {m.config.model.plant_layer: [r for r in rob.group_rows(m.summary["finetune"], harm,
                                                                  m.summary.get("features"))
                                         if not r["duplicate_of"] and r["stratum"] == "both represented"]
            for m in members}
    every = [r for rs in rows.values() for r in rs]
    regimes = list(dict.fromkeys(r["regime"] for r in every))
    if not regimes:  # no model of any member has its pair represented: say so, draw no numbers
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no pretrained model ended with its pair represented\n"
                          "(own read-out >= 0.25): nothing to compare", ha="center", va="center", fontsize=9)
        fig.suptitle(f"{suite['suite']}: spill-over by plant layer", fontsize=9)
        return [save(fig, out, f"{suite['suite']}_depth_summary")]
    points = ["end", *every[0]["at_gain"]]
    cells = list(dict.fromkeys((r["optimizer"], r["orientation"]) for r in every))
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(len(points), len(regimes), figsize=(4.0 * len(regimes), 3.0 * len(points)),
                             squeeze=False)
    for c, reg in enumerate(regimes):
        for p_i, point in enumerate(points):
            ax = axes[p_i, c]
            for ci, (opt, orient) in enumerate(cells):
                xs, ms, los, his = [], [], [], []
                for layer, rs in rows.items():
                    r = next((r for r in rs if r["regime"] == reg and r["optimizer"] == opt
                              and r["orientation"] == orient), None)
                    if r is None:
                        continue
                    mean, ci95 = ((r["rate_change_pp"], r["rate_ci"]) if point == "end" else
                                  (r["at_gain"][point]["rate_change_pp"], r["at_gain"][point]["ci"]))
                    if mean is None:
                        continue
                    xs.append(layer + (ci - (len(cells) - 1) / 2) * 0.08)
                    ms.append(mean)
                    los.append(mean - (ci95[0] if ci95 else mean))
                    his.append((ci95[1] if ci95 else mean) - mean)
                ax.errorbar(xs, ms, yerr=[los, his], fmt="o-", color=cmap(ci % 10), ms=4, lw=1.2, capsize=2,
                            label=f"{opt}, {'axis-aligned' if orient == 'axis' else 'rotated'}")
            ax.axhline(0, color="0.6", lw=0.8)
            ax.set_xticks(list(rows))
            ax.grid(alpha=0.3)
            ax.set_title(f"{reg}, {'end of fine-tuning' if point == 'end' else 'at target gain ' + point}", fontsize=9)
            ax.set_xlabel("layer the pair is planted at")
        axes[0, 0].set_ylabel(f"Δ {harm} rate [pp] (95% CI over models)", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    G = sorted({r["n_clusters"] for rs in rows.values() for r in rs})
    Gg = sorted({a["n_clusters"] for rs in rows.values() for r in rs for a in r["at_gain"].values()})
    fig.suptitle(f"{suite['suite']}: spill-over by plant layer (models with the pair represented; G = "
                 f"{', '.join(map(str, G))} per cell at the end, {', '.join(map(str, Gg))} reached the matched gain)\n"
                 f"{members[0].config.model.n_layers}-layer stack · {run_label(members[0]).split(' · ', 1)[1]}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 0.93))
    return [save(fig, out, f"{suite['suite']}_depth_summary")]
