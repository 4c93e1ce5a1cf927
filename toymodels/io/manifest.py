"""What ``--overwrite`` may delete in a run directory, checked before anything is deleted.

The marker's manifest names the files a run wrote. Before the first deletion every one of them is
checked (:func:`deletable`): each directory on the way is a real directory (a symbolic link there would
carry the deletion outside the run directory), the file is a regular file (not a link, FIFO or device),
and its directory is writable. One that fails refuses the whole ``--overwrite`` with nothing deleted;
a deletion that fails anyway (a race) leaves the marker listing what is left, status ``failed``.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from ..errors import RunExistsError
from .files import _why

MARKER = ".toymodels-run.json"
LOCK = ".toymodels.lock"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_deletable(root: Path, rel: str) -> str | None:
    """Why manifest file ``rel`` may not be deleted (None: it may, or it is already gone). Every directory
    on the way must be a real directory (no link) and writable; the file a regular file (no link)."""
    p = root
    for part in Path(rel).parts[:-1]:
        p = p / part
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return f"{p.relative_to(root)} is a symbolic link or not a directory; toymodels deletes nothing through it"
    p = root / rel
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return f"{rel} is a symbolic link or not a regular file; toymodels deletes only the regular files it wrote"
    if not os.access(p.parent, os.W_OK | os.X_OK):
        return f"{rel} cannot be deleted (its directory is not writable)"
    return None


def deletable(root: Path, rels: list[str], under: Path | None = None) -> list[str]:
    """The manifest names ``rels`` under ``under`` (all when None) that --overwrite deletes; names that would
    leave ``root`` are skipped. Refuses (nothing deleted yet) when any of them cannot be deleted."""
    todo = []
    for rel in rels:
        if not rel or rel.startswith("/") or ".." in Path(rel).parts or rel in (MARKER, LOCK):
            continue
        if under is not None and not _inside(root / rel, under):
            continue
        problem = _check_deletable(root, rel)
        if problem:
            raise RunExistsError(root, f"--overwrite deletes nothing: {problem}")
        todo.append(rel)
    return todo


def _delete_files(root: Path, rels: list[str], under: Path | None = None, gone: list[str] | None = None) -> list[str]:
    """Delete the manifest files ``rels`` of run directory ``root`` (only those under ``under`` when given),
    each checked first (:func:`deletable`), then the directories they leave empty. Returns the deleted
    names (also appended to ``gone`` as they go, for a truthful marker if a deletion fails)."""
    gone = [] if gone is None else gone
    parents = set()
    for rel in deletable(root, rels, under):
        p = root / rel
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
        gone.append(rel)
        parents.update(q for q in p.parents if q != root and _inside(q, root))
    for d in sorted(parents, key=lambda q: -len(q.parts)):  # deepest first
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty: a user's file keeps its directory
    return gone



def _has_files(path: Path) -> bool:
    """Whether ``path`` holds anything but empty sub-directories and our own lock file (a regular file:
    a link named like the lock is somebody's link and counts)."""
    stack = [path]
    while stack:
        d = stack.pop()
        for e in os.scandir(d):
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            elif not (d == path and e.name == LOCK and e.is_file(follow_symlinks=False)):
                return True
    return False


def overwrite(handle, files: list[str]) -> None:
    """Delete the old run's files; if a deletion fails after all were checked, the marker lists what is
    left and says ``failed`` (never ``complete`` over a half-deleted run)."""
    gone: list[str] = []
    try:
        _delete_files(handle.path, files, gone=gone)
    except RunExistsError:   # refused before the first deletion: the old marker stays as it was
        raise
    except OSError as e:
        handle.files, handle.status = [f for f in files if f not in gone], "failed"
        handle.write_marker()
        raise RunExistsError(handle.path, f"--overwrite could not delete a file ({_why(e)}: {e.filename}); "
                                          f"{len(gone)} deleted, the marker lists the rest") from None
