"""The SynthSAEBench-style generator (toymodels.core.scale_data), the chunked geometry of large models,
and the tms-16k preset's config.

Statistical checks use B = 2^17 samples; a frequency f of true value q has standard error
sqrt(q(1-q)/B) <= 0.0014, and every tolerance below is 5 standard errors of the quantity checked.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from toymodels import presets
from toymodels.config import ConfigError, DataConfig
from toymodels.core import data as tdata
from toymodels.core import geometry, scale_data

B = 1 << 17


def _draw(cfg: DataConfig, p: np.ndarray, seed: int = 0) -> np.ndarray:
    sample = tdata.make_sampler(cfg)
    return np.asarray(jax.jit(sample)(jax.random.key(seed), jax.numpy.asarray(p, jax.numpy.float32)))


def _se(q, n=B):
    return np.sqrt(np.asarray(q) * (1 - np.asarray(q)) / n)


def test_default_data_config_keeps_the_tms_sampler():
    """No option set: the old sampler, so every existing program (and committed result) is unchanged."""
    assert not scale_data.is_rich(DataConfig())
    assert tdata.make_sampler(DataConfig()).func is tdata.sample_features


def test_power_law_marginals_and_magnitudes():
    cfg = DataConfig(n_features=64, batch_size=B, feature_probability=0.5, power_law=0.7)
    from toymodels.config import Config, ModelConfig

    p = Config(name="x", n_inst=1, data=cfg, model=ModelConfig(d_hidden=4)).feature_probability()[0]
    np.testing.assert_allclose(p, 0.5 * np.arange(1, 65) ** -0.7, rtol=1e-6)
    x = _draw(cfg, p)
    freq = (x > 0).mean(0)
    assert np.all(np.abs(freq - p) < 5 * _se(p))
    vals = x[x > 0]
    assert abs(vals.mean() - 0.5) < 5 * np.sqrt(1 / 12 / vals.size) and vals.max() < 1  # Uniform(0, 1)


def test_children_fire_only_with_their_parent_and_keep_their_marginal():
    n, P, C = 40, 4, 3
    cfg = DataConfig(n_features=n, batch_size=B, parents=P, children=C)
    p = np.full(n, 0.3)
    p[P:P + P * C] = 0.1
    x = _draw(cfg, p) > 0
    parent = scale_data.hierarchy_parents(n, P, C)
    for c in range(P, P + P * C):
        assert not np.any(x[:, c] & ~x[:, parent[c]]), c
    assert np.all(np.abs(x.mean(0) - p) < 5 * _se(p))
    # a child given its parent fires with q = p_c / p_a = 1/3
    c = P
    cond = x[x[:, parent[c]], c].mean()
    assert abs(cond - 1 / 3) < 5 * _se(1 / 3, x[:, parent[c]].sum())


def test_correlated_groups_co_fire_as_derived_and_other_groups_are_independent():
    n, G, rho, q = 8, 2, 0.6, 0.2
    cfg = DataConfig(n_features=n, batch_size=B, correlation=rho, correlation_groups=G)
    x = _draw(cfg, np.full(n, q)) > 0
    assert np.all(np.abs(x.mean(0) - q) < 5 * _se(q))
    same = scale_data.co_fire_probability(q, q, rho)          # features 0 and 2 share group 0
    assert abs((x[:, 0] & x[:, 2]).mean() - same) < 5 * _se(same)
    assert same > 2 * q * q  # the correlation is real: 0.0928 against 0.04
    assert abs((x[:, 0] & x[:, 1]).mean() - q * q) < 5 * _se(q * q)   # groups 0 and 1


@pytest.mark.parametrize("over, field", [
    ({"correlation": 0.3}, "data.correlation"),
    ({"parents": 10, "children": 10}, "data.children"),
    ({"power_law": -1.0}, "data.power_law"),
    ({"power_law": 0.5, "correlated": (2,)}, "data.correlated"),
])
def test_bad_generator_options_name_the_field(over, field):
    with pytest.raises(ConfigError) as e:
        DataConfig(n_features=50, **over)
    assert str(e.value).startswith(field)


def test_chunked_geometry_equals_the_dense_one():
    """Above DENSE_MAX features the row sums come from the (m, m) Gram matrix; same numbers (float32 sums
    in another order: relative 1e-5)."""
    W = np.random.default_rng(0).normal(size=(16, geometry.DENSE_MAX + 300)).astype(np.float32)
    U = np.asarray(geometry.unit_directions(W), np.float64)
    dense = ((U.T @ W.astype(np.float64)) ** 2).sum(1)
    np.testing.assert_allclose(np.asarray(geometry._row_sq_sums(geometry.unit_directions(W), W)), dense, rtol=1e-5)
    D = np.asarray(geometry.feature_dimensionality(W))
    np.testing.assert_allclose(D, (W.astype(np.float64) ** 2).sum(0) / dense, rtol=1e-5)


def test_tms_16k_preset_is_the_full_size_with_synthsaebench_structure():
    cfg = presets.get("tms-16k")
    assert (cfg.data.n_features, cfg.model.d_hidden) == (16_384, 768)
    p = cfg.feature_probability()[0]
    assert 20 < p.sum() < 30   # about 25 features active per sample, SynthSAEBench's L0
    assert cfg.data.parents * (1 + cfg.data.children) <= cfg.data.n_features and cfg.data.correlation > 0


def test_memory_estimate_refuses_a_16k_sweep_that_cannot_fit_and_names_the_field():
    """1000 models of 16k x 768 need ~400 GB of parameters and optimiser state: refused before compute
    with the field that drives it; the preset itself fits in 4 GB."""
    from toymodels.io import budget

    cfg = presets.get("tms-16k")
    budget.check(cfg, available=4 << 30)
    with pytest.raises(ConfigError) as e:
        budget.check(cfg.replace(n_inst=1000, **{"data.feature_probability": 0.1}), available=24 << 30)
    assert str(e.value).startswith("n_inst=1000:") and "parameters and optimiser state" in str(e.value)
