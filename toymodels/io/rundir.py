"""Run directories: only your own files, one writer at a time.

:func:`open_run` opens a run directory for writing: it takes an exclusive lock (``.toymodels.lock``,
``fcntl.flock``, with the holder's PID in it; the OS releases it when the process dies) and keeps a
marker, ``.toymodels-run.json``: ``{"toymodels": version, "status", "pid", "started_utc", "files": [...]}``.
``files`` is the manifest: every file the run wrote, relative to the run directory, registered by the
writers of :mod:`.files` (and ``plots.registry.save``) before they write it. ``status`` is ``running``
while the run is open and ``complete``, ``diverged``, ``interrupted`` or ``failed`` once it is closed.
``overwrite`` deletes the files of the old manifest and nothing else, and only in a directory that carries
a marker; a non-empty directory without one is never written into. A suite's members write into
sub-directories of one run directory, under its one marker.

A run directory is untrusted input (issue 16): one holding a symbolic link, FIFO or device anywhere is
refused for ``overwrite``, ``resume`` and ``toymodels plot`` (:func:`~toymodels.io.safe.find_link`); the
lock is opened without following a link; writers refuse a path whose real location leaves the run
directory (:func:`~toymodels.io.files.confined`); ``--overwrite`` checks every deletion before the first
(:mod:`.manifest`); reads go through :mod:`.safe`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import RunExistsError, RunFileError, RunLockedError, TrainingDiverged
from . import safe
from .files import _ACTIVE, _atomic, _utc, _why, clean_temp_files, confined
from .manifest import LOCK, MARKER, _delete_files, _has_files, _inside
from .manifest import overwrite as overwrite_files


def default_run_dir(cfg: Config, root: str | Path = "runs") -> Path:
    """``runs/<name>-seed<seed>-<UTC timestamp>`` (a suite, whose members have their own seeds:
    ``runs/<name>-<UTC timestamp>``); a numeric suffix keeps it new if that exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    seed = f"-seed{cfg.seed}" if hasattr(cfg, "seed") else ""
    base = Path(root) / f"{cfg.name}{seed}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


# --- run directories: marker, manifest, lock ------------------------------------------------------------
FINISHED = ("complete", "diverged")        # statuses of a run that ran to its end
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# The files a run (or a suite) may write at the top of its directory (for tools that copy results).
RUN_FILES = ("config.json", "env.json", "metrics.jsonl", "summary.json", "suite.json", "weights.npz",
             "weights_pretrained.npz", "weights_finetuned.npz", "weights_trajectory.npz")


@dataclass
class RunHandle:
    """An open run directory (:func:`open_run`). ``resuming``: an unfinished run is being continued;
    ``complete``: ``resume`` found a finished run, so there is nothing to do. ``files`` is the manifest."""

    path: Path
    resuming: bool = False
    complete: bool = False
    files: list[str] = field(default_factory=list)
    status: str = "running"
    started_utc: str = ""
    _fd: int | None = field(default=None, repr=False)

    def relative(self, path: str | Path) -> str | None:
        """``path`` relative to the run directory, or None when it lies outside (or is the marker/lock)."""
        p = Path(os.path.abspath(Path(path).expanduser()))
        try:
            rel = p.parent.resolve().joinpath(p.name).relative_to(self.path)
        except (ValueError, OSError, RuntimeError):
            return None
        rel_s = rel.as_posix()
        return None if rel_s in (".", MARKER, LOCK) else rel_s

    def register(self, path: str | Path) -> bool:
        """Add ``path`` to the manifest (and the marker on disk) before it is written. False when it lies
        outside the run directory."""
        rel = self.relative(path)
        if rel is None:
            return False
        if rel not in self.files:
            self.files.append(rel)
            self.write_marker()
        return True

    def unregister(self, path: str | Path) -> None:
        rel = self.relative(path)
        if rel is not None and rel in self.files:
            self.files.remove(rel)
            self.write_marker()

    def write_marker(self) -> None:
        from .. import __version__

        marker = {"toymodels": __version__, "status": self.status, "pid": os.getpid(),
                  "started_utc": self.started_utc, "files": list(self.files)}
        if self.status != "running":
            marker["finished_utc"] = _utc()
        data = (json.dumps(marker, indent=1) + "\n").encode()
        _atomic(self.path / MARKER, lambda f: f.write(data), register=False)



