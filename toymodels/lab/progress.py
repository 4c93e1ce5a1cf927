"""Matched progress: stop a fine-tune at a target gain, and read any probe curve at a given gain.

Regimes and optimisers reach the task at different speeds, so they are compared at equal progress on
the task, not after equal numbers of steps: the *gain* is the target's read-out x'_t on its unit input
over its pretrained value. :func:`gain_stop` is the engine's ``stop`` hook for early stopping;
:func:`at_gain` reads an instance's probe curve where its gain first reaches g; :func:`gain_curve`
and :func:`step_curve` average a group's curves against the gain and against the step.
"""

from __future__ import annotations

from typing import Any

import numpy as np


# --- matched progress ----------------------------------------------------------------------------------
def gain_stop(readout, stop_gain: float):
    """The engine's ``stop`` hook (:data:`toymodels.core.engine.Stop`) for early stopping at a target gain:
    stop once readout(params, inst) >= g · inst["readout0"], g = ``stop_gain``. An instance whose
    pretrained read-out is not positive has no gain and never stops."""

    def stop(params, inst):
        r0 = inst["readout0"]
        return (r0 > 0) & (readout(params, inst) >= stop_gain * r0)

    return stop


def at_gain(gain: np.ndarray, values: dict[str, np.ndarray], g: float) -> dict[str, Any] | None:
    """Read one instance's probe curves at the first point where its gain reaches ``g``.

    ``gain`` (T,) is the target read-out over its pretrained value at the probe steps; every array in
    ``values`` is (T,) at the same steps. Between the last probe below g and the first at or above it,
    values are interpolated linearly in the gain (the gain rises smoothly between probes). Returns
    ``{name: value, "reached": True}``; None when the curve never reaches g.
    """
    gain = np.asarray(gain, np.float64)
    hit = np.flatnonzero(np.isfinite(gain) & (gain >= g))
    if not len(hit):
        return None
    j = int(hit[0])
    if j == 0 or gain[j] == gain[j - 1]:
        w = 1.0
    else:
        w = float((g - gain[j - 1]) / (gain[j] - gain[j - 1]))
    out = {name: float((1 - w) * v[j - 1] + w * v[j]) if j > 0 else float(v[0]) for name, v in values.items()}
    return out | {"reached": True}


GAIN_CURVE_POINTS = 41


def gain_curve(probes, ks: list[int], h: int, top: float) -> dict:
    """Means over instances ``ks`` of harmful feature h's numbers as functions of the target's gain, on
    the grid 1 … ``top`` (:data:`GAIN_CURVE_POINTS` points): each instance's probe curve read at its
    first crossing of each gain (:func:`at_gain`); ``n`` counts the instances that
    reached it. Numbers: Δ pre-activation on the target input, Δ toxic rate [pp], angle(target, harmful)."""
    grid = np.linspace(1.0, top, GAIN_CURVE_POINTS)
    arr = lambda m: np.array([p[m] for _, p in probes], np.float64)   # (T, n_ft[, h])
    readout, pre, rate, cos = arr("target_readout"), arr("preact")[..., h], arr("rate")[..., h], arr("cos")[..., h]
    sums = {m: np.zeros(len(grid)) for m in ("preact_change", "rate_change_pp", "angle_deg")}
    n = np.zeros(len(grid), int)
    for k in ks:
        if not readout[0, k] > 0:
            continue
        values = {"preact_change": pre[:, k] - pre[0, k], "rate_change_pp": 100.0 * (rate[:, k] - rate[0, k]),
                  "angle_deg": np.degrees(np.arccos(np.clip(cos[:, k], -1.0, 1.0)))}
        for i, g in enumerate(grid):
            v = at_gain(readout[:, k] / readout[0, k], values, g)
            if v is not None:
                n[i] += 1
                for m in sums:
                    sums[m][i] += v[m]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = {m: [None if c == 0 else float(x / c) for x, c in zip(v, n)] for m, v in sums.items()}
    return {"gain": [float(g) for g in grid], "n": n.tolist(), **means}


def step_curve(probes, ks: list[int], h: int) -> dict:
    """Means over instances ``ks`` at every probe step: the target's gain, and harmful feature h's
    Δ toxic rate [pp] and Δ pre-activation on the target input (what fixed-step comparisons see)."""
    arr = lambda m: np.array([p[m] for _, p in probes], np.float64)[:, ks]
    readout, pre, rate = arr("target_readout"), arr("preact")[..., h], arr("rate")[..., h]
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(readout[0] > 0, readout / readout[0], np.nan)
    return {"step": [int(t) for t, _ in probes], "gain": np.nanmean(gain, 1).tolist(),
            "rate_change_pp": (100.0 * (rate - rate[0])).mean(1).tolist(), "preact_change": (pre - pre[0]).mean(1).tolist()}
