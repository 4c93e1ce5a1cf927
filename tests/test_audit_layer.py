"""``toymodels audit RUN_DIR --layer l``: the SAE and the auditor read layer l's activations h_l = W_l x_{l−1}
and are scored against W_l's columns (:mod:`toymodels.audit.layers`); bad layers are one-line errors that
write nothing; a single-layer run is audited as before.

One tiny deep run (3 layers, W = W_1 at the planted layer 1) is trained once for the module; the audits use a
tiny default dictionary (monkeypatched) so the file stays cheap."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import toymodels
from toymodels import audit_command as ac
from toymodels import cli
from toymodels.audit import layers
from toymodels.audit import stage as st
from toymodels.audit import train as T
from toymodels.config import Config, ConfigError, DataConfig, FeaturesConfig, ModelConfig
from toymodels.core.models import build, init_instances

N, D, L, PLANT = 5, 3, 3, 1
TINY_SAE = dict(steps=60, batch_k=(0.5,), eval_batch_size=512, batch_size=256)


def _cfg(task: str = "reconstruct", **model) -> Config:
    return Config(name="deep-tiny", n_inst=1, seed=5,
                  data=DataConfig(n_features=N, feature_probability=0.1, task=task),
                  model=ModelConfig(d_hidden=D, **model),
                  features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",))).replace(
        **{"train.steps": 60})


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("deep") / "run"
    toymodels.run(_cfg(kind="deep", n_layers=L, plant_layer=PLANT), out, progress=False, echo=lambda s: None)
    return out


@pytest.fixture
def tiny_sae(monkeypatch):
    monkeypatch.setattr(ac, "DEFAULT_SAE", dataclasses.replace(ac.DEFAULT_SAE, **TINY_SAE))


def _models(run_dir):
    return ac.load_models(ac.load(run_dir))


def _by_hand(params, x: np.ndarray, layer: int) -> np.ndarray:
    """h_l = W_l x_{l−1} in numpy, from the saved leaves: x_l = ReLU(W_lᵀW_l x_{l−1} + b_l) (the deep
    stack's default layer_activation), layer order: W_layers with W inserted at the planted layer."""
    p = jax.tree.map(lambda a: np.asarray(a[0], np.float64), nnx.to_pure_dict(params))
    Ws = list(p["W_layers"])
    Ws.insert(PLANT - 1, p["W"])
    bs = [*p["b_layers"], p["b_final"]]
    h = np.asarray(x, np.float64)
    for W, b in zip(Ws[:layer - 1], bs[:layer - 1], strict=True):
        h = np.maximum((h @ W.T) @ W + b, 0.0)
    return h @ Ws[layer - 1].T, Ws[layer - 1]


def test_layer_activations_and_directions_are_W_l_x_l_minus_1(deep_run):
    graphdef, params = _models(deep_run)
    x = np.asarray(jax.random.uniform(jax.random.key(0), (64, N)) * (jax.random.uniform(jax.random.key(1), (64, N)) < 0.4))
    state = jax.tree.map(lambda a: a[0], params)
    W_all = [layers.true_directions_all(graphdef, params, layer)[0] for layer in (1, 2, 3)]
    for layer in (1, 2, 3):
        want, W_l = _by_hand(params, x, layer)
        # the accessor, the SAEs' batch-major and feature-major reads, and the auditor's
        got = layers.activations(nnx.merge(graphdef, state), jnp.asarray(x), layer)
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(T.hidden_fn(graphdef, layer)(state, jnp.asarray(x))), want, rtol=1e-5, atol=1e-6)
        ht = T.hidden_t_fn(ac.load(deep_run).config, graphdef, layer)(state, jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(ht).T, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(W_all[layer - 1], W_l)
    # W's layer (the default) is the planted one, and its directions are W
    np.testing.assert_array_equal(layers.true_directions_all(graphdef, params, None)[0], W_all[PLANT - 1])
    assert not np.allclose(W_all[0], W_all[1]) and not np.allclose(W_all[1], W_all[2])


def test_the_layer_2_audit_is_scored_against_W_2_not_W_1(deep_run, tiny_sae, monkeypatch, tmp_path):
    """Audit layer 2 (W is W_1): every true-direction matrix handed to the scorers (sae_rows: recovery and
    chance; audit_models: the auditor's truth) is W_2's, not W_1's, and the SAEs were trained on h_2 (their
    scale is layer 2's)."""
    graphdef, params = _models(deep_run)
    W = {layer: layers.true_directions_all(graphdef, params, layer) for layer in (1, 2, 3)}
    seen = {"rows": [], "scales": [], "audit_W": []}
    sae_rows, train_variant, audit_model = st.sae_rows, T.train_variant, st.auditor.audit_model

    def spy_rows(cfg, W_, *a, **k):
        seen["rows"].append(np.asarray(W_))
        return sae_rows(cfg, W_, *a, **k)

    def spy_train(cfg, graphdef_, params_, variant, scale, **k):
        seen["scales"].append((np.asarray(scale), k.get("layer")))
        return train_variant(cfg, graphdef_, params_, variant, scale, **k)

    def spy_audit(dic, h, target, harmful, W_m, names):
        seen["audit_W"].append(np.asarray(W_m))
        return audit_model(dic, h, target, harmful, W_m, names)

    monkeypatch.setattr(st, "sae_rows", spy_rows)
    monkeypatch.setattr(T, "train_variant", spy_train)
    monkeypatch.setattr(st.auditor, "audit_model", spy_audit)
    out = tmp_path / "out"
    out.mkdir()
    first = "# audit: deep-tiny (layer 1 of 3)\n\nthe default layer's audit, written first\n"
    (out / "audit.md").write_text(first)
    for layer in (2,):
        text, paths = ac.run_audit(deep_run, layer=layer, out_dir=out, progress=False)
        assert [p.name for p in paths] == [f"audit-layer{layer}.md"]
        np.testing.assert_array_equal(seen["rows"][-1], W[layer])
        np.testing.assert_array_equal(seen["audit_W"][-1], W[layer][0])
        assert not np.allclose(seen["rows"][-1], W[PLANT])
        scale, at = seen["scales"][-1]
        assert at == layer
        md = paths[0].read_text()
        assert md.startswith(f"# audit: deep-tiny (layer {layer} of {L})")
        assert f"layer {layer} of {L} (h_{layer} = W_{layer} x_{layer - 1}" in md and md.rstrip("\n") in text + md
    # the default layer's audit.md (written before) is kept beside it
    assert sorted(p.name for p in out.iterdir()) == ["audit-layer2.md", "audit.md"]
    assert (out / "audit.md").read_text() == first


def _tree(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory):
    """A single-layer run's directory (config.json, summary.json, weights.npz), not trained."""
    import json

    cfg = _cfg()
    path = tmp_path_factory.mktemp("flat") / "run"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(cfg.to_dict()))
    (path / "summary.json").write_text(json.dumps({"instances": [{}]}))
    np.savez(path / "weights.npz", W=np.ones((1, D, N), np.float32), b_final=np.zeros((1, N), np.float32))
    return path


