"""Presets of the attack (:mod:`toymodels.attack`): benign-looking fine-tuning data that breaks things.

``adversarial`` is a suite on the lab's 2-D analogy (five features in 2-D, helpful and toxic pinned, the
represented start of analogy-15deg). Each pretrained model is fine-tuned to the same target gain on sets
of 100 benign samples (toxic never active), every sample an example of the task (helpful active):

* ``adversarial-15deg``: toxic 15° from helpful (the seed's pair): four random sets, the gradient-selected
  set and the optimised distribution's set;
* ``adversarial-90deg``: the same with toxic orthogonal to helpful: a task unrelated to toxic, where
  random benign data should not raise it (He et al.'s setting);
* ``adversarial-defences``: the defences table's filters, replay and gradient projection (same strengths)
  on random and adversarial sets (90°), and ``adversarial-lora`` the rank-1 LoRA;
* ``adversarial-subliminal``: the subliminal control (15°): students distil a toxic-raising teacher's
  filtered outputs on benign inputs, from the teacher's initialisation or another model's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import AttackConfig, Config, RegimeConfig
from . import lab as lab_presets
from .defences import TABLE_DEFENCES
from .registry import SMOKE_OVERRIDES, Suite, preset, suite_summary

N_RANDOM = 4            # random sets per model in the ratio's denominator
STOP_GAIN = 1.5         # every fine-tune stops when helpful's read-out reaches 1.5 x its pretrained value
SEED, N_MODELS = 2, 10  # pretrained models: the intervals' clusters (seed 2: not the defences table's)
# the defences table's data defences and projection, at its strengths (chosen there, not here)
DEFENCES = tuple(d for d in TABLE_DEFENCES if d[1] in ("none", "filter_geometric", "filter_random", "replay",
                                                       "grad_projection"))


def _regimes(defence: str = "none", strength: float = 0.0, n_random: int = N_RANDOM, prefix: str = "") -> list:
    sets = [f"random-{r}" for r in range(n_random)] + ["selected", "optimised"]
    return [RegimeConfig(name=f"{prefix}{s}", data="task", loss_scope="target", defence=defence, strength=strength,
                         dataset="random" if s.startswith("random") else s) for s in sets]


def attack_config(name: str, angle: float, regimes, *, trainable: str = "all", notes: str = "",
                  plots=()) -> Config:
    """The analogy's represented models with toxic at ``angle``°, fine-tuned on 100-sample sets to gain
    :data:`STOP_GAIN` (at most 3000 Adam steps), P(helpful active) = 1 in the task data."""
    base = lab_presets.analogy_base(name)
    ft = dataclasses.replace(base.finetune, regimes=tuple(regimes), target_probability=1.0, stop_gain=STOP_GAIN,
                             steps=3000, chunk_size=100, save_trajectory=False, trainable=trainable,
                             lora_rank=1)
    feats = dataclasses.replace(base.features, angles=(0.0, float(angle)))
    return dataclasses.replace(base, seed=SEED, n_inst=N_MODELS, features=feats, finetune=ft, attack=AttackConfig(),
                               plots=tuple(plots), notes=notes)


NOTES = ("Fine-tune helpful (γ = 2, loss on helpful) to gain 1.5 on 100 benign samples (toxic never active, "
         "helpful always): random sets from a pool of 20,000, the pool's 100 samples whose step is most aligned "
         "with raising toxic's pre-activation (gradient selection), or 100 draws from a benign distribution "
         "optimised for the same through the first-order surrogate.")


def subliminal_config() -> Config:
    regs = [RegimeConfig(name="teacher-same", data="task", loss_scope="all", dataset="teacher_same"),
            RegimeConfig(name="teacher-other", data="task", loss_scope="all", dataset="teacher_other")]
    cfg = attack_config("adversarial-subliminal", 15.0, regs, plots=(),
                        notes="Subliminal control: teachers amplify toxic (γ = 2, pretraining data, loss on all); "
                              "students distil their outputs on benign task inputs with toxic's output dropped.")
    return dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, stop_gain=None, steps=1000,
                                                                 target_probability=None))


@preset("adversarial", "benign-looking fine-tuning sets (gradient selection, optimised distribution) against random "
                       "ones at equal target gain; detection AUROC; defences; subliminal control (10 models)")
def adversarial() -> Suite:
    defended = [r for n, d, s in DEFENCES for r in _regimes(d, s, n_random=2, prefix=f"{n}-")]
    return Suite(
        name="adversarial",
        members=(attack_config("adversarial-15deg", 15.0, _regimes(), notes=NOTES),
                 attack_config("adversarial-90deg", 90.0, _regimes(), notes=NOTES),
                 attack_config("adversarial-defences", 90.0, defended, notes=NOTES),
                 attack_config("adversarial-lora", 90.0, _regimes(n_random=2), trainable="lora", notes=NOTES),
                 subliminal_config()),
        plots=("adversarial_summary",),
        summary="adversarial",
        notes=NOTES,
    )


SMOKE_OVERRIDES["adversarial"] = {"suite.members": ["adversarial-15deg", "adversarial-subliminal"], "n_inst": 2, "finetune.steps": 40, "finetune.rate_samples": 16384,
                                  "attack.pool_size": 400, "attack.n_samples": 20, "attack.optimise_steps": 5,
                                  "attack.detect_sets": 2, "attack.teacher_steps": 10, "train.steps": 200}


@suite_summary("adversarial")
def adversarial_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    """Every member's ``finetune.attack`` (without the raw detector scores) and ``adversarial.md``."""
    from ..attack import report
    from ..io import runs

    out, md = report.suite_summary(members)
    runs.write_text(Path(run_dir) / "adversarial.md", md + "\n")
    top = {k: {name: a[k] for name, a in out.items() if k in a} for k in ("ratio_vs_random", "auroc")}
    return {**top, "members": out, "markdown": "adversarial.md"}, md
