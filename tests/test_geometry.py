"""Properties of the geometry metrics (TMS §The Geometry of Superposition), checked against closed
forms and float64 numpy references.

Scaling laws under W → cW (c > 0), used below:
  invariant:            D_i, the cosine matrix, n_represented(W, t) = n_represented(cW, c t)
  scale by c:           feature norms
  scale by c²:          interference (off-diagonal WᵀW), polysemanticity, ‖W‖_F²
  scale by 1/c²:        dimensions per feature D* = m / ‖W‖_F²
Everything is invariant under W → OW for an orthogonal O (it only sees WᵀW).
"""

from __future__ import annotations

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from toymodels.core import geometry


class _Jitted:
    """The geometry functions, each jitted: one compile per shape instead of one per primitive.
    (``test_vmap_over_instances_equals_per_instance`` calls them un-jitted.)"""

    def __init__(self):
        self._cache = {}

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._cache:
            self._cache[name] = jax.jit(getattr(geometry, name))
        return self._cache[name]


g = _Jitted()

# A few fixed shapes (d_hidden, n_features): every new shape recompiles, so values are drawn, shapes not.
SHAPES = [(2, 5), (3, 7), (5, 20), (20, 200)]
RTOL, ATOL = 2e-4, 1e-5  # float32 against float64 references

seeds = st.integers(0, 2**32 - 1)
shapes = st.sampled_from(SHAPES)
scales = st.floats(0.05, 20.0)


def random_W(seed: int, shape, spread: float = 1.0) -> np.ndarray:
    """Gaussian W with column norms spread over a factor ~e^(2·spread): (m, n) float32."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(shape) * np.exp(spread * rng.uniform(-1, 1, shape[1]))
    return W.astype(np.float32)


def random_orthogonal(seed: int, m: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((m, m)))
    return q * np.sign(np.diag(r))  # Haar-distributed; det ±1 both allowed


# --- float64 references, written from the definitions ----------------------------------------
def ref_dimensionality(W: np.ndarray) -> np.ndarray:
    """D_i = ‖W_i‖² / Σ_j (Ŵ_i·W_j)², 0 for a zero column."""
    W = W.astype(np.float64)
    out = np.zeros(W.shape[1])
    for i in range(W.shape[1]):
        norm = np.linalg.norm(W[:, i])
        if norm == 0:
            continue
        u = W[:, i] / norm
        out[i] = norm**2 / np.sum((u @ W) ** 2)
    return out


def ref_polysemanticity(W: np.ndarray) -> np.ndarray:
    W = W.astype(np.float64)
    out = np.zeros(W.shape[1])
    for i in range(W.shape[1]):
        norm = np.linalg.norm(W[:, i])
        if norm == 0:
            continue
        u = W[:, i] / norm
        out[i] = sum((u @ W[:, j]) ** 2 for j in range(W.shape[1]) if j != i)
    return out


def close(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)


# --- closed forms ------------------------------------------------------------------------------
@settings(max_examples=30)
@given(k=st.integers(3, 8), phase=st.floats(0, 2 * np.pi), radius=scales, embed_seed=seeds)
def test_regular_polygon_has_dimensionality_two_over_k(k, phase, radius, embed_seed):
    """A regular k-gon (k >= 3) of equal-norm features: Σ_j cos²(θ_j − θ_i) = k/2, so D_i = 2/k,
    in the 2-D plane or embedded isometrically in a 5-D hidden space."""
    theta = phase + 2 * np.pi * np.arange(k) / k
    W2 = radius * np.stack([np.cos(theta), np.sin(theta)])
    close(g.feature_dimensionality(W2.astype(np.float32)), np.full(k, 2.0 / k))
    E = random_orthogonal(embed_seed, 5)[:, :2]  # orthonormal columns: an isometry R² → R⁵
    close(g.feature_dimensionality((E @ W2).astype(np.float32)), np.full(k, 2.0 / k))
    # a k-gon fills its plane: Σ D_i = 2
    assert abs(float(g.feature_dimensionality(W2.astype(np.float32)).sum()) - 2.0) < 1e-4


@settings(max_examples=25)
@given(seed=seeds, radius=scales)
def test_antipodal_pair_is_one_half_and_orthogonal_feature_is_one(seed, radius):
    """W = [v, −v, u] with u ⟂ v: the pair shares a dimension (D = 1/2 each), u has its own (D = 1)."""
    Q = random_orthogonal(seed, 3)
    v, u = radius * Q[:, 0], 0.7 * Q[:, 1]
    W = np.stack([v, -v, u], axis=1).astype(np.float32)
    close(g.feature_dimensionality(W), [0.5, 0.5, 1.0])
    C = np.asarray(g.cosine_matrix(W))
    close(C[0, 1], -1.0)
    close(C[0, 2], 0.0)


@settings(max_examples=25)
@given(seed=seeds, shape=st.sampled_from([(3, 3), (5, 2), (20, 20)]))
def test_orthogonal_features_have_dimensionality_one(seed, shape):
    """n <= m features along orthogonal directions, any positive norms: D_i = 1, no
    polysemanticity, the identity as cosine matrix, and no interference."""
    m, n = shape
    rng = np.random.default_rng(seed)
    W = (random_orthogonal(seed, m)[:, :n] * rng.uniform(0.1, 3.0, n)).astype(np.float32)
    close(g.feature_dimensionality(W), np.ones(n))
    close(g.polysemanticity(W), np.zeros(n), atol=1e-5)
    close(g.cosine_matrix(W), np.eye(n), atol=1e-5)
    close(g.interference(W), np.zeros((n, n)), atol=1e-5)


@settings(max_examples=25)
@given(seed=seeds, shape=shapes, which=st.integers(0, 4))
def test_zero_feature_has_zero_dimensionality_and_changes_nothing_else(seed, shape, which):
    """An unrepresented (zero) feature: D = 0, norm 0, no polysemanticity, a zero cosine row; and
    it leaves every other feature's D_i unchanged (it adds 0 to their denominators)."""
    W = random_W(seed, shape)
    W[:, which] = 0.0
    D = np.asarray(g.feature_dimensionality(W))
    assert D[which] == 0.0
    assert float(g.feature_norms(W)[which]) == 0.0
    assert float(g.polysemanticity(W)[which]) == 0.0
    C = np.asarray(g.cosine_matrix(W))
    assert np.all(C[which] == 0.0) and np.all(C[:, which] == 0.0)
    assert np.all(np.isfinite(C)) and np.all(np.isfinite(D))
    keep = np.arange(shape[1]) != which
    close(D[keep], g.feature_dimensionality(W[:, keep]))


