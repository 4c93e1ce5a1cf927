"""Run directories: creation without overwriting, atomic writes, and loading saved results.

A run directory holds::

    config.json     the fully resolved Config (Config.from_dict rebuilds it)
    env.json        versions, devices, command line
    metrics.jsonl   one JSON object per logged step, appended at chunk boundaries
    summary.json    final per-instance numbers (written last: its presence marks a finished run)
    weights.npz     W (n_inst, d_hidden, n_features), b_final (n_inst, n_features) [+ model extras]
    figures/        PNGs drawn from the files above by ``toymodels plot``

Every file except ``metrics.jsonl`` is written to a temporary name and renamed, so a killed run never
leaves a half-written file that looks whole.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..errors import RunExistsError


def default_run_dir(cfg: Config, root: str | Path = "runs") -> Path:
    """``runs/<name>-seed<seed>-<UTC timestamp>``; a numeric suffix keeps it new if that exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = Path(root) / f"{cfg.name}-seed{cfg.seed}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


# The files a run (or a suite) writes at the top of its directory; ``--overwrite`` removes these and the
# figures before the new run starts, so that no file of the old run is left looking like the new one's.
RUN_FILES = ("config.json", "env.json", "metrics.jsonl", "summary.json", "suite.json", "weights.npz",
             "weights_pretrained.npz", "weights_finetuned.npz", "weights_trajectory.npz")


def prepare_run_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create ``path`` for a new run. An existing non-empty directory is an error unless ``overwrite``:
    then the previous run's files (:data:`RUN_FILES`, and every file in ``figures/``) are deleted first,
    and anything else in the directory is left alone."""
    path = Path(path).resolve()
    if path.exists() and not path.is_dir():
        raise RunExistsError(f"--out {path}: exists and is not a directory")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise RunExistsError(f"--out {path}: already holds results; choose another directory or pass "
                             f"--overwrite to replace them")
    if overwrite:
        stale = [path / f for f in RUN_FILES] + (sorted((path / "figures").iterdir())
                                                 if (path / "figures").is_dir() else [])
        for f in stale:
            if f.is_file() or f.is_symlink():
                f.unlink()
    (path / "figures").mkdir(parents=True, exist_ok=True)
    return path


def _atomic(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; give results the usual mode
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@functools.cache
def _umask() -> int:
    """The process umask (read once: reading it means setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_jsonable(v: Any) -> Any:
    """numpy / JAX scalars and arrays to plain Python, recursively; non-finite floats stay as NaN/inf."""
    if isinstance(v, dict):
        return {str(k): to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    if hasattr(v, "__array__") and not isinstance(v, (str, bytes)):
        a = np.asarray(v)
        return a.item() if a.ndim == 0 else a.tolist()
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    return v


def write_json(path: str | Path, obj: Any) -> Path:
    data = (json.dumps(to_jsonable(obj), indent=2) + "\n").encode()
    return _atomic(Path(path), lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    """A text file (e.g. a markdown table), written atomically."""
    data = text.encode()
    return _atomic(Path(path), lambda f: f.write(data))


def write_npz(path: str | Path, **arrays) -> Path:
    """A plain ``.npz`` (no pickle) that numpy opens anywhere."""
    return _atomic(Path(path), lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


class MetricsLog:
    """Appends one JSON row per call to ``metrics.jsonl`` and flushes, so rows survive a crash."""

    def __init__(self, path: str | Path, **fixed):
        self.path = Path(path)
        self.fixed = fixed

    def __call__(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(to_jsonable({**self.fixed, **row})) + "\n")


def env_info() -> dict:
    """Library versions, devices and the command line, for ``env.json``."""
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
        """Another ``.npz`` of this run (e.g. ``weights_finetuned``)."""
        with np.load(self.path / f"{name}.npz") as z:
            return {k: z[k] for k in z.files}


def load(path: str | Path) -> Run:
    """Load a finished run. Missing files are reported with the run directory named."""
    path = Path(path)
    for name in ("config.json", "summary.json", "weights.npz"):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path}: no {name} (not a finished toymodels run directory)")
    config = Config.from_dict(json.loads((path / "config.json").read_text()))
    summary = json.loads((path / "summary.json").read_text())
    with np.load(path / "weights.npz") as z:
        weights = {k: z[k] for k in z.files}
    metrics = []
    if (path / "metrics.jsonl").exists():
        metrics = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return Run(path=path, config=config, summary=summary, weights=weights, metrics=metrics)
