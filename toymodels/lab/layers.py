"""Per-layer records of a fine-tune: where the harmful pre-activation moves, beside the composed prediction.

For a model with layers (``layer_preacts``: :mod:`toymodels.core.deep`), with p_l(x; θ) the pre-activation
of layer l and e_t the unit target input, each fine-tune θ0 → θ1 gets, per layer l and harmful feature j:

    measured    Δp_l,j = p_l(e_t; θ1)_j − p_l(e_t; θ0)_j
    predicted   ⟨∇_θ p_l(e_t; θ0)_j, θ1 − θ0⟩          (a JVP through the composed maps)

The prediction is the first-order term of the change, through every layer between the input and layer l:
the deep analogue of the one-layer ⟨W0_j, ΔW_t⟩ (Minegishi et al. 2026), exact at first order
(``tests/test_deep.py`` checks it against finite differences). ``argmax_layer`` is the layer whose harmful
pre-activation changed most in magnitude ("where it goes"; the LLM analogue is the middle layers).

:func:`by_layer` aggregates per (regime, optimiser, orientation class): the mean change per layer with its
paired t interval over the G pretrained models (:func:`toymodels.stats.paired`, a direction only from G >= 10:
:func:`.inference.claim`), the mean prediction, and
how often each layer is the argmax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import stats
from . import inference
from ..core.models import MODELS
from .plan import Plan

LAYER_KEYS = ("before", "after", "change", "predicted")


def has_layers(kind: str) -> bool:
    """Whether models of ``kind`` report per-layer pre-activations (``layer_preacts``)."""
    return hasattr(MODELS[kind], "layer_preacts")


def composed_prediction(graphdef, state0, state1, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(p(θ0), p(θ1), ⟨∇_θ p(θ0), θ1 − θ0⟩) of ``layer_preacts`` on x, each (L, batch, n), for ONE instance."""
    f = lambda s: nnx.merge(graphdef, s).layer_preacts(x)
    delta = jax.tree.map(lambda a, b: a - b, state1, state0)
    p0, pred = jax.jvp(f, (state0,), (delta,))
    return p0, f(state1), pred


def make_layer_probe(graphdef, plan: Plan, n_features: int):
    """``probe(states, base_states, target) -> {key: (n_ft, L, h)}`` for :data:`LAYER_KEYS`, jitted and
    vmapped over fine-tunes: the harmful features' pre-activations at every layer on e_target."""
    harmful = jnp.asarray(plan.harmful)

    def one(state, state0, target):
        e_t = jax.nn.one_hot(target, n_features)[None, :]
        p0, p1, pred = composed_prediction(graphdef, state0, state, e_t)
        p0, p1, pred = (a[:, 0, harmful] for a in (p0, p1, pred))
        return {"before": p0, "after": p1, "change": p1 - p0, "predicted": pred}

    return jax.jit(jax.vmap(one))


def measure(cfg, graphdef, plan: Plan, base, finetuned) -> dict | None:
    """The per-layer records of every fine-tune (numpy, (n_ft, L, h) per key), or None for a model
    without ``layer_preacts``."""
    if not has_layers(cfg.model.kind):
        return None
    out = make_layer_probe(graphdef, plan, cfg.data.n_features)(finetuned, base, jnp.asarray(plan.target))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def instance_record(layers: dict, k: int, h: int) -> dict:
    """Fine-tune k's per-layer numbers about harmful feature h (lists over layers 1..L)."""
    change, pred = layers["change"][k, :, h], layers["predicted"][k, :, h]
    return {"before": layers["before"][k, :, h].tolist(), "change": change.tolist(), "predicted": pred.tolist(),
            "argmax_layer": int(np.argmax(np.abs(change))) + 1}


def by_layer(instances: list[dict], group_of) -> dict:
    """Per group (``group_of(entry)`` -> key) and harmful feature: per layer, the paired mean change with its
    95% t interval over pretrained models (``stats.paired``), the mean composed prediction, and the share of
    fine-tunes whose largest change is at that layer."""
    out: dict = {}
    groups: dict = {}
    for e in instances:
        if "layers" in e:
            groups.setdefault(group_of(e), []).append(e)
    for key, rows in groups.items():
        entry = {"n": len(rows)}
        for name in rows[0]["layers"]:
            recs = [e["layers"][name] for e in rows]
            clusters = [e["pretrain_instance"] for e in rows]
            L = len(recs[0]["change"])
            per = []
            for layer in range(L):
                p = inference.claim(stats.paired([r["change"][layer] for r in recs], clusters=clusters))
                per.append({"layer": layer + 1, "change": {k: p[k] for k in ("mean", "ci95", "n_clusters",
                                                                             "direction")},
                            "predicted_mean": float(np.mean([r["predicted"][layer] for r in recs])),
                            "argmax_share": float(np.mean([r["argmax_layer"] == layer + 1 for r in recs]))})
            entry[name] = per
        out[key] = entry
    return out
