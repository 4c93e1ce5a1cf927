"""Writing a run's files: atomically (a temporary name, then a rename), and each registered first in the
manifest of the run directory that is open (:func:`toymodels.io.rundir.open_run`), so ``--overwrite``
later deletes exactly these files and nothing else.

Every file except ``metrics.jsonl`` (appended and flushed row by row) is written to a temporary name
``.<name>.<random>.tmp`` and renamed, so a killed run never leaves a half-written file that looks whole;
the next run in that directory deletes the leftovers (:func:`clean_temp_files`). :mod:`toymodels.faults`'
``write`` point sits between the write and the rename.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import faults
from ..errors import RunFileError
from . import safe

# The atomic writers' temporary names: ".<name>.<random>.tmp" (and ".<stem>.<random>.tmp<suffix>" for
# writers that need the real suffix, e.g. a GIF); open_run deletes leftovers of a killed run.
_TEMP_NAME = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")
# ... and what they are the temporary file of: mkstemp's 8 random characters, between the name and .tmp
_TEMP_OF = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[A-Za-z0-9]+)?$")

# The open run directory (a rundir.RunHandle) that the writers register their files with.
_ACTIVE: contextvars.ContextVar[Any] = contextvars.ContextVar("toymodels_active_run", default=None)
# The run directory the writers are confined to (open_run, and attach_run also without a marker): a path
# written under it must really lie in it, so a symbolic link inside cannot redirect a write outside.
_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toymodels_run_root", default=None)


@contextlib.contextmanager
def confined(root: str | Path) -> Iterator[None]:
    """Writers in this block refuse a path under ``root`` whose real location (links resolved) is not."""
    token = _ROOT.set(Path(os.path.abspath(root)))
    try:
        yield
    finally:
        _ROOT.reset(token)


def _confine(path: Path) -> None:
    """A path written under the confining run directory must really lie in it. (A path written as
    outside it, e.g. an explicit output directory elsewhere, is the caller's and is left alone.)"""
    roots = [r for r in (_ROOT.get(), getattr(_ACTIVE.get(), "path", None)) if r is not None]
    absolute = Path(os.path.abspath(path))
    for root in roots:
        if (absolute == root or root in absolute.parents) and not safe.inside(absolute.parent, root):
            raise RunFileError(path, f"lies outside the run directory {safe.real(root)} (a symbolic link on the way); "
                                     f"toymodels writes only inside it")


def active_run():
    """The run directory (:class:`toymodels.io.rundir.RunHandle`) opened by the innermost
    :func:`~toymodels.io.rundir.open_run` of this context, if any."""
    return _ACTIVE.get()


def _register(path: Path) -> bool:
    """Register ``path`` in the active run's manifest (False: no active run, or outside it)."""
    h = _ACTIVE.get()
    return h is not None and h.register(path)


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _why(e: BaseException) -> str:
    """An OS error's reason, or an exception's first line: for one-line messages."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {e}".splitlines()[0][:160]


# The files toymodels writes in a run directory (and its .checkpoint/), for directories without a manifest.
_OWN_NAMES = frozenset({"config.json", "env.json", "summary.json", "suite.json", "weights.npz", "weights_pretrained.npz",
                        "weights_finetuned.npz", "weights_trajectory.npz", "audit.md", "pretrain.npz",
                        "pretrained.npz", "finetune.npz", "finetuned.json"})


def clean_temp_files(path: str | Path, manifest: list[str] | None = None) -> list[Path]:
    """Delete the temporary files that atomic writes of a killed run left under ``path``: only regular
    files named as this module names them (``.<name>.<8 random>.tmp``) beside a file ``<name>`` of the
    run's ``manifest`` (or its marker), so a user's own ``.notes.tmp`` is never touched. Directories are
    walked without following links."""
    root = Path(path)
    h = _ACTIVE.get()
    if manifest is None:
        manifest = list(h.files) if h is not None else []
    base = h.path if h is not None else root
    owned = {Path(os.path.abspath(base / rel)) for rel in manifest}
    owned.add(Path(os.path.abspath(base)) / ".toymodels-run.json")
    stale = []
    for dirpath, _dirnames, filenames in os.walk(root):   # os.walk does not descend into linked directories
        for name in filenames:
            m = _TEMP_OF.match(name)
            p = Path(dirpath) / name
            if m is None:
                continue
            target = Path(os.path.abspath(Path(dirpath) / (m["stem"] + (m["suffix"] or ""))))
            # without a manifest (a library caller's directory): only names toymodels itself writes
            if target not in owned and (manifest or not (target.name in _OWN_NAMES or target.parent.name == "figures")):
                continue
            if stat.S_ISREG(os.lstat(p).st_mode):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                stale.append(p)
    return stale


def remove_file(path: str | Path) -> None:
    """Delete a file the active run wrote (e.g. a checkpoint) and drop it from the manifest."""
    p = Path(path)
    _confine(p)
    with contextlib.suppress(FileNotFoundError):
        p.unlink()   # unlink removes a link itself, never its target
    h = _ACTIVE.get()
    if h is not None:
        h.unregister(p)


def _atomic(path: Path, write, register: bool = True) -> Path:
    """Write ``path`` through ``write(f)`` on a temporary file, then rename it into place. The active run
    (:func:`~toymodels.io.rundir.open_run`) registers it in its manifest first (``register=False``: the
    marker itself)."""
    _confine(path)
    if register:
        _register(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; give results the usual mode
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if register:
            faults.point("write")  # written, not yet in place (the marker is not a kill point)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """For writers that need a file name (e.g. an animation writer): yields a temporary path with the same
    suffix beside ``path``; renamed to ``path`` when the block succeeds, deleted when it fails."""
    path = Path(path)
    _confine(path)
    _register(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        faults.point("write")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    """Appends one JSON row per call to ``metrics.jsonl`` and flushes, so rows survive a crash.

    In an open run (:func:`open_run`) the first row registers the file in the manifest; a file of that
    name that the manifest does not list (not this run's, e.g. a stale log) is started afresh, so one
    log never mixes two runs (a resumed run's log is in its manifest, and is continued)."""

    def __init__(self, path: str | Path, **fixed):
        self.path = Path(path)
        self.fixed = fixed
        self._mode = None

    def __call__(self, row: dict) -> None:
        if self._mode is None:
            h = _ACTIVE.get()
            rel = h.relative(self.path) if h is not None else None
            self._mode = "w" if rel is not None and rel not in h.files else "a"
            if rel is not None:
                h.register(self.path)
        _confine(self.path)
        with safe.open_append(self.path, fresh=self._mode == "w") as f:   # never through a link or into a FIFO
            f.write((json.dumps(to_jsonable({**self.fixed, **row})) + "\n").encode())
        self._mode = "a"

