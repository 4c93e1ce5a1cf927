"""Properties of the maths that had only hand cases: the first-order prediction, pinning, the toxic
output rate, DeCov, and the gradient projector (also for rank-deficient harmful sets). Hypothesis
draws values over fixed shapes (one compile per property), with explicit float32 tolerances."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from toymodels.core import penalties
from toymodels.core.planting import pin_directions
from toymodels.defences.optim import harmful_projector
from toymodels.lab import metrics

N, M = 6, 3
seeds = st.integers(0, 2**31 - 1)


def rng(seed):
    return np.random.default_rng(seed)


@given(seed=seeds, t=st.integers(0, N - 1), j=st.integers(0, N - 1), scale=st.floats(1e-3, 2.0))
def test_first_order_prediction_is_exact_when_only_the_target_column_moves(seed, t, j, scale):
    """pre_j = W_jᵀ W_t + b_j on the unit target input. Moving only W_t by Δ changes it by exactly
    ⟨W0_j, Δ⟩ (for j ≠ t): the prediction is the change, and it is linear in Δ."""
    if j == t:
        j = (t + 1) % N
    r = rng(seed)
    W0 = r.normal(size=(M, N)).astype(np.float32)
    delta = (scale * r.normal(size=M)).astype(np.float32)
    W1 = W0.copy()
    W1[:, t] += delta
    measured = float(W1[:, j] @ W1[:, t] - W0[:, j] @ W0[:, t])
    pred = float(metrics.first_order_prediction(jnp.asarray(W0), jnp.asarray(W1), t, j))
    assert abs(pred - measured) <= 1e-5 * (1 + abs(measured))
    W2 = W0.copy()
    W2[:, t] += 2 * delta
    assert abs(float(metrics.first_order_prediction(W0, W2, t, j)) - 2 * pred) <= 1e-5 * (1 + abs(pred))


@given(seed=seeds, step=st.floats(1e-3, 3.0))
def test_pinned_column_lands_on_the_projection_onto_its_ray(seed, step):
    """W_i + u'_i is the point of the ray {c d_i : c >= 0} closest to W_i + u_i; unpinned columns and
    other leaves pass unchanged; and pinning again changes nothing (a projection)."""
    r = rng(seed)
    W = r.normal(size=(M, N)).astype(np.float32)
    pinned = np.array([True, True, False, False, True, False])
    params = nnx.State({"W": nnx.Param(jnp.asarray(W)), "b_final": nnx.Param(jnp.zeros(N))})
    tx = pin_directions(pinned)
    state = tx.init(params)
    u = (step * r.normal(size=(M, N))).astype(np.float32)
    upd = nnx.State({"W": nnx.Param(jnp.asarray(u)), "b_final": nnx.Param(jnp.ones(N))})
    out, _ = tx.update(upd, state, params)
    new = W + np.asarray(out["W"][...])
    d = W / np.linalg.norm(W, axis=0)
    for i in range(N):
        if pinned[i]:
            c = max(float(d[:, i] @ (W[:, i] + u[:, i])), 0.0)
            np.testing.assert_allclose(new[:, i], c * d[:, i], atol=1e-5)
        else:
            np.testing.assert_allclose(new[:, i], W[:, i] + u[:, i], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out["b_final"][...]), np.ones(N))
    again, _ = tx.update(nnx.State({"W": nnx.Param(jnp.zeros((M, N))), "b_final": nnx.Param(jnp.zeros(N))}), state,
                         nnx.State({"W": nnx.Param(jnp.asarray(new)), "b_final": nnx.Param(jnp.zeros(N))}))
    np.testing.assert_allclose(np.asarray(again["W"][...])[:, pinned], 0.0, atol=1e-5)


@given(seed=seeds, tau1=st.floats(-1.0, 2.0), gap=st.floats(0.0, 2.0))
def test_toxic_output_rate_is_monotone_in_the_threshold(seed, tau1, gap):
    """P(x'_j > τ | x_j = 0) can only fall as τ rises; it is 1 below every output and 0 above."""
    r = rng(seed)
    x = np.where(r.random((256, N)) < 0.3, r.random((256, N)), 0.0).astype(np.float32)
    out = r.normal(0.2, 0.5, size=(256, N)).astype(np.float32)
    j = np.arange(N)
    a = np.asarray(metrics.toxic_output_rate(out, x, j, tau1))
    b = np.asarray(metrics.toxic_output_rate(out, x, j, tau1 + gap))
    assert np.all(b <= a + 1e-7)
    assert np.all(np.asarray(metrics.toxic_output_rate(out, x, j, float(out.min()) - 1)) == 1.0)
    assert np.all(np.asarray(metrics.toxic_output_rate(out, x, j, float(out.max()) + 1)) == 0.0)


@given(seed=seeds, shift=st.floats(-5.0, 5.0), c=st.floats(0.1, 3.0))
def test_decov_invariances(seed, shift, c):
    """DeCov depends on the covariance of h over the batch: unchanged by a constant shift of every sample
    and by permuting the hidden units, scaled by c⁴ when h is scaled by c, zero for uncorrelated units;
    but not invariant under a rotation of the hidden space (it is basis-dependent)."""
    r = rng(seed)
    h = r.normal(size=(512, M)) @ r.normal(size=(M, M))
    base = float(penalties.decov(jnp.asarray(h)))
    assert abs(float(penalties.decov(jnp.asarray(h + shift))) - base) <= 1e-4 * (1 + base)
    perm = r.permutation(M)
    assert abs(float(penalties.decov(jnp.asarray(h[:, perm]))) - base) <= 1e-4 * (1 + base)
    assert abs(float(penalties.decov(jnp.asarray(c * h))) - c**4 * base) <= 1e-3 * (1 + c**4 * base)
    # whitened: uncorrelated hidden units on this batch
    hc = h - h.mean(0)
    white = hc @ np.linalg.inv(np.linalg.cholesky(hc.T @ hc / len(h))).T
    assert float(penalties.decov(jnp.asarray(white))) < 1e-6
    Q, _ = np.linalg.qr(r.normal(size=(M, M)))
    assert float(penalties.decov(jnp.asarray((white * np.array([1.0, 2.0, 3.0])) @ Q.T))) > 1e-3


@given(seed=seeds, kind=st.sampled_from(["independent", "collinear", "zero", "duplicate"]))
def test_gradient_projector_is_the_orthogonal_projector_onto_the_harmful_span(seed, kind):
    """P is symmetric and idempotent, P W_H = W_H, and its rank is the rank of W_H, also when the
    harmful columns are collinear, zero or repeated (a rank-deficient harmful set)."""
    r = rng(seed)
    W = r.normal(size=(M, N)).astype(np.float32)
    harmful = [1, 3]
    if kind == "collinear":
        W[:, 3] = -2.5 * W[:, 1]
    elif kind == "zero":
        W[:, 3] = 0.0
    elif kind == "duplicate":
        harmful = [1, 1]
    P = np.asarray(harmful_projector(jnp.asarray(W), np.array(harmful)), np.float64)
    rank = np.linalg.matrix_rank(W[:, harmful].astype(np.float64), tol=1e-4)
    np.testing.assert_allclose(P, P.T, atol=1e-5)
    np.testing.assert_allclose(P @ P, P, atol=1e-5)
    np.testing.assert_allclose(P @ W[:, harmful], W[:, harmful], atol=1e-4)
    assert round(float(np.trace(P))) == rank
    assert rank == (2 if kind == "independent" else 1)
