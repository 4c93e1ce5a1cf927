"""The one place that opens a run directory's files: a run directory is untrusted input (others share
theirs), so nothing here follows a symbolic link out of it, opens a FIFO or a device, or reads without a
bound.

* :func:`read_bytes` opens with ``O_NOFOLLOW | O_NONBLOCK`` (a link in the last component is refused, a
  FIFO does not block the open) and reads only a regular file (``fstat``), at most ``limit`` bytes.
* :func:`load_json` checks the nesting depth before ``json.loads`` (deep nesting is a RecursionError in
  the parser, or later in code that walks the value).
* :func:`load_npz` reads every member's ``.npy`` header before any data: only numeric arrays, sizes
  that the header and the archive agree on, and a total bound (a few KB of zip can declare GBs).
* :func:`inside` / :func:`check_inside`: a path's real location (links resolved) lies in a root's.
* :func:`open_append` opens a log for appending (or truncating) without following a link.
* :func:`find_link`: the first symbolic link under a directory, for refusing a run directory that holds one.

Every refusal is a one-line :class:`~toymodels.errors.RunFileError` naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RunFileError

MAX_JSON_BYTES = 256 * 2**20     # a suite's summary.json is a few MB; 256 MB is no toymodels file
MAX_DEPTH = 64                   # toymodels' JSON nests at most ~6 deep (summary → finetune → regimes → ...)
MAX_NPZ_BYTES = 2**30            # uncompressed; a run of the memory budget's size writes far less
MAX_TEXT_BYTES = 256 * 2**20

_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def real(path: str | Path) -> Path:
    """``path`` with every existing link resolved (missing tails kept as written)."""
    return Path(os.path.realpath(os.path.abspath(Path(path).expanduser())))


def inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path``'s real location lies in ``root``'s (or is it)."""
    p, r = real(path), real(root)
    return p == r or r in p.parents


def check_inside(path: str | Path, root: str | Path | None) -> None:
    """Refuse ``path`` when its directory (links resolved) leaves ``root``: a link on the way points out."""
    if root is None:
        return
    if not inside(Path(path).parent, root):
        raise RunFileError(path, f"lies outside the run directory {real(root)} (through a symbolic link); "
                                 f"toymodels reads and writes only inside it")


