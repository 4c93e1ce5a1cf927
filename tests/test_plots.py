"""The TMS figures: the phase and monosemanticity classifiers they draw, and byte-stable redraws from
saved files alone (no training: weights are random, written the way a run writes them)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toymodels import experiment, plots, presets
from toymodels.io import runs

mags = st.floats(0.6, 2.0)
small = st.floats(0.0, 0.4)


@settings(deadline=None, max_examples=30)
@given(a=mags, b=mags, e=small, flip=st.booleans())
def test_classify_phase_reads_each_phase_and_ignores_global_sign(a, b, e, flip):
    # x' = ReLU(WᵀWx + b) is unchanged by W -> -W, so the phase must be too.
    W = np.array([[[a, e]], [[e, b]], [[a, -b]], [[a, b]]], dtype=np.float32)  # (4 inst, m=1, n=2)
    W = -W if flip else W
    assert plots.tms.classify_phase(W).tolist() == [0, 1, 2, 3]


@settings(deadline=None, max_examples=30)
@given(r=st.floats(0.1, 10.0))
def test_ideal_phase_losses_cross_at_the_stated_boundaries(r):
    if r < 1:  # not represented | superposition at p = 4r / (2 + 5r)
        p = 4 * r / (2 + 5 * r)
        L = plots.tms.ideal_phase_losses(p, r)
        np.testing.assert_allclose(L[0], L[2], rtol=1e-9)
        assert plots.tms.ideal_phase_losses(p * 0.9, r).argmin() == 2  # sparser: superposition wins
    else:  # dedicated | superposition at p = 4 / (5 + 2r)
        p = 4 / (5 + 2 * r)
        L = plots.tms.ideal_phase_losses(p, r)
        np.testing.assert_allclose(L[1], L[2], rtol=1e-9)
        assert plots.tms.ideal_phase_losses(p * 1.1, r).argmin() == 1


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.2, 3.0))
def test_monosemantic_neurons_counts_positive_loadings_only(seed, scale):
    rng = np.random.default_rng(seed)
    m, n = 4, 7
    W = np.zeros((m, n))
    W[np.arange(m), rng.permutation(n)[:m]] = scale  # one feature per neuron
    W_inhibited = W - np.abs(rng.normal(size=(m, n))) * (W == 0)  # add only negative (inhibitory) weights
    assert plots.tms.monosemantic_neurons(W).all()
    assert plots.tms.monosemantic_neurons(W_inhibited).all()
    W_poly = W.copy()
    W_poly[0, :] = scale  # neuron 0 now fires for every feature
    assert plots.tms.monosemantic_neurons(W_poly).tolist() == [False] + [True] * (m - 1)
    assert plots.tms.monosemantic_neurons(W[:, rng.permutation(n)]).all()  # feature order does not matter


def _fake_run(cfg, path, rng):
    """A finished-looking run directory: config.json, summary.json and weights.npz, random W."""
    path.mkdir(parents=True, exist_ok=True)
    W = rng.normal(size=(cfg.n_inst, cfg.model.d_hidden, cfg.data.n_features)).astype(np.float32)
    weights = {"W": W, "b_final": np.zeros((cfg.n_inst, cfg.data.n_features), np.float32)}
    runs.write_json(path / "config.json", cfg.to_dict())
    runs.write_json(path / "summary.json", {"instances": experiment.instance_summaries(cfg, weights)})
    runs.write_npz(path / "weights.npz", **weights)


TMS_PRESETS = ["tms-intro", "tms-geometry", "tms-phase", "tms-correlated", "tms-privileged"]


@pytest.mark.parametrize("name", TMS_PRESETS)
def test_tms_figures_redraw_byte_identically_from_saved_files(name, tmp_path):
    built = presets.get(name)
    rng = np.random.default_rng(0)
    if isinstance(built, presets.Suite):
        runs.write_json(tmp_path / "suite.json", built.to_dict())
        for m in built.members:
            _fake_run(m, tmp_path / m.name, rng)
        wanted = list(built.plots) + [p for m in built.members for p in m.plots]
    else:
        _fake_run(built, tmp_path, rng)
        wanted = [p for p in built.plots if p != "loss"]  # no metrics.jsonl: the loss curve is skipped
    first = {p: p.read_bytes() for p in plots.draw(tmp_path)}
    assert all(any(p.stem.endswith(w) for p in first) for w in wanted), (wanted, sorted(first))
    second = {p: p.read_bytes() for p in plots.draw(tmp_path)}
    assert first == second
