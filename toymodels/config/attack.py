"""The ``[attack]`` section: benign-looking fine-tuning sets that break things (:mod:`toymodels.attack`).

A regime's ``dataset`` says where its fine-tuning batches come from:

* ``stream``: fresh draws from the regime's data every step (the lab's default; no attack);
* ``random``: a fixed set of ``attack.n_samples`` samples drawn at random from the benign pool (the
  control); several ``random`` regimes get different sets of the same pool;
* ``selected``: the ``n_samples`` pool samples whose fine-tuning gradient is most similar to the
  harmful direction (LESS / He et al. 2024's gradient selection);
* ``optimised``: ``n_samples`` draws from a benign feature distribution (probabilities and magnitudes,
  harmful features never active) optimised through the first-order surrogate of the fine-tune;
* ``teacher_same`` / ``teacher_other``: subliminal control: the labels are the outputs of a teacher
  fine-tuned to raise the harmful feature, on benign inputs, with the harmful outputs filtered out; the
  teacher starts from the student's own pretrained model, or from another one.

The pool of a pretrained model is ``pool_size`` draws of its regime's ``task`` data (harmful features
never active, which is the toy's data filter), with P(target active) = ``finetune.target_probability``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .checks import check, check_float, check_int

FT_DATASETS = ("stream", "random", "selected", "optimised", "teacher_same", "teacher_other")
SET_DATASETS = ("random", "selected", "optimised")          # a fixed set of n_samples benign samples
TEACHER_DATASETS = ("teacher_same", "teacher_other")        # labels from a teacher (subliminal control)


@dataclass(frozen=True)
class AttackConfig:
    """Sizes of the attack (see the module docstring).

    * ``n_samples``: the size N of every fine-tuning set (random, selected, optimised);
    * ``pool_size``: benign samples per pretrained model the selection chooses from;
    * ``optimise_steps``, ``optimise_lr``, ``optimise_batch``: Adam on the distribution's parameters, and
      the relaxed samples per step of the surrogate;
    * ``detect_sets``: random and adversarial sets per pretrained model scored by the detectors (no
      fine-tuning needed, so many more than are fine-tuned);
    * ``teacher_gamma``, ``teacher_steps``: the subliminal teacher's fine-tune (amplify the harmful feature
      by γ on the pretraining data, loss on every output).
    """

    n_samples: int = 100
    pool_size: int = 20_000
    optimise_steps: int = 300
    optimise_lr: float = 0.05
    optimise_batch: int = 2048
    detect_sets: int = 20
    teacher_gamma: float = 2.0
    teacher_steps: int = 1000

    def __post_init__(self):
        check_int("attack.n_samples", self.n_samples, 1, 1_000_000)
        check_int("attack.pool_size", self.pool_size, 1, 10_000_000)
        check(self.pool_size >= self.n_samples, "attack.pool_size", self.pool_size,
              f"must be at least attack.n_samples={self.n_samples} (the sets are drawn from the pool)")
        check_int("attack.optimise_steps", self.optimise_steps, 1, 1_000_000)
        check_float("attack.optimise_lr", self.optimise_lr, 1e-8, 10.0)
        check_int("attack.optimise_batch", self.optimise_batch, 1, 1_000_000)
        check_int("attack.detect_sets", self.detect_sets, 1, 100_000)
        check_float("attack.teacher_gamma", self.teacher_gamma, 0.0, 1e3)
        check_int("attack.teacher_steps", self.teacher_steps, 1, 10_000_000)
