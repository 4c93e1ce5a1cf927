"""Figures of the defences (:mod:`toymodels.defences`), drawn only from saved results (``summary.json``,
``metrics.jsonl``), so ``toymodels plot RUN_DIR`` redraws them.

* ``defence_curves``: toxic output rate and the target's read-out against fine-tuning step, per defence.
* ``defences_table`` (suite): the measured table as a figure — harmful increase with CI, target gain,
  capability cost and compute overhead per defence — and ``defences_table.md`` beside it.
* ``regularisation_pareto``: harmful increase, target gain and capability cost against λ (or the
  fraction), and the trade-off plane with its frontier.
* ``regularisation_cost`` (suite): step-time overhead against n_features, per defence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import defences
from ..io import runs
from .registry import figure, plt, run_label, save, suite_figure

COLORS = {"none": "0.2", "gram_offdiag": "#1f77b4", "gram_offdiag_dual": "#17becf", "soft_orthogonality": "#9467bd",
          "decov": "#8c564b", "targeted_cos": "#d62728", "anchor": "#ff7f0e", "replay": "#2ca02c",
          "filter_geometric": "#e377c2", "filter_random": "#bcbd22", "freeze_harmful": "#7f7f7f",
          "grad_projection": "#000080", "lora": "#17becf"}


def _color(defence: str):
    """A fixed colour per defence; a run-wide setting such as ``none+lora`` gets the setting's colour."""
    return COLORS.get(defence.split("+")[-1] if "+" in defence else defence, "0.5")


def _ft(run: runs.Run) -> dict | None:
    ft = run.summary.get("finetune")
    return ft if ft and "defences" in ft else None


@figure("defence_curves")
def defence_curves(run: runs.Run, out: Path) -> list[Path]:
    """Mean over seeds (per regime) of the harmful feature's toxic output rate and of the target's
    read-out on its unit input, against fine-tuning step, from the probe rows of metrics.jsonl."""
    ft = _ft(run)
    rows = sorted((r for r in run.metrics if r.get("phase") == "finetune" and r.get("kind") == "probe"),
                  key=lambda r: r["step"])
    if ft is None or not rows:
        return []
    steps = np.array([r["step"] for r in rows])
    rate = 100 * np.array([r["rate"] for r in rows], np.float64)[..., 0]   # (T, n_ft)
    readout = np.array([r["target_readout"] for r in rows], np.float64)
    reg_of = np.array([e["regime"] for e in ft["instances"]])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for r in ft["regimes"]:
        sel = reg_of == r["name"]
        kw = {"color": _color(r["defence"]), "lw": 2.4 if r["defence"] == "none" else 1.4,
              "ls": "--" if r["defence"] in ("filter_random", "freeze_harmful") else "-"}
        axes[0].plot(steps, rate[:, sel].mean(1), label=r["name"], **kw)
        axes[1].plot(steps, readout[:, sel].mean(1), **kw)
    axes[0].set(xlabel="fine-tuning step", ylabel=f"toxic output rate P(x'_toxic > {ft['tau']:g} | x_toxic = 0) [%]")
    axes[1].set(xlabel="fine-tuning step", ylabel="target read-out x'_t on its unit input")
    axes[1].axhline(ft.get("gamma") or 0, color="k", lw=0.6, ls=":")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    n = len(reg_of) // max(len(ft["regimes"]), 1)
    fig.suptitle(f"each defence during fine-tuning '{ft['target']}': means over {n} pretrained models\n"
                 f"{run_label(run)}", fontsize=9)
    fig.tight_layout()
    return [save(fig, out, f"{run.config.name}_defence_curves")]


def _errbar(ax, y, stat, color, scale=1.0):
    m = stat.get("mean") if stat else None
    if m is None:
        return
    ci = stat.get("ci95")
    xerr = None if not ci else [[scale * (m - ci[0])], [scale * (ci[1] - m)]]
    ax.errorbar(scale * m, y, xerr=xerr, fmt="o", color=color, ms=5, capsize=3, lw=1.2)


