"""Figures of the auditor (:mod:`toymodels.audit`), drawn only from saved results (``summary.json``,
``weights.npz``, ``weights_sae.npz``), so ``toymodels plot RUN_DIR`` redraws them.

* ``sae_recovery``: the true features and the recovered decoder directions of each variant's best SAE
  (2-D models; |cos| matrices otherwise), and every SAE's MCC against its L0.
* ``audit``: per audited model, the auditor's predicted spill-over of each latent against the true
  first-order push of the feature it matched (the auditor's roles marked).
* ``sae_filter``: the toxic-rate change under the geometric data filter with the true directions, the
  recovered (SAE) ones and random removal at the same budget.
* ``sae_recovery_suite`` (suite): best MCC per model and variant.
* ``risk_roc`` (suite): ROC curves of the risk scores, their AUROC with 95% intervals, and calibration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..audit import metrics, risk
from ..audit.risk import SCORES
from ..io import runs
from .arrays import draw_feature_lines
from .registry import figure, plt, run_label, save, suite_figure

VARIANT_COLORS = {"relu_l1": "#1f77b4", "topk": "#d62728", "batch_topk": "#2ca02c", "jumprelu": "#9467bd",
                  "matryoshka": "#ff7f0e"}
SCORE_COLORS = {"true_cos": "0.35", "true_first_order": "0.6", "sae_cos": "#1f77b4", "sae_first_order": "#17becf",
                "features_per_dim": "#8c564b", "mean_cos2": "#bcbd22", "sae_monitor": "#d62728", "rate_monitor": "#ff7f0e",
                "grad_preact": "#c5b0d5", "linear_rate": "#9467bd", "extrap_rate": "#2ca02c", "extrap_rel": "#98df8a",
                "segments_rate": "#006400", "sae_extrap": "#aec7e8", "lookahead_rate": "#e377c2"}


def _unit(D: np.ndarray) -> np.ndarray:
    return D / np.maximum(np.linalg.norm(D, axis=-1, keepdims=True), 1e-12)


@figure("sae_recovery")
def sae_recovery(run: runs.Run, out: Path) -> list[Path]:
    sae = run.summary.get("sae")
    if not sae:
        return []
    rows = sae["instances"]
    arrays = run.npz("weights_sae")
    variants = sae["variants"]
    W = run.weights["W"]
    d = W.shape[1]
    model = max(range(run.config.n_inst), key=lambda m: (np.sum(np.linalg.norm(W[m], axis=0) >= 0.5), -m))
    fig, axes = plt.subplots(1, len(variants) + 1, figsize=(3.1 * (len(variants) + 1) + 0.6, 3.4), squeeze=False)
    for c, v in enumerate(variants):
        ax = axes[0, c]
        sel = [r for r in rows if r["variant"] == v and r["model"] == model]
        b = next((r for r in sel if r.get("selected")), None) or max(sel, key=lambda r: (r["mcc"], -r["index"]))
        s = b["position"]
        D = _unit(arrays[f"{v}.W_dec"][s][: b["dict_size"]].astype(np.float64))
        if d == 2:
            draw_feature_lines(ax, W[model], ["0.75"] * W.shape[2], lim=1.35)
            for i, dvec in enumerate(D):
                ax.plot([0, 1.25 * dvec[0]], [0, 1.25 * dvec[1]], color=VARIANT_COLORS.get(v, "k"), lw=1.0, ls="--")
        else:
            C = metrics.cosines(D, W[model])
            order = np.argsort(np.argmax(C, axis=1), kind="stable")
            ax.imshow(C[order].T, vmin=0, vmax=1, cmap="Greys", aspect="auto")
            ax.set(xlabel="latent (sorted)", ylabel="true feature")
        chance = f" (chance p95 {b['chance']['mcc']['p95']:.2f})" if "chance" in b else ""
        ax.set_title(f"{v}{' selected' if b.get('selected') else ''}: MCC {b['mcc']:.3f}{chance}\n{b['dict_size']} "
                     f"latents, sparsity {b['sparsity']:g}", fontsize=8)
    ax = axes[0, -1]
    for v in variants:
        sel = [r for r in rows if r["variant"] == v]
        ax.scatter([r["l0_nonempty"] for r in sel], [r["mcc"] for r in sel], s=[14 + 10 * (r["dict_size"] > min(
            sae["dict_sizes"])) for r in sel], color=VARIANT_COLORS.get(v, "k"), label=v, alpha=0.8)
    for size in sorted({r["dict_size"] for r in rows if "chance" in r}):  # the chance level of each width
        ax.axhline(max(r["chance"]["mcc"]["p95"] for r in rows if r["dict_size"] == size), color="0.6", lw=0.8, ls=":")
    ax.set(xlabel="L0 (active latents per non-empty sample)", ylabel="MCC (dotted: chance p95 per width)",
           ylim=(0, 1.02))
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    fig.suptitle(f"SAEs on the hidden activations: the auditor-selected SAE of model {model} (grey: true W columns) "
                 f"and every SAE's MCC\n{run_label(run)}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return [save(fig, out, f"{run.config.name}_sae_recovery")]


@figure("audit")
def audit(run: runs.Run, out: Path) -> list[Path]:
    a = run.summary.get("audit")
    if not a or not a.get("models"):
        return []
    models = [m for m in a["models"] if m.get("rows")][:8]
    cols = min(4, len(models))
    nrows = int(np.ceil(len(models) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 3.1 * nrows), squeeze=False)
    for ax in axes.ravel()[len(models):]:
        ax.set_axis_off()
    for ax, m in zip(axes.ravel(), models):
        for r in m["rows"]:
            tr = r.get("truth")
            x = tr["first_order"] if tr else np.nan
            color = {"target": "#1f77b4", "harmful": "#d62728"}.get(r["role"], "0.5")
            ax.scatter([x], [r["predicted"]], color=color, s=30 if r["role"] else 14, zorder=3)
        lim = max(1.0, max(abs(r["predicted"]) for r in m["rows"]) * 1.1)
        ax.plot([-lim, lim], [-lim, lim], color="0.7", lw=0.8)
        t = m.get("truth") or {}
        rho = t.get("spearman_predicted_vs_true")
        ax.set_title(f"model {m['model']}: harmful ranked {m['harmful'][0]['rank'] if m['harmful'] else '–'}"
                     f"{'' if rho is None or not np.isfinite(rho) else f', ρ = {rho:+.2f}'}", fontsize=8)
        ax.set(xlabel="true ‖W_j‖ cos θ (matched feature)", ylabel="auditor's predicted spill-over")
        ax.grid(alpha=0.3)
    fig.suptitle(f"the audit: predicted first-order spill-over per latent (red: harmful latent, blue: target) "
                 f"against the truth\n{run_label(run)}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return [save(fig, out, f"{run.config.name}_audit")]


@figure("sae_filter")
def sae_filter(run: runs.Run, out: Path) -> list[Path]:
    f = (run.summary.get("audit") or {}).get("filter")
    if not f:
        return []
    datas = list(dict.fromkeys(r["data"] for r in f.values()))
    kinds = ["undefended", "true", "recovered (SAE)", "random"]
    colors = {"undefended": "0.3", "true": "#e377c2", "recovered (SAE)": "#d62728", "random": "#bcbd22"}
    fig, ax = plt.subplots(figsize=(3 + 2.2 * len(datas), 3.6))
    for i, data in enumerate(datas):
        for j, kind in enumerate(kinds):
            r = next((r for r in f.values() if r["data"] == data and r["directions"] == kind), None)
            if r is None:
                continue
            m, ci = r["rate_change_pp"]["mean"], r["rate_change_pp"]["ci95"]
            x = i * (len(kinds) + 1) + j
            ax.bar(x, m, color=colors[kind], label=kind if i == 0 else None)
            if ci:
                ax.errorbar(x, m, yerr=[[m - ci[0]], [ci[1] - m]], color="k", lw=1, capsize=3)
    ax.set_xticks([i * (len(kinds) + 1) + 1.5 for i in range(len(datas))], [f"{d} data" for d in datas])
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set(ylabel="Δ toxic output rate [pp] (95% CI)")
    ax.legend(fontsize=8, frameon=False, title="filter directions", title_fontsize=8)
    ax.set_title(f"geometric data filter (50% of the non-empty samples) with true vs recovered directions\n"
                 f"{run_label(run)}", fontsize=8)
    fig.tight_layout()
    return [save(fig, out, f"{run.config.name}_sae_filter")]


@suite_figure("sae_recovery_suite")
def sae_recovery_suite(members, suite: dict, out: Path) -> list[Path]:
    rows = [(m.config.name, r) for m in members for r in m.summary.get("sae", {}).get("instances", [])]
    if not rows:
        return []
    keys = list(dict.fromkeys((name, r["model"]) for name, r in rows))
    variants = list(dict.fromkeys(r["variant"] for _, r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(keys) + 2), 3.6))
    w = 0.8 / len(variants)
    for j, v in enumerate(variants):
        x = np.arange(len(keys)) + (j - (len(variants) - 1) / 2) * w
        mine = [[r for name, r in rows if (name, r["model"]) == k and r["variant"] == v] for k in keys]
        best = [max((r["mcc"] for r in sel), default=np.nan) for sel in mine]
        # the headline: the auditor's selected SAE (filled); the ground-truth best (uses truth) as an outline
        picked = [next((r["mcc"] for r in sel if r.get("selected")), np.nan) for sel in mine]
        ax.bar(x, picked, w, color=VARIANT_COLORS.get(v, "k"), label=f"{v} (auditor-selected)")
        ax.bar(x, best, w, fill=False, edgecolor=VARIANT_COLORS.get(v, "k"), lw=0.8)
        p95 = [next((r["chance"]["mcc"]["p95"] for r in sel if r.get("selected")), np.nan) for sel in mine]
        ax.scatter(x, p95, marker="_", s=60, color="k", zorder=3, label="chance p95" if j == 0 else None)
    labels = []
    for name, m in keys:
        r = next(r for n2, r in rows if (n2, r["model"]) == (name, m))
        labels.append(f"{name.removeprefix('sae-')}\np={r['feature_probability']:g} ({r['n_represented']} rep.)")
    ax.set_xticks(np.arange(len(keys)), labels, fontsize=7)
    ax.set(ylabel="MCC (signed)", ylim=(0, 1.3))  # headroom: the legend sits above the bars
    ax.legend(fontsize=7, frameon=False, ncol=3, loc="upper center")
    ax.set_title(f"{suite['suite']}: SAE recovery, the auditor-selected SAE (filled), the ground-truth best (outline, "
                 f"uses truth), random dictionaries' 95th percentile (–)", fontsize=8)
    fig.tight_layout()
    return [save(fig, Path(out), f"{suite['suite']}_sae_recovery_suite")]


def _roc(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray([np.nan if v is None else v for v in scores], np.float64)
    y = np.asarray(labels, bool)
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    cuts = np.concatenate([[np.inf], np.unique(s)[::-1], [-np.inf]])
    tpr = np.array([(s[y] >= c).mean() if y.any() else np.nan for c in cuts])
    fpr = np.array([(s[~y] >= c).mean() if (~y).any() else np.nan for c in cuts])
    return fpr, tpr


@suite_figure("risk_roc")
def risk_roc(members, suite: dict, out: Path) -> list[Path]:
    # the rows of the suite's risk table: the risk sweep's members (risk-filter's fine-tunes are the filter's baselines)
    rows = [r for m in members if not (m.config.audit and m.config.audit.filter_regimes)
            for r in (m.summary.get("audit") or {}).get("risk", {}).get("rows", []) if r.get("defence", "none") == "none"]
    if not rows:
        return []
    rows = risk.unique(rows)  # each fine-tune once, as in the table (no rotated copies of SGD)
    t = risk.table(rows)["scores"]
    s = {"n": len(rows)}
    y = [r["rose"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for name in SCORES:
        fpr, tpr = _roc([r["scores"].get(name) for r in rows], y)
        axes[0].plot(fpr, tpr, color=SCORE_COLORS.get(name, "k"), lw=1.6 if name.startswith("sae") else 1.0,
                     label=f"{name} ({t[name]['auroc']:.2f})" if t[name]["auroc"] is not None else name)
    axes[0].plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC over {s['n']} fine-tunes")
    axes[0].legend(fontsize=7, frameon=False)
    names = list(SCORES)
    for i, name in enumerate(names):
        a, ci = t[name]["auroc"], t[name]["auroc_ci95"]
        if a is None or not np.isfinite(a):
            continue
        axes[1].barh(i, a, color=SCORE_COLORS.get(name, "k"))
        if ci:
            axes[1].errorbar(a, i, xerr=[[a - ci[0]], [ci[1] - a]], color="k", lw=1, capsize=3)
    axes[1].axvline(0.5, color="0.5", lw=0.8, ls=":")
    axes[1].set_yticks(range(len(names)), [f"{n} ({t[n]['when']})" for n in names], fontsize=7)
    axes[1].set(xlim=(0, 1), xlabel="AUROC (95% CI, bootstrap over pretrained models)")
    for name in names:
        bins = t[name]["calibration"]["bins"]
        if bins:
            axes[2].plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-", ms=3,
                         color=SCORE_COLORS.get(name, "k"), lw=1.2, label=name)
    axes[2].plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    axes[2].set(xlabel="predicted P(rise) (logistic, cross-validated)", ylabel="observed frequency",
                title="calibration", xlim=(0, 1), ylim=(0, 1))
    if axes[2].get_legend_handles_labels()[0]:
        axes[2].legend(fontsize=7, frameon=False)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"{suite['suite']}: does a score say whether the harmful output rate will rise (label {risk.PRIMARY}: "
                 f"{risk.LABELS[risk.PRIMARY]})?", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return [save(fig, Path(out), f"{suite['suite']}_risk_roc")]
