"""Summary statistics for the lab's tables: spreads, and bootstrap intervals of means.

* :func:`spread`: mean, std, min, max, n of the finite values.
* :func:`mean_ci`: a percentile bootstrap interval of the mean of independent values
  (``scipy.stats.bootstrap``, seeded, so every call gives the same interval).
* :func:`cluster_mean_ci`: the same for values that come in clusters (e.g. the K rotated copies of one
  pretrained model): whole clusters are resampled, so shared structure is not counted as independent
  evidence. scipy has no cluster bootstrap; a resample is written as integer cluster weights w
  (multinomial), and its mean is Σ_g w_g S_g / Σ_g w_g n_g with S_g, n_g the cluster's sum and size.
* :func:`cluster_t_ci`, :func:`paired`: the one test behind every directional word ("up", "down",
  "cuts"): a t interval over clusters (pretrained models) of the mean per-cluster change, with the
  number of clusters beside it; "no evidence" unless the interval excludes 0.
* :func:`pearson`, :func:`spearman`: ``scipy.stats`` on the finite pairs, NaN when undefined.
* :func:`correlation_ci`, :func:`correlation`: percentile (cluster) bootstrap intervals of a correlation.
  scipy's bootstrap resamples values, not clusters, so these are written out: a resample is again a
  weight vector, and its correlation a weighted one (:func:`weighted_pearson`, :func:`weighted_spearman`).

Resamples: :data:`N_RESAMPLES`, seed :data:`SEED`, level 0.95 unless given.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

N_RESAMPLES = 2000
SEED = 0


def pearson(x, y) -> float:
    """Pearson r of the finite pairs (``scipy.stats.pearsonr``); NaN below 2 pairs or for a constant input."""
    x, y = _pairs(x, y)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(scipy.stats.pearsonr(x, y).statistic)


def spearman(x, y) -> float:
    """Spearman ρ of the finite pairs (``scipy.stats.spearmanr``, average ranks for ties); NaN when
    undefined."""
    x, y = _pairs(x, y)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(scipy.stats.spearmanr(x, y).statistic)


def _pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray([np.nan if v is None else v for v in x], np.float64)
    y = np.asarray([np.nan if v is None else v for v in y], np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def mean_with_ci(values) -> dict:
    """``{"mean", "ci95", "n", "values"}`` of the finite values: a table cell with its interval."""
    v = [float(x) for x in _finite(values)]
    return {"mean": float(np.mean(v)) if v else None, "ci95": mean_ci(v), "n": len(v), "values": v}


def mean_present(a, axis: int = 0) -> np.ndarray:
    """Mean over the non-NaN entries along ``axis``; NaN where there are none (``np.nanmean`` without its
    empty-slice warning: an all-NaN column is expected, e.g. a feature no sample of a set holds)."""
    a = np.asarray(a, dtype=np.float64)
    present = ~np.isnan(a)
    count = present.sum(axis)
    total = np.where(present, a, 0.0).sum(axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _finite(values) -> np.ndarray:
    a = np.asarray([np.nan if v is None else v for v in values], np.float64).ravel()
    return a[np.isfinite(a)]


def spread(values) -> dict:
    """mean, std (population), min, max and n of the finite values (None when there are none)."""
    a = _finite(values)
    if not len(a):
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max()),
            "n": len(a)}


def mean_ci(values, level: float = 0.95, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> list[float] | None:
    """Percentile bootstrap interval [lo, hi] of the mean of the finite ``values``; None below 2 values.
    All-equal values give [v, v]."""
    a = _finite(values)
    if len(a) < 2:
        return None
    if np.all(a == a[0]):
        return [float(a[0]), float(a[0])]
    res = scipy.stats.bootstrap((a,), np.mean, confidence_level=level, n_resamples=n_resamples,
                                method="percentile", rng=np.random.default_rng(seed))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def cluster_mean_ci(values, clusters, level: float = 0.95, n_resamples: int = N_RESAMPLES,
                    seed: int = SEED) -> list[float] | None:
    """Percentile cluster-bootstrap interval of the mean of ``values`` whose i-th value belongs to
    cluster ``clusters[i]``: each resample draws the G clusters with replacement and averages all their
    values. Non-finite values are dropped first; None below 2 clusters."""
    v = np.asarray([np.nan if x is None else x for x in values], np.float64)
    c = np.asarray(clusters)
    ok = np.isfinite(v)
    v, c = v[ok], c[ok]
    labels, idx = np.unique(c, return_inverse=True)
    G = len(labels)
    if G < 2:
        return None
    sums, sizes = np.bincount(idx, v, G), np.bincount(idx, minlength=G).astype(np.float64)
    w = np.random.default_rng(seed).multinomial(G, np.full(G, 1.0 / G), size=n_resamples).astype(np.float64)
    means = (w @ sums) / (w @ sizes)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


# --- the paired test behind every directional claim -------------------------------------------------
def cluster_t_ci(values, clusters, level: float = 0.95) -> dict:
    """A t interval of the mean over clusters.

    The finite ``values`` are averaged per cluster (``clusters[i]`` labels value i), giving G cluster
    means m_g; the estimate is m̄ = mean_g m_g and the interval m̄ ± t_{(1+level)/2, G−1} s / √G with s
    the sample standard deviation of the m_g (``scipy.stats.t``). Each cluster (a pretrained model) counts
    once however many runs it has, so shared structure is not counted as independent evidence. Anything
    that is independent across clusters, such as evaluation error on independent inputs per model
    (:mod:`toymodels.lab.rates`), is part of s and so of the interval. Returns ``{"mean", "ci95",
    "n_clusters", "n_values", "sd_between"}``; ``ci95`` is None below 2 clusters, [m̄, m̄] when s = 0."""
    v = np.asarray([np.nan if x is None else x for x in values], np.float64)
    c = np.asarray([str(x) for x in clusters])
    ok = np.isfinite(v)
    v, c = v[ok], c[ok]
    labels, idx = np.unique(c, return_inverse=True)
    G = len(labels)
    out = {"mean": None, "ci95": None, "n_clusters": G, "n_values": int(len(v)), "sd_between": None}
    if G == 0:
        return out
    means = np.bincount(idx, v, G) / np.bincount(idx, minlength=G)
    m = float(means.mean())
    out["mean"] = m
    if G >= 2:
        sd = float(means.std(ddof=1))
        half = float(scipy.stats.t.ppf((1 + level) / 2, G - 1)) * sd / np.sqrt(G)
        out.update(ci95=[float(m - half), float(m + half)], sd_between=sd)
    return out


def direction(ci, up: str = "up", down: str = "down", none: str = "no evidence") -> str:
    """The word a 95% interval [lo, hi] of a change allows: ``up`` above 0, ``down`` below 0, else ``none``."""
    if not ci:
        return none
    return up if ci[0] > 0 else down if ci[1] < 0 else none


def paired(treated, control=None, clusters=None, level: float = 0.95) -> dict:
    """The paired test: the mean of d_i = treated_i − control_i (or of ``treated`` when it already holds
    changes, ``control`` None), with :func:`cluster_t_ci` over ``clusters`` (default: every pair its own
    cluster), and the direction it allows (:func:`direction`). Pairs with a non-finite side are dropped.
    Returns the interval's dict plus ``values`` (the finite differences), ``direction`` and ``test``."""
    t = np.asarray([np.nan if x is None else x for x in treated], np.float64)
    d = t if control is None else t - np.asarray([np.nan if x is None else x for x in control], np.float64)
    cl = np.arange(len(d)) if clusters is None else np.asarray(clusters)
    out = cluster_t_ci(d, cl, level)
    return out | {"values": [float(x) for x in d if np.isfinite(x)], "direction": direction(out["ci95"]),
                  "test": f"paired mean, t interval over {out['n_clusters']} clusters"}