def read_marker(path: str | Path) -> dict | None:
    """The marker of run directory ``path`` (None without one). A marker that is not a JSON object
    with a status and a file list is a :class:`RunExistsError` naming it."""
    f = Path(path) / MARKER
    if not os.path.lexists(f):
        return None
    try:   # through safe: a marker that is a link, a FIFO, huge or nested deep is refused, not followed
        marker = safe.load_json(f, path, limit=2**24)
    except (OSError, RunFileError) as e:
        why = str(e).removeprefix(f"{f}: ") if isinstance(e, RunFileError) else _why(e)
        raise RunExistsError(f, f"is not a readable toymodels marker ({why}); remove it by hand if the "
                                f"directory is yours", field_name="marker") from None
    ok = (isinstance(marker, dict) and isinstance(marker.get("status"), str)
          and isinstance(marker.get("files"), list) and all(isinstance(x, str) for x in marker["files"]))
    if not ok:
        raise RunExistsError(f, "is not a toymodels marker (needs a status and a files list); remove it by hand "
                                "if the directory is yours", field_name="marker")
    return marker



def check_out_path(path: Any, field_name: str = "--out") -> Path:
    """``path`` as a resolved Path, or a one-line :class:`RunExistsError`: an empty string, a NUL byte or
    a control character, or a path that cannot be resolved."""
    s = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    if not isinstance(s, str) or s == "":
        raise RunExistsError(s, "must be a directory path (leave the option out for the default "
                                "runs/<name>-seed<seed>-<time>)", field_name)
    if _CONTROL.search(s):
        raise RunExistsError(s, "contains a NUL byte or a control character; must be a plain directory path",
                             field_name)
    try:
        return Path(s).expanduser().resolve()
    except (OSError, RuntimeError) as e:
        raise RunExistsError(s, f"cannot be resolved ({_why(e)})", field_name) from None


def _lock(path: Path, create: bool, field_name: str = "--out") -> int | None:
    """Take the run directory's lock without waiting: the lock file's descriptor (None when ``create`` is
    False and there is no lock file). Held by another process: :class:`RunLockedError` with its PID."""
    lock = path / LOCK
    try:   # never through a link (its target would be truncated), never a FIFO (the open would block)
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_CREAT if create else 0), 0o666)
    except FileNotFoundError:
        if not create:
            return None
        raise
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO):
            raise RunExistsError(path, f"its {LOCK} is a symbolic link or a FIFO, not the lock file toymodels "
                                       f"writes; remove it by hand", field_name) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:   # a hard link: the PID would be written elsewhere too
        os.close(fd)
        raise RunExistsError(path, f"its {LOCK} is not a regular file of its own (a FIFO, device or hard link); "
                                   f"remove it by hand", field_name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            pid = int(os.pread(fd, 32, 0).decode().strip() or 0) or None
        except (OSError, ValueError):
            pid = None
        os.close(fd)
        raise RunLockedError(path, pid, field_name) from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)


def _refusal(path: Path, marker: dict | None, overwrite: bool, resume: bool) -> str | None:
    """Why ``path`` (an existing directory) may not be opened with these flags; None when it may."""
    if marker is None:
        if not _has_files(path):
            return "holds no toymodels run to resume" if resume else None
        if resume:
            return f"is not a toymodels run (no {MARKER}): there is nothing to resume"
        if overwrite:
            return (f"is not a toymodels run (no {MARKER}), so --overwrite deletes nothing in it; choose an "
                    f"empty or new directory")
        return f"is not empty and not a toymodels run (no {MARKER}); choose an empty or new directory"
    status = marker["status"]
    if overwrite:
        return None
    if resume:
        if status == "diverged":
            return ("holds a run whose loss diverged; --resume would repeat it: pass --overwrite (with a "
                    "smaller learning rate)")
        return None
    if status in FINISHED:
        return (f"already holds a toymodels run (status {status}); choose another directory or pass "
                f"--overwrite to replace it")
    return (f"holds an unfinished toymodels run (status {status}); pass --resume to continue it or --overwrite "
            f"to start it again")