def _open(path: Path, root) -> tuple[int, int]:
    """A read-only descriptor of the regular file ``path`` and its size. FileNotFoundError passes through
    (callers phrase "missing" in their own words)."""
    check_inside(path, root)
    try:
        fd = os.open(path, _FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RunFileError(path, "is a symbolic link; toymodels does not follow links in a run directory") from None
        if isinstance(e, FileNotFoundError):
            raise
        raise RunFileError(path, f"cannot be read ({e.strerror or type(e).__name__})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device or socket")
        raise RunFileError(path, f"is {kind}, not a regular file; toymodels reads only regular files")
    return fd, st.st_size


def _too_big(path: Path, size: int, limit: int) -> RunFileError:
    return RunFileError(path, f"is {size} bytes, more than the {limit} bytes toymodels reads from such a file: "
                              f"not written by toymodels")


def read_bytes(path: str | Path, limit: int = MAX_TEXT_BYTES, root: str | Path | None = None) -> bytes:
    """The bytes of regular file ``path`` (at most ``limit``; more is a :class:`RunFileError`)."""
    path = Path(path)
    fd, size = _open(path, root)
    try:
        if size > limit:
            raise _too_big(path, size, limit)
        chunks, n = [], 0
        while n <= limit:
            b = os.read(fd, min(1 << 20, limit + 1 - n))
            if not b:
                break
            chunks.append(b)
            n += len(b)
        if n > limit:  # the file grew while read
            raise _too_big(path, n, limit)
        return b"".join(chunks)
    finally:
        os.close(fd)


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(text: str) -> int:
    """The deepest nesting of ``[`` / ``{`` in JSON ``text`` (brackets inside strings do not count)."""
    depth = deepest = 0
    for ch in re.findall(r"[\[\]{}]", _STRINGS.sub("", text)):
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(path: str | Path, text: str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(text)`` with the depth checked first; errors are :class:`RunFileError` lines."""
    if json_depth(text) > max_depth:
        raise RunFileError(path, f"nests deeper than {max_depth} levels: not a file toymodels writes")
    try:
        return json.loads(text)
    except RecursionError:
        raise RunFileError(path, f"nests deeper than {max_depth} levels: not a file toymodels writes") from None
    except ValueError as e:
        where = f" at line {e.lineno} column {e.colno}" if hasattr(e, "lineno") else ""
        raise RunFileError(path, f"is not valid JSON ({getattr(e, 'msg', e)}{where}): truncated, or not written "
                                 f"by toymodels") from None


def load_json(path: str | Path, root: str | Path | None = None, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file, bounded in size and depth; missing stays FileNotFoundError."""
    data = read_bytes(path, limit, root)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RunFileError(path, "is not UTF-8 text: not the JSON file toymodels writes") from None
    return parse_json(path, text)


def value_depth(v: Any, limit: int = MAX_DEPTH) -> int:
    """The nesting depth of a parsed value (lists and dicts), counted up to ``limit + 1`` (no recursion)."""
    deepest, stack = 0, [(v, 0)]
    while stack:
        x, d = stack.pop()
        if d > deepest:
            deepest = d
            if deepest > limit:
                break
        if isinstance(x, dict):
            stack.extend((y, d + 1) for y in x.values())
        elif isinstance(x, list | tuple):
            stack.extend((y, d + 1) for y in x)
    return deepest


def load_npz(path: str | Path, root: str | Path | None = None, limit: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``: each member's ``.npy`` header is read before its data and must declare a
    plain numeric array whose size the archive holds, all together at most ``limit`` bytes. Refusals are
    :class:`RunFileError`; a missing file stays FileNotFoundError."""
    path = Path(path)
    limit = MAX_NPZ_BYTES if limit is None else limit   # read at call time (a test lowers it)
    fd, _size = _open(path, root)
    with os.fdopen(fd, "rb") as f:
        head = f.read(4)
        if not head:
            raise RunFileError(path, "is empty (0 bytes): a run killed while writing it, or not written by toymodels")
        if head[:2] != b"PK":
            raise RunFileError(path, "is not an .npz archive (no zip signature): not written by toymodels")
        f.seek(0)
        try:
            return _read_members(path, f, limit)
        except RunFileError:
            raise
        except Exception as e:  # noqa: BLE001 - zipfile, zlib, numpy's format checks: all mean a corrupt file
            kind = "truncated or corrupt" if isinstance(e, zipfile.BadZipFile | EOFError | OSError) else "corrupt"
            why = f"{type(e).__name__}: {e}".splitlines()[0][:160]
            raise RunFileError(path, f"is not a readable .npz archive ({kind}: {why})") from None


def _read_members(path: Path, f, limit: int) -> dict[str, np.ndarray]:
    fmt = np.lib.format
    out, total = {}, 0
    with zipfile.ZipFile(f) as z:
        infos = z.infolist()
        for info in infos:   # headers first: nothing is allocated for a member that lies about its size
            if not info.filename.endswith(".npy"):
                raise RunFileError(path, f"member {info.filename!r} is not a .npy array; toymodels writes numeric "
                                         f"arrays only")
            with z.open(info) as m:
                version = fmt.read_magic(m)
                shape, _order, dtype = (fmt.read_array_header_1_0(m) if version == (1, 0)
                                        else fmt.read_array_header_2_0(m))
            name = info.filename[:-4]
            if dtype.kind not in "biuf" or dtype.hasobject:
                raise RunFileError(path, f"array {name!r} has dtype {dtype}; toymodels writes numeric arrays only")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > info.file_size:
                raise RunFileError(path, f"array {name!r} declares {nbytes} bytes but holds {info.file_size}: "
                                         f"truncated or not written by toymodels")
            total += nbytes
            if total > limit:
                raise RunFileError(path, f"holds more than {limit} bytes of arrays (array {name!r} of shape "
                                         f"{list(shape)}); toymodels reads at most that from one file")
        for info in infos:
            with z.open(info) as m:
                out[info.filename[:-4]] = fmt.read_array(m, allow_pickle=False)
    return out


def open_append(path: str | Path, truncate_to: int | None = None, fresh: bool = False):
    """A binary file object appending to ``path`` (created; with ``fresh``, emptied first), never through a
    link and only onto a regular file; ``truncate_to``: cut it to that many bytes first."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RunFileError(path, "is a symbolic link; toymodels does not write through links") from None
        if e.errno == errno.ENXIO:
            raise RunFileError(path, "is a FIFO, not a regular file; toymodels writes only regular files") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        # a hard link shares its bytes with a file elsewhere: appending or truncating would change that file
        raise RunFileError(path, "is not a regular file of its own (a FIFO, device, or a file with other hard "
                                 "links); toymodels writes in place only into its own files")
    if fresh:
        os.ftruncate(fd, 0)
    elif truncate_to is not None and st.st_size > truncate_to:
        os.ftruncate(fd, truncate_to)
    return os.fdopen(fd, "ab")


def find_link(root: str | Path) -> Path | None:
    """The first symbolic link (or FIFO, device, socket) under ``root``, walking without following links."""
    stack = [Path(root)]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.is_symlink():
                return Path(e.path)
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            elif not e.is_file(follow_symlinks=False):
                return Path(e.path)
    return None
