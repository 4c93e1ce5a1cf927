"""A run directory, read back: the checked readers (:func:`load`, :func:`read_json`, :func:`read_npz`,
:func:`read_metrics`) and the environment record (:func:`env_info`).

A run directory holds::

    config.json     the fully resolved Config (Config.from_dict rebuilds it)
    env.json        versions, devices, command line
    metrics.jsonl   one JSON object per logged step, appended at chunk boundaries
    summary.json    final per-instance numbers (written last: its presence marks a finished run)
    weights.npz     W (n_inst, d_hidden, n_features), b_final (n_inst, n_features) [+ model extras]
    figures/        PNGs drawn from the files above by ``toymodels plot``
    .toymodels-run.json, .toymodels.lock   the marker with the manifest, and the lock (:mod:`.rundir`)

Writing is :mod:`.files` (atomic writers) and :mod:`.rundir` (open_run: marker, manifest, lock); their
names are re-exported here, so ``from toymodels.io import runs`` is the one import for a run directory.
Every reader turns a missing, corrupt or foreign file into one :class:`RunFileError` line naming it
(never a traceback, never pickle).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, ConfigError
from ..errors import RunExistsError, RunFileError, RunLockedError
from ..machine import cpu_info
from . import safe
from .files import (
    MetricsLog,
    _atomic,
    active_run,
    atomic_path,
    clean_temp_files,
    remove_file,
    to_jsonable,
    write_json,
    write_npz,
    write_text,
)
from .rundir import (
    FINISHED,
    LOCK,
    MARKER,
    RUN_FILES,
    RunHandle,
    attach_run,
    check_out_path,
    default_run_dir,
    open_run,
    prepare_run_dir,
    read_marker,
)

__all__ = ["FINISHED", "LOCK", "MARKER", "NOT_A_RUN", "RUN_FILES", "MetricsLog", "Run", "RunExistsError",
           "RunFileError", "RunHandle", "RunLockedError", "active_run", "atomic_path", "attach_run",
           "check_out_path", "clean_temp_files", "default_run_dir", "env_info", "load", "open_run",
           "prepare_run_dir", "read_json", "read_marker", "read_metrics", "read_npz", "remove_file", "to_jsonable",
           "write_json", "write_npz", "write_text", "_atomic"]


def env_info() -> dict:
    """Library versions, devices, the CPU as XLA sees it (:func:`toymodels.machine.cpu_info`: model, ISA
    flags, ``XLA_FLAGS``) and the command line, for ``env.json``."""
    import flax
    import jax
    import optax

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _pkg_version("jaxlib"),
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "cpu": cpu_info(),
        "argv": sys.argv,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _pkg_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


@dataclass
class Run:
    """A run directory loaded back from disk (for plots and analysis)."""

    path: Path
    config: Config
    summary: dict
    weights: dict[str, np.ndarray]
    metrics: list[dict] = field(default_factory=list)

    def npz(self, name: str) -> dict[str, np.ndarray]:
        """Another ``.npz`` of this run (e.g. ``weights_finetuned``); a corrupt one is a :class:`RunFileError`."""
        return read_npz(self.path / f"{name}.npz", self.path)


NOT_A_RUN = "not a finished toymodels run directory (a run writes summary.json last)"


def read_json(path: str | Path, root: str | Path | None = None) -> Any:
    """A JSON file of a run (through :mod:`.safe`: no link, no FIFO, bounded size and depth); missing,
    unreadable, not UTF-8 or not JSON: a one-line :class:`RunFileError`. ``root``: the run directory the
    file must lie in."""
    path = Path(path)
    try:
        return safe.load_json(path, root)
    except FileNotFoundError:
        raise RunFileError(path, f"missing: {NOT_A_RUN}") from None


def read_npz(path: str | Path, root: str | Path | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (never unpickled; headers checked before any data is read); missing,
    empty, truncated, too large or not an archive of plain numeric arrays: a one-line
    :class:`RunFileError` naming the file."""
    path = Path(path)
    try:
        return safe.load_npz(path, root)
    except FileNotFoundError:
        raise RunFileError(path, f"missing: {NOT_A_RUN}") from None


