"""Presets at the synthetic-SAE field's scale: 16,384 features in 768 dimensions (SynthSAEBench-16k).

``tms-16k`` trains one ReLU-output model on SynthSAEBench-style data (:mod:`toymodels.core.scale_data`):
firing probabilities p_i = 0.1·(i+1)^(−1/2) (about 25 features active per sample on average, the L0 of
the benchmark), activity shared within 256 correlated groups (ρ = 0.3), and 512 parent features with 4
children each (a child fires only with its parent).

The default is the full model size with a short training, which CI affords; the full training is the
override ``train.steps=20000 data.batch_size=1024`` (``docs/scale.md`` gives its measured time).
"""

from __future__ import annotations

from ..config import Config, DataConfig, ModelConfig, TrainConfig
from .registry import SMOKE_OVERRIDES, preset

N_16K, D_16K = 16_384, 768


@preset("tms-16k", "16,384 power-law, correlated, hierarchical features in 768-D (SynthSAEBench-16k scale); "
                   "short by default, full training in docs/scale.md")
def tms_16k() -> Config:
    return Config(
        name="tms-16k",
        n_inst=1,
        data=DataConfig(n_features=N_16K, feature_probability=0.1, importance=1.0, batch_size=128,
                        power_law=0.5, correlation=0.3, correlation_groups=256, parents=512, children=4),
        model=ModelConfig(kind="relu_output", d_hidden=D_16K),
        train=TrainConfig(steps=20, chunk_size=10, log_every=10, eval_batch_size=1024),
        plots=("loss",),
        notes="Short default (20 steps of batch 128) that CI affords at the full size; train with "
              "train.steps=20000 data.batch_size=1024 for a converged model (docs/scale.md).",
    )


# the preset smoke test (every preset, tiny) runs it at a quarter of the width: 16x less work
SMOKE_OVERRIDES["tms-16k"] = {"data.n_features": 4096, "model.d_hidden": 192}