# --- references and bounds -----------------------------------------------------------------------
@settings(max_examples=30)
@given(seed=seeds, shape=shapes, spread=st.floats(0.0, 3.0))
def test_dimensionality_and_polysemanticity_match_reference_and_sum_at_most_d_hidden(seed, shape, spread):
    """D_i and polysemanticity equal the float64 definitions; 0 < D_i <= 1 and Σ_i D_i <= d_hidden;
    and D_i = ‖W_i‖² / (‖W_i‖² + polysemanticity_i) ties the two together."""
    W = random_W(seed, shape, spread)
    D = np.asarray(g.feature_dimensionality(W), np.float64)
    P = np.asarray(g.polysemanticity(W), np.float64)
    close(D, ref_dimensionality(W))
    close(P, ref_polysemanticity(W), atol=1e-4 * float(np.sum(W.astype(np.float64) ** 2)))
    assert np.all(D > 0) and np.all(D <= 1 + 1e-5)
    assert D.sum() <= shape[0] * (1 + 1e-5)
    sq = np.sum(W.astype(np.float64) ** 2, axis=0)
    close(D, sq / (sq + P))


@settings(max_examples=25)
@given(seed=seeds, shape=shapes)
def test_cosine_matrix_symmetric_unit_diagonal(seed, shape):
    W = random_W(seed, shape, spread=2.0)
    C = np.asarray(g.cosine_matrix(W), np.float64)
    n = shape[1]
    assert C.shape == (n, n)
    close(C, C.T, atol=1e-6)
    close(np.diag(C), np.ones(n), atol=1e-5)
    assert np.all(np.abs(C) <= 1 + 1e-5)
    W64 = W.astype(np.float64)
    U = W64 / np.linalg.norm(W64, axis=0)
    close(C, U.T @ U, atol=1e-5)


@settings(max_examples=25)
@given(seed=seeds, shape=shapes, spread=st.floats(0.0, 2.0))
def test_interference_is_off_diagonal_gram(seed, shape, spread):
    W = random_W(seed, shape, spread)
    G = W.astype(np.float64).T @ W.astype(np.float64)
    I = np.asarray(g.interference(W), np.float64)
    assert np.all(np.diag(I) == 0.0)
    off = ~np.eye(shape[1], dtype=bool)
    close(I[off], G[off], atol=1e-5 * np.abs(G).max())


