"""Validation helpers of the config sections: each failed check is a :class:`ConfigError` with one line
naming the field, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import is_dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError


def check(cond: bool, name: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(name, value, allowed)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
    rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
    check(ok, name, value, f"must be an integer {rng}")


def check_float(name: str, value: Any, lo: float, hi: float, lo_open=False, hi_open=False) -> None:
    ok = is_number(value) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    rng = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    check(ok, name, value, f"must be a finite number in {rng}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    check(value in choices, name, value, f"must be one of {', '.join(choices)}")


def freeze(v: Any) -> Any:
    """Lists (from TOML/JSON) become tuples so the dataclasses stay hashable and immutable."""
    if isinstance(v, list):
        return tuple(freeze(x) for x in v)
    return v


def array_spec(name: str, value: Any, lo: float, hi: float, lo_open: bool) -> np.ndarray:
    """Validate a scalar / 1-D / 2-D numeric spec and return it as a float array."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(name, value, "must be a number, a list of numbers, or a list of lists") from None
    check(arr.ndim <= 2 and arr.size > 0, name, value, "must be a scalar, a 1-D list or a 2-D list")
    bad = ~np.isfinite(arr) | (arr > hi) | ((arr <= lo) if lo_open else (arr < lo))
    check(not bad.any(), name, value, f"every entry must be in {'(' if lo_open else '['}{lo}, {hi}]")
    return arr


def listy(v: Any) -> Any:
    """A JSON-able rendering of a spec for error messages."""
    if isinstance(v, tuple):
        return [listy(x) for x in v]
    if is_dataclass(v):
        return dataclasses.asdict(v)
    return v