@suite_figure("defences_table")
def defences_table(members: list[runs.Run], suite: dict, out: Path) -> list[Path]:
    """The measured defences table as five aligned panels, one row per defence: change in the toxic
    output rate [pp] with its 95% bootstrap CI over seeds (undefended dashed), target gain relative to
    the paired undefended run, change of the
    benign features' and of the toxic feature's own pretraining loss against the paired undefended
    run, and the measured step-time ratio. Also writes ``defences_table.md`` next to the PNG (the same text as in the run directory)."""
    members = [m for m in members if _ft(m) is not None]
    if not members:
        return []
    rows = defences.table_rows(members)
    n_seeds = members[0].config.n_inst
    out.mkdir(parents=True, exist_ok=True)
    md = defences.markdown_table(rows, n_seeds)
    runs._atomic(out / f"{suite.get('suite', 'defences')}_defences_table.md", lambda f: f.write((md + "\n").encode()))
    ys = np.arange(len(rows))[::-1]
    fig, axes = plt.subplots(1, 5, figsize=(18, 0.36 * len(rows) + 2.4), sharey=True,
                             gridspec_kw={"width_ratios": [1.6, 1, 1.2, 1.2, 1]})
    rows = sorted(rows, key=lambda r: list(dict.fromkeys(x["data"] for x in rows)).index(r["data"]))  # stable
    base = next((r for r in rows if r["defence"] == "none"), None)
    for y, r in zip(ys, rows):
        c = _color(r["defence"])
        _errbar(axes[0], y, r["rate_change_pp"], c)
        _errbar(axes[1], y, r.get("target_gain_vs_baseline"), c)
        _errbar(axes[2], y, r.get("recon_loss_benign_vs_baseline"), c, scale=1e3)
        _errbar(axes[3], y, r.get("harmful_present_loss_vs_baseline"), c, scale=1e3)
        ovh = (r.get("overhead") or {}).get("ratio_median")
        if ovh is not None:
            axes[4].barh(y, ovh, color=c, height=0.6)
            axes[4].text(ovh, y, f" {ovh:.2f}×", va="center", fontsize=7)
        else:
            axes[4].text(1, y, " not measured", va="center", fontsize=7)
    for b in (r for r in rows if r["defence"] == "none"):  # each data regime's undefended value, over its rows
        span = [y for y, r in zip(ys, rows) if r["data"] == b["data"]]
        axes[0].plot([b["rate_change_pp"]["mean"]] * 2, [min(span) - 0.5, max(span) + 0.5], color="0.3", ls="--",
                     lw=0.8)
    if base is not None:
        axes[1].axvline(1.0, color="0.3", ls="--", lw=0.8)
    for ax, x0 in zip(axes, (0, None, 0, 0, 1)):
        if x0 is not None:
            ax.axvline(x0, color="k", lw=0.6)
        ax.grid(alpha=0.3, axis="x")
    several = len({r["data"] for r in rows}) > 1
    axes[0].set_yticks(ys, [(f"[{r['data']}] " if several else "") + f"{r['name']} ({defences.strength_label(r)})"
                            for r in rows], fontsize=8)
    for y, r, nxt in zip(ys, rows, rows[1:]):  # a line between data regimes
        if nxt["data"] != r["data"]:
            for ax in axes:
                ax.axhline(y - 0.5, color="0.4", lw=0.8)
    axes[0].set_xlabel("Δ toxic output rate [pp], 95% CI over seeds\n(dashed: undefended)")
    axes[1].set_xlabel("target gain / paired undefended gain\n(95% CI; undefended gain in the .md)")
    axes[2].set_xlabel("Δ benign features' loss vs undefended\n(×10⁻³, paired, 95% CI)")
    axes[3].set_xlabel("Δ toxic's loss when present\nvs undefended (×10⁻³; > 0: worse)")
    axes[4].set_xlabel("step time / undefended\nstep (median of pairs)")
    c0 = members[0].config
    fig.suptitle(f"defences, measured: fine-tuning '{c0.finetune.target}' on "
                 f"{' / '.join(dict.fromkeys(r['data'] for r in rows))} data, harmful '{c0.features.harmful[0]}', "
                 f"{n_seeds} seeds · {c0.model.kind} n={c0.data.n_features} "
                 f"m={c0.model.d_hidden} · {c0.finetune.steps} steps · seed {c0.seed}", fontsize=9)
    fig.tight_layout()
    return [save(fig, out, f"{suite.get('suite', 'defences')}_defences_table")]


