"""Named points at which a test can kill the process, to prove that a killed run resumes exactly.

    TOYMODELS_KILL_AT=pretrain-chunk:3 toymodels run ...    # SIGKILL at the 3rd pretraining chunk

``point(name)`` does nothing unless the environment variable ``TOYMODELS_KILL_AT`` names it (``name`` or
``name:k`` for its k-th occurrence, counting from 1); then the process sends itself SIGKILL, the way an
out-of-memory killer or a pulled plug would stop it: no cleanup, no ``finally``. The points are:
``compile`` (a chunk program is about to be compiled), ``pretrain-chunk`` and ``finetune-chunk``
(after a chunk, before its checkpoint), ``write`` (a file written but not yet renamed into place),
``between`` (pretraining finished, fine-tuning not started), ``draw`` (figures half drawn).
"""

from __future__ import annotations

import os
import signal

ENV = "TOYMODELS_KILL_AT"
_counts: dict[str, int] = {}


# Signals the CLI turned into KeyboardInterrupt (:func:`on_signal`); empty in a library session.
_PENDING: list[int] = []


def on_signal(signum, frame) -> None:
    """The CLI's SIGINT/SIGTERM handler. The first signal is only recorded: raised at an arbitrary moment
    a KeyboardInterrupt can land inside a C extension's import (an ImportError, or an abort) or inside a
    callback that JAX calls (printed and dropped, and the run went on). :func:`check` raises it at the
    next safe point instead: every chunk boundary, file write, figure and compile passes one. A second
    signal raises at once (the user insists; the marker's update blocks signals, so it still completes)."""
    _PENDING.append(signum)
    if len(_PENDING) > 1:
        raise KeyboardInterrupt


def check() -> None:
    """Raise KeyboardInterrupt if the CLI received SIGINT or SIGTERM (:func:`on_signal`)."""
    if _PENDING:
        raise KeyboardInterrupt


def pending() -> int | None:
    """The signal the CLI received (None: none)."""
    return _PENDING[0] if _PENDING else None


def point(name: str) -> None:
    """SIGKILL this process here if ``TOYMODELS_KILL_AT`` asks for it (see the module docstring); raise a
    pending interrupt (:func:`on_signal`)."""
    check()
    want = os.environ.get(ENV)
    if not want:
        return
    target, _, nth = want.partition(":")
    if target != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
