"""Presets at the synthetic-SAE field's scale: 16,384 features in 768 dimensions (SynthSAEBench-16k).

``tms-16k`` trains one ReLU-output model on SynthSAEBench-style data (:mod:`toymodels.core.scale_data`):
firing probabilities p_i = 0.1·(i+1)^(−1/2) (about 25 features active per sample on average, the L0 of
the benchmark), activity shared within 256 correlated groups (ρ = 0.3), and 512 parent features with 4
children each (a child fires only with its parent).

The default is the full model size with a short training, which CI affords; the full training is the
override ``train.steps=20000 data.batch_size=1024`` (``docs/scale.md`` gives its measured time).

``synthsae-16k`` runs the SynthSAEBench protocol (:mod:`toymodels.audit.synthbench`) on *planted* geometry: a
relu_output model whose columns W_j are random unit vectors (``model.init = "unit"``, ``train.steps = 0``: no
pretraining, the true directions are exact), the same kind of data, and a grid of BatchTopK and Matryoshka SAEs
(width × k × seed, one engine sweep per variant) scored by MCC, detection F1, L0 and explained variance, each
beside a random dictionary's. The default is a quarter of the protocol (4,096 features in 192 dimensions,
width 1,024, k = 25, p scaled so that ~25 features fire per sample) that CI affords; the full protocol is
:data:`SYNTHSAE_FULL` (width 4,096, k = 25, 16,384 × 768; ``docs/scale.md``).
"""

from __future__ import annotations

from ..config import Config, DataConfig, ModelConfig, TrainConfig
from ..config.sae import SAEConfig
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


# the full protocol (docs/scale.md): `toymodels run synthsae-16k` followed by these overrides as key=value
SYNTHSAE_FULL = {"data.n_features": N_16K, "model.d_hidden": D_16K, "data.feature_probability": 0.1,
                 "sae.dict_sizes": [4096], "sae.batch_k": [25.0], "sae.batch_size": 1024, "sae.lr": 3e-4}


@preset("synthsae-16k", "SynthSAEBench protocol on planted random unit directions: BatchTopK and Matryoshka SAEs "
                        "(width x k x seed) scored by MCC, F1, L0, EV beside chance; small default, full size in "
                        "docs/scale.md")
def synthsae_16k() -> Config:
    return Config(
        name="synthsae-16k",
        n_inst=1,
        data=DataConfig(n_features=4096, feature_probability=0.2, importance=1.0, batch_size=256,
                        power_law=0.5, correlation=0.3, correlation_groups=256, parents=512, children=4),
        model=ModelConfig(kind="relu_output", d_hidden=192, init="unit"),
        train=TrainConfig(steps=0, chunk_size=10, log_every=10, eval_batch_size=1024),
        sae=SAEConfig(variants=("batch_topk", "matryoshka"), dict_sizes=(1024,), batch_k=(25.0,), seeds=2,
                      steps=400, batch_size=256, lr=1e-3, chunk_size=100, log_every=100, eval_batch_size=4096,
                      synthbench=True, chance_draws=5),
        plots=(),
        notes="Planted geometry (model.init='unit', no pretraining); a quarter of the SynthSAEBench-16k protocol by "
              "default. Full size: data.n_features=16384 model.d_hidden=768 data.feature_probability=0.1 "
              "sae.dict_sizes=[4096] sae.batch_k=[25] sae.batch_size=1024 sae.lr=0.0003 sae.steps=... (docs/scale.md).",
    )


SMOKE_OVERRIDES["synthsae-16k"] = {"data.n_features": 512, "model.d_hidden": 48, "data.parents": 64,
                                   "data.correlation_groups": 32, "sae.dict_sizes": [128], "sae.batch_k": [8.0],
                                   "sae.chance_draws": 2}
