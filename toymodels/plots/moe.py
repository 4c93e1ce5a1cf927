"""Figures of the mixture-of-experts presets (:mod:`toymodels.presets.moe`), drawn from the suite's saved
``summary.json`` only: the superposition phase diagram over k/E and feature sparsity, and the routing of
the named pair with toxic's rate change per routing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import runs
from .registry import plt, save, suite_figure


def _suite_summary(members: list[runs.Run]) -> dict | None:
    path = members[0].path.parent / "summary.json" if members else None
    return runs.read_json(path, path.parent) if path is not None and path.exists() else None


@suite_figure("moe_phase")
def moe_phase(members: list[runs.Run], suite: dict, out: Path) -> list[Path]:
    """(a) load-weighted features per dimension ‖W_e‖²/d, rows (E, k) ordered by k/E, columns feature
    probability; (b) the same against 1/(1 − S), one line per (E, k) coloured by k/E, seeds as dots;
    (c) represented features (norm > 0.5) per dimension, likewise."""
    s = _suite_summary(members)
    if not s or not s.get("grid"):
        return []
    grid, rows = s["grid"], s["rows"]
    keys = sorted(dict.fromkeys((g["n_experts"], g["k_active"]) for g in grid), key=lambda e: (-e[1] / e[0], e[0]))
    ps = sorted({g["feature_probability"] for g in grid}, reverse=True)
    M = np.full((len(keys), len(ps)), np.nan)
    for g in grid:
        M[keys.index((g["n_experts"], g["k_active"])), ps.index(g["feature_probability"])] = g["features_per_dim"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    im = axes[0].imshow(M, aspect="auto", cmap="viridis", origin="upper")
    axes[0].set_xticks(range(len(ps)), [f"{p:.2g}" for p in ps], rotation=45)
    axes[0].set_yticks(range(len(keys)), [f"E={E}, k={k} ({k / E:.3g})" for E, k in keys])
    axes[0].set_xlabel("feature probability 1 − S")
    axes[0].set_title("(a) features per dimension ‖W_e‖²/d\n(load-weighted over experts; rows: k/E)")
    for i in range(len(keys)):
        for j in range(len(ps)):
            if np.isfinite(M[i, j]):
                axes[0].text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=7,
                             color="white" if M[i, j] < np.nanmean(M) else "black")
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    cmap = plt.get_cmap("plasma")
    for ax, key, label in ((axes[1], "features_per_dim", "(b) features per dimension ‖W_e‖²/d"),
                           (axes[2], "represented_per_dim", "(c) represented features (norm > 0.5) per dimension")):
        for E, k in keys:
            color = "k" if E == 1 else cmap(0.85 * (1 - np.log2(E / k) / 3.0))   # E = 1: the dense TMS
            sel = [r for r in rows if (r["n_experts"], r["k_active"]) == (E, k)]
            ax.scatter([1 / r["feature_probability"] for r in sel], [r[key] for r in sel], s=10, color=color, alpha=0.5)
            g = sorted((x for x in grid if (x["n_experts"], x["k_active"]) == (E, k)), key=lambda x: -x["feature_probability"])
            ls = {2: "--", 8: ":"}.get(E, "-")            # equal k/E at different E: told apart by the line
            ax.plot([1 / x["feature_probability"] for x in g], [x[key] for x in g], ls, marker="o", ms=3, color=color,
                    label=f"E={E}, k={k} (k/E={k / E:.3g})")
        ax.set_xscale("log")
        ax.set_xlabel("1 / (1 − S)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    c = s.get("sparse_k_over_E_vs_features_per_dim")
    note = (f" · p ≤ 0.1: Spearman(k/E, features/dim) {c['spearman']:+.2f} [{c['spearman_ci'][0]:+.2f}, "
            f"{c['spearman_ci'][1]:+.2f}], n={c['n']}" if c else "")
    c0 = members[0].config
    fig.suptitle(f"{suite.get('suite', '')} · moe n={c0.data.n_features} d={c0.model.d_hidden} per expert · "
                 f"{c0.train.steps} steps · seed {c0.seed}{note}", fontsize=9)
    fig.tight_layout()
    return [save(fig, out, f"{suite.get('suite', 'moe')}_moe_phase")]


@suite_figure("moe_routing")
def moe_routing(members: list[runs.Run], suite: dict, out: Path) -> list[Path]:
    """(a) which expert a unit helpful-only and toxic-only input goes to, per routing (share of models);
    (b) toxic's rate change [pp] per routing and regime, paired 95% t interval over the models, and
    different − same; (c) the capacity cost: pretraining loss per model, same vs different, paired."""
    s = _suite_summary(members)
    if not s or not s.get("rows"):
        return []
    routes = list(s["routes"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    ax = axes[0]
    width = 0.2
    for j, route in enumerate(routes):
        rt = s["routes"][route]
        for f, (name, hatch) in enumerate((("helpful", ""), ("toxic", "//"))):
            ex = np.asarray(rt[f"{name}_expert"])
            shares = [float(np.mean(ex == e)) for e in range(2)]
            x = np.arange(2) + (2 * j + f - 1.5) * width
            ax.bar(x, shares, width, color=f"C{j}", hatch=hatch, edgecolor="k", label=f"{route}: {name}-only input")
    ax.set_xticks([0, 1], ["expert 0", "expert 1"])
    ax.set_ylabel("share of pretrained models")
    ax.set_title("(a) where the named pair is routed")
    ax.set_ylim(0, 1.45)
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    ax = axes[1]
    regimes = s["regimes"]
    for j, route in enumerate(routes):
        for i, reg in enumerate(regimes):
            r = next(x for x in s["rows"] if x["route_pair"] == route and x["regime"] == reg)["rate_change_pp"]
            if r.get("mean") is None:
                continue
            lo, hi = r["ci95"] or (r["mean"], r["mean"])
            ax.errorbar(i + 0.15 * (j - 0.5), r["mean"], yerr=[[r["mean"] - lo], [hi - r["mean"]]], fmt="o", capsize=4,
                        color=f"C{j}", label=f"{route} (G={r['n_clusters']})" if i == 0 else None)
    labels = []
    for reg in regimes:
        v = s["different_vs_same"].get(reg)
        labels.append(reg if not v or v.get("mean") is None else
                      f"{reg}\ndifferent − same\n{v['mean']:+.2f} [{v['ci95'][0]:+.2f}, {v['ci95'][1]:+.2f}] pp\n"
                      f"(G={v['n_clusters']}): {v['verdict']}")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(range(len(regimes)), labels, fontsize=8)
    ax.set_xlim(-0.6, len(regimes) - 0.4)
    ax.set_ylabel(f"Δ {s['harmful']} output rate [pp]")
    ax.set_title(f"(b) {s['harmful']}'s rate change after fine-tuning {s['target']} (paired 95% CI)")
    ax.legend(fontsize=7)
    ax = axes[2]
    by = {m.config.model.route_pair: [x["eval_loss"] for x in m.summary["instances"]] for m in members}
    if {"same", "different"} <= by.keys():
        for a, b in zip(by["same"], by["different"]):
            ax.plot([0, 1], [a, b], "-o", color="0.5", ms=3)
        c = s.get("capacity_cost") or {}
        if c.get("mean") is not None:
            ax.set_title(f"(c) capacity cost: pretraining loss\ndifferent − same {c['mean']:+.2e} "
                         f"[{c['ci95'][0]:+.2e}, {c['ci95'][1]:+.2e}] (G={c['n_clusters']})", fontsize=9)
    ax.set_xticks([0, 1], ["same", "different"])
    ax.set_ylabel("pretraining loss (fresh batch)")
    c0 = members[0].config
    fig.suptitle(f"{suite.get('suite', '')} · moe E={c0.model.n_experts} k={c0.model.k_active} d={c0.model.d_hidden} "
                 f"n={c0.data.n_features} · {c0.train.steps} pretraining + {c0.finetune.steps} fine-tuning steps · "
                 f"seed {c0.seed}", fontsize=9)
    fig.tight_layout()
    return [save(fig, out, f"{suite.get('suite', 'moe')}_moe_routing")]
