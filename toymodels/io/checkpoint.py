"""Checkpoints: the full training state saved atomically, so a killed run resumes bit for bit.

A run directory's ``.checkpoint/`` holds one file per stage of :func:`toymodels.experiment.run`:

* ``pretrain.npz``: the engine state mid-pretraining (parameters, optimiser state, data keys, stop
  marks, the step) and the length of ``metrics.jsonl`` when it was taken;
* ``pretrained.npz``: pretraining's result (the kept parameters and the restart selection);
* ``finetune.npz``: the engine state mid-fine-tuning, with the probe rows and trajectory frames so far;
* ``finetuned.json``: the finished fine-tuning's summary section.

Each records the length of ``metrics.jsonl`` when it was taken.

Resuming restores the latest of them, truncates ``metrics.jsonl`` to the recorded length (rows after the
checkpoint are written again, identically) and continues. The engine's step keys are fold_in(key, t)
of the absolute step and a resumed fit is chunked exactly as an uninterrupted one, so the weights,
metrics and summary numbers come out bit-identical (timings aside).

Format: one ``.npz`` per state (``numpy.savez``, no pickle), written to a temporary name and renamed.
A state pytree is saved as its flattened leaves ``leaf0 … leafN`` (typed PRNG keys as their key data)
plus a JSON ``__meta__``; it is restored into the structure of a freshly built state of the same
config, and a leaf whose shape or dtype differs is a :class:`CheckpointMismatch`. Why not
orbax-checkpoint: it is built for large sharded states across hosts and writes a directory of ~12 files
per step with its own asynchronous commit protocol; these states are a few MB on one host, and one
atomic file that ``numpy`` opens anywhere is simpler to make crash-safe and to inspect.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..core.engine import TrainState
from ..errors import ConfigError
from . import runs

DIR = ".checkpoint"


class CheckpointMismatch(ConfigError):
    """A checkpoint does not fit the run's config (another config wrote it)."""


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def save_tree(path: Path, tree: Any, meta: dict | None = None, extra: dict[str, np.ndarray] | None = None) -> Path:
    """Save ``tree``'s leaves (and ``extra`` arrays) with ``meta`` to ``path`` atomically."""
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf{i}": np.asarray(jax.random.key_data(x) if _is_key(x) else x) for i, x in enumerate(leaves)}
    arrays.update({f"x_{k}": np.asarray(v) for k, v in (extra or {}).items()})
    meta = {**(meta or {}), "n_leaves": len(leaves), "keys": [i for i, x in enumerate(leaves) if _is_key(x)]}
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return runs.write_npz(path, **arrays)


def load_tree(path: Path, like: Any) -> tuple[Any, dict, dict[str, np.ndarray]]:
    """The tree saved at ``path``, in the structure of ``like``; its meta; its extra arrays."""
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(bytes(data.pop("__meta__")).decode())
    leaves, treedef = jax.tree_util.tree_flatten(like)
    if meta["n_leaves"] != len(leaves):
        raise CheckpointMismatch(str(path), meta["n_leaves"], f"holds a state with another structure "
                                                               f"({len(leaves)} leaves expected); another config wrote it")
    out = []
    for i, ref in enumerate(leaves):
        a = data[f"leaf{i}"]
        if _is_key(ref):
            a = jax.random.wrap_key_data(a, impl=jax.random.key_impl(ref))
        elif np.shape(ref) != a.shape or np.asarray(ref).dtype != a.dtype:
            raise CheckpointMismatch(str(path), f"leaf {i}", f"has shape {a.shape} {a.dtype}, the run needs "
                                                             f"{np.shape(ref)} {np.asarray(ref).dtype}")
        out.append(jax.numpy.asarray(a) if not _is_key(ref) else a)
    extra = {k[2:]: v for k, v in data.items() if k.startswith("x_")}
    return jax.tree_util.tree_unflatten(treedef, out), meta, extra