def fmt_paired(p: dict, spec: str = "+.2f") -> str:
    """``+0.31 [+0.28, +0.34] (G=10)``: a paired estimate as printed beside every claim."""
    if p.get("mean") is None:
        return "n/a"
    ci = p.get("ci95")
    body = f"{p['mean']:{spec}}" + (f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else "")
    return f"{body} (G={p['n_clusters']})"


# --- correlations with (cluster) bootstrap intervals ------------------------------------------------
# A bootstrap resample is written as integer weights w (how often each pair is drawn), so that the
# correlation of a resample is a *weighted* correlation of the original pairs, exactly equal to the
# correlation of the pairs repeated w times (pairs with w = 0 drop out). That makes resampling whole
# groups of pairs (a cluster bootstrap) as cheap as resampling pairs, and needs no ragged arrays.
def weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of x, y (n,) with weights w (B, n) (each row one resample): with m = Σ w x / Σ w,
    r = Σ w (x − m_x)(y − m_y) / sqrt(Σ w (x − m_x)² Σ w (y − m_y)²); NaN where x or y is constant
    among the pairs of positive weight. Equals :func:`pearson` on the pairs repeated w times."""
    x, y = np.broadcast_to(x, w.shape), np.broadcast_to(y, w.shape)
    tot = np.maximum(w.sum(-1, keepdims=True), 1e-300)  # all-zero weights: no pairs, NaN below
    xc = x - (w * x).sum(-1, keepdims=True) / tot
    yc = y - (w * y).sum(-1, keepdims=True) / tot
    sxx, syy = (w * xc**2).sum(-1), (w * yc**2).sum(-1)
    # a spread below 1e-12 of the scale is rounding error of a constant column, not variation
    tiny = 1e-24 * np.maximum((w * x**2).sum(-1), 1e-300), 1e-24 * np.maximum((w * y**2).sum(-1), 1e-300)
    ok = (sxx > tiny[0]) & (syy > tiny[1])
    return np.where(ok, (w * xc * yc).sum(-1) / np.sqrt(np.where(ok, sxx * syy, 1.0)), np.nan)


def weighted_ranks(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average ranks of a (n,) among its pairs repeated w (B, n) times: W_less + (W_equal + 1) / 2 with
    W_less = Σ_j w_j [a_j < a_i] and W_equal = Σ_j w_j [a_j = a_i] (scipy.stats.rankdata's 'average' ties)."""
    less = (a[None, :] < a[:, None]).astype(np.float64)   # (n_i, n_j)
    equal = (a[None, :] == a[:, None]).astype(np.float64)
    return w @ less.T + (w @ equal.T + 1.0) / 2.0


