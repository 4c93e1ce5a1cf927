"""The errors a user sees. Each message is one line: what (field or file), the value, what is allowed.

* :class:`ConfigError`: a config value is out of range (the CLI exits with code 2).
* :class:`TrainingDiverged`: a loss became NaN or inf (the CLI exits with code 1).
* :class:`RunExistsError`: an output directory already holds results (exit code 2).
"""

from __future__ import annotations

import json
from typing import Any


def short(v: Any) -> str:
    """A value as it appears in a one-line message: JSON (strings quoted), at most 60 characters."""
    try:
        s = json.dumps(v) if not isinstance(v, str) else repr(v)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


class ConfigError(ValueError):
    """A config value is out of range. The message is one line: field, value, what is allowed."""

    def __init__(self, field_name: str, value: Any, allowed: str):
        self.field = field_name
        super().__init__(f"{field_name}={short(value)}: {allowed}")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf. ``step`` and ``instance`` name the first bad one (``instance`` is the
    engine's flat index); ``where`` says what that instance is, e.g. "setting 3, restart 1"."""

    def __init__(self, step: int, instance: int, value: float, where: str = "", hint: str = "train.lr"):
        self.step, self.instance, self.value, self.where, self.hint = step, instance, value, where, hint
        super().__init__(f"loss became {value} at step {step} in instance {instance}"
                         f"{f' ({where})' if where else ''}; stopped (metrics written so far are kept). "
                         f"Try a smaller {hint}.")

    def located(self, where: str, hint: str | None = None) -> TrainingDiverged:
        """The same error, saying what the instance is."""
        return TrainingDiverged(self.step, self.instance, self.value, where, hint or self.hint)


class RunExistsError(FileExistsError):
    """The requested output directory already holds results."""
