"""Benign-looking fine-tuning data that breaks things: search, detect, and the subliminal control.

A plug-in of the lab, like :mod:`toymodels.defences` (the lab never imports it): :func:`hooks` wraps the
defences' hooks with :class:`~.hooks.AttackHooks`, which gives every fine-tune its data set through
``instance_arrays`` (``inst["dataset"]``, read by :func:`toymodels.lab.objective.finetune_inputs`) or,
for the subliminal control, a teacher to distil.

* :mod:`.pool`: the benign pool, random sets, selection by gradient similarity (LESS; He et al. 2024);
* :mod:`.optimise`: the distribution attack through the fine-tune's first-order surrogate;
* :mod:`.detect`: scoring a set before training (gradient projection, distance), AUROC with CI;
* :mod:`.subliminal`: teacher, filtered labels, students with shared or other initialisation;
* :mod:`.summary`: ``finetune.attack`` in ``summary.json`` (``ratio_vs_random``, ``auroc``).

Config: the ``[attack]`` section and each regime's ``dataset`` (:mod:`toymodels.config.attack`).
"""

from __future__ import annotations

from ..config import Config
from ..lab.hooks import FineTuneHooks
from .hooks import AttackHooks


def hooks(cfg: Config, inner: FineTuneHooks) -> FineTuneHooks:
    """``inner`` (the defences' hooks or the lab's NO_HOOKS) with the attack's data when ``cfg`` has an
    ``[attack]`` section, else ``inner`` unchanged."""
    if cfg.finetune is None or cfg.attack is None:
        return inner
    return AttackHooks(cfg, inner)


__all__ = ["AttackHooks", "hooks"]
