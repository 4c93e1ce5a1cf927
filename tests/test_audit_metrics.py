"""The audit's metrics on constructed cases with known answers (numpy only, fast)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from toymodels.audit import metrics
from toymodels.audit.crosscoder import score_one


def test_mcc_of_a_permuted_rescaled_identity_is_one():
    rng = np.random.default_rng(0)
    n = 6
    F = np.eye(n)                                                   # true features: the axes (d = n)
    D = np.diag(rng.uniform(0.1, 5.0, n)) @ np.eye(n)[rng.permutation(n)]   # rows: permuted, rescaled
    assert metrics.mcc(D, F) == pytest.approx(1.0)
    assert metrics.mean_max_cosine(D, F) == pytest.approx(1.0)
    flipped = D.copy()
    flipped[1] *= -1               # non-negative features: a latent along −F_j does not represent feature j
    assert metrics.mcc(flipped, F) == pytest.approx((n - 1) / n)
    assert metrics.mcc(flipped, F, signed=False) == pytest.approx(1.0)
    extra = np.vstack([D, rng.normal(size=(4, n))])                 # more latents than features: still 1
    assert metrics.mcc(extra, F) == pytest.approx(1.0)
    latent, value = metrics.match(D, F)
    assert np.allclose(value, 1.0) and sorted(latent) == list(range(n))


def test_mcc_of_random_directions_is_near_zero():
    rng = np.random.default_rng(1)
    d, n = 2000, 10
    F = rng.normal(size=(d, n))
    D = rng.normal(size=(n, d))
    assert metrics.mcc(D, F) < 0.1 and metrics.mcc(D, F, signed=False) < 0.1
    assert metrics.mean_max_cosine(D, F, signed=False) < 0.1


def test_mcc_counts_missing_and_dead_latents_as_zero():
    F = np.eye(3)
    D = np.eye(3)[:2]                      # two latents for three features
    assert metrics.mcc(D, F) == pytest.approx(2 / 3)
    assert metrics.mcc(np.eye(3), F, alive=[True, False, True]) == pytest.approx(2 / 3)
    assert metrics.mcc(np.eye(3), F, features=[0, 1]) == pytest.approx(1.0)


def test_hungarian_is_one_to_one_where_max_is_not():
    F = np.array([[1.0, 0.9], [0.0, 0.436]])         # two features 26° apart
    D = np.array([[0.96, 0.28], [0.0, 1.0]])         # one latent between them, one far from both
    # the max counts the in-between latent twice; the matching has to give feature 0 or 1 the far latent
    assert metrics.mean_max_cosine(D, F) == pytest.approx((0.96 + 0.986) / 2, abs=2e-3)
    assert metrics.mcc(D, F) == pytest.approx((0.96 + 0.436) / 2, abs=2e-3)


def _auroc_bruteforce(s, y):
    pos, neg = [a for a, b in zip(s, y) if b], [a for a, b in zip(s, y) if not b]
    return np.mean([1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg)])


def test_auroc_known_answers():
    y = [0, 0, 1, 1, 0, 1]
    assert metrics.auroc([1, 2, 3, 4, 0, 5], y) == 1.0               # a perfect score
    assert metrics.auroc([-1, -2, -3, -4, 0, -5], y) == 0.0          # perfectly wrong
    assert metrics.auroc([7] * 6, y) == 0.5                          # constant: chance
    assert np.isnan(metrics.auroc([1, 2, 3], [1, 1, 1]))             # one class only
    rng = np.random.default_rng(2)
    for _ in range(5):
        s = rng.integers(0, 5, 30).astype(float)                     # many ties
        yy = rng.integers(0, 2, 30)
        assert metrics.auroc(s, yy) == pytest.approx(_auroc_bruteforce(s, yy))
    assert metrics.auroc([1, None, 3, float("nan")], [0, 1, 1, 0]) == 1.0   # missing scores dropped


def test_auroc_ci_brackets_the_estimate_and_resamples_clusters():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    s = y + rng.normal(0, 1.0, 80)
    a = metrics.auroc(s, y)
    lo, hi = metrics.auroc_ci(s, y)
    assert lo < a < hi
    # 12 items each repeated 8 times: resampling items counts 96 where resampling clusters counts 12
    y12, s12 = np.array([0, 1] * 6), np.array([0, 1] * 6) + rng.normal(0, 1.0, 12)
    rep, clusters = np.repeat(s12, 8), np.repeat(np.arange(12), 8)
    lo_i, hi_i = metrics.auroc_ci(rep, np.repeat(y12, 8))
    lo_c, hi_c = metrics.auroc_ci(rep, np.repeat(y12, 8), clusters=clusters)
    assert hi_c - lo_c > 1.5 * (hi_i - lo_i)
    assert metrics.auroc_ci([1, 2, 3, 4], [0, 0, 1, 1]) == [1.0, 1.0]
    assert metrics.auroc_ci([1, 2], [1, 1]) is None


def test_precision_recall_at_k():
    s = [0.9, 0.8, 0.1, 0.7, 0.2]
    rel = [1, 0, 0, 1, 1]
    assert metrics.precision_recall_at_k(s, rel, 1) == (1.0, 1 / 3)
    assert metrics.precision_recall_at_k(s, rel, 3) == (2 / 3, 2 / 3)
    # two latents of one feature: recall counts the feature once
    p, r = metrics.precision_recall_at_k(s, rel, 2, item_of=[4, 4, -1, 7, 9])
    assert p == 0.5 and r == pytest.approx(1 / 3)


def test_best_threshold_accuracy_and_calibration():
    s = [0.1, 0.2, 0.3, 0.8, 0.9, 0.4]
    y = [0, 0, 0, 1, 1, 0]
    acc = metrics.best_threshold_accuracy(s, y)
    assert acc["accuracy"] == 1.0 and 0.4 <= acc["threshold"] < 0.8 and acc["base_rate"] == pytest.approx(4 / 6)
    rng = np.random.default_rng(4)
    x = rng.normal(size=400)
    yy = (rng.uniform(size=400) < 1 / (1 + np.exp(-3 * x))).astype(int)
    cal = metrics.calibration(x, yy, clusters=np.arange(400) // 10)
    assert cal["brier"] < cal["brier_base_rate"]
    assert len(cal["bins"]) == 5 and all(abs(b["predicted"] - b["observed"]) < 0.15 for b in cal["bins"])


def test_crosscoder_scoring_of_a_perfect_diff():
    """Decoders equal to the true columns: the amplified feature's latent changes most, and is found."""
    W0 = np.eye(3)[:, :3] * np.array([1.0, 0.9, 1.1])
    W1 = W0.copy()
    W1[:, 1] *= 1.5                                       # feature 1 amplified by 50%
    D0, D1 = W0.T.copy(), W1.T.copy()
    change = (np.linalg.norm(D1, axis=1) - np.linalg.norm(D0, axis=1)) / (np.linalg.norm(D1, axis=1)
                                                                         + np.linalg.norm(D0, axis=1))
    out = score_one(change, D0, D1, W0, W1, np.ones(3, bool), amplified=0.1)
    assert out["amplified"] == [1] and out["auroc"] == 1.0
    assert out["precision_at_1"] == 1.0 and out["recall_at_1"] == 1.0 and out["top_latent_feature"] == 1
    assert out["n_exclusive_new"] == 0