def weighted_spearman(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Spearman ρ with weights w (B, n): weighted Pearson of the weighted average ranks; equals
    equals :func:`spearman` on the pairs repeated w times."""
    return weighted_pearson(weighted_ranks(x, w), weighted_ranks(y, w), w)


CORRELATIONS = {"pearson": (pearson, weighted_pearson), "spearman": (spearman, weighted_spearman)}


def correlation_ci(x, y, stat: str = "pearson", n_resamples: int = N_RESAMPLES, seed: int = SEED,
                 level: float = 0.95, groups=None) -> dict:
    """Percentile bootstrap interval of a correlation between paired samples x, y (n,).

    Pairs with a non-finite x or y are dropped first. Each of ``n_resamples`` resamples draws G units
    with replacement (``np.random.default_rng(seed).multinomial``, so the interval is reproducible):
    the pairs themselves, or, with ``groups`` (n labels), whole groups (a cluster bootstrap, for pairs
    that are not independent, e.g. several rows of one pretrained model). Resamples in which x or y is
    constant have no correlation and are left out (``n_valid`` counts the rest). The interval is the
    ((1 − level)/2, (1 + level)/2) quantiles of the valid resampled statistics. Returns ``{"lo", "hi",
    "n_valid", "n_resamples", "n_units", "level", "seed"}`` (lo = hi = NaN below 2 pairs).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    labels = np.arange(len(x)) if groups is None else np.asarray([str(g) for g in groups])
    x, y, labels = x[ok], y[ok], labels[ok]
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    by_appearance = np.empty(len(first), int)
    by_appearance[np.argsort(first)] = np.arange(len(first))
    unit = by_appearance[inverse]  # units numbered in order of first appearance, not label order
    n_units = len(first)
    out = {"lo": float("nan"), "hi": float("nan"), "n_valid": 0, "n_resamples": n_resamples, "n_units": n_units,
           "level": level, "seed": seed}
    if len(x) < 2:
        return out
    counts = np.random.default_rng(seed).multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_resamples)
    r = CORRELATIONS[stat][1](x, y, counts[:, unit].astype(np.float64))
    r = r[np.isfinite(r)]
    if len(r):
        q = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
        out.update(lo=float(q[0]), hi=float(q[1]), n_valid=len(r))
    return out


def correlation(x, y, groups=None, **bootstrap) -> dict:
    """Pearson and Spearman of the finite pairs with their bootstrap intervals (over ``groups`` when
    given): ``{"n", "n_units", "pearson", "pearson_ci": [lo, hi], "spearman", "spearman_ci", "bootstrap"}``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = int(np.sum(np.isfinite(x) & np.isfinite(y)))
    out = {"n": n}
    for name, (point, _) in CORRELATIONS.items():
        ci = correlation_ci(x, y, name, groups=groups, **bootstrap)
        out[name] = point(x, y)
        out[f"{name}_ci"] = [ci["lo"], ci["hi"]]
        out[f"{name}_ci_valid_resamples"] = ci["n_valid"]
        out["n_units"] = ci["n_units"]
        out["bootstrap"] = {k: ci[k] for k in ("n_resamples", "level", "seed")} | {
            "resampled": "pairs" if groups is None else "groups"}
    return out
