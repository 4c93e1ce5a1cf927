"""Figures of the TMS reproduction (Elhage et al. 2022) and the generic loss curve, drawn from a run's
saved files. The 2-D feature picture itself is :func:`toymodels.plots.arrays.plot_features_in_2d`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import runs
from .arrays import draw_feature_lines, plot_features_in_2d, plot_loss
from .registry import figure, plt, run_label, save, suite_figure


# --- generic figures -----------------------------------------------------------------------------
@figure("loss")
def loss_curve(run: runs.Run, out: Path) -> list[Path]:
    """Training loss per instance against step, from metrics.jsonl (log-log)."""
    rows = [r for r in run.metrics if r.get("phase", "pretrain") == "pretrain"]
    if not rows:
        return []
    fig = plot_loss([r["step"] for r in rows], [r["loss"] for r in rows],
                    title=f"training loss, every instance and restart\n{run_label(run)}")
    return [save(fig, out, f"{run.config.name}_loss")]


def _density(run: runs.Run) -> np.ndarray:
    """(n_inst, n_features) feature probability 1 − S, as saved in summary.json."""
    return np.array([s["feature_probability"] for s in run.summary["instances"]], dtype=float)


def _importance(run: runs.Run) -> np.ndarray:
    return np.array([s["importance"] for s in run.summary["instances"]], dtype=float)


def _feature_sets(data_cfg) -> list[tuple[str, list[int]]]:
    """The feature sets in sampling order (correlated, anticorrelated, then independent singletons)."""
    sets, start = [], 0
    for kind in ("correlated", "anticorrelated"):
        for size in getattr(data_cfg, kind):
            sets.append((kind, list(range(start, start + size))))
            start += size
    sets += [("independent", [j]) for j in range(start, data_cfg.n_features)]
    return sets


def _feature_styles(run: runs.Run, i: int) -> tuple[list, list[str]]:
    """Colour and marker per feature of instance i: by feature set when the data has correlated or
    anticorrelated sets (colour = set, marker = slot in the set), else by importance (viridis,
    yellow = most important)."""
    n = run.config.data.n_features
    d = run.config.data
    if d.correlated or d.anticorrelated:
        colors, markers = [None] * n, ["o"] * n
        for k, (_, members) in enumerate(_feature_sets(d)):
            for slot, j in enumerate(members):
                colors[j], markers[j] = plt.get_cmap("tab10")(k % 10), "os^Dv"[slot % 5]
        return colors, markers
    imp = _importance(run)[i]
    span = imp.max() - imp.min()
    cmap = plt.get_cmap("viridis")
    return [cmap((v - imp.min()) / span if span > 1e-9 else 0.0) for v in imp], ["o"] * n


def _panel_grid(n_panels: int, max_cols: int) -> tuple[int, int]:
    cols = min(n_panels, max_cols)
    return cols, int(np.ceil(n_panels / cols))


@figure("geometry_2d")
def geometry_2d(run: runs.Run, out: Path) -> list[Path]:
    """The TMS §Demonstrating Superposition picture of a 2-D hidden space, one column per instance
    (:func:`toymodels.plots.arrays.plot_features_in_2d`): each W_i as a line from the origin, coloured by
    importance (yellow = most important) or, with correlated/anticorrelated sets, by set; below, WᵀW."""
    W = run.weights["W"]
    if W.shape[1] != 2:
        return []
    p = _density(run)
    styles = [_feature_styles(run, i) for i in range(W.shape[0])]
    d = run.config.data
    colour = "feature set, marker = member" if d.correlated or d.anticorrelated else "importance, yellow = most"
    fig = plot_features_in_2d(W, colors=[c for c, _ in styles], markers=[m for _, m in styles],
                              titles=[f"1−S = {p[i].mean():.3g}" for i in range(W.shape[0])],
                              title=f"feature directions W_i in the 2-D hidden space (top; colour = {colour}) and "
                                    f"WᵀW (bottom)\n{run_label(run)}")
    return [save(fig, out, f"{run.config.name}_geometry_2d")]


STICKY_FRACTIONS = {"1": 1.0, "3/4": 0.75, "2/3": 2 / 3, "1/2": 0.5, "2/5": 0.4, "3/8": 0.375, "1/3": 1 / 3}


def _label_guides(ax, fractions: dict[str, float], color: str = "0.55") -> None:
    """Horizontal dashed guide lines with their fraction written at the right edge (axes coords)."""
    for label, y in fractions.items():
        ax.axhline(y, color=color, lw=0.8, ls="--", zorder=0)
        ax.annotate(label, xy=(1.005, y), xycoords=("axes fraction", "data"), fontsize=8, va="center",
                    color="0.3")


@figure("dimensions_per_feature")
def dimensions_per_feature(run: runs.Run, out: Path) -> list[Path]:
    """D* = d_hidden / ‖W‖_F² (hidden dimensions per represented feature) against 1/(1−S), one point per
    instance, with the paper's plateaus at 1, 1/2 (antipodal pairs), 2/5 (pentagons) and 1/3 marked
    (TMS §The Geometry of Superposition, "Feature Dimensionality")."""
    inv_density = 1.0 / _density(run).mean(1)
    d_star = np.array([s["dimensions_per_feature"] for s in run.summary["instances"]])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _label_guides(ax, {"1": 1.0, "1/2": 0.5, "2/5": 0.4, "1/3": 1 / 3})
    ax.plot(inv_density, d_star, "o-", color="k", ms=4, lw=1.2)
    ax.set(xscale="log", ylim=(0, 1.1), xlabel="1/(1−S)  (inverse feature density)",
           ylabel="D* = d_hidden / ‖W‖_F²  (dimensions per feature)",
           title=f"dimensions per feature against sparsity\n{run_label(run)}")
    ax.title.set_fontsize(10)
    return [save(fig, out, f"{run.config.name}_dimensions_per_feature")]


@figure("feature_dimensionality")
def feature_dimensionality_scatter(run: runs.Run, out: Path) -> list[Path]:
    """D_i = ‖W_i‖² / Σ_j (Ŵ_i·W_j)² for every feature of every instance against 1/(1−S), with the D*
    curve and the "sticky" fractions the paper finds D_i clustering at (1 dedicated, 3/4 tetrahedron,
    2/3 triangle, 1/2 antipodal pair, 2/5 pentagon, 3/8 square antiprism, 1/3) (TMS §The Geometry of
    Superposition, "Feature Dimensionality")."""
    p = _density(run)
    D = np.array([s["feature_dimensionality"] for s in run.summary["instances"]])  # (n_inst, n)
    d_star = np.array([s["dimensions_per_feature"] for s in run.summary["instances"]])
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    _label_guides(ax, STICKY_FRACTIONS)
    ax.scatter((1.0 / p).ravel(), D.ravel(), s=9, alpha=0.25, color="tab:blue", lw=0,
               label="D_i, one per feature")
    ax.plot(1.0 / p.mean(1), d_star, "-", color="k", lw=1.2, label="D* (per instance)")
    ax.set(xscale="log", ylim=(-0.03, 1.1), xlabel="1/(1−S)  (inverse feature density)",
           ylabel="feature dimensionality D_i",
           title=f"feature dimensionality of every feature\n{run_label(run)}")
    ax.title.set_fontsize(10)
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    return [save(fig, out, f"{run.config.name}_feature_dimensionality")]


PHASES = (("extra feature not represented", "#d9d9d9"),
          ("extra feature in a dedicated dimension (feature 0 dropped)", "#4c78a8"),
          ("superposition: both represented, antipodal", "#e45756"),
          ("both represented, same direction", "#f2cf5b"))


def classify_phase(W: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Phase of n=2, m=1 models from W (n_inst, 1, 2): 0 extra feature (feature 1) not represented,
    1 feature 1 alone (dedicated dimension), 2 both represented with opposite signs (antipodal
    superposition), 3 both represented with the same sign. Represented means |w| > threshold
    (a represented feature has |w| ≈ 1) (TMS §Superposition as a Phase Change)."""
    w0, w1 = W[:, 0, 0], W[:, 0, 1]
    on0, on1 = np.abs(w0) > threshold, np.abs(w1) > threshold
    return np.where(~on1, 0, np.where(~on0, 1, np.where(np.sign(w0) != np.sign(w1), 2, 3)))


