"""The robustness figure: spill-over against the target's gain, per regime, optimiser and orientation.

``robustness`` reads only ``summary["finetune"]["by_group"]`` (the curves of
:func:`toymodels.lab.progress.gain_curve` and :func:`toymodels.lab.progress.step_curve`), so ``toymodels plot
RUN_DIR`` redraws it. Columns are regimes; rows are the change of the toxic output rate [pp] against
the target's gain (matched progress) and against the fine-tuning step (matched steps, which shows what
happens after the gain has levelled off), the change of toxic's pre-activation on the target input, and
the angle between target and toxic, against the gain. Colour = optimiser; solid = axis-aligned, dashed
= the same models with the hidden space rotated. A gain point is drawn only where every run of the group reached it, so a mean is never
taken over a changing set of runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import runs
from .registry import figure, plt, run_label, save

# (curve, key, y label): rows of the figure; "gain" curves are against the target's gain, "step" against
# the fine-tuning step (what a fixed-step comparison sees, and where late reversals show)
PANELS = (("gain_curve", "rate_change_pp", "Δ toxic rate [pp]"),
          ("step_curve", "rate_change_pp", "Δ toxic rate [pp]"),
          ("gain_curve", "preact_change", "Δ toxic pre-activation\non target input"),
          ("gain_curve", "angle_deg", "angle(target, toxic) [°]"))


@figure("robustness")
def robustness(run: runs.Run, out: Path) -> list[Path]:
    ft = run.summary.get("finetune")
    if ft is None or not ft.get("by_group"):
        return []
    harm = ft["harmful"][0]
    groups = list(ft["by_group"].values())
    if "gain_curve" not in groups[0]["harmful"][harm]:
        return []
    regimes = list(dict.fromkeys(g["regime"] for g in groups))
    opts = list(dict.fromkeys(g["optimizer"] for g in groups))
    cmap = plt.get_cmap("tab10")
    color = {o: cmap(i % 10) for i, o in enumerate(opts)}
    fig, axes = plt.subplots(len(PANELS), len(regimes), figsize=(3.6 * len(regimes), 2.6 * len(PANELS)),
                             squeeze=False)
    for c, reg in enumerate(regimes):
        for g in (g for g in groups if g["regime"] == reg):
            for r, (which, key, _) in enumerate(PANELS):
                curve = g["harmful"][harm][which]
                y = np.array([np.nan if v is None else v for v in curve[key]], np.float64)
                if which == "gain_curve":
                    x = np.array(curve["gain"])
                    y[np.array(curve["n"]) != g["n"]] = np.nan   # only gains that every run of the group reached
                else:
                    x = np.array(curve["step"])
                axes[r, c].plot(x, y, color=color[g["optimizer"]], lw=1.6,
                                ls="-" if g["orientation"] == "axis" else "--",
                                label=f"{g['optimizer']} ({'axis' if g['orientation'] == 'axis' else 'rotated'})")
        first = next(g for g in groups if g["regime"] == reg)
        axes[0, c].set_title(f"{reg} (data={first['data']}, loss={first['loss_scope']})", fontsize=9)
        for r, (which, key, _) in enumerate(PANELS):
            if key != "angle_deg":
                axes[r, c].axhline(0, color="0.6", lw=0.8)
            axes[r, c].set_xlabel("fine-tuning step" if which == "step_curve" else "target gain (read-out / pretrained)",
                                  fontsize=8)
    for r, (_, _, ylabel) in enumerate(PANELS):
        axes[r, 0].set_ylabel(ylabel, fontsize=9)
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False)
    fig.suptitle(f"spill-over onto '{harm}' against the gain of '{ft['target']}': optimiser (colour) x orientation "
                 f"(solid axis-aligned, dashed rotated, {ft.get('orientations', 1) - 1} rotations); means over runs\n"
                 f"{run_label(run)}", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return [save(fig, out, f"{run.config.name}_robustness")]
