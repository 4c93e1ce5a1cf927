"""Figures of the fine-tuning lab, drawn only from a run's saved files (``summary.json``,
``metrics.jsonl`` probe rows with ``phase="finetune"``, ``weights_pretrained.npz``,
``weights_finetuned.npz``, ``weights_trajectory.npz``), so ``toymodels plot RUN_DIR`` redraws them.

* ``finetune_arrows``: TMS-style arrows of a 2-D hidden space, pretrained (faint) and fine-tuned (solid),
  one panel per regime.
* ``amplification_curves``: the harmful feature's pre-activation on the target input (with the
  first-order prediction), its toxic output rate, cos(target, harmful) and the target's read-out,
  against fine-tuning step, one line per regime.
* ``finetune_gif``: an animated GIF of the 2-D vectors during fine-tuning (frames = chunk boundaries).
* ``angle_sweep``: change in pre-activation and in toxic output rate against the pretrained angle and
  cosine, per regime, with Pearson and Spearman correlations from ``summary.json``.

Suite figures (from the member runs, through :mod:`toymodels.lab.suites`):

* ``overlap_scatter``: the overlap table as scatter plots: % and pp increase in toxic output rate and
  the change in pre-activation against the overlap score, per regime, with bootstrap intervals.
* ``crowding``: toxic-rate increase, pre-activation change, rotation and superposition density against
  n / d_hidden, per regime, seeds as dots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import runs
from ..lab import suites as lt
from .arrays import (
    BENIGN_COLOR,
    HARMFUL_COLOR,
    HELPFUL_COLOR,
    draw_arrows,
    feature_colors,
    plot_finetune_2d,
    square_axes,
)
from .registry import figure, plt, run_label, save, suite_figure


def _ft(run: runs.Run) -> dict | None:
    return run.summary.get("finetune")


def _regime_colors(names: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def _probe_rows(run: runs.Run) -> list[dict]:
    return sorted((r for r in run.metrics if r.get("phase") == "finetune" and r.get("kind") == "probe"),
                  key=lambda r: r["step"])


def _feature_roles(run: runs.Run, target_name: str) -> tuple[list[str], dict[int, str]]:
    """All feature names, and a colour per feature index: target blue, harmful red, others grey."""
    names = run.config.feature_names()
    harmful = set(run.config.features.harmful) if run.config.features else set()
    colors = {i: HELPFUL_COLOR if n == target_name else HARMFUL_COLOR if n in harmful else BENIGN_COLOR
              for i, n in enumerate(names)}
    return names, colors


def is_reference(ft: dict, e: dict) -> bool:
    """Whether instance entry ``e`` is in the reference slice of the robustness axes: axis-aligned and the
    first optimiser (every instance of a run without those axes). The figures here draw that slice; the
    ``robustness`` figure draws the axes."""
    first = ft["optimizers"][0]["name"] if ft.get("optimizers") else e.get("optimizer")
    return e.get("orientation", 0) == 0 and e.get("optimizer") == first


def reference_instances(ft: dict) -> list[dict]:
    return [e for e in ft["instances"] if is_reference(ft, e)]


def axis_groups(ft: dict) -> dict[str, tuple[list[dict], dict]]:
    """The axis-aligned instances by regime, or by (regime, optimiser) when the run has an optimiser axis:
    label -> (instance entries, their summary group). Labels are ``regime`` or ``"regime · optimiser"``."""
    opts = [o["name"] for o in ft.get("optimizers") or []]
    if len(opts) <= 1:
        return {r["name"]: ([e for e in reference_instances(ft) if e["regime"] == r["name"]], ft["by_regime"][r["name"]])
                for r in ft["regimes"]}
    return {f"{r['name']} · {o}": ([e for e in ft["instances"] if e["regime"] == r["name"] and e["optimizer"] == o
                                    and e.get("orientation", 0) == 0], ft["by_group"][f"{r['name']}|{o}|axis"])
            for r in ft["regimes"] for o in opts}


def _first_instance_of_each_regime(ft: dict, pretrain_instance: int = 0) -> list[dict]:
    return [e for e in reference_instances(ft) if e["pretrain_instance"] == pretrain_instance]


@figure("finetune_arrows")
def finetune_arrows(run: runs.Run, out: Path) -> list[Path]:
    """Pretrained (faint, dashed) and fine-tuned (solid) feature vectors of pretrained instance 0 under
    every regime, for a 2-D hidden space (:func:`toymodels.plots.arrays.plot_finetune_2d`). Titles give
    the regime, the drawn model's toxic numbers before → after, and the means over all pretrained models
    (the numbers of the table printed beside it)."""
    ft = _ft(run)
    if ft is None or run.config.model.d_hidden != 2:
        return []
    W0, W1 = run.npz("weights_pretrained")["W"], run.npz("weights_finetuned")["W"]
    entries = _first_instance_of_each_regime(ft)
    harm = ft["harmful"][0]
    titles = []
    for e in entries:
        h = e["harmful"][harm]
        reg = next(r for r in ft["regimes"] if r["name"] == e["regime"])
        m = ft["by_regime"][e["regime"]]
        mh = m["harmful"][harm]
        titles.append(f"{e['regime']}  (data={reg['data']}, loss={reg['loss_scope']})\n"
                      f"model 0: angle {h['angle_deg']['before']:.1f}° → {h['angle_deg']['after']:.1f}°, "
                      f"rate {100 * h['rate']['before']:.2f}% → {100 * h['rate']['after']:.2f}%\n"
                      f"mean of {m['n']}: angle {mh['angle_before']['mean']:.1f}° → {mh['angle_after']['mean']:.1f}°, "
                      f"rate {100 * mh['rate_before']['mean']:.2f}% → {100 * mh['rate_after']['mean']:.2f}%")
    names = run.config.feature_names()
    n_models = len({e["pretrain_instance"] for e in ft["instances"]})
    k = [e["index"] for e in entries]
    fig = plot_finetune_2d(W0[k], W1[k], names=names, colors=feature_colors(names, ft["target"], ft["harmful"]),
                           titles=titles,
                           title=f"feature vectors W_i of pretrained model 0 (of {n_models}) before (dashed) and after "
                                 f"(solid) fine-tuning '{ft['target']}'; {ft['target']} blue, {harm} red, benign grey"
                                 f"\n{run_label(run)}")
    return [save(fig, out, f"{run.config.name}_finetune_arrows")]


@figure("amplification_curves")
def amplification_curves(run: runs.Run, out: Path) -> list[Path]:
    """Per regime (colour; thin lines are single instances, thick the mean): the first harmful feature's
    pre-activation on the unit target input with the first-order prediction pre0 + ⟨W0_j, ΔW_t⟩ (dashed),
    its toxic output rate, cos(target, harmful) and the target's read-out, against fine-tuning step."""
    ft = _ft(run)
    rows = _probe_rows(run)
    if ft is None or not rows:
        return []
    regimes = [r["name"] for r in ft["regimes"]]
    colors = _regime_colors(regimes)
    # the reference slice (axis-aligned, first optimiser); other instances get no regime: not drawn
    reg_of = np.array([e["regime"] if is_reference(ft, e) else "" for e in ft["instances"]])
    steps = np.array([r["step"] for r in rows])
    get = lambda key: np.array([r[key] for r in rows], np.float64)  # (T, n_ft[, h])
    pre, pred, rate, cos = get("preact")[..., 0], get("pred_first_order")[..., 0], get("rate")[..., 0], get("cos")[..., 0]
    readout = get("target_readout")
    pre0 = pre[0]
    panels = [(pre, "pre-activation of harmful on target input", pre0 + pred),
              (100 * rate, f"toxic output rate P(x'_j > {ft['tau']:g} | x_j = 0)  [%]", None),
              (cos, "cos(target, harmful)", None), (readout, "target read-out x'_t on unit target input", None)]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (y, ylabel, y_pred) in zip(axes.ravel(), panels):
        for name in regimes:
            sel = reg_of == name
            c = colors[name]
            if sel.sum() > 1:
                ax.plot(steps, y[:, sel], color=c, lw=0.6, alpha=0.3)
            ax.plot(steps, y[:, sel].mean(1), color=c, lw=2.0, label=name)
            if y_pred is not None:
                ax.plot(steps, y_pred[:, sel].mean(1), color=c, lw=1.4, ls="--")
        ax.set(xlabel="fine-tuning step", ylabel=ylabel)
        ax.grid(alpha=0.3)
    axes[0, 0].plot([], [], color="k", ls="--", label="first-order prediction pre0 + ⟨W0_j, ΔW_t⟩\n"
                                                     "(hidden under the solid line where exact)")
    axes[0, 0].legend(fontsize=7, loc="upper left", framealpha=0.85)
    fig.suptitle(f"fine-tuning '{ft['target']}' ({ft['objective']}), watching '{ft['harmful'][0]}'; "
                 f"means over {int(np.sum(reg_of != '')) // max(len(regimes), 1)} pretrained instances per regime\n{run_label(run)}",
                 fontsize=9)
    fig.tight_layout()
    return [save(fig, out, f"{run.config.name}_amplification_curves")]


