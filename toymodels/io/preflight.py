"""Checks of a run against its output directory and the machine, before the directory is created or
any compute starts (:func:`toymodels.api.check_run` calls them):

* :func:`check_resume`: ``--resume`` continues a run only with the config it was started with; a changed
  override or TOML field is refused naming the field (it used to be ignored silently), and so is a run
  whose ``config.json`` was deleted while its checkpoint remains (the old checkpoint would have continued
  under the new config).
* :func:`check_serialisable`: the config can be written as ``config.json`` (a TOML datetime in
  ``[meta]`` used to fail only after the run directory was created).
* :func:`check_names`: every name that becomes a file or directory name fits the file system
  (a 250-character name used to fail only after training).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..errors import RunFileError, short
from . import safe
from .manifest import MARKER

NAME_MAX = 200   # bytes: file systems allow 255; the run directory adds "-seed<seed>-<time>" to the name


def config_difference(a: dict, b: dict, prefix: str = "") -> tuple[str, Any, Any]:
    """The first dotted field where config dicts ``a`` (saved) and ``b`` (given) differ, with both values."""
    for k in list(a) + [k for k in b if k not in a]:
        x, y = a.get(k), b.get(k)
        if x != y:
            if isinstance(x, dict) and isinstance(y, dict):
                return config_difference(x, y, f"{prefix}{k}.")
            return f"{prefix}{k}", x, y
    return prefix.rstrip(".") or "config", a, b


def _as_dict(cfg) -> dict:
    if hasattr(cfg, "members"):   # a suite: its own fields and every member's config
        return {**cfg.to_dict(), "members": {m.name: m.to_dict() for m in cfg.members}}
    return cfg.to_dict()


def check_resume(cfg, out: str | Path) -> None:
    """``--resume`` into ``out``: the run there must have been started with ``cfg`` (a Config or a Suite).
    Nothing to compare (no run there yet) passes: :func:`toymodels.io.rundir.open_run` refuses that."""
    from .rundir import _lock, _unlock, read_marker

    out = Path(out)
    marker = read_marker(out) if os.path.lexists(out / MARKER) else None
    if marker is None or marker["status"] == "diverged":
        return   # nothing to resume: open_run says so, naming --out
    _unlock(_lock(out, create=False))   # a live writer is named first (RunLockedError), as open_run would
    members = getattr(cfg, "members", None)
    dirs = [(out / m.name, m) for m in members] if members is not None else [(out, cfg)]
    for d, c in dirs:
        f = d / "config.json"
        if not os.path.lexists(f):
            if os.path.lexists(d / ".checkpoint"):
                raise ConfigError("--resume", str(d), "config.json is missing, so the checkpoint there cannot be "
                                                      "checked against this config; pass --overwrite to start again")
            continue
        saved = safe.load_json(f, out)
        if not isinstance(saved, dict):
            raise RunFileError(f, "is not a toymodels config (not a JSON object); pass --overwrite to start again")
        given = json.loads(json.dumps(c.to_dict()))   # tuples as lists, as config.json holds them
        if saved != given:
            name, was, now = config_difference(saved, given)
            where = f" member {c.name!r} of" if members is not None else ""
            raise ConfigError(name, now, f"differs from the run in{where} --out {str(out)!r} (started with "
                              f"{short(was)}); --resume continues a run only with the config it was started "
                              f"with: resume with the same preset and overrides, or pass --overwrite")


def check_serialisable(cfg) -> None:
    """The config can be written as config.json (e.g. a TOML datetime in [meta] cannot)."""
    def walk(v: Any, where: str) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{where}.{k}" if where else str(k))
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x, where)
        elif v is not None and not isinstance(v, str | int | float | bool):
            raise ConfigError(where or "config", str(v), f"is a {type(v).__name__}; config values must be strings, "
                                                         f"numbers, booleans, lists or tables (quote a date)")

    walk(_as_dict(cfg), "")


def check_names(cfg) -> None:
    """Names that become file or directory names (the run's, a suite member's) fit the file system."""
    names = [("name", cfg.name)] + [(f"members.{m.name}", m.name) for m in getattr(cfg, "members", ())]
    for field_name, n in names:
        if len(str(n).encode()) > NAME_MAX:
            raise ConfigError(field_name, n, f"is {len(str(n).encode())} bytes long; names become directory names, "
                                             f"at most {NAME_MAX} bytes")
