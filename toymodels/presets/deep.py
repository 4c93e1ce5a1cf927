"""Presets beyond one layer: the deep TMS stack and the "later layers" question (issue 18).

``deep``: the seed's 2-D analogy (:func:`toymodels.presets.lab.analogy_base`: five features in 2-D, helpful
and toxic pinned 15° apart, p = 0.05) in a stack of ``DEEP_LAYERS`` bottlenecks, with the pair planted at
layer 1, 2, ... L (one member each), fine-tuned at the output under the regimes × optimisers × orientations
× matched gains of the robustness axes. The suite summary (:mod:`toymodels.lab.depth`) compares the plant
layers and states the verdict on "spill-over is worse in later layers".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import Config, ModelConfig, OptimizerConfig
from ..io import runs
from ..lab import depth as lab_depth
from .lab import FULL_ALL, NARROW, analogy_base
from .registry import SMOKE_OVERRIDES, Suite, preset, suite_summary

DEEP_LAYERS = 3
# pretrained models per member: >= 10 clusters per cell once a model whose pair ended barely represented
# (own read-out < 0.25, core.planting.own_readouts) is put in its own stratum
DEEP_MODELS = 12
DEEP_RESTARTS = 2         # the better of two restarts: fewer models that drop one of the pair
DEEP_NORMS = (1.0, 1.0)   # the pair's starting norms at the planted layer
# adam (per-coordinate, sees the hidden axes) and novograd (per-tensor second moment: adaptive and
# rotation-equivariant). Plain sgd diverges here within a few steps at lr = 0.1, 0.03 and 0.01 in some
# models: the stack's layer norms reach ~5, and the gradient through three of them is far larger than
# through one layer; the adaptive optimisers normalise it.
DEEP_OPTIMIZERS = (OptimizerConfig("adam", "adam", lr=1e-3), OptimizerConfig("novograd", "novograd", lr=2e-4))
DEEP_ORIENTATIONS = 2     # axis-aligned and one random rotation of every layer's hidden space
DEEP_GAINS = (1.5,)


def deep_member(plant_layer: int, n_layers: int = DEEP_LAYERS, at_layer: int = 0) -> Config:
    """analogy-15deg's setup in an ``n_layers`` stack with the pair planted (pinned) at ``plant_layer``;
    ``at_layer`` = l puts the fine-tuning objective (and the target's gain) on layer l's output."""
    base = analogy_base(f"deep-l{plant_layer}" + (f"-at{at_layer}" if at_layer else ""))
    ft = dataclasses.replace(base.finetune, regimes=(NARROW, FULL_ALL), optimizers=DEEP_OPTIMIZERS,
                             orientations=DEEP_ORIENTATIONS, matched_gains=DEEP_GAINS, chunk_size=25, log_every=100,
                             save_trajectory=False, layer=at_layer)
    return dataclasses.replace(
        base, n_inst=DEEP_MODELS, finetune=ft, plots=("depth_layers",),
        train=dataclasses.replace(base.train, restarts=DEEP_RESTARTS),
        features=dataclasses.replace(base.features, norms=DEEP_NORMS),
        model=ModelConfig(kind="deep", d_hidden=2, n_layers=n_layers, plant_layer=plant_layer),
        notes=f"the pair pinned 15° apart at layer {plant_layer} of {n_layers}; helpful fine-tuned at "
              + (f"layer {at_layer}'s output" if at_layer else "the output"))


@preset("deep", f"the 'later layers' question: the 15° pair planted at each layer of a {DEEP_LAYERS}-layer TMS stack, "
                "fine-tuned at the output over regime x optimiser x orientation x stopping point")
def deep() -> Suite:
    """One member per plant layer (``deep-l1`` .. ``deep-l3``), each 12 pretrained models x 2 regimes x
    2 optimisers (adam, novograd) x 2 orientations in one compiled sweep; the suite summary (``depth_table.md``) gives the
    per-layer table, where the harmful pre-activation moves, and the later-layers verdict."""
    return Suite(
        name="deep",
        members=tuple(deep_member(layer) for layer in range(1, DEEP_LAYERS + 1)),
        plots=("depth_summary",),
        summary="depth",
        notes="Does spill-over grow with the depth at which the pair lives? Each member plants helpful and toxic "
              "15° apart at one layer of the same stack; deepest vs shallowest is a paired test by model index.",
        meta={"n_layers": DEEP_LAYERS, "optimizers": [o.name for o in DEEP_OPTIMIZERS],
              "orientations": DEEP_ORIENTATIONS, "matched_gains": list(DEEP_GAINS)},
    )


@preset("deep-at-layer", f"the 15° pair planted at layer 1 and 2 of the {DEEP_LAYERS}-layer stack and fine-tuned at "
                         "that layer's own output (the deep preset fine-tunes at the model's output)")
def deep_at_layer() -> Suite:
    """The deep preset's members for plant layers 1 and 2, with ``finetune.layer`` = the plant layer: the
    objective reads the layer where the pair lives (the rates stay at the model's output). The layer-3
    member of ``deep`` is already fine-tuned at its own layer (the output)."""
    return Suite(
        name="deep-at-layer",
        members=tuple(deep_member(layer, at_layer=layer) for layer in (1, 2)),
        plots=("depth_summary",),
        summary="depth",
        notes="Fine-tuning at the layer the pair lives in, instead of at the output: does the spill-over onto "
              "toxic's output follow?",
        meta={"n_layers": DEEP_LAYERS, "finetune_at": "the plant layer"},
    )


SMOKE_OVERRIDES["deep-at-layer"] = {"suite.members": ["deep-l2-at2"], "n_inst": 2, "finetune.rate_samples": 20_000}


@suite_summary("depth")
def depth_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    """:func:`toymodels.lab.depth.depth_summary`, and its table written to ``RUN_DIR/depth_table.md``."""
    summary, report = lab_depth.depth_summary(members, suite)
    runs.write_text(Path(run_dir) / "depth_table.md", lab_depth.markdown(summary))
    return summary, report


# the smoke run: one member, two models (steps are shrunk by the test); the comparison across members is
# tested on synthetic summaries (tests/test_deep.py)
SMOKE_OVERRIDES["deep"] = {"suite.members": ["deep-l3"], "n_inst": 2, "finetune.rate_samples": 20_000}
