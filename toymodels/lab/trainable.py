"""What trains during fine-tuning: masks of frozen parameters, LoRA adapters, and the optimiser.

What trains is global to the run: ``all``, ``W`` or ``b_final`` (``optax.multi_transform`` with
``set_to_zero`` for frozen leaves, so they stay bit-identical), ``target_column`` (additionally
:func:`element_mask`, whose per-instance mask lives in the optimiser state), or ``lora`` (a rank-r
``nnx.LoRA`` adapter ΔW = (A B)ᵀ on the frozen pretrained W, which travels in ``inst``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..core.optim import optimizer, optimizer_bank


# --- parameters: masked full models or LoRA adapters ------------------------------------------------
def lora_delta(lora) -> jax.Array:
    """ΔW = (lora_a @ lora_b)ᵀ: (d_hidden, n_features), from nnx.LoRA(n_features, r, d_hidden)'s
    lora_a (n, r) and lora_b (r, m). Zero at init (lora_b starts at 0)."""
    return (lora["lora_a"][...] @ lora["lora_b"][...]).T


def full_state(params, inst, trainable: str):
    """The model's parameters for one instance: ``params`` itself, or for LoRA the frozen pretrained
    state ``inst["base"]`` with W replaced by W0 + ΔW."""
    if trainable != "lora":
        return params
    base = inst["base"]
    new = nnx.State(dict(base))
    new["W"] = base["W"].replace(base["W"][...] + lora_delta(params))
    return new


def init_lora(n_features: int, d_hidden: int, rank: int, n_inst: int, key: jax.Array):
    """``n_inst`` nnx.LoRA(n_features, rank, d_hidden) parameter states (leading instance axis)."""
    def one(k):
        return nnx.split(nnx.LoRA(n_features, rank, d_hidden, rngs=nnx.Rngs(params=k)))[1]

    return jax.vmap(one)(jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_inst)))


class ElementMaskState(NamedTuple):
    """Per-instance 0/1 mask, shaped like the parameters; updates where it is 0 are set to exactly 0."""

    mask: Any


def element_mask() -> optax.GradientTransformation:
    """Zero the updates of individual elements (e.g. all of W but the target's column).

    The mask lives in the optimiser state, so it can differ per instance: ``init`` makes it all ones
    and :func:`set_element_mask` writes the real one after ``jax.vmap(tx.init)``."""

    def init(params):
        return ElementMaskState(jax.tree.map(jnp.ones_like, params))

    def update(updates, state, params=None):
        return jax.tree.map(lambda u, m: jnp.where(m > 0, u, jnp.zeros_like(u)), updates, state.mask), state

    return optax.GradientTransformation(init, update)


def set_element_mask(opt_state, mask):
    """Replace every :class:`ElementMaskState` in ``opt_state`` with ``mask``."""
    return jax.tree.map(lambda s: ElementMaskState(mask) if isinstance(s, ElementMaskState) else s, opt_state,
                        is_leaf=lambda s: isinstance(s, ElementMaskState))


TRAINABLE_LEAVES = {"W": ("W",), "b_final": ("b_final",), "target_column": ("W",)}


def _leaf_name(path) -> str:
    k = path[0]
    return str(getattr(k, "key", getattr(k, "name", k)))


def finetune_optimizer(ft) -> optax.GradientTransformation:
    """The fine-tuning optimiser: :func:`~toymodels.core.optim.optimizer` of each optimiser of the axis
    (``ft.optimizer_list()``, under ft's schedule over ft.steps), several of them in an
    :func:`toymodels.core.optim.optimizer_bank`; frozen leaves routed to ``optax.set_to_zero`` and, for
    ``target_column``, an :func:`element_mask`."""
    txs = [optimizer(o, ft.steps, ft.schedule) for o in ft.optimizer_list()]
    base = txs[0] if len(txs) == 1 else optimizer_bank(txs)
    if ft.trainable in ("all", "lora"):
        return base
    keep = TRAINABLE_LEAVES[ft.trainable]

    def labels(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: "train" if _leaf_name(path) in keep else "frozen",
                                                params)

    tx = optax.multi_transform({"train": base, "frozen": optax.set_to_zero()}, labels)
    if ft.trainable == "target_column":
        tx = optax.chain(tx, element_mask())
    return tx


def column_mask(params, target_onehot: np.ndarray):
    """1 on W[:, target] of each instance, 0 elsewhere (every leaf): the ``target_column`` mask."""
    def leaf(path, a):
        if _leaf_name(path) == "W":
            return jnp.broadcast_to(jnp.asarray(target_onehot, a.dtype)[:, None, :], a.shape)
        return jnp.zeros_like(a)

    return jax.tree_util.tree_map_with_path(leaf, params)


def harmful_mask(n_features: int, harmful) -> np.ndarray:
    """(n_features,) float32: 1 at the harmful features, 0 elsewhere."""
    m = np.zeros(n_features, np.float32)
    m[np.asarray(harmful, int)] = 1.0
    return m

