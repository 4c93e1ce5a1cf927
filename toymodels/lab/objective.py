"""The fine-tuning objective for one instance, and the target's read-out (its progress on the task)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from ..core.engine import Objective, model_loss
from .trainable import full_state


# --- the objective ------------------------------------------------------------------------------------
DATASET_SALT = 9_001   # fold_in(step key, ·): which rows of a finite fine-tuning set form the batch


def finetune_inputs(sample: Callable, key: jax.Array, inst) -> jax.Array:
    """One instance's fine-tuning batch: drawn with the regime's probabilities, then every feature
    the regime excludes is set to 0 explicitly, so a harmful feature is absent from narrow and task
    data by construction (also when it shares a correlated set's activity draw with the target).

    A finite fine-tuning set: when a plug-in's ``instance_arrays`` supplies ``inst["dataset"]`` (N, n)
    (e.g. :mod:`toymodels.attack`'s selected samples), the batch is B rows of it drawn uniformly with
    replacement, B the sampler's batch size (the stream draw is then only used for its shape, and XLA
    drops it). Every instance of the sweep then fine-tunes on its own set."""
    x = sample(key, inst["feature_probability"])
    if "dataset" in inst:
        data = inst["dataset"]
        rows = jax.random.randint(jax.random.fold_in(key, DATASET_SALT), (x.shape[0],), 0, data.shape[0])
        x = data[rows]
    return jnp.where(inst["present"] > 0, x, 0.0)


def read_at(model, layer: int = 0):
    """The model, or for ``finetune.layer`` = l >= 1 its view at layer l (x_l as the output; deep models)."""
    return model if not layer else model.at_layer(layer)


def finetune_objective(graphdef, sample: Callable, task: str, trainable: str, layer: int = 0) -> Objective:
    """L = mean_{batch,i} w_i (s_i target(x)_i − x'_i)² for ONE instance (:mod:`toymodels.lab.plan`),
    through :func:`toymodels.core.engine.model_loss` (feature-major: the pretraining engine's fast path).
    ``inst``: feature_probability, present, out_scale, loss_weight (n,) [+ base for LoRA]. With ``layer``
    = l >= 1, x' is layer l's output x_l (:func:`read_at`)."""

    def objective(params, key, inst):
        x = finetune_inputs(sample, key, inst)
        model = read_at(nnx.merge(graphdef, full_state(params, inst, trainable)), layer)
        return model_loss(model, x, task, inst["loss_weight"], inst["out_scale"])

    return objective


def target_readout(graphdef, trainable: str, layer: int = 0):
    """``readout(params, inst)``: the target's output x'_t on the unit target input e_t, for ONE instance
    (the probe's ``target_readout``; the gain is its ratio to the pretrained value), read where the
    objective reads (``layer``)."""

    def readout(params, inst):
        e_t = inst["target"][None, :]
        model = read_at(nnx.merge(graphdef, full_state(params, inst, trainable)), layer)
        return (model(e_t)[0] * inst["target"]).sum()

    return readout
