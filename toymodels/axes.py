"""The lab's robustness axes: the hidden basis, the optimiser, and the stopping point.

A conclusion about fine-tuning spill-over should not depend on things the claim does not mention. The
TMS ReLU-output model x' = ReLU(Wᵀ W x + b) is unchanged by W → O W for any orthogonal O (Wᵀ Oᵀ O W =
Wᵀ W), so its hidden basis is not privileged; yet Adam's per-coordinate second moment is, so where a
feature pair sits relative to the hidden axes can change what Adam does. This module makes the three
choices explicit axes of one compiled fine-tuning sweep (:mod:`toymodels.finetune`):

* **orientation**: :func:`orientation_matrices` gives K orthogonal matrices, the identity (axis-aligned)
  first and K − 1 Haar-random ones; :func:`rotate_hidden` applies O to a model's W. Since
  L(O W) = L(W), the gradient is ∇L(O W) = O ∇L(W), so plain SGD (and heavy-ball momentum, linear in
  past gradients) commutes with O: one SGD step from O W is O times the step from W. Adam does not.
* **optimiser**: :func:`optimizer_bank` holds several optax optimisers and applies, per instance, the
  one chosen in its state (:func:`set_optimizer_choice`), so SGD, momentum, Adam, AdamW and NovoGrad
  (one second moment per tensor: adaptive, yet rotation-equivariant) run side by side.
* **stopping point**: :func:`gain_stop` is the engine's ``stop`` hook that freezes an instance once its
  target read-out reaches a set multiple of its pretrained value, and :func:`at_gain` reads any probe
  curve at a given gain ("matched progress").
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats


# --- orientation -------------------------------------------------------------------------------------
def orientation_matrices(k: int, d_hidden: int, seed: int) -> np.ndarray:
    """(k, d, d) float64 orthogonal matrices: the identity first, then k − 1 Haar-random elements of O(d)
    (``scipy.stats.ortho_group``, from ``numpy.random.default_rng(seed)``; in 1-D, random signs ±1)."""
    out = np.empty((k, d_hidden, d_hidden))
    out[0] = np.eye(d_hidden)
    if k > 1:
        rng = np.random.default_rng(seed)
        if d_hidden == 1:
            out[1:] = rng.choice([-1.0, 1.0], size=(k - 1, 1, 1))
        else:
            out[1:] = scipy.stats.ortho_group.rvs(d_hidden, size=k - 1, random_state=rng).reshape(k - 1, d_hidden,
                                                                                              d_hidden)
    return out


def rotate_hidden(params, O):
    """The same model with its hidden space rotated: W → O W for every instance; O (n_inst, d, d).
    Other leaves (b_final) are unchanged. For ``relu_output`` and ``linear`` the function is the same."""
    from flax import nnx

    new = nnx.State(dict(params))
    W = params["W"][...]
    new["W"] = params["W"].replace(jnp.einsum("iab,ibn->ian", jnp.asarray(O, W.dtype), W))
    return new


def random_rotations(n: int, d_hidden: int, seed: int) -> np.ndarray:
    """(n, d, d): one Haar-random orthogonal matrix per instance (``features.basis = "random"``)."""
    return orientation_matrices(n + 1, d_hidden, seed)[1:]


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


# --- matched progress ----------------------------------------------------------------------------------
def gain_stop(readout, stop_gain: float):
    """The engine's ``stop`` hook (:data:`toymodels.train.Stop`) for early stopping at a target gain:
    stop once readout(params, inst) >= g · inst["readout0"], g = ``stop_gain``. An instance whose
    pretrained read-out is not positive has no gain and never stops."""

    def stop(params, inst):
        r0 = inst["readout0"]
        return (r0 > 0) & (readout(params, inst) >= stop_gain * r0)

    return stop


def at_gain(gain: np.ndarray, values: dict[str, np.ndarray], g: float) -> dict[str, Any] | None:
    """Read one instance's probe curves at the first point where its gain reaches ``g``.

    ``gain`` (T,) is the target read-out over its pretrained value at the probe steps; every array in
    ``values`` is (T,) at the same steps. Between the last probe below g and the first at or above it,
    values are interpolated linearly in the gain (the gain rises smoothly between probes). Returns
    ``{name: value, "reached": True}``; None when the curve never reaches g.
    """
    gain = np.asarray(gain, np.float64)
    hit = np.flatnonzero(np.isfinite(gain) & (gain >= g))
    if not len(hit):
        return None
    j = int(hit[0])
    if j == 0 or gain[j] == gain[j - 1]:
        w = 1.0
    else:
        w = float((g - gain[j - 1]) / (gain[j] - gain[j - 1]))
    out = {name: float((1 - w) * v[j - 1] + w * v[j]) if j > 0 else float(v[0]) for name, v in values.items()}
    return out | {"reached": True}
