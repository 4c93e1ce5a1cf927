"""The residual MLP toy (toymodels.core.residual): its forward against a hand-written numpy version of the
equations, the labels (published and clean), the naive baseline against a Monte-Carlo estimate of the
naive solution built inside the model, the frozen embedding in pretraining, and the lab on it."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from toymodels.config import (
    Config,
    ConfigError,
    DataConfig,
    FeaturesConfig,
    FineTuneConfig,
    ModelConfig,
    TrainConfig,
)
from toymodels.core import data as tdata
from toymodels.core import residual
from toymodels.core.engine import model_loss
from toymodels.core.models import MODELS
from toymodels.core.planting import rotate_hidden
from toymodels.core.residual import ResidualMLP


def _x(n: int, batch: int, p: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random((batch, n)) < p, rng.uniform(-1, 1, (batch, n)), 0.0).astype(np.float32)


def _numpy_forward(m: ResidualMLP, x: np.ndarray):
    """r_0 = W_E x; h_l = ReLU(W_inₗᵀ r_{l−1}); r_l = r_{l−1} + W_outₗ h_l; f = W_Eᵀ r_L + b (− M x if clean),
    per sample, in float64: returns (f, [W_Eᵀ r_l + b (− M x)], [r_0..r_L])."""
    W, W_in, W_out, b = (np.asarray(a[...], np.float64) for a in (m.W, m.W_in, m.W_out, m.b_final))
    x = np.asarray(x, np.float64)
    M = W.T @ W - np.eye(W.shape[1])
    fs, rs = [], []
    for xb in x:
        r = W @ xb
        rl, reads = [r], []
        for layer in range(W_in.shape[0]):
            r = r + W_out[layer] @ np.maximum(W_in[layer].T @ r, 0.0)
            rl.append(r)
            reads.append(W.T @ r + b - (M @ xb if m.clean_labels else 0.0))
        fs.append(reads)
        rs.append(rl)
    reads = np.array(fs).transpose(1, 0, 2)   # (L, batch, n)
    return reads[-1], reads, np.array(rs).transpose(1, 0, 2)


@pytest.mark.parametrize("n_layers,clean", [(1, False), (1, True), (3, False), (3, True)])
def test_forward_matches_the_equations(n_layers, clean):
    m = ResidualMLP(12, 40, n_layers=n_layers, d_mlp=5, clean_labels=clean, rngs=nnx.Rngs(params=1))
    m.b_final[...] = jnp.linspace(-0.1, 0.1, 12)  # a non-zero bias, so its place is checked too
    x = _x(12, 32, 0.3)
    f, reads, rs = _numpy_forward(m, x)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(m.W[...]), axis=0), 1.0, atol=1e-6)  # unit columns
    np.testing.assert_allclose(np.asarray(m(jnp.asarray(x))), f, atol=2e-5)
    np.testing.assert_allclose(np.asarray(m.preact(jnp.asarray(x))), f, atol=2e-5)
    np.testing.assert_allclose(np.asarray(m.forward_t(jnp.asarray(x.T))).T, f, atol=2e-5)
    np.testing.assert_allclose(np.asarray(m.layer_preacts(jnp.asarray(x))), reads, atol=2e-5)
    for layer in range(1, n_layers + 1):
        np.testing.assert_allclose(np.asarray(m.hidden_at(jnp.asarray(x), layer)), rs[layer - 1], atol=2e-5)
    np.testing.assert_allclose(np.asarray(m.hidden(jnp.asarray(x))), rs[0], atol=2e-5)


def test_labels_and_inputs():
    x = jnp.asarray(_x(10, 64, 0.5))
    np.testing.assert_array_equal(np.asarray(tdata.target(x, "resid_relu")), np.asarray(x + jnp.maximum(x, 0.0)))
    xs = np.asarray(tdata.sample_features(jax.random.key(0), jnp.full((10,), 0.5), 4096, task="resid_relu"))
    assert xs.min() < -0.9 and xs.max() > 0.9 and abs((xs != 0).mean() - 0.5) < 0.02


def test_clean_labels_are_the_published_model_on_clean_labels():
    """(y − f_clean)² = (y_clean − f)² elementwise, y = x + ReLU(x), y_clean = W_EᵀW_E x + ReLU(x): the
    control's read-out is the published model trained on labels without the mixing term."""
    noisy = ResidualMLP(12, 40, n_layers=2, d_mlp=5, rngs=nnx.Rngs(params=3))
    clean = ResidualMLP(12, 40, n_layers=2, d_mlp=5, clean_labels=True, rngs=nnx.Rngs(params=3))
    x = jnp.asarray(_x(12, 64, 0.3))
    W = noisy.W[...]
    y, y_clean = x + jax.nn.relu(x), x @ W.T @ W + jax.nn.relu(x)
    np.testing.assert_allclose(np.asarray((y - clean(x)) ** 2), np.asarray((y_clean - noisy(x)) ** 2), atol=1e-6)
    loss = model_loss(clean, x, "resid_relu", jnp.ones(12))
    np.testing.assert_allclose(float(loss), float(jnp.mean((y_clean - noisy(x)) ** 2)), rtol=1e-5)


