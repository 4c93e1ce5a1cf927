"""What a plug-in may change in a fine-tuning run: the lab's hooks interface (dependency inversion).

The lab does not know any defence, audit or other plug-in by name. :func:`toymodels.lab.finetune.prepare`
and :func:`~toymodels.lab.finetune.finetune` call a :class:`FineTuneHooks` object at fixed points, and a
plug-in package (e.g. :mod:`toymodels.defences`) implements the interface and imports the lab, never the
other way round. :data:`NO_HOOKS` changes nothing, so an undefended run is exactly the lab's own.

A plug-in that only adds loss terms must keep strength 0 bit-identical: ``wrap_objective`` receives the
undefended objective and may call it, so adding nothing leaves it as it was.

Example (the whole of ``examples/custom_hook.py``'s plug-in): anchor W to its pretrained value,
L' = L + λ Σ (W − W₀)², and pass it as ``tm.finetune(cfg, graphdef, params, hooks=Anchor(1.0))``::

    class Anchor(tm.FineTuneHooks):
        def __init__(self, strength):
            self.strength = strength

        def instance_arrays(self, plan, base):          # per fine-tune: its pretrained W
            return {"W0": jnp.asarray(base["W"][...])}

        def wrap_objective(self, undefended, graphdef, sample):
            def objective(params, key, inst):           # one instance; the engine vmaps it
                return undefended(params, key, inst) + self.strength * jnp.sum((params["W"][...] - inst["W0"]) ** 2)
            return objective
"""

from __future__ import annotations

from typing import Any

import optax


class FineTuneHooks:
    """The hooks, with the do-nothing behaviour; a plug-in overrides what it needs.

    * ``shared_stream``: every fine-tune of one pretrained model draws that model's data stream (common
      random numbers), so plug-in and baseline instances are paired;
    * ``instance_arrays(plan, base)``: extra per-instance arrays for ``inst`` (leading axis n_ft);
    * ``wrap_optimizer(tx, plan)``: the optimiser with masks or update transforms appended;
    * ``init_opt_state(opt_state, params, plan, column_mask)``: per-instance values written into the
      freshly ``vmap``-initialised optimiser state;
    * ``wrap_objective(undefended, graphdef, sample)``: the objective for one instance;
    * ``evaluate(graphdef, pre_params, result)``: numbers measured after fine-tuning (None: none);
    * ``summary_section(ft_summary, evaluation)``: extra keys for the ``finetune`` section of
      ``summary.json``, from the run's own summary and ``evaluation``.
    """

    shared_stream: bool = False

    def instance_arrays(self, plan, base) -> dict[str, Any]:
        return {}

    def wrap_optimizer(self, tx: optax.GradientTransformation, plan) -> optax.GradientTransformation:
        return tx

    def init_opt_state(self, opt_state, params, plan, column_mask=None):
        return opt_state

    def wrap_objective(self, undefended, graphdef, sample):
        return undefended

    def evaluate(self, graphdef, pre_params, result) -> dict | None:
        return None

    def summary_section(self, ft_summary: dict, evaluation: dict) -> dict:
        return {}


NO_HOOKS = FineTuneHooks()


class WrappedHooks(FineTuneHooks):
    """Hooks that add to ``inner``'s: every hook delegates to ``inner`` until a subclass overrides it
    (the audit's SAE filter directions and the attack's data sets wrap the defences' hooks this way)."""

    def __init__(self, inner: FineTuneHooks):
        self.inner = inner
        self.shared_stream = inner.shared_stream

    def instance_arrays(self, plan, base) -> dict[str, Any]:
        return self.inner.instance_arrays(plan, base)

    def wrap_optimizer(self, tx: optax.GradientTransformation, plan) -> optax.GradientTransformation:
        return self.inner.wrap_optimizer(tx, plan)

    def init_opt_state(self, opt_state, params, plan, column_mask=None):
        return self.inner.init_opt_state(opt_state, params, plan, column_mask)

    def wrap_objective(self, undefended, graphdef, sample):
        return self.inner.wrap_objective(undefended, graphdef, sample)

    def evaluate(self, graphdef, pre_params, result) -> dict | None:
        return self.inner.evaluate(graphdef, pre_params, result)

    def summary_section(self, ft_summary: dict, evaluation: dict) -> dict:
        return self.inner.summary_section(ft_summary, evaluation)