def _claim(path: Any, overwrite: bool, resume: bool) -> RunHandle:
    """Validate, lock and prepare the run directory of :func:`open_run`; nothing is modified before
    every refusal has been checked."""
    if overwrite and resume:
        raise RunExistsError(path, "--overwrite and --resume exclude each other: --resume continues the "
                                   "unfinished run, --overwrite starts it again")
    path = check_out_path(path)
    fd = None
    try:
        if path.exists() and not path.is_dir():
            raise RunExistsError(path, "exists and is not a directory; --out must name a directory")
        if not path.exists():
            if resume:
                raise RunExistsError(path, "no such directory: there is no run to resume")
            _make_dirs(path)
        fd = _lock(path, create=False)          # a live holder is named before anything else is said
        marker = read_marker(path)
        problem = _refusal(path, marker, overwrite, resume)
        if problem:
            raise RunExistsError(path, problem)
        if marker is not None and (link := safe.find_link(path)) is not None:   # before the lock file is made
            raise RunExistsError(path, f"holds {link.relative_to(path)}, a symbolic link or a FIFO; toymodels never "
                                       f"writes, deletes or reads through one: remove it by hand")
        if fd is None:
            fd = _lock(path, create=True)
            marker = read_marker(path)           # decided again under the lock
            problem = _refusal(path, marker, overwrite, resume)
            if problem:
                raise RunExistsError(path, problem)
        handle = RunHandle(path=path, started_utc=_utc(), _fd=fd)
        if marker is not None and resume:
            handle.files = list(marker["files"])
            if marker["status"] == "complete":
                handle.complete, handle.status = True, "complete"
                return handle
            handle.resuming = True
        if marker is not None:
            clean_temp_files(path, list(marker["files"]))
        if marker is not None and overwrite:
            overwrite_files(handle, list(marker["files"]))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        (path / "figures").mkdir(exist_ok=True)
        handle.write_marker()
        return handle
    except OSError as e:
        _unlock(fd)
        if isinstance(e, RunExistsError):
            raise
        where = f" ({e.filename})" if getattr(e, "filename", None) and str(e.filename) != str(path) else ""
        raise RunExistsError(path, f"cannot be used as a run directory: {_why(e)}{where}") from None
    except BaseException:
        _unlock(fd)
        raise


