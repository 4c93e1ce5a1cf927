"""toymodels.stats against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- point correlations -----------------------------------------------------------------------------------
def test_pearson_spearman_hand_cases():
    x = [1, 2, 3, 4, 5]
    assert stats.pearson(x, [2, 4, 6, 8, 10]) == pytest.approx(1.0)
    assert stats.pearson(x, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # scipy.stats.spearmanr's documented example (ties: ranks of y are 1, 2, 3.5, 5, 3.5)
    assert stats.spearman(x, [5, 6, 7, 8, 7]) == pytest.approx(scipy.stats.spearmanr(x, [5, 6, 7, 8, 7]).statistic)
    assert math.isnan(stats.pearson(x, [1, 1, 1, 1, 1]))
    assert math.isnan(stats.spearman([1.0, np.nan], [2.0, 3.0]))   # one finite pair only


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 10_000))
def test_spearman_is_invariant_to_monotone_maps(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=30), rng.normal(size=30)
    rho = stats.spearman(x, y)
    assert stats.spearman(np.exp(x), y**3) == pytest.approx(rho, abs=1e-12)
    assert stats.spearman(-x, y) == pytest.approx(-rho, abs=1e-12)
    assert -1.0 <= stats.pearson(x, y) <= 1.0
    assert stats.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=1e-12)
    assert rho == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)


# --- correlations and their bootstrap intervals -------------------------------------------------------------------------------------
def test_bootstrap_interval_covers_the_true_correlation_on_synthetic_data():
    # bivariate normal with ρ = 0.6: population Pearson 0.6, Spearman (6/π) arcsin(ρ/2) = 0.582.
    rho, n, trials = 0.6, 80, 20
    true = {"pearson": rho, "spearman": 6 / np.pi * np.arcsin(rho / 2)}
    covered = {k: 0 for k in true}
    widths = {k: [] for k in true}
    for t in range(trials):
        xy = np.random.default_rng(1000 + t).multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
        for stat, value in true.items():
            ci = stats.correlation_ci(xy[:, 0], xy[:, 1], stat, n_resamples=1000, seed=t)
            point = stats.CORRELATIONS[stat][0](xy[:, 0], xy[:, 1])
            assert ci["lo"] <= point <= ci["hi"] and ci["n_valid"] == 1000
            covered[stat] += ci["lo"] <= value <= ci["hi"]
            widths[stat].append(ci["hi"] - ci["lo"])
    for stat in true:
        assert covered[stat] >= 16, (stat, covered[stat])  # nominal 95%: 19 of 20 expected
        # and not trivially wide: the normal-theory 95% width at n = 80 is about 0.28
        assert 0.15 < np.mean(widths[stat]) < 0.45, (stat, np.mean(widths[stat]))


def test_bootstrap_interval_narrows_with_more_data_and_is_reproducible():
    rng = np.random.default_rng(7)
    x = rng.normal(size=400)
    y = 0.5 * x + rng.normal(size=400)
    small = stats.correlation_ci(x[:50], y[:50], "pearson", seed=3)
    large = stats.correlation_ci(x, y, "pearson", seed=3)
    assert large["hi"] - large["lo"] < 0.6 * (small["hi"] - small["lo"])
    assert stats.correlation_ci(x, y, "spearman", seed=3) == stats.correlation_ci(x, y, "spearman", seed=3)
    assert stats.correlation_ci(x, y, "spearman", seed=3)["lo"] != stats.correlation_ci(x, y, "spearman", seed=4)["lo"]


def test_bootstrap_drops_non_finite_pairs_and_degenerate_resamples():
    x = np.array([0.0, 0.0, 0.0, 0.0, 1.0, np.nan])
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    ci = stats.correlation_ci(x, y, "pearson", n_resamples=500, seed=0)
    # 5 finite pairs; a resample without the one x = 1 has constant x (probability (4/5)^5 = 0.33)
    assert 0 < ci["n_valid"] < 500
    assert abs(ci["n_valid"] / 500 - (1 - 0.8**5)) < 0.08
    const = stats.correlation_ci(np.zeros(6), y, "spearman")
    assert math.isnan(const["lo"]) and math.isnan(const["hi"]) and const["n_valid"] == 0
    assert math.isnan(stats.correlation_ci([1.0], [2.0])["lo"])


@settings(deadline=None, max_examples=25)
@given(st.lists(st.integers(-3, 3), min_size=7, max_size=7), st.lists(st.integers(-3, 3), min_size=7, max_size=7),
       st.lists(st.lists(st.integers(0, 3), min_size=7, max_size=7), min_size=3, max_size=3))
def test_weighted_correlations_equal_scipys_on_repeated_pairs(xs, ys, ws):
    # few distinct values: many ties; zero weights drop pairs; some resamples are constant (NaN)
    x, y, w = np.array(xs, np.float64), np.array(ys, np.float64), np.array(ws, np.float64)
    for k in range(len(w)):
        rx, ry = np.repeat(x, w[k].astype(int)), np.repeat(y, w[k].astype(int))
        np.testing.assert_allclose(stats.weighted_ranks(x, w)[k][w[k] > 0],
                                   scipy.stats.rankdata(rx)[np.cumsum(w[k])[w[k] > 0].astype(int) - 1])
        for weighted, single in ((stats.weighted_pearson, stats.pearson), (stats.weighted_spearman, stats.spearman)):
            np.testing.assert_allclose(weighted(x, y, w)[k], single(rx, ry), atol=1e-12, equal_nan=True)


def test_cluster_bootstrap_of_repeated_rows_equals_the_pair_bootstrap_of_the_originals():
    # every observation appears three times (three rows of one model): resampling the groups must give
    # exactly the pair bootstrap of the originals, while resampling rows would pretend to 3x the data.
    rng = np.random.default_rng(5)
    x = rng.normal(size=30)
    y = 0.4 * x + rng.normal(size=30)
    x3, y3, g3 = np.repeat(x, 3), np.repeat(y, 3), np.repeat(np.arange(30), 3)
    for stat in ("pearson", "spearman"):
        ref = stats.correlation_ci(x, y, stat, seed=2)
        clustered = stats.correlation_ci(x3, y3, stat, seed=2, groups=g3)
        assert (clustered["lo"], clustered["hi"]) == pytest.approx((ref["lo"], ref["hi"]), abs=1e-12)
        assert clustered["n_units"] == 30
        naive = stats.correlation_ci(x3, y3, stat, seed=2)
        assert naive["hi"] - naive["lo"] < 0.75 * (ref["hi"] - ref["lo"])  # too narrow, as expected


def test_correlation_reports_both_statistics_with_intervals():
    x = np.arange(10.0)
    c = stats.correlation(x, x**3, n_resamples=200)
    assert c["n"] == 10 and c["spearman"] == pytest.approx(1.0) and 0.85 < c["pearson"] < 1.0
    assert c["spearman_ci"] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert c["pearson_ci"][0] <= c["pearson"] <= c["pearson_ci"][1]


# --- the paired test behind every directional word ---------------------------------------------------------
def test_paired_is_a_t_interval_over_cluster_means_and_counts_each_cluster_once():
    import scipy.stats as ss

    rng = np.random.default_rng(3)
    clusters = np.repeat(np.arange(6), [1, 5, 2, 8, 3, 1])        # unequal runs per model
    d = rng.normal(0.3, 0.2, len(clusters)) + 0.5 * (clusters % 2)
    p = stats.paired(d, clusters=clusters)
    means = np.array([d[clusters == g].mean() for g in range(6)])
    ci = ss.ttest_1samp(means, 0.0).confidence_interval(0.95)
    assert p["n_clusters"] == 6 and p["n_values"] == len(d)
    assert abs(p["mean"] - means.mean()) < 1e-12
    assert np.allclose(p["ci95"], [ci.low, ci.high], atol=1e-12)
    # copying a cluster's runs many times changes nothing: a cluster is one unit of evidence
    dup = stats.paired(np.concatenate([d, np.repeat(d[clusters == 3], 10)]),
                       clusters=np.concatenate([clusters, np.full(10 * 8, 3)]))
    assert np.allclose(dup["ci95"], p["ci95"], atol=1e-12)


def test_paired_direction_needs_an_interval_that_excludes_zero():
    assert stats.paired([0.1, 0.2, 0.15, 0.12])["direction"] == "up"
    assert stats.paired([-0.1, -0.2, -0.15])["direction"] == "down"
    assert stats.paired([0.3, -0.2, 0.1])["direction"] == "no evidence"
    assert stats.paired([0.3])["direction"] == "no evidence" and stats.paired([0.3])["ci95"] is None
    two = stats.paired([1.0, 2.0, 3.0], [0.5, 1.0, 1.0])        # treated − control, pair by pair
    assert abs(two["mean"] - 7 / 6) < 1e-12 and two["n_clusters"] == 3
    assert stats.fmt_paired(two).endswith("(G=3)")


def test_mean_present_is_nanmean_without_the_empty_slice_warning():
    import warnings

    a = np.array([[1.0, np.nan, 2.0], [3.0, np.nan, np.nan], [5.0, np.nan, 4.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = stats.mean_present(a, 0)
    np.testing.assert_allclose(m[[0, 2]], [3.0, 3.0], rtol=0, atol=1e-15)
    assert np.isnan(m[1])
    np.testing.assert_allclose(stats.mean_present(a, 1), [1.5, 3.0, 4.5], rtol=0, atol=1e-15)
