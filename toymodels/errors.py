"""The errors a user sees. Each message is one line: what (field or file), the value, what is allowed.

* :class:`ConfigError`: a config value is out of range (the CLI exits with code 2).
* :class:`ConfigWarning`: a config value has no effect, where an error would break existing configs.
* :class:`RepresentationWarning`: a planted feature ended pretraining barely represented.
* :class:`TrainingDiverged`: a loss became NaN or inf (the CLI exits with code 1).
* :class:`RunExistsError`: an output directory already holds results, or is not a run that
  ``--overwrite``/``--resume`` may touch (exit code 2).
* :class:`RunLockedError`: another process holds the run directory's lock (exit code 2).
* :class:`RunFileError`: a file of a run directory is missing, corrupt or not what toymodels writes
  (exit code 2); a :class:`ConfigError`, so everything that reports config errors reports it.

The CLI prints each as one line, ``toymodels: error: <message>``.
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


class ConfigWarning(UserWarning):
    """A config value that has no effect where an error would break existing configs; one line like a
    :class:`ConfigError` (the CLI prints it as ``toymodels: warning: ...``)."""

    def __init__(self, field_name: str, value: Any, why: str):
        self.field = field_name
        super().__init__(f"{field_name}={short(value)}: {why}")


class RepresentationWarning(ConfigWarning):
    """A planted feature ended pretraining barely represented (norm below
    :data:`toymodels.core.planting.REPRESENTED_NORM`): numbers measured on it (rates, gains, spill-over)
    describe a feature the model does not carry. The CLI prints it as one line, like a ConfigWarning."""


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
    """The requested output directory already holds results, or cannot be used as a run directory.
    The message is one line, ``--out=<dir>: <what is wrong and what to do>``."""

    def __init__(self, path: Any, problem: str, field_name: str = "--out"):
        self.field, self.path = field_name, path
        super().__init__(f"{field_name}={str(path)!r}: {problem}")

    def __str__(self) -> str:  # OSError's own str() would add "[Errno None]"
        return self.args[0]


class RunLockedError(RunExistsError):
    """Another process is writing the run directory (it holds the lock); ``pid`` names it."""

    def __init__(self, path: Any, pid: int | None, field_name: str = "--out"):
        self.pid = pid
        who = f"PID {pid}" if pid else "an unknown PID"
        super().__init__(path, f"another toymodels process ({who}) is writing this run directory; wait for it "
                               f"to finish{' or choose another --out' if field_name == '--out' else ''}",
                         field_name)


class RunFileError(ConfigError):
    """A run directory's file is missing, corrupt, or not what toymodels writes. One line: the file, then
    what is wrong with it and what was expected."""

    def __init__(self, path: Any, problem: str):
        self.field, self.path = str(path), path
        ValueError.__init__(self, f"{path}: {problem}")
