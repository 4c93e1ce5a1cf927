"""``python benchmarks/run.py --quick`` runs end to end (pretraining and fine-tuning workloads) and ends
with the JSON line of ratios.

No speed assertion: timings depend on the machine and its load (speed goals never go in unit tests).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from toymodels.core import engine, planting
from toymodels.lab import finetune as lab_ft

ROOT = Path(__file__).resolve().parent.parent


NO_TORCH = ("torch is the optional [bench] extra, not in [test]: CI skips the PyTorch side on purpose "
            "(pip install torch==2.13.0 to run it)")


def test_quick_benchmark_prints_ratio_json_last():
    pytest.importorskip("torch", reason=NO_TORCH)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    ratios = json.loads(lines[-1])
    assert set(ratios) == {"intro", "sweep", "finetune", "scale_16k_peak_fraction", "sae", "cached_compile_s"}
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in ratios.values())
    assert 0 < ratios["scale_16k_peak_fraction"] < 1.5  # a fraction of the same run's measured peak
    assert "instance-steps/s" in proc.stdout and "GFLOP/s" in proc.stdout and "compile" in proc.stdout
    # the fine-tuning workload is analogy-15deg's: 10 pretrained models x 4 regimes, fit's chunks only
    assert "== finetune: 40x(5->2) = 10 pretrained x 4 regimes (analogy-15deg)" in proc.stdout
    assert "probe at chunk boundaries is not timed" in proc.stdout
    assert "== scale_16k: 1x(16384->768)" in proc.stdout and "samples/s" in proc.stdout


def test_torch_finetune_reference_matches_its_definition():
    """The torch fine-tuning baseline's per-instance arrays and loss are the brief's maths, and its model
    starts every regime from the given pretrained weights."""
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    from benchmarks.torch_reference import REGIMES, TorchFinetune, bench_torch_finetune, finetune_arrays

    a = finetune_arrays(2, 5, target=0, gamma=2.0, feature_probability=0.05, importance=1.0)
    onehot = torch.tensor([1.0, 0, 0, 0, 0])
    assert [r[0] for r in REGIMES] == ["narrow", "narrow-all", "full", "full-all"]
    for k in range(8):
        data, scope = REGIMES[k % 4][1], REGIMES[k % 4][2]
        present = onehot if data == "narrow" else torch.ones(5)
        assert torch.equal(a["present"][k], present)
        assert torch.allclose(a["feature_probability"][k], 0.05 * present)
        assert torch.equal(a["out_scale"][k], torch.tensor([2.0, 1, 1, 1, 1]))
        assert torch.equal(a["loss_weight"][k], onehot if scope == "target" else torch.ones(5))
    W0, b0 = torch.randn(2, 5, 2), torch.randn(2, 5)
    model = TorchFinetune(W0, b0, a)
    assert torch.equal(model.W.detach()[5], W0[1]) and torch.equal(model.b_final.detach()[3], b0[0])
    torch.manual_seed(0)
    x = model.generate_batch(4096)                          # (batch, instance, feature)
    narrow = torch.tensor([REGIMES[k % 4][1] == "narrow" for k in range(8)])
    assert torch.all(x[:, narrow, 1:] == 0) and torch.all(x >= 0) and torch.all(x <= 1)
    assert 0.03 < (x[:, 2, :] > 0).float().mean() < 0.07   # full regime: every feature active w.p. 0.05
    out = model(x)
    want = ((a["loss_weight"] * (a["out_scale"] * x - out) ** 2).mean(dim=(0, 2))).sum()
    assert torch.allclose(model.loss(x, out), want)
    r = bench_torch_finetune(W0, b0, steps=3, warmup=1, threads=1)
    assert r["steps"] == 3 and r["instance_steps_per_s"] > 0 and math.isfinite(r["final_loss"])


def test_torch_finetune_reference_computes_the_engines_loss_and_gradient():
    """On the same batch and weights, torch's fine-tuning loss and gradient per instance equal those of
    the engine's fine-tuning objective (``engine.model_loss`` with ``lab_ft.prepare``'s arrays)."""
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    import jax
    import numpy as np
    from flax import nnx

    from benchmarks.torch_reference import FINETUNE_WORKLOADS, TorchFinetune, finetune_arrays
    from toymodels import presets

    cfg = presets.get("analogy-15deg")
    graphdef, params = planting.init_params(cfg, cfg.n_inst, jax.random.key(0))
    prep = lab_ft.prepare(cfg, graphdef, params)
    W0 = torch.from_numpy(np.array(params["W"][...])).transpose(1, 2).contiguous()
    b0 = torch.from_numpy(np.array(params["b_final"][...]))
    tw = FINETUNE_WORKLOADS["finetune"]
    model = TorchFinetune(W0, b0, finetune_arrays(tw["n_pre"], tw["n_features"], tw["target"], tw["gamma"],
                                                  tw["feature_probability"], tw["importance"], tw["regimes"]))
    torch.manual_seed(1)
    x = model.generate_batch(1024)                          # (batch, instance, feature)
    per_inst = (model.importance * (model.out_scale * x - model(x)) ** 2).mean(dim=(0, 2))
    per_inst.sum().backward()

    def loss(p, xk, inst):
        return engine.model_loss(nnx.merge(graphdef, p), xk, cfg.data.task, inst["loss_weight"], inst["out_scale"])

    xs = jax.numpy.asarray(x.numpy().transpose(1, 0, 2))   # (instance, batch, feature)
    ft_params = prep.state.params
    value, grads = jax.vmap(jax.value_and_grad(loss))(ft_params, xs, prep.inst)
    np.testing.assert_allclose(np.asarray(value), per_inst.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(grads["W"][...]).transpose(0, 2, 1), model.W.grad.numpy(),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grads["b_final"][...]), model.b_final.grad.numpy(), rtol=1e-4, atol=1e-6)