def _pareto_points(rows: dict) -> dict[str, list[tuple[float, dict]]]:
    """Per defence, [(strength, row)] sorted by strength."""
    out: dict[str, list] = {}
    for r in rows.values():
        if r["defence"] != "none":
            out.setdefault(r["defence"], []).append((r["strength"], r))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in out.items()}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (lower x, higher y), sorted by x."""
    idx = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])


@suite_figure("regularisation_pareto")
def regularisation_pareto(members: list[runs.Run], suite: dict, out: Path) -> list[Path]:
    """Top row, against strength (λ for loss terms, log scale; fraction for data defences): the change
    in toxic output rate [pp] (95% CI band), the target gain relative to the paired undefended run, and
    the change of the benign features' pretraining loss against it; the undefended value dashed. Bottom: the
    trade-off plane, Δ toxic rate against target gain, every (defence, strength) a point coloured by
    defence and sized by its benign-feature cost, with the frontier (no point has both less harm and
    more gain)."""
    members = [m for m in members if _ft(m) is not None]
    if not members:
        return []
    ft, run = _ft(members[0]), members[0]
    rows = {f"{m.config.name}/{k}": v for m in members for k, v in _ft(m)["defences"]["regimes"].items()}
    base = next(r for r in rows.values() if r["defence"] == "none")
    series = _pareto_points(rows)
    fig = plt.figure(figsize=(15, 10))
    gs = fig.add_gridspec(2, 6, height_ratios=[1, 1.25])
    top = [fig.add_subplot(gs[0, 0:2]), fig.add_subplot(gs[0, 2:4]), fig.add_subplot(gs[0, 4:6])]
    bottom = [fig.add_subplot(gs[1, 0:3]), fig.add_subplot(gs[1, 3:6])]
    metrics = (("rate_change_pp", "Δ toxic output rate [pp]", 1.0),
               ("target_gain_vs_baseline", "target gain / paired undefended gain", 1.0),
               ("recon_loss_benign_vs_baseline", "Δ benign features' loss vs undefended (×10⁻³)", 1e3))
    for name, pts in series.items():
        if defences.DEFENCES[name].plugs != "loss":
            continue
        s = np.array([p[0] for p in pts])
        for ax, (key, label, scale) in zip(top, metrics):
            m = np.array([np.nan if (p[1].get(key) or {}).get("mean") is None else scale * p[1][key]["mean"]
                          for p in pts])
            ax.plot(s, m, "o-", color=_color(name), ms=3.5, lw=1.3, label=name)
            ci = [(p[1].get(key) or {}).get("ci95") for p in pts]
            if all(v is not None for v in ci):
                ax.fill_between(s, [scale * v[0] for v in ci], [scale * v[1] for v in ci], color=_color(name),
                                alpha=0.12, lw=0)
    for ax, (key, label, scale) in zip(top, metrics):
        b = (base.get(key) or {}).get("mean")
        if b is not None:
            ax.axhline(scale * b, color="0.2", ls="--", lw=1, label="undefended")
        ax.set(xscale="log", xlabel="λ (loss-term defences)", ylabel=label)
        ax.grid(alpha=0.3)
    top[0].axhline(0, color="k", lw=0.6)
    top[0].legend(fontsize=7)
    # bottom left: the data defences against their fraction
    ax = bottom[0]
    for name, pts in series.items():
        if defences.DEFENCES[name].plugs != "data":
            continue
        s = np.array([p[0] for p in pts])
        m = np.array([p[1]["rate_change_pp"]["mean"] for p in pts])
        g = np.array([p[1]["target_gain"]["mean"] for p in pts])
        ax.plot(100 * s, m, "o-", color=_color(name), label=f"{name}: Δ toxic rate [pp]")
        for xi, mi, gi in zip(100 * s, m, g):
            ax.annotate(f"{gi:.1f}×", (xi, mi), textcoords="offset points", xytext=(3, 4), fontsize=6.5,
                        color=_color(name))
    ax.axhline(base["rate_change_pp"]["mean"], color="0.2", ls="--", lw=1, label="undefended")
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xlabel="fraction of samples replayed / dropped [%]", ylabel="Δ toxic output rate [pp]",
           title="data defences (labels: target gain)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    # bottom right: the trade-off plane
    ax = bottom[1]
    pts_all, labels, cost = [], [], []
    for name, pts in series.items():
        for s, r in pts:
            x, y = r["rate_change_pp"]["mean"], (r.get("target_gain_vs_baseline") or {}).get("mean")
            if x is None or y is None:
                continue
            pts_all.append((x, y))
            labels.append((name, s))
            cc = (r.get("recon_loss_benign_vs_baseline") or {}).get("mean")
            cost.append(0.0 if cc is None else cc)
    cost = np.clip(np.array(cost), 0, None)
    size = 14 + 160 * cost / max(cost.max(), 1e-12)
    for (x, y), (name, s), sz in zip(pts_all, labels, size):
        ax.scatter(x, y, s=sz, color=_color(name), alpha=0.7, edgecolors="none")
    front = pareto_front(pts_all)
    ax.plot([pts_all[i][0] for i in front], [pts_all[i][1] for i in front], color="k", lw=1, zorder=0,
            label="frontier (no setting has both less harm and more gain)")
    for j, i in enumerate(front):
        name, s = labels[i]
        ax.annotate(f"{name}@{s:g}", pts_all[i], textcoords="offset points", xytext=(4, -10 - 9 * (j % 3)),
                    fontsize=6.5, arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"})
    ax.scatter(base["rate_change_pp"]["mean"], 1.0, marker="*", s=200, color="0.2", label="undefended", zorder=5)
    for name in series:
        ax.scatter([], [], color=_color(name), label=name)
    ax.axvline(0, color="k", lw=0.6)
    ax.set(xlabel="Δ toxic output rate [pp] (mean over seeds)", ylabel="target gain / paired undefended gain",
           title="trade-off: every defence and strength (dot size = benign features' loss cost, if any)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, ncol=2, loc="lower left")
    n = len(ft["instances"]) // max(len(ft["regimes"]), 1)
    fig.suptitle(f"regularisation against harm and capability: {n} pretrained models per point, fine-tuning "
                 f"'{ft['target']}' on '{ft['regimes'][0]['data']}' data\n{run_label(run)} "
                 f"(members: {', '.join(m.config.name for m in members)})", fontsize=9)
    fig.tight_layout()
    return [save(fig, out, f"{suite.get('suite', run.config.name)}_regularisation_pareto")]


@suite_figure("regularisation_cost")
def regularisation_cost(members: list[runs.Run], suite: dict, out: Path) -> list[Path]:
    """Left: the median step-time ratio (defended / undefended fine-tuning step, interleaved pairs in
    one process) against n_features, one line per defence, with the seed's "30–50%" band shaded.
    Right (log-log): the milliseconds a defence adds to a step (median of per-pair differences, so the
    machine's varying load cancels; differences below the noise, ≤ 0, are not drawn) and the undefended
    step itself, with ∝ n and ∝ n² guides through the largest size."""
    timed = [m for m in members if _ft(m) is not None and _ft(m)["defences"].get("overhead")]
    if not timed:  # a run without timings still gets its figure, saying so
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no timings in these runs (finetune.overhead_repeats = 0)", ha="center", va="center")
        ax.set_axis_off()
        return [save(fig, out, f"{suite.get('suite', 'cost')}_regularisation_cost")]
    members = sorted(timed, key=lambda m: m.config.data.n_features)
    ns = np.array([m.config.data.n_features for m in members])
    over = [_ft(m)["defences"]["overhead"] for m in members]
    names = list(over[0])
    defence_of = {r["name"]: r["defence"] for r in _ft(members[0])["regimes"]}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    axes[0].axhspan(1.3, 1.5, color="#f2cf5b", alpha=0.35, label="the seed's claim: +30–50% (no source)")
    for nm in names:
        d = defence_of[nm]
        ratio = np.array([o[nm]["ratio_median"] for o in over])
        axes[0].plot(ns, ratio, "o-", color=_color(d), label=nm, lw=2 if d == "none" else 1.4)
        extra = np.array([o[nm]["extra_ms_median"] for o in over])
        if d != "none":
            ok = extra > 0  # below the noise a difference can be negative: not drawn on a log axis
            axes[1].plot(ns[ok], extra[ok], "o-", color=_color(d), label=f"{nm}: added ms/step", lw=1.2)
    ref = np.array([np.median(np.concatenate([o[nm]["reference_step_ms"] for nm in names])) for o in over])
    axes[1].plot(ns, ref, "s-", color="k", lw=2.2, label="undefended step (median of all pairs)")
    for p_, ls in ((1, ":"), (2, "--")):  # guides through the undefended step at the largest n
        axes[1].plot(ns, ref[-1] * (ns / ns[-1]) ** p_, color="0.5", ls=ls, lw=0.9, label=f"∝ n{'²' if p_ == 2 else ''}")
    axes[0].axhline(1, color="k", lw=0.6)
    c0 = members[0].config
    axes[0].set(xscale="log", xlabel="n_features", ylabel="step time / undefended step (median of pairs)",
                title=f"overhead (d_hidden = {c0.model.d_hidden}, batch {c0.finetune.batch_size})")
    axes[1].set(xscale="log", yscale="log", xlabel="n_features", ylabel="ms per fine-tuning step",
                title="what each defence adds to a step (median of per-pair differences)")
    for ax in axes:
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5)
    fig.suptitle(f"compute cost of the defences against n_features: {c0.finetune.overhead_repeats} interleaved timed "
                 f"pairs of chunks per point, compile excluded · {c0.model.kind} · {c0.n_inst} instance · "
                 f"{suite.get('suite', '')}", fontsize=9)
    fig.tight_layout()
    return [save(fig, out, f"{suite.get('suite', 'cost')}_regularisation_cost")]


@suite_figure("regularisation_pretrain")
def regularisation_pretrain(members: list[runs.Run], suite: dict, out: Path) -> list[Path]:
    """Per model shape (rows), against the pretraining λ: cos(target, harmful) as pretraining left it,
    the pretraining loss, features represented, and the toxic rate change of the (undefended)
    fine-tuning on narrow (solid) and task (dashed) data; one line per penalty, means with 95% CIs."""
    shapes = list(dict.fromkeys((m.config.data.n_features, m.config.model.d_hidden) for m in members))
    if not members:
        return []
    fig, axes = plt.subplots(len(shapes), 4, figsize=(17, 3.9 * len(shapes)), squeeze=False)
    for row, shape in enumerate(shapes):
        same = [m for m in members if (m.config.data.n_features, m.config.model.d_hidden) == shape]
        all_rows = [defences.pretraining_rows(m) for m in same]  # bootstrap CIs: compute once per member
        for k, (m, rows) in enumerate(zip(same, all_rows)):
            lams = [r["lambda"] for r in rows]
            x = np.arange(len(lams))
            color = _color(m.config.train.penalty)

            def line(ax, stats, ls="-", label=None, x=x, color=color, scale=1.0):
                mean = np.array([np.nan if s is None or s["mean"] is None else scale * s["mean"] for s in stats])
                lo = np.array([scale * s["ci95"][0] if s and s.get("ci95") else np.nan for s in stats])
                hi = np.array([scale * s["ci95"][1] if s and s.get("ci95") else np.nan for s in stats])
                ax.plot(x, mean, ls, color=color, marker="o", ms=3.5, lw=1.6, label=label)
                ax.fill_between(x, lo, hi, color=color, alpha=0.12, lw=0)

            line(axes[row, 0], [r["cos"] for r in rows], label=m.config.train.penalty)
            for i, r in enumerate(rows):  # the seeds: in 2-D the pair lands in one of few slots, so the mean hides them
                v = np.asarray(r["cos"]["values"])
                axes[row, 0].scatter(i + 0.07 * (k - (len(same) - 1) / 2) + np.zeros_like(v), v,
                                     s=9, color=color, alpha=0.45, lw=0)
            line(axes[row, 1], [r["recon_loss"] for r in rows], scale=1e3)
            line(axes[row, 2], [r["n_represented"] for r in rows])
            for reg, ls in (("narrow", "-"), ("task", "--")):
                if reg in rows[0]["rate_change_pp"]:
                    line(axes[row, 3], [r["rate_change_pp"][reg] for r in rows], ls=ls)
        r0 = all_rows[0]
        labels = [f"{r['lambda']:g}" for r in r0]
        titles = (f"cos({r0[0]['target']}, {r0[0]['harmful']}) after pretraining", "pretraining loss (×10⁻³)",
                  "features represented (‖W_i‖ > 0.5)",
                  f"Δ {r0[0]['harmful']} rate in fine-tuning [pp]\n(solid: narrow data, dashed: task data)")
        for col, ax in enumerate(axes[row]):
            ax.set_xticks(np.arange(len(labels)), labels)
            ax.set_xlabel("pretraining penalty λ")
            ax.set_title(f"{shape[0]} features in {shape[1]}-D: {titles[col]}", fontsize=9)
            ax.grid(alpha=0.3)
        axes[row, 3].axhline(0, color="k", lw=0.6)
        axes[row, 0].axhline(0, color="k", lw=0.6)
    axes[0, 0].legend(fontsize=8)
    c = members[0].config
    fig.suptitle(f"{suite.get('suite', 'regularisation-pretrain')}: geometric penalties in pretraining, then undefended "
                 f"fine-tuning of '{c.finetune.target}' (γ = {c.finetune.gamma:g}, {c.finetune.steps} steps); means over "
                 f"{(c.meta or {}).get('seeds', '?')} seeds per λ with 95% CIs · {c.train.steps} pretraining steps · "
                 f"seed {c.seed}", fontsize=10)
    fig.tight_layout()
    return [save(fig, out, f"{suite.get('suite', 'regularisation-pretrain')}_regularisation_pretrain")]
