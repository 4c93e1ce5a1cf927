"""toymodels.stats against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from toymodels import stats


def test_spread_ignores_non_finite_and_none():
    s = stats.spread([1.0, None, 3.0, float("nan"), 5.0])
    assert s == {"mean": 3.0, "std": pytest.approx(np.std([1, 3, 5])), "min": 1.0, "max": 5.0, "n": 3}
    assert stats.spread([None])["mean"] is None


def test_mean_ci_is_scipys_percentile_bootstrap_and_covers_the_mean():
    x = np.random.default_rng(1).normal(2.0, 1.0, 40)
    lo, hi = stats.mean_ci(x)
    ref = scipy.stats.bootstrap((x,), np.mean, n_resamples=stats.N_RESAMPLES, method="percentile",
                                rng=np.random.default_rng(stats.SEED)).confidence_interval
    assert (lo, hi) == (ref.low, ref.high)
    assert lo < x.mean() < hi
    # about ±1.96 σ/√n for a normal sample
    assert hi - lo == pytest.approx(2 * 1.96 * x.std(ddof=1) / np.sqrt(40), rel=0.2)
    assert stats.mean_ci([1.0]) is None and stats.mean_ci([2.0, 2.0]) == [2.0, 2.0]


def test_cluster_ci_resamples_clusters_not_values():
    """10 clusters of 20 identical values each: the values are not 200 independent draws, and the cluster
    interval is as wide as the interval of the 10 cluster means, about √20 times the naive one."""
    rng = np.random.default_rng(0)
    means = rng.normal(0.0, 1.0, 10)
    values = np.repeat(means, 20)
    clusters = np.repeat(np.arange(10), 20)
    lo, hi = stats.cluster_mean_ci(values, clusters, n_resamples=4000)
    lo_m, hi_m = stats.mean_ci(means, n_resamples=4000)
    assert hi - lo == pytest.approx(hi_m - lo_m, rel=0.15)
    naive = stats.mean_ci(values, n_resamples=4000)
    assert (hi - lo) > 3.0 * (naive[1] - naive[0])
    assert stats.cluster_mean_ci([1.0, 2.0], [0, 0]) is None