@pytest.mark.parametrize("clean", [False, True])
def test_naive_baseline_formula_against_monte_carlo(clean):
    """The naive solution built in the model (neuron i < N reads x_i and writes ReLU(x_i) exactly, through the
    embedding's dual basis): its Monte-Carlo loss per feature matches :func:`residual.naive_loss`."""
    n, d, N, p, B = 16, 48, 6, 0.2, 1 << 17
    m = ResidualMLP(n, d, n_layers=1, d_mlp=N, clean_labels=clean, rngs=nnx.Rngs(params=0))
    W = np.asarray(m.W[...], np.float64)
    dual = W @ np.linalg.inv(W.T @ W)           # (d, n): dualᵀ W = I
    m.W_in[...] = jnp.asarray(dual[None, :, :N], jnp.float32)
    m.W_out[...] = jnp.asarray(dual[None, :, :N], jnp.float32)
    x = jnp.asarray(_x(n, B, p, seed=1))
    err = np.asarray((x + jax.nn.relu(x) - m(x)) ** 2, np.float64)
    mc, se = err.mean(), err.mean(1).std() / math.sqrt(B)
    want = residual.naive_loss(p, n, N, None if clean else W)
    assert abs(mc - want) < 4 * se + 1e-6, (mc, want, se)
    assert clean or want > residual.naive_loss(p, n, N)  # the mixing term costs the noisy naive solution


def _tiny(clean=False, **extra) -> Config:
    return Config(name="res-tiny", n_inst=2,
                  data=DataConfig(n_features=10, feature_probability=0.1, batch_size=128, task="resid_relu"),
                  model=ModelConfig(kind="residual_mlp", d_hidden=32, d_mlp=4, n_layers=2, clean_labels=clean),
                  train=TrainConfig(steps=40, lr=3e-3, schedule="cosine", eval_batch_size=512), **extra)


def test_preset_smoke_run_keeps_the_embedding_and_pairs_the_conditions(tmp_path):
    """The residual-mlp preset with its smoke overrides: both members pretrain the same seeds, so their frozen
    embeddings are identical and still unit-norm, biases stay 0, the MLP trains; the suite summary pairs the
    conditions and carries per-layer records."""
    from toymodels import presets
    from toymodels.experiment import run_suite
    from toymodels.io import runs

    suite = presets.get("residual-mlp").replace(**{"data.batch_size": 64, "train.steps": 20,
                                                   **presets.SMOKE_OVERRIDES["residual-mlp"]})
    run_suite(suite, tmp_path, progress=False, echo=lambda s: None)
    noisy, clean = (runs.load(tmp_path / m) for m in ("residual-noisy", "residual-clean"))
    np.testing.assert_array_equal(noisy.weights["W"], clean.weights["W"])
    np.testing.assert_allclose(np.linalg.norm(noisy.weights["W"], axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(noisy.weights["b_final"], 0.0)
    assert np.abs(noisy.weights["W_in"] - clean.weights["W_in"]).max() > 0  # trained, on different labels
    s = runs.read_json(tmp_path / "summary.json")
    cell = s["cells"][0]
    assert cell["noisy_minus_clean"]["n_clusters"] >= 1 and np.isfinite(cell["noisy_minus_clean"]["mean"])
    layers = cell["noisy"]["layers"]
    assert [r["layer"] for r in layers] == [1] and all(np.isfinite(v) for v in layers[0].values())
    assert (tmp_path / "figures" / "residual-mlp_residual_loss.png").stat().st_size > 0


def test_rotating_the_stream_leaves_the_function():
    cfg = _tiny()
    from toymodels.core.models import init_instances

    graphdef, params = init_instances(cfg.model, 10, 2, jax.random.key(0))
    O = np.stack([np.linalg.qr(np.random.default_rng(i).normal(size=(32, 32)))[0] for i in range(2)])
    rotated = rotate_hidden(params, jnp.asarray(O, jnp.float32), MODELS["residual_mlp"].HIDDEN_LEAVES)
    x = jnp.asarray(_x(10, 16, 0.3))
    f = jax.jit(jax.vmap(lambda s: nnx.merge(graphdef, s)(x)))
    np.testing.assert_allclose(np.asarray(f(rotated)), np.asarray(f(params)), atol=2e-5)


def test_config_checks():
    with pytest.raises(ConfigError, match="data.task"):
        Config(name="bad", model=ModelConfig(kind="residual_mlp", d_hidden=8, d_mlp=2), data=DataConfig(n_features=4))


def test_finetuning_runs_on_the_embedding(tmp_path):
    """Helpful and toxic planted 15° apart in the embedding, helpful amplified on narrow data: the lab runs and
    its probe's numbers are finite."""
    from toymodels.experiment import run
    from toymodels.io import runs

    c = math.cos(math.radians(15.0))
    cfg = _tiny(features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="planted",
                                        cosines=((1.0, c), (c, 1.0)), norms=1.0),
                finetune=FineTuneConfig(target="helpful", steps=30, rate_samples=4096))
    run(cfg, tmp_path, progress=False, echo=lambda s: None)
    s = runs.read_json(tmp_path / "summary.json")
    W = runs.read_npz(tmp_path / "weights_pretrained.npz")["W"]
    np.testing.assert_allclose(np.einsum("im,im->i", W[:, :, 0], W[:, :, 1]), c, atol=1e-5)  # planted, kept
    ft = s["finetune"]
    leaves = [v for v in jax.tree.leaves(ft) if isinstance(v, float)]
    assert leaves and all(np.isfinite(v) for v in leaves if v is not None)
