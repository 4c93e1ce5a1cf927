"""Reading a finished run's files for the audit, and writing the audit's table.

The audit sits below :mod:`toymodels.io` in the package layers, so it reads the few files it needs here,
with numpy (never unpickling) and json, and reports a missing or foreign file as a one-line
:class:`~toymodels.errors.RunFileError`. Inside a run, :class:`.stage.Stage` writes through the writers the
run gives it (``toymodels.io.runs``: atomic, registered in the run's manifest); :func:`write_text` is the
atomic writer of the stand-alone ``toymodels audit``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config, ConfigError
from ..errors import RunFileError


@dataclass
class SavedRun:
    """What the audit reads of a finished run directory."""

    path: Path
    config: Config
    summary: dict
    weights: dict[str, np.ndarray]


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFileError(path, "missing: not a finished toymodels run directory") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunFileError(path, f"is not readable JSON ({type(e).__name__}): not written by toymodels") from None


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise RunFileError(path, "missing: not a finished toymodels run directory") from None
    except Exception as e:  # noqa: BLE001 - zipfile, zlib, numpy's format checks: a corrupt file
        raise RunFileError(path, f"is not a readable .npz archive ({type(e).__name__})") from None


def read_metrics(path: Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` ([] when there is none)."""
    if not Path(path).exists():
        return []
    try:
        return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, ValueError):
        raise RunFileError(path, "is not a metrics log written by toymodels") from None


def load(path: str | Path) -> SavedRun:
    """config.json, summary.json and weights.npz of a finished run (a suite is not a run: name a member)."""
    path = Path(path)
    if not path.is_dir():
        raise RunFileError(path, "no such run directory" if not path.exists() else "is not a directory")
    if (path / "suite.json").exists() and not (path / "config.json").exists():
        members = read_json(path / "suite.json").get("members", [])
        raise RunFileError(path, f"is a suite; audit one of its members ({', '.join(map(str, members))})")
    try:
        cfg = Config.from_dict(read_json(path / "config.json"))
    except ConfigError as e:
        raise RunFileError(path / "config.json", f"is not a valid toymodels config: {e}") from None
    summary = read_json(path / "summary.json")
    weights = read_npz(path / "weights.npz")
    W = weights.get("W")
    if W is None or W.shape != (cfg.n_inst, cfg.model.d_hidden, cfg.data.n_features):
        raise RunFileError(path / "weights.npz", "has no W of the shape config.json says (n_inst, d_hidden, n_features)")
    return SavedRun(path, cfg, summary, weights)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary name beside ``path`` and rename it (never a half-written file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