def test_hungarian_matches_brute_force_on_small_cases():
    """MCC is the best one-to-one assignment: equal to the maximum over all injections of features into
    latents (brute force), and invariant to permuting the latents."""
    rng = np.random.default_rng(5)
    for (L, n, d), signed in itertools.product([(3, 3, 2), (4, 3, 3), (5, 4, 3), (3, 4, 2)], [True, False]):
        for _ in range(3):
            D, F = rng.normal(size=(L, d)), rng.normal(size=(d, n))
            C = metrics.cosines(D, F, signed)                       # (L, n)
            best = 0.0
            for perm in itertools.permutations(range(max(L, n)), n):  # feature j -> latent perm[j] (>= L: none)
                best = max(best, sum(C[p, j] for j, p in enumerate(perm) if p < L) / n)
            assert metrics.mcc(D, F, signed=signed) == pytest.approx(best, abs=1e-12)
            assert metrics.mcc(D[rng.permutation(L)], F, signed=signed) == pytest.approx(best, abs=1e-12)


def test_auroc_equals_mann_whitney_u():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(6)
    for _ in range(5):
        y = rng.integers(0, 2, 40).astype(bool)
        s = np.round(rng.normal(size=40) + y, 1)                     # rounded: ties
        u = mannwhitneyu(s[y], s[~y], alternative="two-sided").statistic
        assert metrics.auroc(s, y) == pytest.approx(u / (y.sum() * (~y).sum()), abs=1e-12)