def _log_edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges for a geometric grid: geometric midpoints, extended half a step at both ends."""
    c = np.log(np.asarray(centres, dtype=float))
    mid = (c[1:] + c[:-1]) / 2
    return np.exp(np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]]))


def ideal_phase_losses(density, rel_importance) -> np.ndarray:
    """Loss (summed over features, up to the common 1/n) of the three ideal n=2, m=1 solutions, for
    features active with probability p = density, x ~ U[0, 1] when active, importances (1, r):

      0 feature 1 dropped, W = (1, 0), b_1 = E[x_1] = p/2:     r (p/3 − p²/4)   (its variance)
      1 feature 0 dropped, W = (0, 1), b_0 = p/2:              p/3 − p²/4
      2 antipodal, W = (1, −1), b = 0: error min(x_0, x_1)² when both fire, E = 1/6:   (1 + r) p²/6

    Their argmin gives the analytic phase boundaries p = 4r/(2 + 5r) (0|2), p = 4/(5 + 2r) (1|2) and
    r = 1 (0|1). The trained optimum of phase 2 can tune b and ‖w‖, so these boundaries are approximate
    (TMS §Superposition as a Phase Change compares such a theoretical diagram with the empirical one)."""
    p, r = np.asarray(density, float), np.asarray(rel_importance, float)
    var = p / 3 - p**2 / 4
    return np.stack(np.broadcast_arrays(r * var, var, (1 + r) * p**2 / 6))


@figure("phase_diagram")
def phase_diagram(run: runs.Run, out: Path, threshold: float = 0.5) -> list[Path]:
    """Empirical phase diagram of n=2 features in m=1 dimension (TMS §Superposition as a Phase Change):
    x = feature density 1−S (log, 1 → 0.01, sparser to the right), y = relative importance of the extra
    feature (log, 0.1 → 10), colour = the phase read off the best restart's W (see classify_phase).
    Needs ``meta["grid"]`` with ``relative_importance`` and ``density``; instance = i_imp·n_dens + i_dens.

    When summary.json has the per-instance stationarity numbers (:mod:`toymodels.stationarity`), the
    title's last line gives the largest gradient norm ‖∇L‖ over cells, the largest grad_z and how many
    cells are stationary, and non-stationary cells are crossed out (×): their phase may still change.

    The dashed lines are the ideal solutions' boundaries. On the 16 x 16 grid the exact optimum of the
    expected loss (:func:`toymodels.stationarity.expected_loss_2in1`) has another phase than their argmin
    in 4 cells, all next to the lines (its b and ‖w‖ are tuned, and its superposition phase reaches a
    little further)."""
    grid = (run.config.meta or {}).get("grid")
    W = run.weights["W"]
    if grid is None or W.shape[1:] != (1, 2):
        return []
    imp, dens = np.asarray(grid["relative_importance"]), np.asarray(grid["density"])
    phase = classify_phase(W, threshold).reshape(len(imp), len(dens))
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(6.6, 5.4))
    cmap = ListedColormap([c for _, c in PHASES])
    ax.pcolormesh(_log_edges(dens), _log_edges(imp), phase, cmap=cmap, vmin=-0.5, vmax=len(PHASES) - 0.5,
                  edgecolors="white", linewidth=0.3)
    title = f"phase diagram, 2 features in 1 dimension (best restart per cell)\n{run_label(run)}"
    stationarity = _stationarity_line(run)
    if stationarity is not None:
        line, moving = stationarity
        title += f"\n{line}"
        if moving.any():
            ii, jj = np.nonzero(moving.reshape(len(imp), len(dens)))
            ax.scatter(dens[jj], imp[ii], marker="x", s=40, color="k", linewidths=1.5, zorder=3)
    ax.set(xscale="log", yscale="log", xlim=(dens.max() * 1.15, dens.min() / 1.15),
           xlabel="feature density 1−S  (both features; sparser →)",
           ylabel="relative importance of the extra feature (feature 1)", title=title)
    ax.title.set_fontsize(10)
    # Analytic boundaries between the ideal solutions (ideal_phase_losses), on a fine grid.
    dd, rr = np.meshgrid(np.geomspace(dens.min(), dens.max(), 400), np.geomspace(imp.min(), imp.max(), 400))
    ideal = ideal_phase_losses(dd, rr).argmin(0)
    ax.contour(dd, rr, (ideal == 2).astype(float), levels=[0.5], colors="k", linewidths=1.2, linestyles="--")
    ax.contour(dd, rr, np.where(ideal == 2, np.nan, (ideal == 1).astype(float)), levels=[0.5], colors="k",
               linewidths=1.2, linestyles="--")
    present = sorted(set(phase.ravel().tolist()) | {0, 1, 2})
    handles = [Patch(color=PHASES[k][1], label=PHASES[k][0]) for k in present]
    if stationarity is not None and stationarity[1].any():
        handles.append(plt.Line2D([], [], color="k", marker="x", ls="", label="not stationary (grad_z above threshold)"))
    handles.append(plt.Line2D([], [], color="k", ls="--", lw=1.2,
                              label="analytic boundaries of the ideal solutions (see ideal_phase_losses)"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, ncol=1,
              title=f"represented means |w| > {threshold}", title_fontsize=8)
    return [save(fig, out, f"{run.config.name}_phase_diagram")]


def _stationarity_line(run: runs.Run) -> tuple[str, np.ndarray] | None:
    """(title line, (n_inst,) bool "not stationary") from summary.json's per-instance stationarity
    numbers (:mod:`toymodels.stationarity`), or None for a run saved without them."""
    inst = run.summary.get("instances", [])
    if not inst or any("grad_norm" not in s for s in inst):
        return None
    from ..core.stationarity import STATIONARY_Z

    norm = np.array([s["grad_norm"] for s in inst], float)
    z = np.array([s["grad_z"] for s in inst], float)
    moving = ~np.array([s["stationary"] for s in inst], bool)
    n = int(inst[0]["grad_samples"])
    line = (f"max ‖∇L‖ over cells {norm.max():.1e} (2^{np.log2(n):.0f} fresh samples); "
            f"{len(inst) - moving.sum()}/{len(inst)} cells stationary (grad_z < {STATIONARY_Z:g}), max grad_z {z.max():.1f}")
    return line, moving


def monosemantic_neurons(W: np.ndarray, mono: float = 0.9, alive: float = 1e-2) -> np.ndarray:
    """Which neurons (rows of one instance's W, (m, n)) are monosemantic: one feature holds ≥ ``mono``
    of the neuron's positive loadings Σ_j max(W[k, j], 0)². Positive weights are what a hidden-ReLU
    neuron fires for and writes back; negative ones only inhibit it (§Privileged Basis). Neurons with
    less than ``alive`` positive loading count as not monosemantic."""
    pos = np.maximum(W, 0.0) ** 2
    total = pos.sum(1)
    return (total > alive) & (pos.max(1) >= mono * total)


@figure("neuron_loadings")
def neuron_loadings(run: runs.Run, out: Path, mono: float = 0.9) -> list[Path]:
    """Per-neuron feature loadings of the hidden-ReLU model (TMS §Privileged Basis), one panel per sparsity:
    for each neuron (row of W), its weights W[neuron, j] stacked as bars coloured by feature (yellow = most
    important): positive loadings (what the neuron fires for) solid upwards, negative ones (inhibition)
    pale downwards, clipped at the height of the tallest positive stack (the clipped total is written
    on the bar). Neurons are ordered by their strongest positive feature. Panel titles count the
    monosemantic neurons (see :func:`monosemantic_neurons`) and the features with ‖W_i‖ > 0.5."""
    W = run.weights["W"]
    n_inst, m, n = W.shape
    p = _density(run)
    cmap = plt.get_cmap("viridis")
    colors = [cmap(1.0 - j / max(n - 1, 1)) for j in range(n)]
    cols, rows = _panel_grid(n_inst, 7)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols + 1.2, 3.0 * rows + 1.0), squeeze=False,
                             sharey=True)
    top = max(1.1, float(np.maximum(W, 0).sum(2).max()) * 1.05)
    lim = (-top, top)  # inhibitory stacks can be much taller; they are clipped and their total written
    for i, ax in enumerate(axes.ravel()):
        if i >= n_inst:
            ax.set_axis_off()
            continue
        order = np.lexsort((-W[i].max(1), W[i].argmax(1)))  # by strongest positive feature, then its weight
        Wo = W[i, order]  # (m, n), neurons in drawing order
        for part, alpha in ((np.maximum(Wo, 0), 1.0), (np.minimum(Wo, 0), 0.45)):
            bottom = np.cumsum(part, axis=1) - part  # stack features in order, per neuron
            for j in range(n):
                ax.bar(np.arange(m), part[:, j], bottom=bottom[:, j], color=colors[j], width=0.75, lw=0,
                       alpha=alpha)
        for x, down in enumerate(np.minimum(Wo, 0).sum(1)):
            if down < lim[0]:
                ax.text(x, lim[0] * 0.97, f"{down:.1f}", ha="center", va="bottom", fontsize=6, rotation=90)
        ax.axhline(0, color="k", lw=0.6)
        ax.set(xticks=range(m), xlim=(-0.6, m - 0.4), ylim=lim)
        ax.set_xlabel("neuron", fontsize=8)
        ax.tick_params(labelsize=7)
        n_mono = int(monosemantic_neurons(W[i], mono).sum())
        n_feat = int(np.sum(np.linalg.norm(W[i], axis=0) > 0.5))
        ax.set_title(f"1−S = {p[i].mean():.3g}\n{n_mono}/{m} mono · {n_feat}/{n} feat.", fontsize=8)
    axes[0, 0].set_ylabel("W[neuron, feature], stacked", fontsize=8)
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=colors[j], label=f"feature {j}") for j in range(n)], loc="center right",
               fontsize=7, title="importance ↓", title_fontsize=7, bbox_to_anchor=(1.0, 0.5))
    fig.subplots_adjust(right=1 - 1.1 / (2.1 * cols + 1.2), top=1 - 1.1 / (3.0 * rows + 1.0), wspace=0.12)
    fig.suptitle(f"feature loadings of each hidden neuron: positive (solid) up, inhibitory (pale) down\n"
                 f"mono = monosemantic neurons (one feature ≥ {mono:.0%} of Σ max(w,0)²); "
                 f"feat. = features with "
                 f"‖W_i‖ > 0.5 · {run_label(run)}", fontsize=9)
    return [save(fig, out, f"{run.config.name}_neuron_loadings")]


@suite_figure("correlated_suite")
def correlated_suite(members: list[runs.Run], suite: dict, out: Path) -> list[Path]:
    """TMS §Correlated and Anticorrelated Features: the 2-D feature directions of every member (one row
    each: e.g. two correlated pairs, two anticorrelated pairs, three correlated pairs) at every sparsity
    (one column each). Colour = feature set, marker = member within the set (● first, ■ second)."""
    members = [r for r in members if r.weights["W"].shape[1] == 2]
    if not members:
        return []
    cols = max(r.weights["W"].shape[0] for r in members)
    fig, axes = plt.subplots(len(members), cols, figsize=(1.9 * cols + 1.3, 2.0 * len(members) + 0.8),
                             squeeze=False)
    for row, r in enumerate(members):
        W, p = r.weights["W"], _density(r)
        sets = _feature_sets(r.config.data)
        kinds = [k for k, _ in sets if k != "independent"]
        desc = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
        for i in range(cols):
            ax = axes[row, i]
            if i >= W.shape[0]:
                ax.set_axis_off()
                continue
            colors, markers = _feature_styles(r, i)
            draw_feature_lines(ax, W[i], colors, markers)
            if row == 0:
                ax.set_title(f"1−S = {p[i].mean():.3g}", fontsize=9)
        axes[row, 0].text(-0.12, 0.5, f"{r.config.name}\n({desc} sets,\n{r.config.data.n_features} features)",
                          transform=axes[row, 0].transAxes, ha="right", va="center", fontsize=8)
    c0 = members[0].config
    fig.suptitle(f"correlated and anticorrelated feature sets in 2-D (colour = set, ● ■ = members)\n"
                 f"{suite.get('suite', '')} · {c0.model.kind} m={c0.model.d_hidden} · "
                 f"{c0.train.steps} steps · "
                 f"{c0.train.restarts} restarts · seed {c0.seed}", fontsize=10)
    return [save(fig, out, f"{suite.get('suite', 'suite')}_correlated_suite")]
