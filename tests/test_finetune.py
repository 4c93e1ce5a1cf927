"""Fine-tuning: data modes, frozen parameters, the first-order prediction, and the saved results."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toymodels import experiment
from toymodels.config import (
    Config,
    DataConfig,
    FeaturesConfig,
    FineTuneConfig,
    ModelConfig,
    RegimeConfig,
    TrainConfig,
)
from toymodels.core import data as tdata
from toymodels.core import planting
from toymodels.io import runs
from toymodels.lab import finetune as lab_ft
from toymodels.lab import rates as lab_rates
from toymodels.lab import objective, plan

NARROW = RegimeConfig("narrow", "narrow", "target")
TASK = RegimeConfig("task", "task", "target")
FULL_ALL = RegimeConfig("full-all", "full", "all")


def make_cfg(regimes=(NARROW, FULL_ALL), n_inst=2, n=5, correlated=(), steps=20, pre_steps=50, **ft):
    ft = {"steps": steps, "chunk_size": 10, "log_every": 10, "batch_size": 128, "eval_batch_size": 1024,
          "regimes": tuple(regimes), **ft}
    return Config(name="ft", n_inst=n_inst, seed=3,
                  data=DataConfig(n_features=n, feature_probability=0.2, batch_size=128, correlated=correlated),
                  model=ModelConfig(d_hidden=2), train=TrainConfig(steps=pre_steps, chunk_size=50, log_every=50),
                  features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="pinned",
                                          angles=(0.0, 15.0)),
                  finetune=FineTuneConfig(**ft))


def planted(cfg):
    """A planted, untrained model (no pretraining needed for these tests)."""
    return planting.init_params(cfg, cfg.n_inst, jax.random.key(1))


# --- data modes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("correlated", [(), (2,)])  # (2,): helpful and toxic share one activity draw
def test_narrow_and_task_data_never_contain_a_harmful_feature(correlated):
    cfg = make_cfg(regimes=(NARROW, TASK, RegimeConfig("full", "full", "target")), correlated=correlated)
    pl = plan.make_plan(cfg)
    arrays = {k: jnp.asarray(v) for k, v in plan.regime_arrays(cfg, pl).items()}
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=512))
    draw = jax.jit(jax.vmap(lambda key, inst: objective.finetune_inputs(sample, key, inst)))
    xs = np.concatenate([np.asarray(draw(jax.random.split(jax.random.key(s), pl.n_ft), arrays))
                         for s in range(20)], axis=1)  # (n_ft, 20 * 512, n)
    for k in range(pl.n_ft):
        regime, x = pl.regime_name(k), xs[k]
        active = (x != 0).mean(0)
        if regime == "narrow":
            assert np.all(x[:, 1:] == 0) and active[0] > 0.15
        elif regime == "task":
            assert np.all(x[:, 1] == 0) and np.all(active[[0, 2, 3, 4]] > 0.15)
        else:  # the pretraining distribution has the harmful feature
            assert active[1] > 0.15


def test_regime_arrays_encode_objective_and_scope():
    cfg = make_cfg(regimes=(NARROW, FULL_ALL), gamma=3.0, target_probability=0.5)
    arr = plan.regime_arrays(cfg, plan.make_plan(cfg))
    np.testing.assert_array_equal(arr["out_scale"][0], [3, 1, 1, 1, 1])
    np.testing.assert_array_equal(arr["loss_weight"][0], [1, 0, 0, 0, 0])      # narrow: target scope
    np.testing.assert_array_equal(arr["loss_weight"][1], [1, 1, 1, 1, 1])      # full-all
    np.testing.assert_allclose(arr["feature_probability"][1], [0.5, 0.2, 0.2, 0.2, 0.2])
    cfg = make_cfg(regimes=(FULL_ALL,), objective="importance", importance_factor=10.0)
    arr = plan.regime_arrays(cfg, plan.make_plan(cfg))
    np.testing.assert_array_equal(arr["out_scale"][0], np.ones(5))
    np.testing.assert_array_equal(arr["loss_weight"][0], [10, 1, 1, 1, 1])


# --- frozen parameters -------------------------------------------------------------------------------
@pytest.mark.parametrize("trainable", ["W", "b_final", "target_column", "lora"])
def test_frozen_parameters_stay_bit_identical(trainable):
    # full data and loss on all outputs give every parameter a gradient; AdamW's decay touches all too
    cfg = make_cfg(regimes=(FULL_ALL,), trainable=trainable, optimizer="adamw", weight_decay=0.1, lr=1e-2)
    graphdef, params = planted(cfg)
    res = lab_ft.finetune(cfg, graphdef, params, progress=False)
    W0, W1 = np.asarray(res.pretrained["W"][...]), np.asarray(res.finetuned["W"][...])
    b0, b1 = np.asarray(res.pretrained["b_final"][...]), np.asarray(res.finetuned["b_final"][...])
    if trainable == "W":
        assert np.array_equal(b0, b1) and not np.array_equal(W0, W1)
    elif trainable == "b_final":
        assert np.array_equal(W0, W1) and not np.array_equal(b0, b1)
    elif trainable == "target_column":  # target = helpful = column 0
        assert np.array_equal(b0, b1) and np.array_equal(W0[:, :, 1:], W1[:, :, 1:])
        assert np.all(np.abs(W1[:, :, 0] - W0[:, :, 0]).max(1) > 1e-3)
    else:  # LoRA: a rank-1 change of W on top of the frozen W, biases untouched
        assert np.array_equal(b0, b1)
        for dW in W1 - W0:
            s = np.linalg.svd(dW, compute_uv=False)
            assert s[0] > 1e-3 and s[1] < 1e-5 * s[0]
    # the probe's trajectory starts at the pretrained weights exactly
    assert np.array_equal(res.trajectory["W"][0], W0)


# --- the first-order prediction ----------------------------------------------------------------------
def test_first_order_prediction_matches_one_small_step():
    # narrow data, loss on the target: SGD moves only W_t (along itself) and b_t, so toxic's
    # pre-activation on the unit target input moves by <W_j, ΔW_t> = α ‖W_j‖ cos 15°
    cfg = make_cfg(regimes=(NARROW, FULL_ALL), steps=1, optimizer="sgd", lr=1e-2, chunk_size=1)
    graphdef, params = planted(cfg)
    res = lab_ft.finetune(cfg, graphdef, params, progress=False)
    (_, before), (step, after) = res.probes[0], res.probes[-1]
    assert step == 1
    narrow = np.flatnonzero(res.plan.regime_index == 0)
    measured = after["preact_change"][narrow, 0]
    assert np.all(np.abs(measured) > 1e-4)  # the step did something
    np.testing.assert_allclose(after["pred_first_order"][narrow, 0], measured, rtol=1e-4)
    np.testing.assert_allclose(after["pred_along_target"][narrow, 0], measured, rtol=1e-4)
    per_unit = measured / (after["alpha"][narrow] * before["norm"][narrow, 0])
    np.testing.assert_allclose(per_unit, math.cos(math.radians(15.0)), rtol=1e-4)
    # with toxic in the data and the loss, its own column and bias move too: the first-order prediction
    # (target column only) is then not the whole change, but the full linearisation is
    W0, W1 = np.asarray(res.pretrained["W"][...]), np.asarray(res.finetuned["W"][...])
    b0, b1 = np.asarray(res.pretrained["b_final"][...]), np.asarray(res.finetuned["b_final"][...])
    for k in np.flatnonzero(res.plan.regime_index == 1):
        dW, db = W1[k] - W0[k], b1[k] - b0[k]
        linear = W0[k, :, 1] @ dW[:, 0] + dW[:, 1] @ W0[k, :, 0] + db[1]
        assert after["preact_change"][k, 0] == pytest.approx(linear, rel=1e-2)
        assert after["rel_error"][k, 0] > 1e-3


# --- end to end: files, and the numbers recomputed from the saved weights ------------------------------
def test_run_writes_weights_and_the_probe_recomputes_from_them(tmp_path):
    cfg = make_cfg(regimes=(NARROW, FULL_ALL), steps=30, tau=0.05)
    cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, rate_samples=2 * lab_rates.CHUNK))
    run_dir = runs.prepare_run_dir(tmp_path / "a")
    experiment.run(cfg, run_dir, progress=False, echo=lambda s: None)
    run = runs.load(run_dir)
    pre, post = run.npz("weights_pretrained"), run.npz("weights_finetuned")
    assert set(pre) == set(post) == set(run.weights)
    n_ft = cfg.n_inst * 2
    for k, v in run.weights.items():
        assert pre[k].shape == post[k].shape == (n_ft,) + v.shape[1:]
    ft = run.summary["finetune"]
    assert [e["pretrain_instance"] for e in ft["instances"]] == [0, 0, 1, 1]
    np.testing.assert_array_equal(pre["W"], np.repeat(run.weights["W"], 2, axis=0))

    # recompute from the files alone: pre-activation on the unit target input, cos, prediction, rate
    p = cfg.feature_probability()[0]
    key = jax.random.fold_in(jax.random.key(cfg.seed), plan.PROBE_SEED_OFFSET)
    x = np.asarray(tdata.sample_features(key, jnp.asarray(p), cfg.finetune.eval_batch_size, rng=cfg.data.rng))
    for k, e in enumerate(ft["instances"]):
        h = e["harmful"]["toxic"]
        W0, W1, b0, b1 = pre["W"][k], post["W"][k], pre["b_final"][k], post["b_final"][k]
        pre0, pre1 = W0[:, 1] @ W0[:, 0] + b0[1], W1[:, 1] @ W1[:, 0] + b1[1]
        assert h["preact"]["before"] == pytest.approx(pre0, abs=1e-5)
        assert h["preact"]["after"] == pytest.approx(pre1, abs=1e-5)
        assert h["first_order"]["predicted"] == pytest.approx(W0[:, 1] @ (W1[:, 0] - W0[:, 0]), abs=1e-5)
        cos = W1[:, 0] @ W1[:, 1] / np.linalg.norm(W1[:, 0]) / np.linalg.norm(W1[:, 1])
        assert h["cos"]["after"] == pytest.approx(cos, abs=1e-5)
        # the reported rate: on model i's own rate inputs (lab.rates), chunk by chunk from its key
        i = e["pretrain_instance"]
        key_i = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), lab_rates.RATE_SEED_OFFSET), i)
        xr = np.concatenate([np.asarray(tdata.sample_features(jax.random.fold_in(key_i, c), jnp.asarray(p),
                                                              lab_rates.CHUNK, rng=cfg.data.rng)) for c in range(2)])
        out = np.maximum(xr @ W1.T @ W1 + b1, 0.0)
        absent = xr[:, 1] == 0
        # equal up to an input that float rounding puts on the other side of τ
        assert h["rate"]["after"] == pytest.approx(np.mean(out[absent, 1] > 0.05), abs=2.5 / absent.sum())
        assert ft["rate_evaluation"]["samples_per_model"] == 2 * lab_rates.CHUNK
        assert h["rate"]["change_pp"] == pytest.approx(100 * (h["rate"]["after"] - h["rate"]["before"]), abs=1e-9)

    probe_rows = [r for r in run.metrics if r.get("phase") == "finetune" and r.get("kind") == "probe"]
    assert [r["step"] for r in probe_rows] == [0, 10, 20, 30]
    traj = run.npz("weights_trajectory")
    np.testing.assert_array_equal(traj["W"][-1], post["W"])
    assert json.loads((run_dir / "config.json").read_text())["finetune"]["steps"] == 30

    # fine-tune again from the saved run: same starting weights, no pretraining
    cfg2 = Config(name="ft2", finetune=dataclasses.replace(cfg.finetune, from_run=str(run_dir), regimes=(NARROW,)))
    run_dir2 = runs.prepare_run_dir(tmp_path / "b")
    experiment.run(cfg2, run_dir2, progress=False, echo=lambda s: None)
    run2 = runs.load(run_dir2)
    np.testing.assert_array_equal(run2.npz("weights_pretrained")["W"], run.weights["W"])
    assert run2.summary["pretrained_from"] == str(run_dir)
    assert run2.config.features == cfg.features and run2.config.name == "ft2"