@figure("finetune_gif")
def finetune_gif(run: runs.Run, out: Path, max_frames: int = 24) -> list[Path]:
    """Animated GIF of pretrained instance 0's 2-D feature vectors during fine-tuning, one panel per
    regime, frames from ``weights_trajectory.npz`` (chunk boundaries, at most ``max_frames``). The
    pretrained vectors stay as faint dashed arrows; the arrows are updated in place, not redrawn."""
    ft = _ft(run)
    if ft is None or run.config.model.d_hidden != 2 or not (run.path / "weights_trajectory.npz").exists():
        return []
    from matplotlib.animation import PillowWriter

    traj = run.npz("weights_trajectory")
    entries = _first_instance_of_each_regime(ft)
    W = traj["W"][:, [e["index"] for e in entries]]          # (T, R, 2, n)
    steps = traj["step"]
    frames = np.unique(np.linspace(0, len(steps) - 1, min(max_frames, len(steps))).round().astype(int))
    rows = {r["step"]: r for r in _probe_rows(run)}
    harm_i = run.config.feature_names().index(ft["harmful"][0])
    lim = 1.15 * np.abs(W).max()
    fig, axes = plt.subplots(1, len(entries), figsize=(2.9 * len(entries), 3.9), squeeze=False)
    live = []  # per panel: (arrows, title)
    for ax, e, r in zip(axes[0], entries, range(len(entries))):
        names, colors = _feature_roles(run, e["target"])
        draw_arrows(ax, W[0, r], names, colors, alpha=0.25, lw=1.2, label=False, ls="--")
        arrows = [ax.annotate("", xy=(W[0, r, 0, j], W[0, r, 1, j]), xytext=(0, 0),
                              arrowprops={"arrowstyle": "-|>", "color": colors[j], "lw": 1.8, "shrinkA": 0,
                                          "shrinkB": 0})
                  for j in range(W.shape[-1])]
        square_axes(ax, lim)
        live.append((arrows, ax.set_title("", fontsize=8)))
    fig.suptitle(f"{run.config.name}: fine-tuning '{ft['target']}' (blue); '{ft['harmful'][0]}' red; "
                 f"dashed = pretrained", fontsize=9)
    for ax in axes[0]:
        ax.set_title("step 00000\nangle 00.0°\nrate 0.00%", fontsize=8)  # reserve room for 3 lines
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{run.config.name}_finetune.gif"
    writer = PillowWriter(fps=8)
    with runs.atomic_path(path) as tmp, writer.saving(fig, str(tmp), dpi=72):  # no half-written GIF
        for t in list(frames) + [frames[-1]] * 5:  # hold the last frame
            for (arrows, title), e, r in zip(live, entries, range(len(entries))):
                for j, a in enumerate(arrows):
                    a.xy = (W[t, r, 0, j], W[t, r, 1, j])
                row = rows.get(int(steps[t]))
                rate = f"\n{ft['harmful'][0]} rate {100 * row['rate'][e['index']][0]:.2f}%" if row else ""
                c = W[t, r, :, run.config.feature_names().index(e["target"])]
                h = W[t, r, :, harm_i]
                ang = np.degrees(np.arctan2(abs(c[0] * h[1] - c[1] * h[0]), c @ h))
                title.set_text(f"{e['regime']}  step {int(steps[t])}\nangle {ang:.1f}°{rate}")
            writer.grab_frame()
    return [path]


