"""Figures from arrays: give W (or curves), get a matplotlib Figure. In a notebook the Figure shows
inline; ``fig.savefig(path)`` writes it. No run directory is needed, and no pyplot state is touched
(:mod:`.registry`). The file-writing figures of :mod:`.tms` and :mod:`.lab` call these.

    import toymodels as tm
    fig = tm.plot_features_in_2d(W)                      # W (n_inst, 2, n) or (2, n)
    fig = tm.plot_finetune_2d(W_before, W_after, names=["helpful", "toxic"], colors=...)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .registry import new_figure, plt

HELPFUL_COLOR, HARMFUL_COLOR, BENIGN_COLOR = "#1f77b4", "#d62728", "#9a9a9a"


def _as_instances(W) -> np.ndarray:
    W = np.asarray(W, np.float64)
    if W.ndim == 2:
        W = W[None]
    if W.ndim != 3 or W.shape[1] != 2:
        raise ValueError(f"W has shape {W.shape}: a 2-D hidden space needs (2, n_features) or "
                         f"(n_inst, 2, n_features)")
    return W


def _check_len(arg: str, seq, n: int, what: str) -> None:
    """A per-feature (or per-panel) argument of the wrong length is a one-line ValueError naming it, not an
    IndexError deep inside matplotlib."""
    if seq is not None and len(seq) != n:
        raise ValueError(f"{arg} has {len(seq)} entries; W has {n} {what}: give one per {what[:-1]} "
                         f"(e.g. {arg}=[...{n} items])")


def draw_feature_lines(ax, W: np.ndarray, colors, markers=None, lim: float = 1.3) -> None:
    """Each column W_i (2,) of a 2-D hidden space as a line from the origin, on a faint unit circle."""
    from matplotlib.collections import LineCollection

    markers = markers or ["o"] * W.shape[1]
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="0.88", lw=0.8, zorder=0)
    ax.add_collection(LineCollection([[(0, 0), (x, y)] for x, y in W.T], colors=colors, linewidths=1.6))
    for mk in dict.fromkeys(markers):  # one scatter call per marker shape
        sel = [j for j, m in enumerate(markers) if m == mk]
        ax.scatter(W[0, sel], W[1, sel], color=[colors[j] for j in sel], marker=mk, s=18, zorder=3)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    ax.set_axis_off()


def plot_features_in_2d(W, *, colors=None, markers=None, titles: Sequence[str] | None = None, gram: bool = True,
                        title: str = "", max_cols: int = 10) -> Figure:
    """The TMS §Demonstrating Superposition picture: per instance, each feature's column W_i of a 2-D
    hidden space as a line from the origin (top) and the Gram matrix WᵀW (bottom: diagonal ‖W_i‖²,
    off-diagonal the interference).

    W: (2, n) or (n_inst, 2, n). ``colors``: a tuple of one colour per feature for every instance, or a
    list with one such list per instance (default: viridis by feature index); ``markers`` likewise;
    ``titles`` one per instance."""
    W = _as_instances(W)
    n_inst, _, n = W.shape
    if colors is None:
        cmap = plt.get_cmap("viridis")
        colors = tuple(cmap(j / max(n - 1, 1)) for j in range(n))
    per_inst = lambda v, i: v[i] if v is not None and isinstance(v[0], list) else v  # per instance: a list
    for arg, v in (("colors", colors), ("markers", markers)):
        if v is not None and len(v) and isinstance(v[0], list):
            _check_len(arg, v, n_inst, "instances")
            for row in v:
                _check_len(arg + "[i]", row, n, "features")
        else:
            _check_len(arg, v, n, "features")
    _check_len("titles", titles, n_inst, "instances")
    cols = min(n_inst, max_cols)
    blocks = int(np.ceil(n_inst / cols))
    rows = 2 if gram else 1
    vmax = max(1.0, float(np.abs(np.einsum("imn,imk->ink", W, W)).max()))
    height = (2.8 if gram else 1.7) * blocks + 0.9
    fig = new_figure(figsize=(1.75 * cols + 0.8, height))
    gs = fig.add_gridspec(rows * blocks, cols + 1, height_ratios=([1.5, 1.1] if gram else [1.5]) * blocks,
                          width_ratios=[1] * cols + [0.08], hspace=0.12, wspace=0.15, top=1 - 0.75 / height)
    im = None
    for i in range(n_inst):
        b, c = divmod(i, cols)
        ax = fig.add_subplot(gs[rows * b, c])
        draw_feature_lines(ax, W[i], per_inst(colors, i), per_inst(markers, i))
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
        if gram:
            ax = fig.add_subplot(gs[rows * b + 1, c])
            im = ax.imshow(W[i].T @ W[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel("WᵀW", fontsize=9)
    if gram:
        fig.colorbar(im, cax=fig.add_subplot(gs[1, cols])).ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def draw_arrows(ax, W, names, colors, *, alpha=1.0, lw=1.8, label=True, ls="-", skip_label=BENIGN_COLOR):
    """Arrows from the origin to each column of W (2, n), labelled with ``names`` unless their colour is
    ``skip_label`` (the benign features)."""
    for j in range(W.shape[1]):
        c = colors[j]
        ax.annotate("", xy=(W[0, j], W[1, j]), xytext=(0, 0),
                    arrowprops={"arrowstyle": "-|>", "color": c, "lw": lw, "alpha": alpha, "ls": ls,
                                "shrinkA": 0, "shrinkB": 0})
        if label and c != skip_label:
            ax.text(W[0, j] * 1.08, W[1, j] * 1.08 + 0.04, names[j], color=c, fontsize=8, ha="center", alpha=alpha)


def square_axes(ax, lim: float) -> None:
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="#eeeeee", lw=0.6, zorder=0)
    ax.axvline(0, color="#eeeeee", lw=0.6, zorder=0)
    ax.set_xticks([])
    ax.set_yticks([])


def feature_colors(names: Sequence[str], target: str, harmful: Sequence[str]) -> list[str]:
    """Blue for the target, red for harmful features, grey for the rest (the lab's colours)."""
    return [HELPFUL_COLOR if n == target else HARMFUL_COLOR if n in harmful else BENIGN_COLOR for n in names]


def plot_finetune_2d(W_before, W_after, *, names: Sequence[str], colors: Sequence[str] | None = None,
                     titles: Sequence[str] | None = None, title: str = "") -> Figure:
    """Feature vectors of a 2-D hidden space before (faint, dashed) and after (solid) fine-tuning, one
    panel per pair; W_before, W_after: (2, n) or (k, 2, n); ``colors`` one per feature (default:
    :func:`feature_colors` with the first name as target and the second as harmful)."""
    W0, W1 = _as_instances(W_before), _as_instances(W_after)
    if W0.shape != W1.shape:
        raise ValueError(f"W_before has shape {W0.shape} and W_after {W1.shape}; they must match")
    if isinstance(names, str):
        raise ValueError(f"names={names!r} is a string; give a list with one name per feature")
    _check_len("names", names, W0.shape[2], "features")
    _check_len("colors", colors, W0.shape[2], "features")
    _check_len("titles", titles, W0.shape[0], "panels")
    colors = colors or feature_colors(names, names[0], names[1:2])
    lim = 1.15 * max(np.abs(W0).max(), np.abs(W1).max())
    fig, axes = plt.subplots(1, len(W0), figsize=(3.3 * len(W0), 3.9), squeeze=False)
    for k, ax in enumerate(axes[0]):
        draw_arrows(ax, W0[k], names, colors, alpha=0.35, lw=1.4, label=False, ls="--")
        draw_arrows(ax, W1[k], names, colors)
        square_axes(ax, lim)
        if titles is not None:
            ax.set_title(titles[k], fontsize=7.5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.9) if title else None)
    return fig


def plot_loss(steps, losses, *, title: str = "", log: bool = True) -> Figure:
    """Loss curves, one per instance: ``steps`` (T,), ``losses`` (T, n_inst)."""
    losses = np.asarray(losses, np.float64).reshape(len(steps), -1)
    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("viridis")
    for i in range(losses.shape[1]):
        ax.plot(steps, losses[:, i], color=cmap(i / max(losses.shape[1] - 1, 1)), lw=1)
    ax.set(xscale="log" if log else "linear", yscale="log" if log else "linear", xlabel="step",
           ylabel="loss (mean over log window)", title=title)
    return fig