@pytest.mark.parametrize("which, layer, allowed", [
    ("deep", 0, "1..3"), ("deep", 4, "1..3"), ("deep", -1, "1..3"), ("flat", 2, "must be 1"),
])
def test_a_bad_layer_is_one_line_exit_2_and_writes_nothing(deep_run, flat_run, which, layer, allowed, capsys):
    run = deep_run if which == "deep" else flat_run
    before = _tree(run.parent)
    code = cli.main(["audit", str(run), "--layer", str(layer), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"--layer={layer}" in err and allowed in err, err
    assert _tree(run.parent) == before
    with pytest.raises(ConfigError) as e:   # the Python API says the same before anything trains
        ac.run_audit(run, layer=layer, progress=False)
    assert e.value.field == "--layer" and "\n" not in str(e.value)


def test_sae_run_is_refused_for_another_layer(deep_run):
    with pytest.raises(ConfigError) as e:
        ac.run_audit(deep_run, deep_run, layer=2, progress=False)
    assert e.value.field == "--sae-run" and "layer 2" in str(e.value)


def test_a_single_layer_model_reads_as_before():
    """Layer 1 of a single-layer model is hidden(x) and W exactly, for every single-layer kind; its audit
    file is audit.md and a layer given as 1 is the default."""
    x = jax.random.uniform(jax.random.key(2), (32, N))
    for kind in ("relu_output", "linear", "relu_hidden", "abs_computation"):
        cfg = _cfg(kind=kind, task="abs" if kind == "abs_computation" else "reconstruct")
        graphdef, state = nnx.split(build(cfg.model, N, std=0.5, rngs=nnx.Rngs(params=3)))
        params = jax.tree.map(lambda a: a[None], state)   # one instance, with the instance axis
        model = nnx.merge(graphdef, state)
        assert layers.n_layers(model) == 1 and layers.check_layer(model, None) == 1 == layers.check_layer(model, 1)
        np.testing.assert_array_equal(np.asarray(layers.activations(model, x, 1)), np.asarray(model.hidden(x)))
        np.testing.assert_array_equal(np.asarray(layers.activations(model, x)), np.asarray(model.hidden(x)))
        np.testing.assert_array_equal(layers.true_directions_all(graphdef, params, 1), np.asarray(params["W"][...], np.float64))
        assert ac.file_name(cfg, None) == ac.file_name(cfg, 1) == "audit.md"
        # the SAEs' feature-major read is the fast W xᵀ path, unchanged (no graphdef needed)
        ht = T.hidden_t_fn(cfg)(state, x)
        np.testing.assert_allclose(np.asarray(ht).T, np.asarray(model.hidden(x)), rtol=1e-6, atol=1e-6)
    deep = _cfg(kind="deep", n_layers=L, plant_layer=PLANT)
    assert [ac.file_name(deep, v) for v in (None, 1, 2, 3)] == ["audit.md", "audit.md", "audit-layer2.md",
                                                                "audit-layer3.md"]
    deep = _cfg(kind="deep", n_layers=L, plant_layer=2)
    assert [ac.file_name(deep, v) for v in (None, 1, 2, 3)] == ["audit-layer1.md" if v == 1 else
                                                                "audit-layer3.md" if v == 3 else "audit.md"
                                                                for v in (None, 1, 2, 3)]


def test_activation_diffing_reads_the_models_layer(deep_run):
    """actdiff.model_reads rebuilds fine-tune k's model from the run's arrays and reads h_l, the output
    pre-activation and W_l; on a tied single-layer model it is the tied formula actdiff always used."""
    from toymodels.audit import actdiff

    graphdef, params = _models(deep_run)
    arrays = {k: np.asarray(v) for k, v in ac.load(deep_run).weights.items()}
    template = jax.tree.map(lambda a: a[0], params)
    x = np.asarray(jax.random.uniform(jax.random.key(4), (32, N)))
    for layer in (1, 2, 3):
        H, P, W_l = actdiff.model_reads(graphdef, template, arrays, 0, x, layer)
        want, W_want = _by_hand(params, x, layer)
        np.testing.assert_allclose(H, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(W_l, W_want)
        np.testing.assert_allclose(P, np.asarray(nnx.merge(graphdef, template).preact(jnp.asarray(x))), rtol=1e-6)
    cfg = _cfg(kind="relu_output")
    graphdef, params = init_instances(cfg.model, N, 2, jax.random.key(6))
    flat = {k: np.asarray(v) for k, v in nnx.to_pure_dict(params).items()}
    H, P, W = actdiff.model_reads(graphdef, jax.tree.map(lambda a: a[0], params), flat, 1, x, None)
    W1, b1 = flat["W"][1].astype(np.float64), flat["b_final"][1].astype(np.float64)
    np.testing.assert_allclose(H, x @ W1.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(P, x @ W1.T @ W1 + b1, rtol=1e-5, atol=1e-6)
    W0 = flat["W"][0].astype(np.float64)
    np.testing.assert_allclose(actdiff.rise_of(x @ W0.T @ W0, P, x), actdiff.output_rise(W0, 0.0, W1, b1, x), atol=1e-5)
