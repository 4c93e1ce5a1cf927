"""The defences that act on the optimiser: the freeze mask and the gradient projection, appended to
the lab's optax chain, with their per-instance switches in the optimiser state."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..lab.trainable import element_mask, harmful_mask, set_element_mask
from .registry import Spec, _regime_of


# --- optimiser: the freeze mask and the gradient projection -----------------------------------------
class ProjectionState(NamedTuple):
    """Per-instance state of :func:`project_out_harmful`: P (d_hidden, d_hidden) the orthogonal
    projector onto span{W0_j : j ∈ H}, P W0 (d_hidden, n), and ``enabled`` (1.0 or 0.0)."""

    projector: jax.Array
    offset: jax.Array
    enabled: jax.Array


def harmful_projector(W, harmful, rtol: float = 1e-6):
    """P = Σ_k u_k u_kᵀ over the left singular vectors of W[:, H] with σ_k > rtol σ_max: the orthogonal
    projector onto the span of the harmful columns (zero columns add nothing). (d_hidden, d_hidden)."""
    WH = W[:, jnp.asarray(harmful)]
    U, s, _ = jnp.linalg.svd(WH, full_matrices=False)
    keep = (s > rtol * jnp.maximum(s[0], 1e-30)).astype(W.dtype)
    return (U * keep) @ U.T


def project_out_harmful(harmful) -> optax.GradientTransformation:
    """Gradient projection: remove from every column's update its component along the harmful
    directions of the pretrained W, appended last to the optimiser chain.

    With P the projector onto span{W0_j : j ∈ H} (from the parameters given to ``init``; one per
    instance under ``jax.vmap(tx.init)``), a proposed update u of W becomes

        u' = (I − P)(W + u) + P W0 − W,     so     W + u' = (I − P)(W + u) + P W0,

    i.e. the new W is the orthogonal projection of W + u onto the affine set {W : P W = P W0}: the
    step has no component along the harmful directions, and the rounding of earlier steps is not
    allowed to accumulate there either (P(W_T − W0) stays at one rounding error). ``b_final`` and
    other leaves pass unchanged. Instances with ``enabled`` = 0 (set by :func:`set_projection_enabled`
    after init; the default) get u back exactly."""

    def init(params):
        W = params["W"][...]
        P = harmful_projector(W, harmful)
        return ProjectionState(P, P @ W, jnp.zeros((), W.dtype))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("project_out_harmful needs the parameters: tx.update(grads, state, params)")
        W, u = params["W"][...], updates["W"][...]
        new_W = W + u
        projected = new_W - state.projector @ new_W + state.offset - W
        new = nnx.State(dict(updates))
        new["W"] = updates["W"].replace(jnp.where(state.enabled > 0, projected, u))
        return new, state

    return optax.GradientTransformation(init, update)


def set_projection_enabled(opt_state, enabled):
    """Write the per-instance ``enabled`` flags (n_ft,) into every :class:`ProjectionState`."""
    return jax.tree.map(lambda s: s._replace(enabled=jnp.asarray(enabled, s.enabled.dtype))
                        if isinstance(s, ProjectionState) else s, opt_state,
                        is_leaf=lambda s: isinstance(s, ProjectionState))


def freeze_mask(params, plan, frozen: np.ndarray):
    """Per-instance 0/1 update mask: 0 on W[:, H] and b_final[H] of the instances with ``frozen``
    (n_ft,) True, 1 everywhere else (every leaf)."""
    harm = harmful_mask(params["W"][...].shape[-1], plan.harmful)
    off = jnp.asarray(np.asarray(frozen, np.float32)[:, None] * harm[None, :])  # (n_ft, n)

    def leaf(path, a):
        name = str(getattr(path[0], "key", getattr(path[0], "name", path[0])))
        if name == "W":
            return jnp.broadcast_to(1.0 - off[:, None, :], a.shape).astype(a.dtype)
        if name == "b_final":
            return (1.0 - off).astype(a.dtype)
        return jnp.ones_like(a)

    return jax.tree_util.tree_map_with_path(leaf, params)


def wrap_optimizer(tx, sp: Spec, trainable: str, harmful) -> optax.GradientTransformation:
    """Append the masks and transforms of ``sp`` to the fine-tuning optimiser (``target_column``
    already has an element mask, which the freeze mask then shares)."""
    if sp.freeze and trainable != "target_column":
        tx = optax.chain(tx, element_mask())
    if sp.projection:
        tx = optax.chain(tx, project_out_harmful(harmful))
    return tx


def init_opt_state(opt_state, params, plan, sp: Spec, column_mask=None):
    """Write the per-instance freeze masks (multiplied with ``column_mask`` for ``target_column``)
    and projection flags into a freshly ``vmap``-initialised optimiser state."""
    regs = _regime_of(plan)
    if sp.freeze:
        mask = freeze_mask(params, plan, np.array([r.defence == "freeze_harmful" for r in regs]))
        if column_mask is not None:
            mask = jax.tree.map(lambda a, b: a * b, mask, column_mask)
        opt_state = set_element_mask(opt_state, mask)
    if sp.projection:
        opt_state = set_projection_enabled(opt_state, [float(r.defence == "grad_projection") for r in regs])
    return opt_state
