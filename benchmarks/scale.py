"""The scale workloads of ``benchmarks/run.py``: 16k features in 768 dimensions against the matmul
roofline, a SynthSAEBench-sized top-k SAE against a PyTorch reference SAE, and the persistent
compilation cache's rerun.

* ``scale_16k``: one TMS ReLU-output model of 16,384 features in 768 dimensions, trained by the real
  engine (``pt.setup`` -> ``engine.fit``, AdamW, fresh data every step). Its matmul FLOPs per step are
  ``peak.tms_step_flops`` (12 B n m); the fraction of peak is achieved GFLOP/s over the fp32 matmul peak
  measured in the same run (``peak.measure_matmul_peak_gflops``), and over the rate of one dense matmul
  of the step's own largest shape (B x n by n x m, ``peak.measure_matmul_gflops``).
* ``sae``: a top-k SAE of width 4096, k = 25 on d = 768 activations (the SynthSAEBench protocol's SAE),
  batch 1024, Adam lr 1e-3: ``toymodels.audit.sae.loss`` under ``engine.fit`` against
  ``TorchTopKSAE`` below (the same maths in eager PyTorch), interleaved round by round as the other
  workloads. Inputs are fresh standard-normal activations on both sides (the SAE's cost, not a model's).
  Throughput is in samples/s (steps/s x batch).
* ``cached_compile_s``: the engine's chunk program compiled in a fresh process with the persistent
  compilation cache (``toymodels.io.compile_cache``) empty, and again in a second fresh process that
  finds it there (``python benchmarks/scale.py --compile-child DIR``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.peak import measure_matmul_gflops, tms_step_flops

N_16K, M_16K = 16_384, 768
SAE_D, SAE_WIDTH, SAE_K, SAE_BATCH = 768, 4096, 25, 1024


# --- 16k x 768 against the roofline --------------------------------------------------------------------
def config_16k(batch: int, steps: int, chunk_size: int):
    from toymodels.config import Config, DataConfig, ModelConfig, TrainConfig

    return Config(name="bench-16k", n_inst=1,
                  data=DataConfig(n_features=N_16K, feature_probability=[0.01], importance=1.0, batch_size=batch),
                  model=ModelConfig(kind="relu_output", d_hidden=M_16K),
                  train=TrainConfig(steps=steps, chunk_size=chunk_size, eval_batch_size=batch))


def bench_16k(batch: int, chunk_size: int, rounds: int, peak_gflops: float) -> dict:
    """Steady chunks of the 16k x 768 model: seconds per step, GFLOP/s and fractions of the peaks."""
    import jax

    from toymodels.core import engine
    from toymodels.core import pretrain as pt

    cfg = config_16k(batch, chunk_size * (rounds + 1), chunk_size)
    pre = pt.setup(cfg)
    times: list[float] = []
    clock = [time.perf_counter()]

    def on_chunk(_state):
        now = time.perf_counter()
        times.append(now - clock[0])
        clock[0] = now

    state = engine.fit(pre.state, pre.objective, pre.tx, pre.inst, cfg.train.steps, chunk_size=chunk_size,
                       progress=False, on_chunk=on_chunk)
    jax.block_until_ready(state.params)
    step_s = statistics.median(times[1:]) / chunk_size
    gflops = tms_step_flops(1, N_16K, M_16K, batch) / step_s / 1e9
    shape_peak = measure_matmul_gflops(batch, N_16K, M_16K, repeats=3)
    return {"workload": f"scale_16k: 1x({N_16K}->{M_16K}), batch {batch}", "step_s": round(step_s, 4),
            "first_chunk_s": round(times[0], 2), "gflops": round(gflops, 1), "peak_gflops": round(peak_gflops, 1),
            "same_shape_matmul_gflops": round(shape_peak, 1), "peak_fraction": round(gflops / peak_gflops, 3),
            "same_shape_fraction": round(gflops / shape_peak, 3), "rounds": len(times) - 1}


# --- SAE throughput --------------------------------------------------------------------------------------
def jax_sae(batch: int):
    """(state, objective, tx, inst) of one top-k SAE for ``engine.fit`` on fresh N(0, 1) activations."""
    import jax
    import jax.numpy as jnp
    import optax

    from toymodels.audit import sae as S
    from toymodels.core import engine

    params = jax.tree.map(lambda a: a[None], S.init_params(jax.random.key(0), SAE_D, SAE_WIDTH, 0.1))
    inst = {"mask": jnp.ones((1, SAE_WIDTH)), "sparsity": jnp.full((1,), SAE_K, jnp.float32)}
    tx = optax.adam(1e-3)

    def objective(p, key, i):
        ht = jax.random.normal(key, (SAE_D, batch))
        return S.loss(p, ht, i, "topk", SAE_K)

    return engine.init_state(params, tx, jax.random.key(1)[None]), objective, tx, inst


class TorchTopKSAE:
    """The same top-k SAE in eager PyTorch: z = W_encᵀ(h − b_dec) + b_enc, keep each sample's k largest
    ReLU(z), ĥ = f D + b_dec with unit decoder rows D, loss = mean_b ‖h − ĥ‖², Adam lr 1e-3."""

    def __init__(self, seed: int = 0):
        import torch

        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(SAE_WIDTH, SAE_D, generator=g)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        self.W_dec = W_dec.clone().requires_grad_()
        self.W_enc = W_dec.T.clone().requires_grad_()
        self.b_enc = torch.zeros(SAE_WIDTH, requires_grad=True)
        self.b_dec = torch.zeros(SAE_D, requires_grad=True)
        self.opt = torch.optim.Adam([self.W_enc, self.b_enc, self.W_dec, self.b_dec], lr=1e-3)

    def step(self, batch: int) -> float:
        import torch

        h = torch.randn(batch, SAE_D)
        z = torch.relu((h - self.b_dec) @ self.W_enc + self.b_enc)
        vals, idx = torch.topk(z, SAE_K, dim=1)
        f = torch.zeros_like(z).scatter(1, idx, vals)
        D = self.W_dec / self.W_dec.norm(dim=1, keepdim=True)
        loss = ((h - (f @ D + self.b_dec)) ** 2).sum(1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def bench_torch_sae(steps: int, warmup: int = 2, seed: int = 0, threads: int | None = None,
                    batch: int = SAE_BATCH) -> dict:
    """``run.TorchBench``-shaped: instance-steps/s (one SAE) of ``steps`` timed steps."""
    import torch

    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        sae = TorchTopKSAE(seed)
        for _ in range(warmup):
            sae.step(batch)
        t = time.perf_counter()
        for _ in range(steps):
            sae.step(batch)
        return {"instance_steps_per_s": steps / (time.perf_counter() - t)}
    finally:
        torch.set_num_threads(old)


# --- the persistent compilation cache -------------------------------------------------------------------
def _compile_child(cache_dir: str) -> None:
    """In a fresh process: enable the cache, build the sweep workload's engine chunk, print the seconds
    JAX spent compiling it (trace + lowering + backend compile or cache load) as JSON."""
    import jax

    from benchmarks import run as bench_run
    from toymodels.io import compile_cache

    compile_cache.enable(cache_dir)
    jax.monitoring.register_event_duration_secs_listener(bench_run._on_jax_event)
    from toymodels.core import pretrain as pt

    cfg = bench_run.workload_config("sweep", 20, 0)
    pre = pt.setup(cfg)
    bench_run.COMPILE_S.clear()
    t = time.perf_counter()
    pt.train(pre, progress=False)
    print(json.dumps({"chunk_compile_s": bench_run.COMPILE_S["chunk"], "first_chunk_s": time.perf_counter() - t}))


def bench_compile_cache() -> dict:
    """The chunk program's compile time in a fresh process with an empty cache, then with a warm one."""
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name in ("cold", "cached"):
            p = subprocess.run([sys.executable, __file__, "--compile-child", d], capture_output=True, text=True,
                               timeout=600, check=True)
            out[name] = json.loads(p.stdout.strip().splitlines()[-1])
    return {"cold_compile_s": round(out["cold"]["chunk_compile_s"], 3),
            "cached_compile_s": round(out["cached"]["chunk_compile_s"], 3),
            "cold_first_chunk_s": round(out["cold"]["first_chunk_s"], 3),
            "cached_first_chunk_s": round(out["cached"]["first_chunk_s"], 3)}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--compile-child":
        _compile_child(sys.argv[2])
    else:
        sys.exit("usage: python benchmarks/scale.py --compile-child CACHE_DIR (benchmarks/run.py calls it)")
