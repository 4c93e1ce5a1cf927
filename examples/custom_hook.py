"""A fine-tuning plug-in in 30 lines: :class:`toymodels.FineTuneHooks`.

The lab calls a hooks object at fixed points of its one training step (toymodels/lab/hooks.py lists them);
a plug-in overrides only what it needs, and the lab never imports it. This one is an *anchor*: it adds
λ‖W − W₀‖² to the fine-tuning loss, pulling every feature direction back towards its pretrained value W₀,
and we measure what that does to the toxic neighbour's output rate.

    python examples/custom_hook.py            # about 20 s on 2 CPU cores
"""

from __future__ import annotations

import jax.numpy as jnp

import toymodels as tm


class Anchor(tm.FineTuneHooks):
    """L' = L + strength · Σ (W − W₀)², with W₀ the pretrained weights of each fine-tuned instance."""

    def __init__(self, strength: float):
        self.strength = strength

    def instance_arrays(self, plan, base):
        # one extra array per fine-tune (leading axis n_ft): its pretrained W, to anchor to
        return {"W0": jnp.asarray(base["W"][...])}

    def wrap_objective(self, undefended, graphdef, sample):
        def objective(params, key, inst):   # ONE instance: the engine vmaps it over instances
            return undefended(params, key, inst) + self.strength * jnp.sum((params["W"][...] - inst["W0"]) ** 2)

        return objective


def main() -> None:
    cfg = tm.get_preset("analogy-15deg").replace(**{"train.steps": 2000, "finetune.steps": 500,
                                                    "finetune.regimes": [{"name": "narrow"}]})
    graphdef, params, _ = tm.pretrain(cfg, progress=False)
    for hooks in (tm.NO_HOOKS, Anchor(strength=1.0)):
        result = tm.finetune(cfg, graphdef, params, hooks=hooks, progress=False)
        toxic = tm.summarize(cfg, result)["by_regime"]["narrow"]["harmful"]["toxic"]
        name = "no hook" if hooks is tm.NO_HOOKS else f"anchor λ={hooks.strength:g}"
        print(f"{name:<14} toxic rate change {toxic['rate_change_pp']['mean']:+.2f} pp, "
              f"pre-activation change {toxic['preact_change']['mean']:+.3f}")


if __name__ == "__main__":
    main()