def check_weights(path: Path, w: dict[str, np.ndarray], cfg: Config, n_inst: int | None = None) -> None:
    """Every parameter leaf of ``cfg``'s model kind is in ``w`` with its shape (leading axis ``n_inst``,
    default cfg.n_inst): a missing or misshapen array (a deep model's ``W_layers``, a mixture's ``gate``, ...)
    is a one-line :class:`RunFileError` naming the file, never a silent default or a clamped index."""
    from ..core.models import param_shapes  # the model's own leaves (jax.eval_shape: ~10 ms, nothing computed)

    k = cfg.n_inst if n_inst is None else n_inst
    expected = param_shapes(cfg.model, cfg.data.n_features, k)
    for name, shape in expected.items():
        if name not in w:
            held = ", ".join(sorted(w)) or "no arrays"
            raise RunFileError(path, f"has no array {name!r} (it holds {held}); a {cfg.model.kind} model has "
                                     f"{', '.join(expected)}")
        if w[name].shape != shape:
            what = {"W": "(n_inst, d_hidden, n_features)", "b_final": "(n_inst, n_features)"}.get(name, "")
            raise RunFileError(path, f"array {name!r} has shape {list(w[name].shape)}, but config.json says "
                                     f"{list(shape)} {what}".rstrip())


def read_metrics(path: str | Path, root: str | Path | None = None) -> list[dict]:
    """The rows of a ``metrics.jsonl``; a line that is not a JSON object with a ``step`` is a
    :class:`RunFileError` naming the file and the line."""
    path = Path(path)
    try:
        text = safe.read_bytes(path, safe.MAX_TEXT_BYTES, root).decode("utf-8")
    except FileNotFoundError:
        raise RunFileError(path, f"missing: {NOT_A_RUN}") from None
    except UnicodeDecodeError:
        raise RunFileError(path, "is not UTF-8 text: not the metrics log toymodels writes") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = safe.parse_json(path, line)
        except RunFileError:
            raise RunFileError(path, f"line {i} is not valid JSON (or nests too deep): truncated, or not written "
                                     f"by toymodels") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise RunFileError(path, f"line {i} is not a metrics row (a JSON object with an integer step)")
        rows.append(row)
    return rows


def load(path: str | Path) -> Run:
    """Load a finished run. Everything a figure or a fine-tune reads is checked here, so a missing,
    corrupt or foreign file is one :class:`RunFileError` line naming it (never a traceback, never pickle)."""
    path = Path(path)
    if not path.is_dir():
        raise RunFileError(path, "no such run directory" if not path.exists() else "is not a directory")
    for name in ("config.json", "summary.json", "weights.npz"):
        if not os.path.lexists(path / name):
            raise RunFileError(path / name, f"missing: {NOT_A_RUN}")
    d = read_json(path / "config.json", path)
    try:
        if not isinstance(d, dict):
            raise ConfigError("config", d, "must be a table of fields")
        config = Config.from_dict(d)
    except ConfigError as e:
        raise RunFileError(path / "config.json", f"is not a valid toymodels config: {e}") from None
    summary = read_json(path / "summary.json", path)
    if not isinstance(summary, dict) or not isinstance(summary.get("instances"), list):
        raise RunFileError(path / "summary.json", "has no 'instances' list: not the summary.json of a toymodels run")
    if len(summary["instances"]) != config.n_inst or not all(isinstance(x, dict) for x in summary["instances"]):
        raise RunFileError(path / "summary.json", f"'instances' must hold one object per instance "
                                                  f"(n_inst={config.n_inst} in config.json)")
    weights = read_npz(path / "weights.npz", path)
    check_weights(path / "weights.npz", weights, config)
    metrics = read_metrics(path / "metrics.jsonl", path) if os.path.lexists(path / "metrics.jsonl") else []
    return Run(path=path, config=config, summary=summary, weights=weights, metrics=metrics)
