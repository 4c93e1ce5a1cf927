"""Optimisers: optax transformations by name, learning-rate schedules, and the optimiser bank.

* :func:`optimizer`: ``sgd``, ``momentum``, ``adam``, ``adamw``, ``novograd`` from a config's optimiser
  fields (:class:`toymodels.config.OptimizerFields` or an :class:`~toymodels.config.OptimizerConfig`).
* :func:`optimizer_bank`: several optimisers in one transformation, each instance applying its own, so
  an optimiser axis is one compiled sweep (the lab's robustness axes).

Since L(O W) = L(W) for the ReLU-output model and any orthogonal O, ∇L(O W) = O ∇L(W); plain SGD and
heavy-ball momentum (linear in past gradients) and NovoGrad (one second moment per tensor, ‖O g‖ = ‖g‖)
commute with O. Adam's per-coordinate second moment does not.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def schedule(kind: str, lr: float, steps: int) -> optax.Schedule:
    """constant; linear from lr to 0; cosine from lr to 0 (optax's cosine decay)."""
    if kind == "constant":
        return optax.constant_schedule(lr)
    if kind == "linear":
        return optax.linear_schedule(lr, 0.0, max(steps, 1))
    if kind == "cosine":
        return optax.cosine_decay_schedule(lr, max(steps, 1))
    raise ValueError(f"train.schedule={kind!r}: must be constant, linear or cosine")


def optimizer(train_cfg, steps: int | None = None, schedule_kind: str | None = None) -> optax.GradientTransformation:
    """The optimiser named by ``train_cfg.optimizer`` (a TrainConfig, FineTuneConfig or OptimizerConfig),
    with ``lr`` under the schedule ``schedule_kind`` (default ``train_cfg.schedule``) over ``steps``.

    * ``sgd``:       θ ← θ − η g                                         (rotation-equivariant)
    * ``momentum``:  m ← g + μ m;  θ ← θ − η m     (optax.sgd(momentum=μ); rotation-equivariant)
    * ``adam``:      per-coordinate m/√v                                (NOT rotation-equivariant)
    * ``adamw``:     adam + decoupled weight decay; pass it explicitly: optax's default is 1e-4,
                     the notebook's (torch AdamW) 0.01
    * ``novograd``:  m ← β₁ m + g/√(v) + λθ with ONE second moment v ← β₂ v + (1−β₂)‖g‖² per parameter
                     tensor (optax.novograd): adaptive, yet it commutes with a rotation of the hidden
                     space (‖O g‖ = ‖g‖), which separates "adaptive" from "per-coordinate".
    """
    kind = train_cfg.optimizer
    lr = schedule(schedule_kind or train_cfg.schedule, train_cfg.lr, steps if steps is not None else train_cfg.steps)
    if kind == "adamw":
        return optax.adamw(lr, weight_decay=train_cfg.weight_decay)
    if kind == "adam":
        return optax.adam(lr)
    if kind == "sgd":
        return optax.sgd(lr)
    if kind == "momentum":
        return optax.sgd(lr, momentum=train_cfg.momentum)
    if kind == "novograd":
        return optax.novograd(lr, weight_decay=train_cfg.weight_decay)
    raise ValueError(f"optimizer={kind!r}: must be adamw, adam, sgd, momentum or novograd")


# --- the optimiser axis ------------------------------------------------------------------------------
class BankState(NamedTuple):
    """State of :func:`optimizer_bank`: which optimiser this instance uses, and every optimiser's state."""

    choice: jax.Array   # () int32
    inner: tuple


def optimizer_bank(txs) -> optax.GradientTransformation:
    """Several optax optimisers in one transformation; each instance applies the update of the one its
    state chooses. All inner states advance every step (their cost is tiny next to the data and the
    model), which keeps the program the same for every instance, so ``vmap`` runs them side by side.
    The choice is 0 at ``init``; :func:`set_optimizer_choice` writes the real one after ``vmap(init)``.
    (optax has no per-instance selector: ``multi_transform`` routes by parameter, not by instance.)"""
    txs = tuple(txs)

    def init(params):
        return BankState(jnp.zeros((), jnp.int32), tuple(tx.init(params) for tx in txs))

    def update(updates, state, params=None):
        outs = [tx.update(updates, s, params) for tx, s in zip(txs, state.inner)]
        chosen = jax.tree.map(lambda *us: jnp.stack(us)[state.choice], *[u for u, _ in outs])
        return chosen, BankState(state.choice, tuple(s for _, s in outs))

    return optax.GradientTransformation(init, update)


def set_optimizer_choice(opt_state, choice):
    """Write the per-instance optimiser index (n_inst,) into every :class:`BankState` of ``opt_state``."""
    return jax.tree.map(lambda s: s._replace(choice=jnp.asarray(choice, jnp.int32)) if isinstance(s, BankState)
                        else s, opt_state, is_leaf=lambda s: isinstance(s, BankState))
