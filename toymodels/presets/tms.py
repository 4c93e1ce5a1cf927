"""Presets that reproduce Toy Models of Superposition (Elhage et al. 2022)."""

from __future__ import annotations

import numpy as np

from ..config import Config, DataConfig, ModelConfig, TrainConfig
from .registry import Suite, preset


def _sparsity_sweep(n_inst: int, base: float = 20.0) -> list[float]:
    """Feature probabilities base^(−k/(n_inst−1)), k = 0..n_inst−1: from 1 (dense) to 1/base."""
    return [float(v) for v in base ** -np.linspace(0.0, 1.0, n_inst)]


# --- TMS reproduction (Elhage et al. 2022) -------------------------------------------------------
@preset("tms-intro", "TMS intro: 5 features in 2-D across 10 sparsities; the pentagon appears (§Demonstrating Superposition)")
def tms_intro() -> Config:
    return Config(
        name="tms-intro",
        n_inst=10,
        data=DataConfig(n_features=5, feature_probability=_sparsity_sweep(10),
                        importance=[float(0.9**i) for i in range(5)]),
        model=ModelConfig(kind="relu_output", d_hidden=2),
        train=TrainConfig(steps=10_000, restarts=4),
        plots=("geometry_2d", "loss"),
        notes="m=2 has local minima (a more important feature dropped for a less important one); the best "
              "of 4 restarts per sparsity, as the paper fits several seeds.",
    )


@preset("tms-geometry", "TMS geometry: 200 features in 20-D; D* against 1/(1-S) and sticky D_i fractions (§Geometry)")
def tms_geometry() -> Config:
    return Config(
        name="tms-geometry",
        n_inst=20,
        data=DataConfig(n_features=200, feature_probability=_sparsity_sweep(20), importance=1.0),
        model=ModelConfig(kind="relu_output", d_hidden=20),
        train=TrainConfig(steps=10_000),
        plots=("dimensions_per_feature", "feature_dimensionality", "loss"),
    )


@preset("tms-phase", "TMS phase diagram: 2 features in 1-D, relative importance x density, best of 8 restarts")
def tms_phase(n_grid: int = 16) -> Config:
    importance = np.geomspace(0.1, 10.0, n_grid)
    density = np.geomspace(1.0, 0.01, n_grid)
    rel, dens = np.meshgrid(importance, density, indexing="ij")  # instance = i_importance * n_grid + i_density
    return Config(
        name="tms-phase",
        n_inst=n_grid * n_grid,
        data=DataConfig(n_features=2,
                        feature_probability=[[float(d), float(d)] for d in dens.ravel()],
                        importance=[[1.0, float(r)] for r in rel.ravel()]),
        model=ModelConfig(kind="relu_output", d_hidden=1),
        # "Not represented" is a local minimum whenever w_1 starts with the sign of w_0 (half of all
        # inits): w_1 must pass through 0, where its gradient vanishes, to reach the antipodal optimum.
        # So a cell needs many restarts (8 leave it wrong with probability 2^-8), and fewer steps:
        # a good restart settles within ~1 500 steps at lr 1e-3.
        train=TrainConfig(steps=1_500, restarts=8),
        plots=("phase_diagram",),
        notes="Best of 8 restarts x 1500 steps per cell: restarts, not steps, decide the phase (see preset).",
        meta={"grid": {"relative_importance": importance.tolist(), "density": density.tolist()}},
    )


def _correlated_member(name: str, n: int, correlated=(), anticorrelated=()) -> Config:
    return Config(
        name=name,
        n_inst=5,
        data=DataConfig(n_features=n, feature_probability=[0.25, 0.1, 0.05, 0.025, 0.01], importance=1.0,
                        correlated=tuple(correlated), anticorrelated=tuple(anticorrelated)),
        model=ModelConfig(kind="relu_output", d_hidden=2),
        train=TrainConfig(steps=10_000, restarts=3),
        plots=("geometry_2d",),
    )


@preset("tms-correlated", "TMS correlated features in 2-D: two correlated pairs, two anticorrelated pairs, three correlated pairs")
def tms_correlated() -> Suite:
    return Suite(
        name="tms-correlated",
        members=(
            _correlated_member("correlated-2pairs", 4, correlated=(2, 2)),
            _correlated_member("anticorrelated-2pairs", 4, anticorrelated=(2, 2)),
            _correlated_member("correlated-3pairs", 6, correlated=(2, 2, 2)),
        ),
        plots=("correlated_suite",),
    )


@preset("tms-privileged", "TMS privileged basis: hidden-ReLU model, 10 features in 5 neurons, per-neuron loadings")
def tms_privileged() -> Config:
    return Config(
        name="tms-privileged",
        n_inst=7,
        data=DataConfig(n_features=10, feature_probability=[float(v) for v in np.geomspace(1.0, 0.01, 7)],
                        importance=[float(0.75**i) for i in range(10)]),
        model=ModelConfig(kind="relu_hidden", d_hidden=5),
        # Best of 4: single seeds sometimes spread the top features over several neurons at moderate
        # sparsity (a higher-loss local minimum); 1-S from 1 (dense, monosemantic) to 0.01.
        train=TrainConfig(steps=10_000, restarts=4),
        plots=("neuron_loadings", "loss"),
    )
