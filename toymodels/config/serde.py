"""Configs to and from plain data: JSON-able dicts, TOML values, dotted ``key=value`` overrides.

``build(cls, d)`` turns a dict (from TOML or ``config.json``) into the dataclass ``cls``, recursing into
sections; unknown fields are a ConfigError naming the known ones.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields, is_dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

import numpy as np

from ..errors import ConfigError
from .checks import freeze, is_number


def to_jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def set_dotted(d: dict, key: str, value: Any) -> None:
    """Set ``d["a"]["b"] = value`` for ``key == "a.b"``; unknown keys raise ConfigError."""
    parts = key.split(".")
    node = d
    for i, p in enumerate(parts):
        if not isinstance(node, dict) or p not in node:
            where = ".".join(parts[:i]) or "the config"
            allowed = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(key, value, f"unknown field in {where}; known fields: {', '.join(allowed)}")
        if i == len(parts) - 1:
            node[p] = value
        else:
            node = node[p]


def build(cls, d: Any, prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(prefix.rstrip(".") or "config", d, "must be a table of fields")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        k = sorted(unknown)[0]
        raise ConfigError(prefix + k, d[k], f"unknown field; known fields: {', '.join(sorted(names))}")
    kwargs = {}
    for k, v in d.items():
        t = hints[k]
        sub = optional_section(cls, k)
        if is_dataclass(t) or (sub is not None and v is not None):
            kwargs[k] = build(sub or t, v, prefix + k + ".")
            continue
        item = tuple_of_dataclass(t)
        if item is not None and isinstance(v, (list, tuple)):
            kwargs[k] = tuple(x if isinstance(x, item) else build(item, x, f"{prefix}{k}.") for x in v)
            continue
        kwargs[k] = coerce(prefix + k, t, v)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise


def optional_section(cls, name: str):
    """The dataclass ``X`` of a field annotated ``X | None`` (an optional config section), else None."""
    t = get_type_hints(cls).get(name)
    args = [a for a in get_args(t) if a is not type(None)]
    if type(None) in get_args(t) and len(args) == 1 and is_dataclass(args[0]):
        return args[0]
    return None


def tuple_of_dataclass(t: Any):
    """``X`` for a field annotated ``tuple[X, ...]`` with X a dataclass, else None."""
    args = get_args(t)
    if get_origin(t) is tuple and args and is_dataclass(args[0]):
        return args[0]
    return None


def coerce(name: str, t: Any, v: Any) -> Any:
    """Light type coercion for values from TOML / the command line (ints given for floats, etc.)."""
    if (t is float or (float in get_args(t) and type(None) in get_args(t))) and is_number(v):
        return float(v)
    if t is str or get_origin(t) is Literal:
        if not isinstance(v, str):
            choices = get_args(t)
            raise ConfigError(name, v, f"must be a string{' (one of ' + ', '.join(choices) + ')' if choices else ''}")
    if get_origin(t) is tuple and isinstance(v, (list, tuple)):
        return tuple(freeze(x) for x in v)
    return v


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line. The value is read as a TOML value when it parses
    (``3``, ``1e-3``, ``[0.1, 0.2]``, ``"x"``, ``true``), otherwise kept as a bare string."""
    if "=" not in text:
        raise ConfigError(text, text, "overrides are written key=value, e.g. train.steps=200")
    key, raw = text.split("=", 1)
    key = key.strip().removeprefix("--")
    if any(c in raw for c in "\n\r\x00"):
        # TOML would read a second line as a second key and drop it silently
        raise ConfigError(key, raw, "contains a line break or a NUL; an override value is one line")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except RecursionError:
        raise ConfigError(key, raw, f"nests deeper than {MAX_DEPTH} levels") from None
    if too_deep(value):
        raise ConfigError(key, raw, f"nests deeper than {MAX_DEPTH} levels")
    return key, value


MAX_DEPTH = 32   # a toymodels config nests a few levels (finetune.regimes: a list of tables)


def too_deep(v: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``v`` nests lists/tables deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack = [(v, 0)]
    while stack:
        x, d = stack.pop()
        if d > limit:
            return True
        if isinstance(x, dict):
            stack.extend((y, d + 1) for y in x.values())
        elif isinstance(x, list | tuple):
            stack.extend((y, d + 1) for y in x)
    return False
