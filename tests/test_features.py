"""Named features and planted geometry: exact angles, rejected specs, pinned directions."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from toymodels import directions
from toymodels.config import (
    Config,
    ConfigError,
    DataConfig,
    FeaturesConfig,
    FineTuneConfig,
    ModelConfig,
    RegimeConfig,
    TrainConfig,
)
from toymodels.core import planting
from toymodels.core import pretrain as pt


def make_cfg(n_inst=2, n=5, m=2, steps=100, geometry="pinned", angles=(0.0, 15.0), cosines=None, names=None,
             **feat):
    names = names or ("helpful", "toxic")
    return Config(name="t", n_inst=n_inst, data=DataConfig(n_features=n, feature_probability=0.1, batch_size=64),
                  model=ModelConfig(d_hidden=m), train=TrainConfig(steps=steps, chunk_size=50, log_every=50),
                  features=FeaturesConfig(names=names, harmful=names[1:2], geometry=geometry,
                                          angles=angles if cosines is None else None, cosines=cosines, **feat))


# --- exact direction sets ------------------------------------------------------------------------------
@settings(deadline=None, max_examples=50)
@given(angles=st.lists(st.floats(-720, 720), min_size=2, max_size=5))
def test_polar_angles_are_realised(angles):
    D = directions.polar_directions(angles)
    got = directions.pairwise_angles_deg(D)
    for i in range(len(angles)):
        for j in range(len(angles)):
            want = directions.wrap_angle_deg(angles[i] - angles[j])
            assert got[i, j] == pytest.approx(want, abs=1e-5)
    np.testing.assert_allclose(np.linalg.norm(D, axis=0), 1.0, atol=1e-12)


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 100_000), k=st.integers(2, 6), m=st.integers(2, 5))
def test_cosine_matrices_are_realised(seed, k, m):
    # any Gram matrix of k unit vectors in min(k, m) dimensions is realisable in m dimensions
    V = np.random.default_rng(seed).normal(size=(min(k, m), k))
    V /= np.linalg.norm(V, axis=0)
    C = V.T @ V
    D = directions.directions_from_cosines(C, m)
    assert D.shape == (m, k)
    np.testing.assert_allclose(D.T @ D, C, atol=1e-9)
    np.testing.assert_allclose(directions.pairwise_angles_deg(D), directions.pairwise_angles_deg(V), atol=1e-5)


@pytest.mark.parametrize("C, m, why", [
    ([[1, -0.9, -0.9], [-0.9, 1, -0.9], [-0.9, -0.9, 1]], 3, "not positive semidefinite"),
    (np.eye(3).tolist(), 2, "rank 3"),
    ([[1, 0.5], [0.4, 1]], 2, "symmetric"),
    ([[1, 0.5], [0.5, 0.9]], 2, "diagonal"),
    ([[1, 1.2], [1.2, 1]], 2, "[-1, 1]"),
    ([[1, 0.5, 0.1], [0.5, 1, 0.2]], 2, "square"),
])
def test_impossible_cosines_are_rejected(C, m, why):
    with pytest.raises(ConfigError, match="features.cosines") as e:
        directions.directions_from_cosines(C, m)
    assert why in str(e.value) and "\n" not in str(e.value)


def test_impossible_specs_are_rejected_by_the_config():
    with pytest.raises(ConfigError, match=r"features\.cosines.*rank 3"):
        make_cfg(names=("a", "b", "c"), cosines=np.eye(3).tolist())
    with pytest.raises(ConfigError, match=r"features\.angles.*d_hidden=2"):
        make_cfg(m=3)
    with pytest.raises(ConfigError, match=r"features\.angles"):
        make_cfg(angles=(0.0, 15.0, 30.0))                      # 3 angles for 2 names
    with pytest.raises(ConfigError, match=r"features\.angles"):
        make_cfg(geometry="pinned", angles=None)                 # neither angles nor cosines
    with pytest.raises(ConfigError, match=r"features\.geometry"):
        make_cfg(geometry="free")                                # free with angles
    with pytest.raises(ConfigError, match=r"features\.harmful"):
        FeaturesConfig(names=("a", "b"), harmful=("c",))
    with pytest.raises(ConfigError, match=r"features\.names"):
        make_cfg(n=1)
    with pytest.raises(ConfigError, match=r"features\.names.*automatic"):
        make_cfg(names=("helpful", "f3"))   # f3 is the automatic name of feature 3


def test_per_instance_angles_and_config_round_trip():
    cfg = make_cfg(n_inst=3, angles=[[0.0, 10.0], [0.0, 90.0], [30.0, 200.0]])
    D = directions.planted_directions(cfg.features, 2, 3)
    assert [directions.pairwise_angles_deg(d)[0, 1] for d in D] == pytest.approx([10.0, 90.0, 170.0], abs=1e-9)
    cfg = cfg.replace(**{"finetune.steps": 7, "finetune.regimes": [{"name": "a", "data": "full"}]})
    again = Config.from_dict(cfg.to_dict())
    assert again == cfg and again.finetune.regimes == (RegimeConfig(name="a", data="full"),)
    assert cfg.feature_names() == ["helpful", "toxic", "f2", "f3", "f4"]


def test_finetune_section_is_validated():
    cfg = make_cfg()
    with pytest.raises(ConfigError, match=r"finetune\.target.*harmful"):
        cfg.replace(**{"finetune.target": "toxic"})
    with pytest.raises(ConfigError, match=r"finetune\.target"):
        cfg.replace(**{"finetune.target": "nope"})
    with pytest.raises(ConfigError, match=r"finetune\.regimes\.data"):
        cfg.replace(**{"finetune.regimes": [{"name": "a", "data": "wide"}]})
    with pytest.raises(ConfigError, match=r"finetune\.lora_rank"):
        cfg.replace(**{"finetune.trainable": "lora", "finetune.lora_rank": 3})
    with pytest.raises(ConfigError, match=r"^finetune="):
        Config(finetune=FineTuneConfig())                         # no [features] section


# --- planting and pinning -----------------------------------------------------------------------------
def test_planted_init_realises_the_angles_in_float32():
    cfg = make_cfg(n_inst=3, angles=[[0.0, 15.0], [10.0, 100.0], [0.0, 179.0]], norms=[1.0, 0.5])
    _, params = planting.init_params(cfg, 6, jax.random.key(0), restarts=2)
    W = np.asarray(params["W"][...])
    for i, want in enumerate([15.0, 15.0, 90.0, 90.0, 179.0, 179.0]):
        assert directions.pairwise_angles_deg(W[i, :, :2])[0, 1] == pytest.approx(want, abs=1e-5)
        np.testing.assert_allclose(np.linalg.norm(W[i, :, :2], axis=0), [1.0, 0.5], rtol=1e-6)


def test_pin_directions_projects_onto_the_ray():
    d = directions.polar_directions([0.0, 15.0, 40.0])
    W = jnp.asarray(d * np.array([1.0, 0.8, 1.2]), jnp.float32)
    params = nnx.State({"W": nnx.Param(W), "b_final": nnx.Param(jnp.zeros(3))})
    tx = planting.pin_directions([True, True, False])
    state = tx.init(params)
    u = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    u[:, 1] = -2.0 * np.asarray(W[:, 1])      # would flip toxic through the origin
    upd = nnx.State({"W": nnx.Param(jnp.asarray(u)), "b_final": nnx.Param(jnp.ones(3))})
    out, _ = tx.update(upd, state, params)
    new = np.asarray(W + out["W"][...])
    assert directions.pairwise_angles_deg(np.c_[new[:, 0], d[:, 0]])[0, 1] == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose(new[:, 1], 0.0, atol=1e-7)   # clipped to the ray: zero, not flipped
    np.testing.assert_array_equal(np.asarray(out["W"][...])[:, 2], u[:, 2])     # unpinned: untouched
    np.testing.assert_array_equal(np.asarray(out["b_final"][...]), np.ones(3))


def test_pinned_pretraining_keeps_the_angle_and_planted_does_not():
    cfg = make_cfg(n_inst=2, angles=[[0.0, 15.0], [0.0, 60.0]], steps=200)
    _, params, info = pt.pretrain(cfg, progress=False)
    W = np.asarray(params["W"][...])
    for i, want in enumerate([15.0, 60.0]):
        assert directions.pairwise_angles_deg(W[i, :, :2])[0, 1] == pytest.approx(want, abs=1e-5)
        assert directions.pairwise_angles_deg(np.c_[W[i, :, 0], [1.0, 0.0]])[0, 1] == pytest.approx(0.0, abs=1e-5)
    summ = planting.geometry_summary(cfg, W)
    assert summ["max_cosine_error"] < 1e-6
    _, params2, _ = pt.pretrain(cfg.replace(**{"features.geometry": "planted"}), progress=False)
    W2 = np.asarray(params2["W"][...])
    moved = [abs(directions.pairwise_angles_deg(W2[i, :, :2])[0, 1] - want) for i, want in enumerate([15.0, 60.0])]
    assert max(moved) > 0.1  # planted directions are only a start
    assert np.isfinite(info["eval_loss"]).all()
