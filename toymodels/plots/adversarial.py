"""The ``adversarial`` suite's figure, from its ``summary.json`` only: what the selected and optimised
sets look like against random ones (per feature: how often active, how large when active), and the
toxic rate after fine-tuning on each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import runs
from ..stats import fmt_paired, mean_present
from .registry import plt, save, suite_figure

COLORS = {"random": "0.6", "selected": "tab:red", "optimised": "tab:purple"}


@suite_figure("adversarial_summary")
def adversarial_summary(members: list[runs.Run], suite: dict, out: Path) -> list[Path]:
    path = members[0].path.parent / "summary.json" if members else None
    s = runs.read_json(path, path.parent) if path is not None and path.exists() else None
    geo = [(name, a) for name, a in (s or {}).get("members", {}).items()
           if a.get("set_stats") and any(c.get("defence") == "none" for c in a.get("cells", []))
           and "defences" not in name and "lora" not in name]
    if not geo:
        return []
    fig, axes = plt.subplots(len(geo), 3, figsize=(15, 3.8 * len(geo)), squeeze=False)
    for row, (name, a) in zip(axes, geo):
        names = members[0].summary["features"]["names"] if "features" in members[0].summary else None
        stats = a["set_stats"]
        n = len(next(iter(stats.values()))["active"])
        labels = (list(names) + [f"f{i}" for i in range(len(names), n)]) if names else [f"f{i}" for i in range(n)]
        harm = a.get("harmful")
        labels = [f"{x}\n(never active)" if x == harm else x for x in labels]
        by = {}
        for reg, st in stats.items():
            by.setdefault(st["dataset"], []).append(st)
        width = 0.8 / len(by)
        for j, (d, sts) in enumerate(by.items()):
            act = np.mean([x["active"] for x in sts], 0)
            mag = mean_present([[np.nan if v is None else v for v in x["magnitude"]] for x in sts])
            xs = np.arange(n) + (j - (len(by) - 1) / 2) * width
            row[0].bar(xs, act, width, color=COLORS.get(d, "k"), label=f"{d} ({len(sts)} set{'s' if len(sts) > 1 else ''} per model)")
            row[1].bar(xs, mag, width, color=COLORS.get(d, "k"))
        for ax, t in ((row[0], "fraction of samples with the feature active"), (row[1], "mean value when active")):
            ax.set_xticks(range(n), labels)
            ax.set_title(f"{name}: {t}", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        row[0].legend(fontsize=7)
        ref = next(c for c in a["cells"] if c["defence"] == "none")
        ms = list(ref["methods"])
        top = max([1e-9] + [v or 0 for m in ms for v in (ref["methods"][m]["rate_after_random_pct"],
                                                          ref["methods"][m]["rate_after_adversarial_pct"])])
        for j, m in enumerate(ms):
            v = ref["methods"][m]
            diff = v["difference_pp"]
            heights = [v["rate_after_random_pct"] or 0, v["rate_after_adversarial_pct"] or 0]
            row[2].bar([2 * j, 2 * j + 0.8], heights, 0.8, color=[COLORS["random"], COLORS.get(m, "k")])
            for x, h in zip((2 * j, 2 * j + 0.8), heights):
                row[2].text(x, h + 0.01 * top, f"{h:.2f}", ha="center", va="bottom", fontsize=7)
            row[2].text(2 * j + 0.4, 1.08 * top, fmt_paired(diff).replace(" (", " pp\n(") + f", {diff.get('direction', '')}",
                        ha="center", va="bottom", fontsize=7)
        row[2].set_ylim(0, 1.35 * top)
        row[2].set_xticks([2 * j + 0.4 for j in range(len(ms))], [f"random | {m}" for m in ms])
        row[2].set_ylabel("toxic rate after fine-tuning (%)")
        row[2].set_title(f"{name}: toxic rate at gain {a.get('stop_gain')}", fontsize=9)
        row[2].grid(alpha=0.3, axis="y")
    c0 = members[0].config
    fig.suptitle(f"{suite.get('suite', 'adversarial')}: N={c0.attack.n_samples} benign samples per set, pool "
                 f"{c0.attack.pool_size}, {c0.n_inst} models, seed {c0.seed}. Right: above each pair, the adversarial − random "
                 "change of the toxic rate (pp), paired over G models, 95% CI", fontsize=10)
    fig.tight_layout()
    return [save(fig, out, f"{suite.get('suite', 'adversarial')}_adversarial_summary")]