def _state_tree(state: TrainState) -> dict:
    return {"params": state.params, "opt_state": state.opt_state, "keys": state.keys, "stopped_at": state.stopped_at}


def save_state(path: Path, state: TrainState, metrics_bytes: int, extra: dict | None = None,
               meta: dict | None = None) -> Path:
    """An engine state mid-training, with the length of metrics.jsonl at this point."""
    return save_tree(path, _state_tree(state), {"step": int(state.step), "metrics_bytes": int(metrics_bytes),
                                                "has_stop": state.stopped_at is not None, **(meta or {})}, extra)


def load_state(path: Path, fresh: TrainState) -> tuple[TrainState, dict, dict]:
    """The saved engine state in the structure of ``fresh`` (a newly built state of the same config)."""
    like = _state_tree(fresh)
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
    if meta["has_stop"] and like["stopped_at"] is None:  # fit creates stopped_at on its first call
        like["stopped_at"] = jax.numpy.full(fresh.keys.shape[:1], -1, jax.numpy.int32)
    tree, meta, extra = load_tree(path, like)
    state = TrainState(tree["params"], tree["opt_state"], tree["keys"], meta["step"], tree["stopped_at"])
    return state, meta, extra


def metrics_bytes(run_dir: Path) -> int:
    """The current length of ``metrics.jsonl`` (0 when absent)."""
    p = Path(run_dir) / "metrics.jsonl"
    return p.stat().st_size if p.exists() else 0


STAGES = ("finetuned.json", "finetune.npz", "pretrained.npz", "pretrain.npz")  # latest first


def resume_bytes(run_dir: Path) -> int:
    """The length of ``metrics.jsonl`` at the run's latest checkpoint (0 without one): where a resumed
    run continues writing rows."""
    ck = Path(run_dir) / DIR
    for name in STAGES:
        f = ck / name
        if not f.exists():
            continue
        if f.suffix == ".json":
            return int(json.loads(f.read_text())["metrics_bytes"])
        with np.load(f, allow_pickle=False) as z:
            return int(json.loads(bytes(z["__meta__"]).decode())["metrics_bytes"])
    return 0


def truncate_metrics(run_dir: Path, n_bytes: int) -> None:
    """Cut ``metrics.jsonl`` back to ``n_bytes`` (the rows written after a checkpoint are written again), and
    delete the temporary files that killed atomic writes left (those files are written again too)."""
    runs.clean_temp_files(run_dir)
    p = Path(run_dir) / "metrics.jsonl"
    if p.exists() and p.stat().st_size > n_bytes:
        with p.open("r+b") as f:
            f.truncate(n_bytes)


def probes_to_arrays(probes: list, frames: list) -> dict[str, np.ndarray]:
    """The fine-tuning probe rows and trajectory frames as arrays for :func:`save_state`'s ``extra``."""
    out = {"probe_steps": np.array([t for t, _ in probes], np.int64)}
    for name in (probes[0][1] if probes else {}):
        out[f"probe__{name}"] = np.stack([p[name] for _, p in probes])
    if frames:
        out["frame_steps"] = np.array([f[0] for f in frames], np.int64)
        out["frame_W"] = np.stack([f[1] for f in frames])
        out["frame_b"] = np.stack([f[2] for f in frames])
    return out


def arrays_to_probes(extra: dict[str, np.ndarray]) -> tuple[list, list]:
    """The inverse of :func:`probes_to_arrays`."""
    names = [k.removeprefix("probe__") for k in extra if k.startswith("probe__")]
    probes = [(int(t), {n: extra[f"probe__{n}"][i] for n in names}) for i, t in enumerate(extra["probe_steps"])]
    frames = []
    if "frame_steps" in extra:
        frames = [(int(t), extra["frame_W"][i], extra["frame_b"][i]) for i, t in enumerate(extra["frame_steps"])]
    return probes, frames
