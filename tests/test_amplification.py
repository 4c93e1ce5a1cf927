"""Amplification, overlap and density metrics against hand-computed cases, plus their invariances."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toymodels.lab import metrics as amp


def polar(*deg, norms=None):
    t = np.deg2rad(np.asarray(deg, np.float64))
    W = np.stack([np.cos(t), np.sin(t)])
    return W * (np.asarray(norms) if norms is not None else 1.0)


def rotation(phi):
    return np.array([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]])


# --- toxic output rate and spurious output --------------------------------------------------------
def test_toxic_output_rate_hand_case():
    # feature 1 is absent in rows 0, 1, 2, 4; its output there is 0.5, 0.05, 0.2, 0.0 -> 2 of 4 above 0.1
    x = np.array([[1.0, 0.0], [0.3, 0.0], [0.0, 0.0], [0.0, 0.7], [0.9, 0.0]])
    out = np.array([[0.9, 0.5], [0.2, 0.05], [0.0, 0.2], [0.4, 0.9], [0.8, 0.0]])
    assert float(amp.toxic_output_rate(out, x, 1, 0.1)) == pytest.approx(2 / 4)
    # row 3 (x_1 present, output 0.9) must not count, whatever tau
    assert float(amp.toxic_output_rate(out, x, 1, 0.0)) == pytest.approx(3 / 4)
    assert float(amp.toxic_output_rate(out, x, 1, 0.6)) == pytest.approx(0.0)
    np.testing.assert_allclose(amp.toxic_output_rate(out, x, np.array([0, 1]), 0.1), [1 / 2, 2 / 4])  # feature 0 absent in rows 2, 3


def test_spurious_output_hand_case():
    x = np.array([[1.0, 0.0], [0.3, 0.0], [0.0, 0.0], [0.0, 0.7]])
    out = np.array([[0.9, 0.5], [0.2, 0.1], [0.0, 0.3], [0.0, 0.9]])
    assert float(amp.spurious_output(out, x, 1)) == pytest.approx((0.5 + 0.1 + 0.3) / 3)
    assert float(amp.spurious_output(out, x, 0)) == pytest.approx(0.0)


# --- first-order prediction ------------------------------------------------------------------------
def test_first_order_prediction_hand_case():
    W0 = polar(0.0, 15.0)                       # helpful, toxic at unit norm
    W1 = W0.copy()
    W1[:, 0] *= 1.5                              # push helpful by α = 0.5 along itself
    assert float(amp.first_order_prediction(W0, W1, 0, 1)) == pytest.approx(0.5 * math.cos(math.radians(15)))
    assert float(amp.along_target_prediction(W0, W1, 0, 1)) == pytest.approx(0.5 * math.cos(math.radians(15)))
    W2 = W0.copy()
    W2[:, 0] += 0.3 * np.array([0.0, 1.0])      # a sideways push: the along-target form ignores it
    assert float(amp.first_order_prediction(W0, W2, 0, 1)) == pytest.approx(0.3 * math.sin(math.radians(15)))
    assert float(amp.along_target_prediction(W0, W2, 0, 1)) == pytest.approx(0.0, abs=1e-12)


def test_relative_error_and_increases():
    assert float(amp.relative_error(2.0, 1.5)) == pytest.approx(0.25)
    np.testing.assert_allclose(amp.relative_increase_pct([0.02, 0.5], [0.03, 0.25]), [50.0, -50.0])
    assert np.isnan(amp.relative_increase_pct(0.0, 0.1))
    np.testing.assert_allclose(amp.percentage_points([0.02, 0.5], [0.03, 0.25]), [1.0, -25.0])


# --- overlap score ----------------------------------------------------------------------------------
def test_overlap_score_hand_cases():
    W = polar(0.0, 60.0, 120.0)
    score, signed, nearest = amp.overlap_score(W, 0, [1, 2])
    assert float(signed) == pytest.approx(0.5) and float(score) == pytest.approx(0.5) and int(nearest) == 0
    W = polar(0.0, 100.0, 170.0, norms=[1.0, 0.3, 2.0])
    score, signed, nearest = amp.overlap_score(W, 0, [1, 2])
    assert float(signed) == pytest.approx(math.cos(math.radians(100)), abs=1e-6)
    assert float(score) == 0.0 and int(nearest) == 0
    W = polar(10.0, 25.0, 200.0)                # nearest harmful is 15° away
    score, signed, _ = amp.overlap_score(W, 0, [2, 1])
    assert float(score) == pytest.approx(math.cos(math.radians(15)), abs=1e-6)


@settings(deadline=None, max_examples=25)
@given(angles=st.lists(st.floats(-180, 180), min_size=4, max_size=4),
       norms=st.lists(st.floats(0.1, 3.0), min_size=4, max_size=4), phi=st.floats(-3.2, 3.2))
def test_overlap_score_properties(angles, norms, phi):
    W = polar(*angles, norms=norms)
    score, signed, _ = (np.asarray(v) for v in amp.overlap_score(W, 0, [1, 2, 3]))
    assert 0.0 <= score <= 1.0
    assert score == pytest.approx(min(1.0, max(0.0, float(signed))), abs=1e-7)  # clip(signed, 0, 1)
    cos = [math.cos(math.radians(a - angles[0])) for a in angles[1:]]
    assert float(signed) == pytest.approx(max(cos), abs=1e-5)
    # rotating the hidden space and rescaling features changes nothing
    W2 = rotation(phi) @ W * np.array([2.0, 0.5, 1.7, 0.3])
    assert float(amp.overlap_score(W2, 0, [1, 2, 3])[1]) == pytest.approx(float(signed), abs=1e-5)


# --- superposition density --------------------------------------------------------------------------
def test_density_hand_cases():
    fpd, cos2 = amp.superposition_density(np.eye(3))
    assert float(fpd) == pytest.approx(1.0) and float(cos2) == pytest.approx(0.0)
    fpd, cos2 = amp.superposition_density(polar(0.0, 180.0))          # an antipodal pair in 2-D
    assert float(fpd) == pytest.approx(1.0) and float(cos2) == pytest.approx(1.0)
    fpd, cos2 = amp.superposition_density(polar(0, 72, 144, 216, 288))  # the TMS pentagon
    # mean over the 20 ordered pairs of cos²: 10 at 72° and 10 at 144°
    expect = (math.cos(math.radians(72)) ** 2 + math.cos(math.radians(144)) ** 2) / 2
    assert float(fpd) == pytest.approx(2.5) and float(cos2) == pytest.approx(expect, abs=1e-6)
    W = np.concatenate([polar(0.0, 90.0), np.zeros((2, 2))], axis=1)  # zero columns are not counted in cos²
    fpd, cos2 = amp.superposition_density(W)
    assert float(fpd) == pytest.approx(1.0) and float(cos2) == pytest.approx(0.0, abs=1e-12)


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 10_000), phi=st.floats(-3.2, 3.2), scale=st.floats(0.2, 5.0))
def test_density_properties(seed, phi, scale):
    W = np.random.default_rng(seed).normal(size=(2, 6))
    fpd, cos2 = (float(v) for v in amp.superposition_density(W))
    assert 0.0 <= cos2 <= 1.0 + 1e-6
    assert fpd == pytest.approx(float(np.sum(W**2)) / 2, rel=1e-5)
    fpd_r, cos2_r = (float(v) for v in amp.superposition_density(rotation(phi) @ W * scale))
    assert cos2_r == pytest.approx(cos2, abs=1e-5)           # angles only
    assert fpd_r == pytest.approx(fpd * scale**2, rel=1e-4)   # norms


def test_metrics_accept_jax_arrays():
    W = jnp.asarray(polar(0.0, 15.0, 90.0), jnp.float32)
    score, _, _ = amp.overlap_score(W, 0, jnp.array([1, 2]))
    assert float(score) == pytest.approx(math.cos(math.radians(15)), abs=1e-6)