@figure("angle_sweep")
def angle_sweep(run: runs.Run, out: Path) -> list[Path]:
    """Change in the harmful pre-activation (on the unit target input) and in its toxic output rate
    against the pretrained angle and cosine between target and harmful feature, one colour per regime;
    dots are instances, lines the mean per requested angle; the first-order prediction dashed.
    Pearson r and Spearman ρ (from summary.json, against cos) in the legend."""
    ft = _ft(run)
    if ft is None:
        return []
    harm = ft["harmful"][0]
    groups = axis_groups(ft)
    colors = _regime_colors(list(groups))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for name, (es, summary_group) in groups.items():
        h = [e["harmful"][harm] for e in es]
        ang = np.array([x["angle_deg"]["before"] for x in h])
        cos = np.array([x["cos"]["before"] for x in h])
        dpre = np.array([x["preact"]["change"] for x in h])
        pred = np.array([x["first_order"]["predicted"] for x in h])
        dpp = np.array([x["rate"]["change_pp"] for x in h])
        corr = summary_group["harmful"][harm].get("correlations", {})
        c = colors[name]
        for row, (y, key) in enumerate(((dpre, "preact_change_vs_cos"), (dpp, "rate_change_pp_vs_cos"))):
            cc = corr.get(key, {})
            lab = f"{name}: r={cc.get('pearson', float('nan')):+.2f}, ρ={cc.get('spearman', float('nan')):+.2f}"
            for col, x in enumerate((ang, cos)):
                ax = axes[row, col]
                ax.scatter(x, y, s=9, color=c, alpha=0.55, label=lab if col == 1 else None)
                order = np.argsort(x)
                xr = np.round(x[order], 6 if col else 3)
                ux = np.unique(np.round(ang if col == 0 else cos, 6 if col else 3))
                if len(ux) < len(x):  # several seeds per angle: draw the mean per angle
                    means = [y[order][xr == u].mean() for u in np.unique(xr)]
                    ax.plot(np.unique(xr), means, color=c, lw=1.5)
                if row == 0:
                    ax.scatter(x, pred, s=10, marker="x", color=c, alpha=0.6, lw=0.8,
                               label=f"{name}: prediction ⟨W0_j, ΔW_t⟩" if col == 0 else None)
    for ax, (yl, xl) in zip(axes.ravel(), [("Δ pre-activation of harmful", "angle (degrees, pretrained)"),
                                           ("Δ pre-activation of harmful", "cos θ (pretrained)"),
                                           ("Δ toxic output rate [pp]", "angle (degrees, pretrained)"),
                                           ("Δ toxic output rate [pp]", "cos θ (pretrained)")]):
        ax.set(xlabel=xl, ylabel=yl)
        ax.axhline(0, color="k", lw=0.6)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"angle sweep: fine-tuning '{ft['target']}' and the change in '{harm}' against their angle "
                 f"(τ = {ft['tau']:g})\n{run_label(run)}", fontsize=9)
    fig.tight_layout()
    return [save(fig, out, f"{run.config.name}_angle_sweep")]


