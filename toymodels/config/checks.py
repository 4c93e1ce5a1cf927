"""Validation helpers of the config sections: each failed check is a :class:`ConfigError` with one line
naming the field, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import is_dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, ConfigWarning


def default_of(cls, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (an unused option must keep it)."""
    return cls.__dataclass_fields__[name].default


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


_CONTROL = tuple(chr(c) for c in (*range(32), 127))


def check_name(name: str, value: Any, forbidden: str = "/") -> None:
    """A name that becomes part of a path, a table or a message: a non-empty string without ``forbidden``
    characters, a NUL byte or any other control character."""
    ok = (isinstance(value, str) and value != "" and not any(c in value for c in forbidden)
          and not any(c in value for c in _CONTROL))
    without = " or ".join([repr(c) for c in forbidden] + ["control characters"])
    check(ok, name, value, f"must be a non-empty string without {without}")


def check_numbers(name: str, value: Any, lo: float, hi: float, what: str = "numbers") -> np.ndarray:
    """A number or (nested) list of numbers, every one finite and in [lo, hi]; returned as float64."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(name, listy(value), f"must be {what}: a number or a list of numbers") from None
    bad = ~np.isfinite(arr) | (arr < lo) | (arr > hi)
    check(arr.size > 0 and not bad.any(), name, listy(value), f"every entry must be a finite number in [{lo}, {hi}]")
    return arr


def warn_unused(name: str, value: Any, default: Any, why: str) -> None:
    """As :func:`check_unused`, but a :class:`ConfigWarning` naming the field (for values that existing
    configs set although they have no effect)."""
    if value != default:
        warnings.warn(ConfigWarning(name, listy(value), f"{why}, so it has no effect"), stacklevel=3)


def check_unused(name: str, value: Any, default: Any, why: str) -> None:
    """An option that the chosen setting ignores must stay at its default, so that no value is silently
    dropped: ``why`` says what ignores it."""
    check(value == default, name, listy(value), f"{why}, so it must stay at its default {listy(default)!r}")
