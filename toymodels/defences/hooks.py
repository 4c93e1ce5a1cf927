"""The defences as the lab's fine-tuning hooks (:class:`toymodels.lab.hooks.FineTuneHooks`).

:func:`hooks_for` gives the hooks of a config: None of them are compiled in for a mechanism whose
strength is 0 in every regime (:func:`.registry.spec`), so an undefended run is bit for bit the lab's.
The lab never imports this package; :func:`toymodels.experiment.run` hands the hooks to it.
"""

from __future__ import annotations

import dataclasses

from ..config import Config
from ..lab.hooks import NO_HOOKS, FineTuneHooks
from ..lab.summary import regime_record
from . import data, evaluate, optim, summary
from .registry import enabled, spec


class DefenceHooks(FineTuneHooks):
    """The defences of ``cfg``'s regimes in the fine-tuning step, and their evaluation afterwards."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.sp = spec(cfg)
        # with defences, every regime of one pretrained model draws that model's data stream, so a
        # defence and its undefended baseline differ only by the defence (common random numbers)
        self.shared_stream = self.sp is not None

    def instance_arrays(self, plan, base) -> dict:
        return {} if self.sp is None else data.instance_arrays(self.cfg, plan, base, self.sp)

    def wrap_optimizer(self, tx, plan):
        return tx if self.sp is None else optim.wrap_optimizer(tx, self.sp, self.cfg.finetune.trainable, plan.harmful)

    def init_opt_state(self, opt_state, params, plan, column_mask=None):
        return opt_state if self.sp is None else optim.init_opt_state(opt_state, params, plan, self.sp, column_mask)

    def wrap_objective(self, undefended, graphdef, sample):
        if self.sp is None:
            return undefended
        return data.objective(undefended, graphdef, sample, self.cfg.data.task, self.cfg.finetune.trainable, self.sp)

    def evaluate(self, graphdef, pre_params, result) -> dict:
        return evaluate.evaluate(self.cfg, graphdef, pre_params, result, hooks_for)

    def summary_section(self, ft_summary: dict, evaluation: dict) -> dict:
        partial = {"harmful": ft_summary["harmful"], "trainable": self.cfg.finetune.trainable,
                   "regimes": [regime_record(r) for r in self.cfg.finetune.regimes],
                   "instances": ft_summary["instances"]}
        return {"defences": summary.summarize(self.cfg, partial, evaluation)}


def hooks_for(cfg: Config) -> FineTuneHooks:
    """The fine-tuning hooks of ``cfg``: :class:`DefenceHooks` when a regime has a defence or
    ``finetune.overhead_repeats`` > 0 (capability and overhead are measured), else the lab's NO_HOOKS."""
    if cfg.finetune is None or not enabled(cfg):
        return NO_HOOKS
    return DefenceHooks(cfg)
