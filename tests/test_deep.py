"""The deep TMS stack (toymodels.core.deep) and its per-layer records (toymodels.lab.layers, lab.depth).

* depth 1 is the single-layer relu_output model bit for bit: initialisation, forward and pretraining
  through the one engine;
* the forward pass is the stack's equations, checked against numpy;
* a rotation of every layer's hidden space leaves the function unchanged (the orientation axis is valid);
* the composed first-order prediction (a JVP through every layer) is exact at first order: the finite
  difference (p(θ0 + εΔ) − p(θ0)) / ε approaches it linearly in ε (float64);
* the per-layer records agree with the probe, and the depth suite's summary pairs models by index.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import toymodels as tm
from toymodels.config import Config, ConfigError, DataConfig, ModelConfig, TrainConfig
from toymodels.core.models import hidden_leaves, init_instances
from toymodels.core.planting import rotate_hidden
from toymodels.core.pretrain import pretrain
from toymodels.lab.layers import composed_prediction
from toymodels.presets.lab import analogy_base


def _cfg(kind: str, **model) -> Config:
    return Config(name=f"t-{kind}", seed=3, n_inst=3, data=DataConfig(n_features=5, feature_probability=0.1),
                  model=ModelConfig(kind=kind, d_hidden=2, **model), train=TrainConfig(steps=300, chunk_size=100))


def _one(params, i=0):
    return jax.tree.map(lambda a: a[i], params)


def test_depth_one_is_relu_output_bit_for_bit():
    a, b = _cfg("relu_output"), _cfg("deep", n_layers=1, plant_layer=1)
    ga, pa = init_instances(a.model, 5, 3, jax.random.key(0))
    gb, pb = init_instances(b.model, 5, 3, jax.random.key(0))
    assert jax.tree.structure(pa) == jax.tree.structure(pb)
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    xs = jax.random.uniform(jax.random.key(1), (64, 5))
    ma, mb = nnx.merge(ga, _one(pa)), nnx.merge(gb, _one(pb))
    np.testing.assert_array_equal(np.asarray(ma(xs)), np.asarray(mb(xs)))
    np.testing.assert_array_equal(np.asarray(ma.forward_t(xs.T)), np.asarray(mb.forward_t(xs.T)))
    # and after 300 steps of the engine: the same program, so the same bits
    _, wa, ia = pretrain(a, progress=False)
    _, wb, ib = pretrain(b, progress=False)
    for x, y in zip(jax.tree.leaves(wa), jax.tree.leaves(wb)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(ia["eval_loss"], ib["eval_loss"])


@pytest.mark.parametrize("activation,plant_layer", [("relu", 1), ("relu", 3), ("linear", 2)])
def test_forward_is_the_stack_of_bottlenecks(activation, plant_layer):
    cfg = _cfg("deep", n_layers=3, plant_layer=plant_layer, layer_activation=activation)
    g, p = init_instances(cfg.model, 5, 2, jax.random.key(4))
    p = jax.tree.map(lambda a: a + 0.05, p)  # nonzero biases
    m = nnx.merge(g, _one(p, 1))
    Ws = [np.asarray(w, np.float64) for w in m.weights()]
    bs = [np.asarray(b, np.float64) for b in m.biases()]
    np.testing.assert_array_equal(Ws[plant_layer - 1], np.asarray(m.W[...]))   # W is the planted layer's matrix
    x = np.asarray(jax.random.uniform(jax.random.key(5), (32, 5)), np.float64)
    act = x
    pre = []
    for i, (W, b) in enumerate(zip(Ws, bs), start=1):
        p_l = act @ W.T @ W + b
        pre.append(p_l)
        act = np.maximum(p_l, 0) if (i == 3 or activation == "relu") else p_l
    xj = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(np.asarray(m(xj)), act, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(m.forward_t(xj.T)).T, act, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(m.layer_preacts(xj)), np.stack(pre), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(m.preact(xj)), pre[-1], rtol=1e-5, atol=1e-5)
    inp = x if plant_layer == 1 else np.maximum(pre[plant_layer - 2], 0) if activation == "relu" else pre[plant_layer - 2]
    np.testing.assert_allclose(np.asarray(m.hidden(xj)), inp @ Ws[plant_layer - 1].T, rtol=1e-5, atol=1e-5)


def test_rotating_every_layer_leaves_the_function_unchanged():
    cfg = _cfg("deep", n_layers=3, plant_layer=2)
    g, p = init_instances(cfg.model, 5, 2, jax.random.key(6))
    th = np.array([0.7, -1.9])
    O = np.stack([[[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]] for t in th]).astype(np.float32)
    assert hidden_leaves("deep") == ("W", "W_layers")
    q = rotate_hidden(p, O, hidden_leaves("deep"))
    assert not np.allclose(np.asarray(q["W_layers"][...]), np.asarray(p["W_layers"][...]))
    x = jax.random.uniform(jax.random.key(7), (50, 5))
    for i in range(2):
        a, b = nnx.merge(g, _one(p, i)), nnx.merge(g, _one(q, i))
        np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), atol=2e-6)


def test_composed_prediction_is_exact_at_first_order():
    with jax.enable_x64(True):
        cfg = _cfg("deep", n_layers=3, plant_layer=2)
        g, p = init_instances(cfg.model, 5, 1, jax.random.key(8))
        s0 = jax.tree.map(lambda a: jnp.asarray(a[0], jnp.float64) + 0.1, p)
        delta = jax.tree.map(lambda a: jnp.asarray(jax.random.normal(jax.random.key(9), a.shape), jnp.float64), s0)
        x = jnp.eye(5, dtype=jnp.float64)[:1]
        errs = []
        for eps in (1e-2, 1e-3, 1e-4):
            s1 = jax.tree.map(lambda a, d: a + eps * d, s0, delta)
            p0, p1, pred = composed_prediction(g, s0, s1, x)
            fd = (p1 - p0) / eps
            errs.append(float(jnp.max(jnp.abs(fd - pred / eps))))
            assert float(jnp.max(jnp.abs(pred / eps))) > 1e-3          # a nonzero first-order term
        # the remainder is second order: the error shrinks ~10x per 10x smaller ε (at least 5x)
        assert errs[1] < errs[0] / 5 and errs[2] < errs[1] / 5, errs
        assert errs[2] < 1e-3


def test_bad_deep_configs_name_the_field():
    with pytest.raises(ConfigError, match=r"model\.plant_layer"):
        ModelConfig(kind="deep", n_layers=2, plant_layer=3)
    with pytest.raises(ConfigError, match=r"model\.n_layers"):
        ModelConfig(kind="relu_output", n_layers=2)
    with pytest.raises(ConfigError, match=r"model\.n_experts"):
        ModelConfig(kind="deep", n_experts=2)


@pytest.fixture(scope="module")
def tiny_deep(tmp_path_factory):
    base = analogy_base("deep-tiny")
    ft = dataclasses.replace(base.finetune, steps=60, chunk_size=20, rate_samples=20_000, orientations=2,
                             matched_gains=(1.2,), save_trajectory=False)
    cfg = dataclasses.replace(base, n_inst=3, train=TrainConfig(steps=100, chunk_size=100), finetune=ft,
                              model=ModelConfig(kind="deep", d_hidden=2, n_layers=2, plant_layer=2))
    out = tm.run(cfg, tmp_path_factory.mktemp("deep") / "run", progress=False, echo=lambda s: None)
    return json.loads((out / "summary.json").read_text())


def test_per_layer_records_agree_with_the_probe(tiny_deep):
    ft = tiny_deep["finetune"]
    assert "by_layer" in ft
    for e in ft["instances"]:
        rec, h = e["layers"]["toxic"], e["harmful"]["toxic"]
        assert len(rec["change"]) == 2 and rec["argmax_layer"] in (1, 2)
        # the last layer's pre-activation change is the output's, which the probe measures on e_target
        assert rec["change"][-1] == pytest.approx(h["preact"]["change"], abs=1e-5)
        assert h["first_order"]["per_unit_push"] is None   # a one-layer quantity: not reported for a stack
        assert rec["argmax_layer"] == 1 + int(np.argmax(np.abs(rec["change"])))
    cell = ft["by_layer"]["narrow|adam|axis"]["toxic"]
    assert [c["layer"] for c in cell] == [1, 2]
    assert cell[0]["change"]["n_clusters"] == 3 and cell[0]["change"]["direction"] == "no evidence" or \
        cell[0]["change"]["n_clusters"] >= 10


def _cell(regime, end):
    return {"regime": regime, "optimizer": "adam", "orientation": "axis", "end": {"direction": end}}


def test_later_layers_verdict_needs_every_distinct_cell():
    from toymodels.lab.depth import verdict
    assert verdict([_cell("narrow", "up"), _cell("narrow", "up")])["overall"] == "confirmed"
    assert verdict([_cell("narrow", "down"), _cell("full-all", "down")])["overall"] == "refuted"
    v = verdict([_cell("narrow", "up"), _cell("full-all", "down")])
    assert v["overall"] == "regime-dependent" and v["per_regime"] == {"narrow": "confirmed", "full-all": "refuted"}
    # one cell without evidence and the regime claims nothing; a regime with no evidence does not refute
    assert verdict([_cell("narrow", "up"), _cell("narrow", "no evidence")])["overall"] == "no evidence"
    assert verdict([_cell("narrow", "up"), _cell("full-all", "no evidence")])["overall"] == "confirmed in narrow only"
    # up in one optimiser, down in another: it flips with the axis, it is not "no evidence"
    v = verdict([_cell("narrow", "up"), _cell("narrow", "down")])
    assert v["per_regime"] == {"narrow": "axis-dependent"} and v["overall"] == "axis-dependent"


def test_deeper_minus_shallower_pairs_models_by_index(monkeypatch):
    from toymodels.lab.depth import deeper_minus_shallower

    def summary(changes, weak=()):
        inst = [{"index": i, "pretrain_instance": i, "regime": "narrow", "optimizer": "adam", "orientation": 0,
                 "target": "helpful", "harmful": {"toxic": {"rate": {"change_pp": c}}}} for i, c in enumerate(changes)]
        feats = {"names": ["helpful", "toxic"], "barely_represented": [["toxic"] if i in weak else []
                                                                       for i in range(len(changes))]}
        return {"finetune": {"instances": inst}, "features": feats}

    rng = np.random.default_rng(0)
    shallow = rng.normal(0.0, 1.0, 12)
    deep = shallow + 0.5 + rng.normal(0.0, 0.01, 12)   # model i's deeper run is its shallow one + 0.5
    import toymodels.lab.robustness as rob
    # one distinct cell; its rows (the robustness table's) are tested in test_robustness.py
    rows = [{"regime": "narrow", "optimizer": "adam", "orientation": "axis", "duplicate_of": None}]
    monkeypatch.setattr(rob, "group_rows", lambda *a, **k: rows)
    cells = deeper_minus_shallower(summary(deep, weak={3}), summary(shallow), "toxic", [])
    end = cells[0]["end"]
    assert end["n_clusters"] == 11                      # model 3's pair is barely represented in one run: out
    assert end["mean"] == pytest.approx(0.5, abs=0.02) and end["direction"] == "up"
    assert end["ci95"][1] - end["ci95"][0] < 0.05       # paired: the between-model spread (sd 1) cancels


def test_objective_at_a_layer_reads_that_layers_output():
    from toymodels.core import data as tdata
    from toymodels.lab.objective import finetune_objective
    cfg = _cfg("deep", n_layers=3, plant_layer=2)
    g, p = init_instances(cfg.model, 5, 1, jax.random.key(11))
    state = jax.tree.map(lambda a: a[0] + 0.02, p)
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=64))
    inst = {"feature_probability": jnp.full(5, 0.3), "present": jnp.ones(5), "out_scale": jnp.full(5, 2.0),
            "loss_weight": jnp.ones(5)}
    key = jax.random.key(12)
    at = {layer: float(finetune_objective(g, sample, "reconstruct", "all", layer)(state, key, inst))
          for layer in (0, 1, 3)}
    assert at[3] == at[0]                       # the last layer is the output
    x = np.asarray(sample(key, inst["feature_probability"]), np.float64)
    m = nnx.merge(g, state)
    W1, b1 = np.asarray(m.weights()[0], np.float64), np.asarray(m.biases()[0], np.float64)
    x1 = np.maximum(x @ W1.T @ W1 + b1, 0)       # layer 1's output (ReLU between layers)
    assert at[1] == pytest.approx(float(np.mean((2.0 * x - x1) ** 2)), rel=1e-5)
    assert at[1] != pytest.approx(at[0], rel=1e-3)
    with pytest.raises(ConfigError, match=r"finetune\.layer"):
        dataclasses.replace(analogy_base("x"), finetune=dataclasses.replace(analogy_base("x").finetune, layer=1))


def test_a_missing_or_misshapen_layer_is_refused(tmp_path):
    from toymodels.errors import RunFileError
    from toymodels.io.runs import check_weights
    cfg = _cfg("deep", n_layers=3, plant_layer=2)
    _, p = init_instances(cfg.model, 5, 3, jax.random.key(0))
    w = {k: np.asarray(v) for k, v in nnx.to_pure_dict(p).items()}
    check_weights(tmp_path / "weights.npz", w, cfg)               # what toymodels writes passes
    cut = dict(w, W_layers=w["W_layers"][:, :1])
    with pytest.raises(RunFileError, match=r"W_layers.*\[3, 1, 2, 5\].*\[3, 2, 2, 5\]"):
        check_weights(tmp_path / "weights.npz", cut, cfg)
    with pytest.raises(RunFileError, match=r"no array 'b_layers'"):
        check_weights(tmp_path / "weights.npz", {k: v for k, v in w.items() if k != "b_layers"}, cfg)
