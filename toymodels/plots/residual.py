"""Figure of the residual MLP toy (``residual-mlp``), drawn from the member runs' saved files.

* ``residual_loss``: loss per feature divided by p against the feature probability p, every seed as a dot
  and the mean of each label condition (published labels y = x + ReLU(x), and the clean control) as a
  line, beside the naive baseline p(n − N)/(6n) (50 of 100 ReLUs computed exactly: 1/12) and, dashed, the
  naive solution inside the noisy model (which keeps the embedding's mixing term).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import residual
from ..io import runs
from .registry import plt, save, suite_figure

COLOURS = {"noisy": "tab:red", "clean": "tab:blue"}
LABELS = {"noisy": "published labels  y = x + ReLU(x)", "clean": "clean labels (mixing term removed)"}


def _points(run: runs.Run, suite_summary: dict | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p, loss/p, naive-in-this-model/p) per instance: the loss of the suite's summary.json (per-seed
    inputs) when it is there, else the run's ``eval_loss``."""
    cfg = run.config
    neurons = cfg.model.n_layers * cfg.model.d_mlp
    p = np.array([np.mean(s["feature_probability"]) for s in run.summary["instances"]], np.float64)
    loss = np.array([s["eval_loss"] for s in run.summary["instances"]], np.float64)
    cond = "clean" if cfg.model.clean_labels else "noisy"
    rows = ((suite_summary or {}).get("instances") or {}).get(cond)
    if rows and len(rows) == len(loss):
        loss = np.array([r["loss"] for r in rows], np.float64)
    W = None if cfg.model.clean_labels else run.weights["W"]
    naive = residual.naive_loss(p, cfg.data.n_features, neurons, W)
    return p, loss / p, naive / p


def _seeds(run: runs.Run) -> int:
    p = [np.mean(s["feature_probability"]) for s in run.summary["instances"]]
    return int(residual.seed_of(p).max()) + 1


@suite_figure("residual_loss")
def residual_loss(members: list[runs.Run], suite: dict, out: Path) -> list[Path]:
    members = [m for m in members if m.config.model.kind == "residual_mlp"]
    if not members:
        return []
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    rng = np.random.default_rng(0)  # horizontal jitter only
    path = Path(out).parent / "summary.json"   # the suite's, written before its figures
    summary = runs.read_json(path, Path(out).parent) if path.is_file() else None
    cfg = members[0].config
    ps_all = []
    for m in members:
        cond = "clean" if m.config.model.clean_labels else "noisy"
        p, lp, naive = _points(m, summary)
        ps = np.unique(p)
        ps_all.extend(ps)
        ax.scatter(p * np.exp(rng.uniform(-0.06, 0.06, len(p))), lp, s=10, alpha=0.5, color=COLOURS[cond])
        ax.plot(ps, [lp[p == v].mean() for v in ps], "-o", color=COLOURS[cond], label=LABELS[cond])
        if cond == "noisy":
            ax.plot(ps, [naive[p == v].mean() for v in ps], "--", color=COLOURS[cond], lw=1,
                    label="naive solution in the noisy model (keeps M x)")
    n, neurons = cfg.data.n_features, cfg.model.n_layers * cfg.model.d_mlp
    ax.axhline(residual.naive_loss(1.0, n, neurons), color="k", lw=1,
               label=f"naive baseline: {neurons} of {n} ReLUs exact")
    ax.set_xscale("log")
    ps_all = np.unique(ps_all)
    ax.set_xlim(ps_all.min() / 2, ps_all.max() * 2)
    ax.set_xlabel("feature probability p")
    ax.set_ylabel("loss per feature / p")
    ax.set_title(f"{suite['suite']}: residual MLP, n={n}, width {cfg.model.d_hidden}, "
                 f"{cfg.model.n_layers}×{cfg.model.d_mlp} neurons\n{cfg.train.steps} steps · "
                 f"{_seeds(members[0])} seeds per p and condition (dots; lines: means) · seed {cfg.seed}", fontsize=9)
    ax.legend(fontsize=7.5)
    return [save(fig, out, f"{suite['suite']}_residual_loss")]
