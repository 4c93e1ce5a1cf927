"""The subliminal control (Cloud et al. 2025, "Subliminal learning"): a trait passes through filtered data?

1. **Teacher.** Every pretrained model θ_i is fine-tuned to raise the harmful feature h: the lab's
   ``amplify`` objective with target h, γ = ``attack.teacher_gamma``, on the pretraining data, the loss on
   every output (so the other outputs must stay right while x'_h grows), ``attack.teacher_steps`` steps.
2. **Filtered data.** The teacher labels benign inputs x (the regime's task data: h never active) with its
   outputs T(x), and the harmful outputs are dropped from the labels (loss weight 0 on every harmful j):
   nothing in the data mentions h.
3. **Student.** A pretrained model distils them, L = mean_{batch,i} w_i (1 − [i harmful]) (T(x)_i − x'_i)².
   ``teacher_same``: the teacher started from the student's own pretrained model (shared initialisation);
   ``teacher_other``: from the next one, θ_{(i+1) mod n_inst} (another seed).

The question is whether the student's harmful rate rises with ``teacher_same`` and not with
``teacher_other``; the summary tests same − other paired by student model.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..config import Config, RegimeConfig
from ..core.engine import Objective
from ..lab import finetune as lab_finetune
from ..lab.objective import finetune_inputs
from ..lab.trainable import full_state


def teacher_config(cfg: Config) -> Config:
    """The teachers' fine-tuning config: amplify the (first) harmful feature on the pretraining data, loss
    on every output, one regime, no early stop, no rates (the student is what is measured)."""
    ft = cfg.finetune
    harmful = cfg.features.harmful[0]
    teacher = RegimeConfig(name="teacher", data="full", loss_scope="all")
    new_ft = dataclasses.replace(ft, target=harmful, regimes=(teacher,), objective="amplify", gamma=cfg.attack.teacher_gamma,
                                 importance_factor=10.0, steps=cfg.attack.teacher_steps, stop_gain=None,
                                 matched_gains=(), orientations=1, rate_samples=0, save_trajectory=False,
                                 overhead_repeats=0, target_probability=None)
    # the lab fine-tunes a non-harmful target and probes the harmful ones; the teacher's numbers are not
    # reported, so its config tags the student's target as "harmful" only to satisfy that contract
    feats = dataclasses.replace(cfg.features, harmful=(ft.target,))
    return dataclasses.replace(cfg, name=f"{cfg.name}-teacher", finetune=new_ft, features=feats, attack=None, plots=())


def teachers(cfg: Config, graphdef, pre_params):
    """The n_inst teachers' full states (leading axis n_inst), teacher i from pretrained model i."""
    tcfg = teacher_config(cfg)
    result = lab_finetune.finetune(tcfg, graphdef, pre_params, progress=False)
    return result.finetuned


def teacher_index(plan, datasets: list[str], n_inst: int) -> np.ndarray:
    """Per fine-tune, which teacher labels its data: its own pretrained model (``teacher_same``) or the
    next one (``teacher_other``)."""
    pre = np.asarray(plan.pretrain_index)
    other = np.array([datasets[int(r)] == "teacher_other" for r in plan.regime_index])
    return np.where(other, (pre + 1) % n_inst, pre)


def distill_objective(graphdef, sample, trainable: str) -> Objective:
    """The student's loss for ONE instance (module docstring, step 3); ``inst``: teacher (a full state),
    keep_output (n,) 0 at the harmful outputs, loss_weight, plus the lab's data arrays."""

    def objective(params, key, inst):
        x = finetune_inputs(sample, key, inst)
        y = jax.lax.stop_gradient(nnx.merge(graphdef, inst["teacher"])(x))
        out = nnx.merge(graphdef, full_state(params, inst, trainable))(x)
        return jnp.mean(inst["loss_weight"] * inst["keep_output"] * (y - out) ** 2)

    return objective
