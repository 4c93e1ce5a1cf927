"""Summary statistics for the lab's tables: spreads, and bootstrap intervals of means.

* :func:`spread`: mean, std, min, max, n of the finite values.
* :func:`mean_ci`: a percentile bootstrap interval of the mean of independent values
  (``scipy.stats.bootstrap``, seeded, so every call gives the same interval).
* :func:`cluster_mean_ci`: the same for values that come in clusters (e.g. the K rotated copies of one
  pretrained model): whole clusters are resampled, so shared structure is not counted as independent
  evidence. scipy has no cluster bootstrap; a resample is written as integer cluster weights w
  (multinomial), and its mean is Σ_g w_g S_g / Σ_g w_g n_g with S_g, n_g the cluster's sum and size.

Resamples: :data:`N_RESAMPLES`, seed :data:`SEED`, level 0.95 unless given.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

N_RESAMPLES = 2000
SEED = 0


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