@settings(max_examples=25)
@given(seed=seeds, shape=shapes, spread=st.floats(0.0, 2.0))
def test_dimensions_per_feature_is_d_hidden_over_frobenius(seed, shape, spread):
    W = random_W(seed, shape, spread)
    close(g.dimensions_per_feature(W), shape[0] / np.sum(W.astype(np.float64) ** 2))
    # ‖W‖_F² counts the represented features: m orthonormal features in m dimensions give D* = 1
    m = shape[0]
    assert abs(float(g.dimensions_per_feature(random_orthogonal(seed, m).astype(np.float32))) - 1.0) < 1e-5


@settings(max_examples=30)
@given(seed=seeds, threshold=st.floats(0.1, 2.0))
def test_n_represented_counts_norms_above_threshold(seed, threshold):
    """Columns with chosen norms (kept at least 1e-3 away from the threshold): the count is exact."""
    rng = np.random.default_rng(seed)
    n, m = 20, 5
    norms = rng.uniform(0.0, 3.0, n)
    norms = np.where(np.abs(norms - threshold) < 1e-3, threshold + 0.01, norms)
    dirs = rng.standard_normal((m, n))
    W = (dirs / np.linalg.norm(dirs, axis=0) * norms).astype(np.float32)
    assert int(g.n_represented(W, threshold)) == int(np.sum(norms > threshold))
    assert int(g.n_represented(W)) == int(np.sum(norms > 0.5))  # documented default threshold 0.5
    close(g.feature_norms(W), norms, atol=1e-5)


# --- invariances -------------------------------------------------------------------------------
@settings(max_examples=25)
@given(seed=seeds, shape=shapes, spread=st.floats(0.0, 1.5))
def test_invariant_under_orthogonal_map_of_hidden_space(seed, shape, spread):
    """W → OW changes no metric: they all depend on W only through WᵀW."""
    W = random_W(seed, shape, spread)
    OW = (random_orthogonal(seed + 1, shape[0]) @ W.astype(np.float64)).astype(np.float32)
    scale2 = float(np.sum(W.astype(np.float64) ** 2, axis=0).max())
    close(g.feature_dimensionality(OW), g.feature_dimensionality(W))
    close(g.cosine_matrix(OW), g.cosine_matrix(W), atol=2e-5)
    close(g.polysemanticity(OW), g.polysemanticity(W), atol=1e-4 * scale2)
    close(g.interference(OW), g.interference(W), atol=1e-5 * scale2)
    close(g.feature_norms(OW), g.feature_norms(W))
    close(g.dimensions_per_feature(OW), g.dimensions_per_feature(W))


@settings(max_examples=25)
@given(seed=seeds, shape=shapes, c=st.floats(0.01, 100.0))
def test_scaling_laws(seed, shape, c):
    """W → cW: D_i and cosines are invariant; norms scale by c; interference, polysemanticity and
    ‖W‖_F² by c²; D* by 1/c²; n_represented at threshold t for W equals it at c·t for cW."""
    W = random_W(seed, shape, spread=1.0)
    cW = (c * W.astype(np.float64)).astype(np.float32)
    scale2 = float(np.sum(W.astype(np.float64) ** 2, axis=0).max())
    close(g.feature_dimensionality(cW), g.feature_dimensionality(W))
    close(g.cosine_matrix(cW), g.cosine_matrix(W), atol=2e-5)
    close(g.feature_norms(cW), c * np.asarray(g.feature_norms(W), np.float64))
    close(g.interference(cW), c**2 * np.asarray(g.interference(W), np.float64), atol=1e-5 * c**2 * scale2)
    close(g.polysemanticity(cW), c**2 * np.asarray(g.polysemanticity(W), np.float64),
          atol=1e-4 * c**2 * scale2)
    close(g.dimensions_per_feature(cW), float(g.dimensions_per_feature(W)) / c**2)
    # pick a threshold away from every column norm, so float rounding cannot flip a count
    norms = np.sort(np.linalg.norm(W.astype(np.float64), axis=0))
    gaps = np.diff(norms)
    t = float((norms[np.argmax(gaps)] + norms[np.argmax(gaps) + 1]) / 2)
    assert int(g.n_represented(cW, c * t)) == int(g.n_represented(W, t))


def test_vmap_over_instances_equals_per_instance():
    """The metrics are single-instance functions that vmap over a leading instance axis."""
    Ws = np.stack([random_W(s, (5, 20), 1.0) for s in range(4)])
    G = geometry  # eager, as users call them
    for fn in (G.feature_dimensionality, G.cosine_matrix, G.polysemanticity, G.interference,
               G.feature_norms, G.dimensions_per_feature, G.n_represented):
        batched = np.asarray(jax.vmap(fn)(Ws))
        single = np.stack([np.asarray(fn(W)) for W in Ws])
        close(batched, single, atol=1e-5)
