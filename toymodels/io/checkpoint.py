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
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..core.engine import TrainState
from ..errors import ConfigError, RunFileError
from . import runs, safe

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


def _corrupt(path: Path, why: str) -> RunFileError:
    return RunFileError(path, f"is not a checkpoint toymodels wrote ({why}); start the run again with --overwrite")


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """A checkpoint's arrays and its meta, read through the checked reader (no link, no FIFO, bounded)."""
    data = runs.read_npz(path, path.parent.parent)
    if "__meta__" not in data or data["__meta__"].dtype != np.uint8 or data["__meta__"].ndim != 1:
        raise _corrupt(path, "no __meta__ record")
    meta = safe.parse_json(path, bytes(data.pop("__meta__")).decode("utf-8", "replace"))
    need = {"n_leaves": int, "keys": list}
    if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t) for k, t in need.items()):
        raise _corrupt(path, "its __meta__ lacks n_leaves or keys")
    if "step" in meta and not (isinstance(meta["step"], int) and isinstance(meta.get("metrics_bytes"), int)):
        raise _corrupt(path, "its __meta__ has no integer step and metrics_bytes")
    return data, meta


def load_tree(path: Path, like: Any) -> tuple[Any, dict, dict[str, np.ndarray]]:
    """The tree saved at ``path``, in the structure of ``like``; its meta; its extra arrays."""
    data, meta = _read(path)
    leaves, treedef = jax.tree_util.tree_flatten(like)
    if meta["n_leaves"] != len(leaves):
        raise CheckpointMismatch(str(path), meta["n_leaves"], f"holds a state with another structure "
                                                               f"({len(leaves)} leaves expected); another config wrote it")
    out = []
    for i, ref in enumerate(leaves):
        if f"leaf{i}" not in data:
            raise _corrupt(path, f"leaf {i} is missing")
        a = data[f"leaf{i}"]
        if _is_key(ref):
            want = jax.random.key_data(ref)
            if a.shape != want.shape or a.dtype != want.dtype:
                raise CheckpointMismatch(str(path), f"leaf {i}", f"has shape {a.shape} {a.dtype}, the run needs "
                                                                 f"{want.shape} {want.dtype}")
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
    _, meta = _read(path)
    if "step" not in meta:
        raise _corrupt(path, "its __meta__ has no step")
    if meta.get("has_stop") and like["stopped_at"] is None:  # fit creates stopped_at on its first call
        like["stopped_at"] = jax.numpy.full(fresh.keys.shape[:1], -1, jax.numpy.int32)
    tree, meta, extra = load_tree(path, like)
    state = TrainState(tree["params"], tree["opt_state"], tree["keys"], meta["step"], tree["stopped_at"])
    return state, meta, extra


def metrics_bytes(run_dir: Path) -> int:
    """The current length of ``metrics.jsonl`` (0 when absent)."""
    p = Path(run_dir) / "metrics.jsonl"
    return os.lstat(p).st_size if os.path.lexists(p) else 0   # lstat: a link's target is not ours to measure


STAGES = ("finetuned.json", "finetune.npz", "pretrained.npz", "pretrain.npz")  # latest first


def resume_bytes(run_dir: Path) -> int:
    """The length of ``metrics.jsonl`` at the run's latest checkpoint (0 without one): where a resumed
    run continues writing rows."""
    ck = Path(run_dir) / DIR
    for name in STAGES:
        f = ck / name
        if not os.path.lexists(f):
            continue
        meta = read_finetuned(f) if f.suffix == ".json" else _read(f)[1]
        n = meta.get("metrics_bytes")
        if not isinstance(n, int) or n < 0:
            raise _corrupt(f, "no metrics_bytes")
        return n
    return 0


def read_finetuned(path: Path) -> dict:
    """``finetuned.json``: the finished fine-tuning's summary section and the metrics length, checked."""
    d = runs.read_json(path, path.parent.parent)
    if not isinstance(d, dict) or not isinstance(d.get("finetune"), dict) or not isinstance(d.get("metrics_bytes"), int):
        raise _corrupt(path, "needs a finetune object and an integer metrics_bytes")
    return d


def truncate_metrics(run_dir: Path, n_bytes: int) -> None:
    """Cut ``metrics.jsonl`` back to ``n_bytes`` (the rows written after a checkpoint are written again), and
    delete the temporary files that killed atomic writes left (those files are written again too)."""
    runs.clean_temp_files(run_dir)
    p = Path(run_dir) / "metrics.jsonl"
    if os.path.lexists(p) and os.lstat(p).st_size > n_bytes:
        safe.open_append(p, truncate_to=n_bytes).close()   # never through a link (its target is not ours)


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