def _make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents; a parent that is a file is named."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunExistsError(path, f"cannot be created: {parent} is a file, not a directory")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunExistsError(path, f"cannot be created ({_why(e)})") from None


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done (then they are delivered as usual)."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (ValueError, OSError, AttributeError):
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def open_run(path: str | Path, *, overwrite: bool = False, resume: bool = False) -> Iterator[RunHandle]:
    """Open run directory ``path`` for writing: ``with open_run(out) as run: experiment.run(cfg, run.path)``.

    * A new or empty directory is created and marked; a non-empty directory without a marker is refused
      (also with ``overwrite``: nothing is deleted); so is a finished run without ``overwrite``, and an
      unfinished one (status ``running``, ``interrupted`` or ``failed``) without ``resume`` or ``overwrite``.
    * ``overwrite``: the files in the old marker's manifest are deleted (and the directories they leave
      empty); everything else stays.
    * ``resume``: an unfinished run is continued (``run.resuming``); a finished one is left alone
      (``run.complete``: nothing to do); a missing or empty directory is an error.
    * The lock is exclusive: a second process gets :class:`RunLockedError` naming the holder's PID.
      Temporary files left by a killed run's atomic writes are deleted.

    While open, the writers here register every file they write in the manifest. On exit the marker's
    status becomes ``complete`` (no exception), ``diverged`` (:class:`TrainingDiverged`), ``interrupted``
    (KeyboardInterrupt: Ctrl-C, or SIGTERM as the CLI raises it) or ``failed`` (any other exception), with
    SIGINT/SIGTERM held back while it is written, and the lock is released. Refusals are
    :class:`RunExistsError` (one line, naming ``--out``)."""
    handle = _claim(path, overwrite, resume)
    token = _ACTIVE.set(handle)
    status = "complete"
    try:
        yield handle
    except TrainingDiverged:
        status = "diverged"
        raise
    except KeyboardInterrupt:   # Ctrl-C, and SIGTERM as the CLI raises it: --resume continues the run
        status = "interrupted"
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        _ACTIVE.reset(token)
        try:
            with _signals_deferred():   # a signal now would leave the marker saying running
                if not handle.complete:  # a finished run that resume found is left as it was
                    handle.status = status
                    # files the run wrote and deleted again (its checkpoints) leave the manifest
                    handle.files = [f for f in handle.files if os.path.lexists(handle.path / f)]
                    handle.write_marker()
        finally:
            _unlock(handle._fd)
            handle._fd = None


@contextlib.contextmanager
def attach_run(path: str | Path) -> Iterator[RunHandle | None]:
    """Write into a finished run directory (``toymodels plot``): with a marker, take the lock and register
    new files in the manifest, leaving the status as it is; without one (e.g. committed results), do
    nothing special. A suite member's directory belongs to the suite's marker, above it. Yields the
    handle, or None."""
    path = Path(path).resolve()
    path = next((d for d in (path, *path.parents) if os.path.lexists(d / MARKER)), path)
    marker = read_marker(path)
    if marker is None:
        with confined(path):   # no manifest to keep, but still no write through a link out of it
            yield None
        return
    if (link := safe.find_link(path)) is not None:
        raise RunExistsError(path, f"holds {link.relative_to(path)}, a symbolic link or a FIFO; toymodels never "
                                   f"writes through one: remove it by hand", field_name="RUN_DIR")
    try:
        fd = _lock(path, create=True, field_name="RUN_DIR")
    except RunLockedError:
        raise
    except OSError as e:
        raise RunExistsError(path, f"cannot be locked: {_why(e)}", field_name="RUN_DIR") from None
    handle = RunHandle(path=path, files=list(marker["files"]), status=marker["status"],
                       started_utc=marker.get("started_utc", ""), _fd=fd)
    token = _ACTIVE.set(handle)
    try:
        with confined(path):
            yield handle
    finally:
        _ACTIVE.reset(token)
        _unlock(fd)


def prepare_run_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create ``path`` for a run, for library callers that manage their own directories (tests, the
    gallery); the CLI and :func:`toymodels.run` use :func:`open_run`, which also locks and marks it.

    Inside an open run, a sub-directory of it is a member directory (a suite's): created, and with
    ``overwrite`` the files of the run's manifest under it are deleted. Elsewhere the refusals are those
    of :func:`open_run` (a non-empty directory is used only when it is a marked run and ``overwrite`` is
    given: then its manifest's files are deleted), and no marker or lock is kept."""
    h = _ACTIVE.get()
    p = check_out_path(path)
    if h is not None and _inside(p, h.path):
        if overwrite:
            for rel in _delete_files(h.path, list(h.files), under=p):
                h.files.remove(rel)
            h.write_marker()
        elif p.is_dir() and _has_files(p):
            raise RunExistsError(p, "already holds results; choose another directory or pass --overwrite")
        (p / "figures").mkdir(parents=True, exist_ok=True)
        return p
    with open_run(p, overwrite=overwrite) as run:
        pass
    (run.path / MARKER).unlink()   # no life cycle here: the directory is the caller's to manage
    return run.path