# --- suite figures: the overlap table and crowding ---------------------------------------------------
TASK_STYLE = {"nearest": ("#d62728", "o"), "middling": ("#ff7f0e", "s"), "farthest": ("#1f77b4", "^")}


def _corr_label(c: dict, stat: str, sym: str) -> str:
    lo, hi = c[f"{stat}_ci"]
    v = c[stat]
    fmt = lambda a: "n/a" if a is None or not np.isfinite(a) else f"{a:+.2f}"
    return f"{sym} = {fmt(v)} [{fmt(lo)}, {fmt(hi)}]"


@suite_figure("overlap_scatter")
def overlap_scatter(members: list[runs.Run], suite: dict, out: Path) -> list[Path]:
    """The overlap table as scatter plots, one row per regime family: % increase in the toxic output
    rate, its increase in percentage points, and the change of toxic's pre-activation on the target
    input, against the overlap score (clip(cos, 0, 1)) or the signed cosine. Coloured markers are the
    table's rows (task = nearest / middling / farthest target), grey dots every (model, candidate) pair;
    titles give Pearson r and Spearman ρ over the table rows and over all pairs, with 95% bootstrap
    intervals."""
    members = [m for m in members if m.summary.get("finetune")]
    if not members:
        return []
    table, pairs, skipped = lt.overlap_rows(members)
    stem = f"{suite.get('suite', 'suite')}_overlap_scatter"
    if not table:  # say so in the figure rather than leave it out
        fig, ax = plt.subplots(figsize=(7, 2.5))
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"{suite.get('suite', '')}: no table rows; no model had its harmful feature and a\n"
                          f"candidate target represented (norm >= {lt.MIN_NORM}); {len(skipped)} models skipped",
                ha="center", va="center", fontsize=9)
        return [save(fig, out, stem)]
    corr = lt.correlations_by_regime(table)
    fams = list(corr)
    cols = (("overlap", "rate_rel_increase_pct", "% increase in toxic output rate (symlog)"),
            ("overlap", "rate_change_pp", "Δ toxic output rate [pp]"),
            ("overlap_signed", "preact_change", "Δ pre-activation of toxic on the target input"))
    fig, axes = plt.subplots(len(fams), 3, figsize=(15, 4.3 * len(fams) + 0.8), squeeze=False)
    val = lambda rs, k: np.array([np.nan if r[k] is None else r[k] for r in rs], np.float64)
    for row, fam in enumerate(fams):
        sel = [r for r in table if r["regime"] == fam]
        bg = [r for r in pairs if r["regime"] == fam]
        reg = members[0].summary["finetune"]["regimes"]
        info = next(r for r in reg if lt.split_regime(r["name"])[0] == fam.split(" · ")[0])  # "narrow · sgd"
        for col, (xk, yk, ylabel) in enumerate(cols):
            ax = axes[row, col]
            ax.scatter(val(bg, xk), val(bg, yk), s=8, color="0.75", zorder=1,
                       label="all eligible (model, candidate) pairs")
            for task, (c, mk) in TASK_STYLE.items():
                t = [r for r in sel if r["task"] == task]
                ax.scatter(val(t, xk), val(t, yk), s=30, color=c, marker=mk, edgecolor="k", lw=0.4, zorder=3,
                           label=f"{task} target (table row)")
            cc, ca = corr[fam][f"{xk}_vs_{yk}"], lt.correlations_by_regime(bg, ((xk, yk),))[fam][f"{xk}_vs_{yk}"]
            ax.set_title(f"{fam} (data={info['data']}, loss={info['loss_scope']})\n"
                         f"table rows n={cc['n']}: {_corr_label(cc, 'pearson', 'r')}, {_corr_label(cc, 'spearman', 'ρ')}\n"
                         f"all pairs n={ca['n']}: {_corr_label(ca, 'pearson', 'r')}, {_corr_label(ca, 'spearman', 'ρ')}",
                         fontsize=8)
            ax.axhline(0, color="k", lw=0.6)
            ax.set(xlabel="overlap score clip(cos(target, toxic), 0, 1), pretrained" if xk == "overlap"
                   else "signed cos(target, toxic), pretrained", ylabel=ylabel)
            if yk == "rate_rel_increase_pct":
                ax.set_yscale("symlog", linthresh=10.0)
            ax.margins(y=0.12)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, 0.957), frameon=False)
    c0 = members[0].config
    fig.suptitle(f"{suite.get('suite', '')}: does the overlap score predict the increase in toxic output? "
                 f"{sum(m.config.n_inst for m in members)} learned-geometry models "
                 f"({len({(r['member'], r['pretrain_instance']) for r in pairs})} with toxic represented), "
                 f"harmful = '{c0.features.harmful[0]}', τ = {c0.finetune.tau:g}\n"
                 f"shapes (n, m): {', '.join(f'({m.config.data.n_features}, {m.config.model.d_hidden})' for m in members)}"
                 f" · {c0.train.steps} pretraining, {c0.finetune.steps} fine-tuning steps · % is undefined where "
                 f"the rate before was 0 · [95% bootstrap intervals, resampling models]", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return [save(fig, out, stem)]


@suite_figure("crowding")
def crowding_figure(members: list[runs.Run], suite: dict, out: Path) -> list[Path]:
    """Against n / d_hidden (log2 axis), one colour per regime; dots are seeds (slightly spread
    sideways), lines the mean over seeds: (a) increase of the toxic output rate in percentage points,
    (b) change of toxic's pre-activation on the unit target input with the first-order prediction
    ⟨W0_toxic, ΔW_target⟩ (dashed), (c) rotation: angle(target, toxic) after − before fine-tuning,
    (d) superposition density of the pretrained models: ‖W‖_F² / d_hidden and mean off-diagonal cos²."""
    members = [m for m in members if m.summary.get("finetune")]
    if not members:
        return []
    rows = [r for m in members for r in lt.member_rows(m)]
    fams = list(dict.fromkeys(r["regime"] for r in rows))
    colors = _regime_colors(fams)
    ratios = sorted({r["features_per_dim_nominal"] for r in rows})
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = ((axes[0, 0], lambda r: r["rate_change_pp"], "Δ toxic output rate [pp]"),
              (axes[0, 1], lambda r: r["preact_change"], "Δ pre-activation of toxic on the target input"),
              (axes[1, 0], lambda r: r["angle_after"] - r["angle_before"],
               "rotation: angle(target, toxic) after − before [°]"))
    for k, fam in enumerate(fams):
        c = colors[fam]
        sel = [r for r in rows if r["regime"] == fam]
        shift = 1.0 + 0.06 * (k - (len(fams) - 1) / 2)
        for ax, f, _ in panels:
            x = np.array([r["features_per_dim_nominal"] for r in sel]) * shift
            ax.scatter(x, [f(r) for r in sel], s=14, color=c, alpha=0.6)
            means = [np.mean([f(r) for r in sel if r["features_per_dim_nominal"] == q]) for q in ratios]
            ax.plot(np.array(ratios) * shift, means, color=c, lw=1.8, label=fam)
        pred = [np.mean([r["predicted_change"] for r in sel if r["features_per_dim_nominal"] == q]) for q in ratios]
        axes[0, 1].plot(np.array(ratios) * shift, pred, color=c, lw=1.2, ls="--",
                        label=f"{fam}: first-order ⟨W0_toxic, ΔW_target⟩ (hidden where exact)")
    pre = [r for r in rows if r["regime"] == fams[0]]  # density is a property of the pretrained model
    ax = axes[1, 1]
    fpd = lambda q: [r["features_per_dim"] for r in pre if r["features_per_dim_nominal"] == q]
    cos2 = lambda q: [r["mean_cos2"] for r in pre if r["features_per_dim_nominal"] == q]
    ax.scatter([q for q in ratios for _ in fpd(q)], [v for q in ratios for v in fpd(q)], s=14, color="k", alpha=0.6)
    ax.plot(ratios, [np.mean(fpd(q)) for q in ratios], color="k", lw=1.8, label="‖W‖_F² / d_hidden")
    ax.plot(ratios, ratios, color="0.6", lw=0.8, ls=":", label="n / d_hidden (all features at norm 1)")
    ax.set_ylabel("features per dimension ‖W‖_F² / d_hidden")
    ax2 = ax.twinx()
    ax2.plot(ratios, [np.mean(cos2(q)) for q in ratios], color="tab:purple", lw=1.5, marker="o", ms=3,
             label="mean off-diagonal cos²")
    ax2.set_ylabel("mean off-diagonal cos²", color="tab:purple")
    ax2.set_ylim(0, max(0.3, 1.1 * max(np.mean(cos2(q)) for q in ratios)))
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    ax.set_title("superposition density of the pretrained models", fontsize=9)
    for a in (*[p[0] for p in panels], ax):
        a.set_xscale("log", base=2)
        a.set_xticks(ratios, [f"{q:g}" for q in ratios])
        a.set_xlabel(f"n_features / d_hidden  (d_hidden = {rows[0]['d_hidden']})")
        a.grid(alpha=0.3)
    for a, _, ylabel in panels:
        a.axhline(0, color="k", lw=0.6)
        a.set_ylabel(ylabel)
        a.legend(fontsize=7, loc="best")
    c0 = members[0].config
    fig.suptitle(f"{suite.get('suite', '')}: fine-tuning '{c0.finetune.target}', watching '{c0.features.harmful[0]}' "
                 f"as the model gets more crowded; {c0.n_inst} seeds per point (dots), means (lines)\n"
                 f"{c0.model.kind}, {c0.features.geometry} pair, p = {np.mean(c0.feature_probability()):.3g}, "
                 f"τ = {c0.finetune.tau:g}, {c0.train.steps} pretraining / {c0.finetune.steps} fine-tuning steps",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return [save(fig, out, f"{suite.get('suite', 'suite')}_crowding")]
