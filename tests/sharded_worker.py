"""Run by tests/test_sharding.py in a subprocess (several devices or processes must be chosen before
JAX starts, so they cannot share the test session's process).

    python tests/sharded_worker.py OUT_DIR CONFIG [--coordinator HOST:PORT --processes N --process-id I]

trains CONFIG ("sweep": a 10-instance TMS sweep; "analogy": analogy-15deg shortened, with
fine-tuning) into OUT_DIR/run with :func:`toymodels.experiment.run` and writes OUT_DIR/split.json:
the topology, and how the engine split one chunk's instances over the devices.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def config(name: str):
    import numpy as np

    from toymodels import presets

    if name == "analogy":
        return presets.get("analogy-15deg").replace(**{"train.steps": 600, "finetune.steps": 300, "plots": []})
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import tiny_config

    return tiny_config(**{"n_inst": 10, "train.steps": 400, "train.chunk_size": 100, "plots": [],
                          "data.feature_probability": [float(p) for p in np.geomspace(1, 0.01, 10)]})


def split(cfg) -> dict:
    """One chunk of cfg's pretraining under the instance mesh: which devices hold which instances."""
    import jax
    import jax.numpy as jnp

    from toymodels.core import engine, sharding
    from toymodels.core import pretrain as pt

    pre = pt.setup(cfg)
    mesh = sharding.instance_mesh()
    if mesh is None:
        return {"mesh_size": 1, "process_index": 0, **sharding.topology()}
    state, inst = engine._distribute(pre.state, pre.inst, mesh)
    chunk = engine.make_chunk(pre.objective, pre.tx, 2, None, mesh)
    _, _, losses = chunk(state.params, state.opt_state, state.keys, inst, jnp.asarray(0, jnp.int32))
    shards = sorted((s.device.id, s.index[0].start, s.index[0].stop) for s in losses.addressable_shards)
    return {"mesh_size": mesh.size, "n_inst": pre.state.keys.shape[0], "padded": losses.shape[0],
            "local_shards": shards, "process_index": jax.process_index(), **sharding.topology()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("config", choices=("sweep", "analogy"))
    ap.add_argument("--coordinator")
    ap.add_argument("--processes", type=int)
    ap.add_argument("--process-id", type=int)
    a = ap.parse_args()
    if a.coordinator:
        from toymodels.core import sharding

        sharding.initialize(a.coordinator, a.processes, a.process_id)
    from toymodels import experiment
    from toymodels.io import runs

    out = Path(a.out)
    cfg = config(a.config)
    info = split(cfg)
    out.mkdir(parents=True, exist_ok=True)   # either process may get here first
    if info["process_index"] == 0:
        run_dir = runs.prepare_run_dir(out / "run")
        (out / "split.json").write_text(json.dumps(info))
    else:
        run_dir = out / "run"
        (out / f"split-{info['process_index']}.json").write_text(json.dumps(info))
    experiment.run(cfg, run_dir, progress=False, echo=lambda s: None)


if __name__ == "__main__":
    main()
