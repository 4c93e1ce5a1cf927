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


def point(name: str) -> None:
    """SIGKILL this process here if ``TOYMODELS_KILL_AT`` asks for it (see the module docstring)."""
    want = os.environ.get(ENV)
    if not want:
        return
    target, _, nth = want.partition(":")
    if target != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
