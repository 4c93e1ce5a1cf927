"""toymodels against plain PyTorch eager on the same TMS workloads, side by side in one process.

    python benchmarks/run.py            # about 2 minutes on the quiet 2-core machine, 3-4 under load,
                                        # plus the scale workloads (benchmarks/scale.py)
    python benchmarks/run.py --quick    # a few seconds of timing (smoke test; numbers are rough)

The last line printed is one JSON object: the toymodels/torch ratios ``intro``, ``sweep``, ``finetune``
and ``sae`` (samples/s), ``scale_16k_peak_fraction`` (16k x 768 training GFLOP/s over the fp32 matmul
peak measured in the same run) and ``cached_compile_s`` (the sweep's chunk program compiled in a fresh
process with a warm persistent compilation cache).

Workloads (TMS ReLU-output model, batch 1024, AdamW lr 1e-3 wd 0.01, fresh data every step):

* ``intro``: 10 instances of 5 -> 2, feature probability 20^(-linspace(0, 1, 10)), importance 0.9^i
  (the ``tms-intro`` preset with one restart);
* ``sweep``: 100 instances of 20 -> 5, feature probability 20^(-linspace(0, 1, 100)), importance 1.

And one fine-tuning workload (Adam lr 1e-3, no weight decay, batch 1024, fresh data every step):

* ``finetune``: ``toymodels run analogy-15deg``'s fine-tuning: 10 pretrained 5 -> 2 models (p = 0.05,
  importance (3, 3.3, 1, 1, 1)) x 4 regimes (narrow/target, narrow/all, full/target, full/all) = 40
  instances, target "helpful" amplified by gamma = 2. The toymodels side is ``lab_ft.prepare`` -> ``engine.fit`` with the preset's chunk size
  (50), from planted, untrained pretrained models (``planting.init_params``; the values do not change
  the work). Only ``fit``'s chunks are timed: the amplification probe that ``lab_ft.finetune`` runs at
  every chunk boundary is not part of the step and is not run here. The torch side is
  ``torch_reference.bench_torch_finetune`` from the same pretrained weights. A round is 10 chunks
  (500 steps), then a torch block.

The toymodels side is the real engine, exactly as ``toymodels run`` trains: ``pt.pretrain`` ->
``engine.fit`` -> the jitted ``make_chunk`` with the reconstruction objective, in chunks of
``train.chunk_size`` steps. The torch side is ``benchmarks/torch_reference.py`` (the notebook's maths in
eager PyTorch). The machine is shared, so the two sides are *interleaved*: after every toymodels chunk
(``fit``'s ``on_chunk`` hook) a block of torch steps runs, and each round gives one toymodels/torch
ratio measured under the same load. We report medians over rounds.

Reported per workload: instance-steps/s of each side, their ratio, the first chunk's time (compile +
run) and the compile time (first chunk minus a steady chunk), and achieved GFLOP/s (matmul FLOPs of
``peak.tms_step_flops``) against the measured fp32 matmul peak. The last line printed is one JSON
object with the ratios and the scale numbers (above).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `toymodels` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import scale
from benchmarks.peak import measure_matmul_peak_gflops, tms_step_flops
from benchmarks.torch_reference import FINETUNE_WORKLOADS as TORCH_FINETUNE_WORKLOADS
from benchmarks.torch_reference import WORKLOADS as TORCH_WORKLOADS
from benchmarks.torch_reference import bench_torch, bench_torch_finetune, finetune_arrays
from toymodels.core import engine, planting
from toymodels.core import pretrain as pt
from toymodels.lab import finetune as lab_ft

BATCH = 1024

# JAX's compile events (trace, lowering, XLA backend compile), summed per jitted function name while
# a workload sets up and runs its first chunk; the engine's chunk program is the function "chunk".
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
COMPILE_S: collections.Counter = collections.Counter()


def _on_jax_event(event: str, duration: float, **kwargs) -> None:
    if event in _COMPILE_EVENTS:
        name = str(kwargs.get("fun_name", "?"))  # "chunk" when traced, "jit(chunk)" when lowered/compiled
        COMPILE_S[name.removeprefix("jit(").removesuffix(")")] += duration
        COMPILE_S["*all*"] += duration


@dataclass(frozen=True)
class Plan:
    """How long to measure one workload: ``rounds`` rounds of ``chunks_per_round`` toymodels chunks of
    ``chunk_size`` steps, each round followed by ``torch_steps`` torch steps. One more chunk runs first
    (it compiles) and is not timed."""

    rounds: int
    chunk_size: int
    torch_steps: int
    chunks_per_round: int = 1

    @property
    def steps(self) -> int:
        return self.chunk_size * (self.rounds * self.chunks_per_round + 1)


PLANS = {
    "full": {"intro": Plan(rounds=9, chunk_size=500, torch_steps=300),
             "sweep": Plan(rounds=7, chunk_size=500, torch_steps=120),
             "finetune": Plan(rounds=9, chunk_size=50, chunks_per_round=10, torch_steps=300)},
    "quick": {"intro": Plan(rounds=3, chunk_size=100, torch_steps=40),
              "sweep": Plan(rounds=3, chunk_size=20, torch_steps=10),
              "finetune": Plan(rounds=3, chunk_size=50, torch_steps=30)},
}
PRETRAIN = ("intro", "sweep")
FINETUNE_PRESET = "analogy-15deg"


def workload_config(name: str, chunk_size: int, rounds: int):
    """The toymodels Config of a pretraining workload. ``rounds + 1`` chunks: the first one compiles."""
    from toymodels import presets
    from toymodels.config import Config, DataConfig, ModelConfig, TrainConfig

    steps = chunk_size * (rounds + 1)
    if name == "intro":
        return presets.get("tms-intro").replace(**{"train.restarts": 1, "train.steps": steps,
                                                   "train.chunk_size": chunk_size, "data.batch_size": BATCH})
    if name == "sweep":
        n_inst = 100
        return Config(name="bench-sweep", n_inst=n_inst,
                      data=DataConfig(n_features=20, feature_probability=[float(v) for v in
                                                                          20.0 ** -np.linspace(0, 1, n_inst)],
                                      importance=1.0, batch_size=BATCH),
                      model=ModelConfig(kind="relu_output", d_hidden=5),
                      train=TrainConfig(steps=steps, chunk_size=chunk_size))
    raise ValueError(name)


def check_same_workload(cfg, tw: dict) -> None:
    """Both sides must train the same thing: sizes, feature probabilities and importances."""
    import torch

    shape = (cfg.n_inst, cfg.data.n_features)

    def torch_array(v):
        return np.broadcast_to(torch.as_tensor(v, dtype=torch.float32).numpy(), shape)

    sizes = (cfg.n_inst, cfg.data.n_features, cfg.model.d_hidden)
    same = (sizes == (tw["n_inst"], tw["n_features"], tw["d_hidden"])
            and np.allclose(cfg.feature_probability(), torch_array(tw["feature_probability"]), rtol=1e-6)
            and np.allclose(cfg.importance(), torch_array(tw["importance"]), rtol=1e-6))
    if not same:
        raise RuntimeError(f"benchmark workload {cfg.name!r} differs from torch_reference.WORKLOADS")


@dataclass
class Result:
    name: str
    n_inst: int
    n_features: int
    d_hidden: int
    note: str = ""                                         # what the instances are, if not obvious
    chunk_size: int = 0                                    # steps per toymodels chunk
    first_chunk_s: float = 0.0                             # setup + compile + first chunk
    chunk_compile_s: float = 0.0                           # compiling the engine's chunk program
    all_compile_s: float = 0.0                             # every JAX compile until the first chunk ended
    chunk_s: list[float] = field(default_factory=list)    # steady toymodels chunks
    jax_rate: list[float] = field(default_factory=list)   # instance-steps/s per round
    torch_rate: list[float] = field(default_factory=list)
    torch_threads: int = 1                                 # torch's faster thread count (see torch_threads)
    torch_trial: dict = field(default_factory=dict)        # {threads: instance-steps/s} of that trial

    @property
    def ratios(self) -> list[float]:
        return [j / t for j, t in zip(self.jax_rate, self.torch_rate)]


TorchBench = Callable[..., dict]
"""``bench(steps=, warmup=, seed=, threads=) -> dict`` of torch_reference (``bench_torch`` or
``bench_torch_finetune`` with the workload's other arguments bound)."""


def pretrain_bench(tw: dict) -> TorchBench:
    """The torch reference of pretraining workload ``tw`` (a torch_reference.WORKLOADS entry)."""
    return functools.partial(bench_torch, tw["n_inst"], tw["n_features"], tw["d_hidden"], BATCH,
                             feature_probability=tw["feature_probability"], importance=tw["importance"])


def torch_rate(bench: TorchBench, steps: int, seed: int, threads: int) -> float:
    """Instance-steps/s of a torch reference run of ``steps`` timed steps (after 5 untimed ones)."""
    return bench(steps=steps, warmup=5, seed=seed, threads=threads)["instance_steps_per_s"]


def torch_threads(bench: TorchBench, steps: int) -> tuple[int, dict]:
    """Torch's faster thread count for this workload, 1 or its default, from a short trial of each.

    Torch gets its better setting. With its default two OpenMP threads it is the faster on an idle
    machine, but its threads spin-wait, and when other jobs load the cores that made it 5-30x
    slower here than one thread.
    """
    import torch

    trial = {t: torch_rate(bench, steps, seed=0, threads=t) for t in sorted({1, torch.get_num_threads()})}
    return max(trial, key=trial.get), trial


def interleaved(res: Result, plan: Plan, bench: TorchBench, setup_s: float = 0.0,
                clear_compile: bool = True) -> Callable[[object], None]:
    """``fit``'s ``on_chunk`` hook that times the toymodels chunks and, after every ``chunks_per_round``
    of them, runs a block of torch steps. Time spent in the hook (the torch block) is excluded from the
    toymodels chunks. The clock starts now; ``setup_s`` (setup already done) is added to the first chunk.
    JAX's compile events up to the end of the first chunk (since now, or since the caller cleared
    ``COMPILE_S``) go to ``res``."""
    clock = {"resume": 0.0, "chunk": 0, "acc": 0.0}
    res.chunk_size = plan.chunk_size

    def on_chunk(_state):
        # fit has just turned this chunk's losses into numpy, so the chunk's work is done.
        elapsed = time.perf_counter() - clock["resume"]
        if clock["chunk"] == 0:
            res.first_chunk_s = setup_s + elapsed
            res.chunk_compile_s, res.all_compile_s = COMPILE_S["chunk"], COMPILE_S["*all*"]
        else:
            res.chunk_s.append(elapsed)
            clock["acc"] += elapsed
            if clock["chunk"] % plan.chunks_per_round == 0:
                res.jax_rate.append(res.n_inst * plan.chunk_size * plan.chunks_per_round / clock["acc"])
                res.torch_rate.append(torch_rate(bench, plan.torch_steps, seed=len(res.torch_rate),
                                                 threads=res.torch_threads))
                clock["acc"] = 0.0
        clock["chunk"] += 1
        clock["resume"] = time.perf_counter()

    if clear_compile:
        COMPILE_S.clear()
    clock["resume"] = time.perf_counter()
    return on_chunk


def run_workload(name: str, plan: Plan) -> Result:
    """Train the pretraining workload through ``pt.pretrain`` and run a torch block after every chunk."""

    cfg = workload_config(name, plan.chunk_size, plan.rounds)
    tw = TORCH_WORKLOADS[name]
    check_same_workload(cfg, tw)
    bench = pretrain_bench(tw)
    res = Result(name, cfg.n_inst, cfg.data.n_features, cfg.model.d_hidden)
    res.torch_threads, res.torch_trial = torch_threads(bench, max(plan.torch_steps // 4, 5))
    pt.pretrain(cfg, on_chunk=interleaved(res, plan, bench), progress=False)
    return res


def finetune_config(plan: Plan):
    """The ``analogy-15deg`` preset, with ``finetune.steps`` and ``chunk_size`` set to the plan's."""
    from toymodels import presets

    return presets.get(FINETUNE_PRESET).replace(**{"finetune.steps": plan.steps,
                                                   "finetune.chunk_size": plan.chunk_size})


def check_same_finetune(cfg, prep, tw: dict) -> None:
    """Both sides must fine-tune the same thing: instances (k = pretrained i * R + regime r), sizes,
    per-instance data probabilities, present features, output scales s and loss weights w, and the
    optimiser (Adam, lr 1e-3, no weight decay, constant) and batch."""
    ft = cfg.finetune
    R = len(tw["regimes"])
    n_pre, n = tw["n_pre"], tw["n_features"]
    arrays = finetune_arrays(n_pre, n, tw["target"], tw["gamma"], tw["feature_probability"], tw["importance"],
                             tw["regimes"])
    plan = prep.plan
    checks = {
        "sizes (pretrained, features, hidden)": (cfg.n_inst, cfg.data.n_features, cfg.model.d_hidden)
        == (n_pre, n, tw["d_hidden"]),
        "instances = pretrained x regimes": plan.n_ft == n_pre * R
        and np.array_equal(plan.pretrain_index, np.repeat(np.arange(n_pre), R)),
        "target": np.array_equal(plan.target, np.full(plan.n_ft, tw["target"])),
        "regimes (name, data, loss scope)": [(r.name, r.data, r.loss_scope) for r in plan.regimes]
        == [tuple(r) for r in tw["regimes"]],
        **{f"inst[{k!r}]": np.shape(prep.inst[k]) == tuple(arrays[k].shape)
           and np.allclose(np.asarray(prep.inst[k]), arrays[k].numpy(), rtol=1e-6)
           for k in ("feature_probability", "present", "out_scale", "loss_weight")},
        "objective, optimiser, lr, weight decay, schedule, trainable, batch":
        (ft.objective, ft.optimizer, ft.lr, ft.weight_decay, ft.schedule, ft.trainable, ft.batch_size)
        == ("amplify", "adam", 1e-3, 0.0, "constant", "all", BATCH),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise RuntimeError(f"fine-tuning workload {cfg.name!r} differs from torch_reference.FINETUNE_WORKLOADS "
                           f"in: {', '.join(bad)}")


def run_finetune(name: str, plan: Plan) -> Result:
    """Fine-tune as ``toymodels run analogy-15deg`` does (``lab_ft.prepare`` -> ``engine.fit``) from
    planted, untrained pretrained models, and run a torch block after every ``chunks_per_round`` chunks.
    Only ``fit``'s chunks are timed: ``lab_ft.finetune``'s probe at chunk boundaries is not run."""
    import jax
    import torch


    cfg = finetune_config(plan)
    tw = TORCH_FINETUNE_WORKLOADS[name]
    COMPILE_S.clear()
    t = time.perf_counter()
    graphdef, params = planting.init_params(cfg, cfg.n_inst, jax.random.key(0))
    prep = lab_ft.prepare(cfg, graphdef, params)
    jax.block_until_ready(prep.state.opt_state)
    setup_s = time.perf_counter() - t
    check_same_finetune(cfg, prep, tw)
    # the same pretrained weights for torch, in the notebook's (inst, n_features, d_hidden) layout
    W0 = torch.from_numpy(np.array(params["W"][...])).transpose(1, 2).contiguous()
    b0 = torch.from_numpy(np.array(params["b_final"][...]))
    bench = functools.partial(bench_torch_finetune, W0, b0, batch_size=BATCH,
                              **{k: v for k, v in tw.items() if k not in ("n_pre", "n_features", "d_hidden")})
    res = Result(name, prep.plan.n_ft, cfg.data.n_features, cfg.model.d_hidden,
                 note=f" = {cfg.n_inst} pretrained x {len(prep.plan.regimes)} regimes ({FINETUNE_PRESET})")
    res.torch_threads, res.torch_trial = torch_threads(bench, max(plan.torch_steps // 4, 5))
    engine.fit(prep.state, prep.objective, prep.tx, prep.inst, plan.steps, chunk_size=plan.chunk_size,
              progress=False, on_chunk=interleaved(res, plan, bench, setup_s=setup_s, clear_compile=False))
    return res


def report(res: Result, peak_gflops: float) -> dict:
    flops = tms_step_flops(res.n_inst, res.n_features, res.d_hidden, BATCH) / res.n_inst  # per instance-step
    jax_med, torch_med = statistics.median(res.jax_rate), statistics.median(res.torch_rate)
    ratio = statistics.median(res.ratios)
    steady = statistics.median(res.chunk_s)
    row = {
        "workload": f"{res.name}: {res.n_inst}x({res.n_features}->{res.d_hidden}){res.note}, batch {BATCH}",
        "toymodels_inst_steps_per_s": round(jax_med),
        "torch_inst_steps_per_s": round(torch_med),
        "ratio_median_of_rounds": round(ratio, 2),
        "ratio_range": [round(min(res.ratios), 2), round(max(res.ratios), 2)],
        "first_chunk_s": round(res.first_chunk_s, 2),
        "compile_s": round(res.chunk_compile_s, 2),
        "compile_all_s": round(res.all_compile_s, 2),
        "steady_chunk_s": round(steady, 3),
        "toymodels_gflops": round(jax_med * flops / 1e9, 2),
        "torch_gflops": round(torch_med * flops / 1e9, 2),
        "peak_gflops": round(peak_gflops, 1),
        "rounds": len(res.ratios),
        "torch_threads": res.torch_threads,
        "torch_thread_trial": {t: round(v) for t, v in res.torch_trial.items()},
    }
    print(f"\n== {row['workload']}  ({row['rounds']} interleaved rounds, medians)")
    if res.name not in PRETRAIN:
        print("  (toymodels: engine.fit's chunks only; finetune's probe at chunk boundaries is not timed)")
    print(f"  toymodels  {row['toymodels_inst_steps_per_s']:>9,} instance-steps/s   "
          f"{row['toymodels_gflops']:6.2f} GFLOP/s = "
          f"{100 * row['toymodels_gflops'] / peak_gflops:.2f}% of peak")
    print(f"  torch      {row['torch_inst_steps_per_s']:>9,} instance-steps/s   "
          f"{row['torch_gflops']:6.2f} GFLOP/s = {100 * row['torch_gflops'] / peak_gflops:.2f}% of peak"
          f"   ({res.torch_threads} thread(s), the faster in a trial: "
          f"{', '.join(f'{t} -> {v:,.0f}' for t, v in res.torch_trial.items())})")
    print(f"  ratio      {ratio:.2f}x  (per-round range {row['ratio_range'][0]}-{row['ratio_range'][1]})")
    print(f"  compile    {row['compile_s']} s for the chunk program ({row['compile_all_s']} s for every JAX "
          f"compile of the run's setup); setup + first chunk {row['first_chunk_s']} s, a steady chunk "
          f"{row['steady_chunk_s']} s ({res.chunk_size} steps). Compile time is not in the rates.")
    return row


SCALE_PLANS = {  # scale_16k: (batch, chunk_size, rounds); sae: Plan as the TMS workloads
    "full": {"scale_16k": (1024, 2, 3), "sae": Plan(rounds=5, chunk_size=20, torch_steps=20)},
    "quick": {"scale_16k": (128, 2, 2), "sae": Plan(rounds=2, chunk_size=5, torch_steps=5)},
}
ALL = ("intro", "sweep", "finetune", "scale_16k", "sae", "cache")


def run_sae(plan: Plan) -> dict:
    """The top-k SAE (width 4096, k 25, d 768) under engine.fit, interleaved with the torch SAE."""
    from toymodels.core import engine

    res = Result("sae", 1, scale.SAE_D, scale.SAE_WIDTH)
    bench = functools.partial(scale.bench_torch_sae, batch=scale.SAE_BATCH)
    res.torch_threads, res.torch_trial = torch_threads(bench, max(plan.torch_steps // 4, 2))
    state, objective, tx, inst = scale.jax_sae(scale.SAE_BATCH)
    engine.fit(state, objective, tx, inst, plan.steps, chunk_size=plan.chunk_size, progress=False,
               on_chunk=interleaved(res, plan, bench))
    jax_med, torch_med = statistics.median(res.jax_rate), statistics.median(res.torch_rate)
    row = {"workload": f"sae: top-k, width {scale.SAE_WIDTH}, k {scale.SAE_K}, d {scale.SAE_D}, "
                       f"batch {scale.SAE_BATCH}",
           "toymodels_samples_per_s": round(jax_med * scale.SAE_BATCH),
           "torch_samples_per_s": round(torch_med * scale.SAE_BATCH),
           "ratio_median_of_rounds": round(statistics.median(res.ratios), 2),
           "ratio_range": [round(min(res.ratios), 2), round(max(res.ratios), 2)],
           "first_chunk_s": round(res.first_chunk_s, 2), "rounds": len(res.ratios), "torch_threads": res.torch_threads}
    print(f"\n== {row['workload']}  ({row['rounds']} interleaved rounds, medians)")
    print(f"  toymodels {row['toymodels_samples_per_s']:>9,} samples/s   torch {row['torch_samples_per_s']:>9,} "
          f"samples/s ({res.torch_threads} thread(s))   ratio {row['ratio_median_of_rounds']:.2f}x "
          f"(range {row['ratio_range'][0]}-{row['ratio_range'][1]})")
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short smoke run (rough numbers)")
    ap.add_argument("--workloads", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    ap.add_argument("--json-out", type=Path, help="also write the full report to this JSON file")
    args = ap.parse_args(argv)
    names = [w for w in args.workloads.split(",") if w]
    bad = [w for w in names if w not in ALL]
    if bad:
        ap.error(f"--workloads: unknown {', '.join(bad)}; allowed: {', '.join(ALL)}")

    import jax
    import torch

    jax.monitoring.register_event_duration_secs_listener(_on_jax_event)
    mode = "quick" if args.quick else "full"
    plans = PLANS[mode]
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} (a shared machine: numbers move with its load)")
    peak = measure_matmul_peak_gflops(repeats=5 if args.quick else 20)
    print(f"fp32 matmul peak (JAX, 1024^3): {peak:.0f} GFLOP/s")
    run = {name: run_workload if name in PRETRAIN else run_finetune for name in plans}
    rows = {name: report(run[name](name, plans[name]), peak) for name in names if name in plans}
    out = {name: row["ratio_median_of_rounds"] for name, row in rows.items()}
    if "scale_16k" in names:
        rows["scale_16k"] = row = scale.bench_16k(*SCALE_PLANS[mode]["scale_16k"], peak_gflops=peak)
        print(f"\n== {row['workload']}: {row['step_s']} s/step, {row['gflops']} GFLOP/s = "
              f"{100 * row['peak_fraction']:.0f}% of the 1024^3 peak, {100 * row['same_shape_fraction']:.0f}% of one "
              f"dense matmul of the step's shape ({row['same_shape_matmul_gflops']} GFLOP/s)")
        out["scale_16k_peak_fraction"] = row["peak_fraction"]
    if "sae" in names:
        rows["sae"] = run_sae(SCALE_PLANS[mode]["sae"])
        out["sae"] = rows["sae"]["ratio_median_of_rounds"]
    if "cache" in names:
        rows["cache"] = row = scale.bench_compile_cache()
        print(f"\n== persistent compilation cache (sweep chunk, fresh processes): compile {row['cold_compile_s']} s "
              f"cold, {row['cached_compile_s']} s cached")
        out["cached_compile_s"] = row["cached_compile_s"]
    print(f"\nload average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
