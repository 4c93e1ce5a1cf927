"""Presets of the fine-tuning lab: planted angles, fine-tune one feature, watch the harmful ones.

``analogy-15deg`` is the seed article's 2-D analogy, and the README's main command. ``angle-sweep``
measures the spill-over against the angle, 0–180° in 5° steps, in one compiled sweep. ``overlap-table``
(the seed's benchmark table in toy form, learned geometry) and ``crowding`` (features per dimension
2..32) are suites of differently shaped models; their tables are built by :mod:`toymodels.lab.suites`.
Both put the claim's regime (narrow data, loss on the target only) beside counter-regimes (the harmful
feature in the data, or the loss on every output) as different instances of the same run, fine-tuned
from the same pretrained models, so the comparison is paired.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..config import (
    Config,
    DataConfig,
    FeaturesConfig,
    FineTuneConfig,
    ModelConfig,
    OptimizerConfig,
    RegimeConfig,
    TrainConfig,
)
from ..lab import robustness as lab_robustness
from ..lab import suites as lab_tables
from .registry import SMOKE_OVERRIDES, Suite, preset, suite_summary

# The claim's regime and the counter-regimes (see toymodels.lab.plan for what each means).
NARROW = RegimeConfig(name="narrow", data="narrow", loss_scope="target")
NARROW_ALL = RegimeConfig(name="narrow-all", data="narrow", loss_scope="all")
FULL = RegimeConfig(name="full", data="full", loss_scope="target")
FULL_ALL = RegimeConfig(name="full-all", data="full", loss_scope="all")

# The optimiser axis of the sweeps: Adam (the default) and plain SGD, which, unlike Adam, commutes with a
# rotation of the hidden space (toymodels.core.optim). Per step Adam moves each coordinate by about its lr, SGD
# by lr x gradient; at lr 0.1 SGD reaches a given target gain about 3x sooner than Adam at 1e-3 on the 15°
# analogy (robustness: gain 2.25 at step ~170 vs ~570), so 1500-2000 steps are enough for both.
ADAM = OptimizerConfig("adam", "adam", lr=1e-3)
SGD = OptimizerConfig("sgd", "sgd", lr=0.1)
SWEEP_OPTIMIZERS = (ADAM, SGD)

# helpful, toxic and three benign features in 2-D: five directions' worth of features, so the
# pretrained model is in superposition (TMS's pentagon regime) and has to share space.
N_FEATURES = 5
FEATURE_PROBABILITY = 0.05


# Both members of the pinned 15° pair must be represented (norm >= 0.5) in every pretrained model, or a
# "gain" of the target is mostly its weak start. At 15° they cannot both be large: the neighbour leaks
# 0.966 |W_i||W_j| into each one's output, about as much as its own |W_i|², and a negative bias removes
# that leak only for the larger of the two. The loss is lowest with one of them at norm ~1.03 and the
# other at ~0.49 (measured on the isolated pair, at every p from 0.01 to 0.2), and which one wins is the
# luck of the seed. So the pair is made more important than the benign features (3 and 3.3: toxic a
# little more, so that it stays above 0.5 as the smaller one), and helpful starts long (norm 1.0) and
# toxic short (0.2), which selects the helpful-strong arrangement: helpful 0.96-0.99, toxic 0.52-0.56 in
# 48 of 48 models over seeds 0-5 (toxic-strong has ~4% lower loss; it is not reached from this start).
ANALOGY_IMPORTANCE = (3.0, 3.3, 1.0, 1.0, 1.0)
ANALOGY_NORMS = (1.0, 0.2)


def analogy_base(name: str, represented: bool = True) -> Config:
    """The seed's 2-D analogy: helpful and toxic pinned 15° apart (helpful on hidden axis 0) among five
    features in 2-D, p = 0.05, fine-tune helpful to γ = 2 for 2000 Adam steps under the four regimes.
    ``represented``: both of the pair at norm >= 0.5 (ANALOGY_IMPORTANCE, ANALOGY_NORMS); otherwise the
    earlier setup, equal importance and unit starting norms, in which one of the pair ends near 0.45."""
    return Config(
        name=name,
        seed=0,
        n_inst=10,  # pretrained models (seeds; >= 10 clusters per cell); each is fine-tuned under all four regimes
        data=DataConfig(n_features=N_FEATURES, feature_probability=FEATURE_PROBABILITY,
                        importance=list(ANALOGY_IMPORTANCE) if represented else 1.0),
        model=ModelConfig(kind="relu_output", d_hidden=2),
        train=TrainConfig(steps=10_000),
        features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="pinned",
                                angles=(0.0, 15.0), norms=ANALOGY_NORMS if represented else 1.0),
        finetune=FineTuneConfig(target="helpful", objective="amplify", gamma=2.0, steps=2000, lr=1e-3,
                                regimes=(NARROW, NARROW_ALL, FULL, FULL_ALL), tau=0.1),
    )


@preset("analogy-15deg", "the seed's 2-D analogy: helpful and toxic 15° apart (pinned, both represented), fine-tune "
                         "helpful; narrow data beside harmful-in-data / loss-on-all counter-regimes")
def analogy_15deg() -> Config:
    return dataclasses.replace(
        analogy_base("analogy-15deg"),
        plots=("finetune_arrows", "amplification_curves", "finetune_gif", "loss"),
        notes="Minegishi et al. 2026's mechanism in the seed article's 2-D analogy: pushing 'helpful' by α moves "
              "'toxic''s pre-activation by about α‖W_toxic‖cos 15°. narrow: only helpful in the data and the loss; "
              "narrow-all: loss on all outputs; full: the pretraining data (toxic present); full-all: both. "
              "Adam with helpful on hidden axis 0; `toymodels run robustness` varies optimiser and orientation.",
    )


ANGLES = [float(a) for a in np.arange(0.0, 180.0 + 1e-9, 5.0)]
SEEDS_PER_ANGLE = 3


@preset("angle-sweep", "spill-over against angle: helpful at 0°, toxic at 0–180° in 5° steps, 3 seeds, "
                       "narrow vs full-all fine-tuning, one compiled sweep")
def angle_sweep() -> Config:
    # instance = angle_index * SEEDS_PER_ANGLE + seed (every instance has its own random init)
    per_inst = [[0.0, a] for a in ANGLES for _ in range(SEEDS_PER_ANGLE)]
    return Config(
        name="angle-sweep",
        seed=0,
        n_inst=len(per_inst),
        data=DataConfig(n_features=N_FEATURES, feature_probability=FEATURE_PROBABILITY, importance=1.0),
        model=ModelConfig(kind="relu_output", d_hidden=2),
        train=TrainConfig(steps=10_000),
        features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="pinned", angles=per_inst),
        finetune=FineTuneConfig(target="helpful", objective="amplify", gamma=2.0, steps=2000,
                                regimes=(NARROW, FULL_ALL), tau=0.1, save_trajectory=False, optimizers=SWEEP_OPTIMIZERS,
                                chunk_size=200),  # the sweep needs before/after, not fine curves
        plots=("angle_sweep", "loss"),
        meta={"angles_deg": ANGLES, "seeds_per_angle": SEEDS_PER_ANGLE,
              "instance_order": "pretrain instance = angle_index * seeds_per_angle + seed"},
        notes="The change in toxic pre-activation should follow α‖W_toxic‖cos θ in the narrow regime (positive "
              "below 90°, negative beyond); with the loss on all outputs and toxic in the data it need not.",
    )


# The smoke test's tiny run: three angles, one seed each, instead of 37 x 3.
SMOKE_OVERRIDES["angle-sweep"] = {"n_inst": 3, "features.angles": [[0.0, 15.0], [0.0, 90.0], [0.0, 165.0]]}


# --- the seed's benchmark table in toy form, and crowding ---------------------------------------------

def _family_regimes(families: tuple[RegimeConfig, ...], targets: list[str]) -> tuple[RegimeConfig, ...]:
    """Every regime family for every target: ``<family>@<target>`` (see toymodels.lab.suites.split_regime)."""
    return tuple(RegimeConfig(name=f"{fam.name}{lab_tables.FAMILY_SEP}{t}", data=fam.data, loss_scope=fam.loss_scope,
                              target=t) for fam in families for t in targets)


# (n_features, d_hidden, feature probabilities): from room to spare (2 features per dimension) to
# crowded (10 per dimension), sparse and less sparse; OVERLAP_SEEDS pretrained models per probability.
OVERLAP_MODELS = ((5, 2, (0.1, 0.05, 0.02)), (10, 5, (0.1, 0.05, 0.02)), (20, 5, (0.1, 0.05, 0.02)),
                  (32, 4, (0.1, 0.05, 0.02)), (40, 4, (0.05, 0.02, 0.01)))
OVERLAP_SEEDS = 2
OVERLAP_CANDIDATES = 6       # candidate targets f1..f6 per model (fewer when n_features is smaller)
OVERLAP_STEPS = 6_000        # pretraining steps (free geometry; see the preset's runtime note)
OVERLAP_FT_STEPS = 1_500


def overlap_member(k: int, n: int, m: int, probs: tuple[float, ...], seeds: int = 1) -> Config:
    """One model shape of ``overlap-table``: n features in m dimensions, learned geometry, ``seeds``
    pretrained instances per feature probability in ``probs`` (each instance has its own init), seed k;
    toxic = feature 0; candidates f1..fK each fine-tuned under narrow and full-all (``narrow@f1`` ...)."""
    cands = [f"f{i}" for i in range(1, min(OVERLAP_CANDIDATES, n - 1) + 1)]
    per_inst = [float(p) for p in probs for _ in range(seeds)]
    return Config(
        name=f"overlap-n{n}-m{m}",
        seed=k,
        n_inst=len(per_inst),
        data=DataConfig(n_features=n, feature_probability=per_inst, importance=1.0),
        model=ModelConfig(kind="relu_output", d_hidden=m),
        train=TrainConfig(steps=OVERLAP_STEPS, chunk_size=1000),
        features=FeaturesConfig(names=("toxic",), harmful=("toxic",), geometry="free"),
        finetune=FineTuneConfig(target=cands[0], objective="amplify", gamma=2.0, steps=OVERLAP_FT_STEPS,
                                optimizers=SWEEP_OPTIMIZERS, regimes=_family_regimes((NARROW, FULL_ALL), cands), tau=0.1,
                                save_trajectory=False, chunk_size=OVERLAP_FT_STEPS),  # before/after is enough
        plots=("loss",),
        meta={"candidates": cands},
        notes="Learned geometry; toxic = feature 0; every candidate f1..fK fine-tuned under narrow and full-all.",
    )


@preset("overlap-table", "the seed's benchmark table in toy form: 30 learned-geometry models x targets near/"
                         "middling/far from toxic; overlap score vs % increase in toxic output, bootstrap CIs")
def overlap_table() -> Suite:
    """Five model shapes x three sparsities x two seeds = 30 pretrained models with learned geometry;
    per model the tasks 'nearest', 'middling', 'farthest' (targets picked from the pretrained cosines to
    toxic among candidates f1..f6, see toymodels.lab.suites), each fine-tuned under narrow (the claim's
    regime) and full-all (counter-regime).

    Runtime on 2 shared cores: about 3 min (6 000 pretraining steps instead of TMS's 10 000 and 1 500
    fine-tuning steps, which bring the target's read-out gain to about γ = 2 or more in both regimes)."""
    return Suite(
        name="overlap-table",
        members=tuple(overlap_member(k, n, m, p, OVERLAP_SEEDS) for k, (n, m, p) in enumerate(OVERLAP_MODELS)),
        plots=("overlap_scatter",),
        summary="overlap_table",
        notes="Per model, targets picked from the learned geometry only (never from outcomes); toxic rate = "
              "P(x'_toxic > 0.1 | x_toxic = 0) on the pretraining distribution. Correlations of the overlap score "
              "with the increase, with 2000-resample bootstrap intervals, per regime.",
        meta={"models": [list(m[:2]) + [list(m[2])] for m in OVERLAP_MODELS], "seeds": OVERLAP_SEEDS,
              "candidates": OVERLAP_CANDIDATES},
    )


CROWDING_D_HIDDEN = 4
CROWDING_RATIOS = (2, 4, 8, 16, 32)      # n_features / d_hidden
CROWDING_SEEDS = 4
CROWDING_ANGLE = 45.0                    # degrees between helpful and toxic, pinned during pretraining
CROWDING_P = 0.02
CROWDING_BENIGN_IMPORTANCE = 0.7


def crowding_member(ratio: int) -> Config:
    """One point of ``crowding``: n = ratio * d_hidden features, helpful and toxic pinned at
    CROWDING_ANGLE, CROWDING_SEEDS pretrained instances, each fine-tuned under narrow and full-all."""
    n = ratio * CROWDING_D_HIDDEN
    c = float(np.cos(np.radians(CROWDING_ANGLE)))
    return Config(
        name=f"crowding-n{n}",
        seed=0,
        n_inst=CROWDING_SEEDS,
        data=DataConfig(n_features=n, feature_probability=CROWDING_P,
                        importance=[1.0, 1.0] + [CROWDING_BENIGN_IMPORTANCE] * (n - 2)),
        model=ModelConfig(kind="relu_output", d_hidden=CROWDING_D_HIDDEN),
        train=TrainConfig(steps=8_000, chunk_size=1000),
        features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="pinned",
                                cosines=[[1.0, c], [c, 1.0]]),
        finetune=FineTuneConfig(target="helpful", objective="amplify", gamma=2.0, steps=2000,
                                optimizers=SWEEP_OPTIMIZERS, regimes=(NARROW, FULL_ALL), tau=0.1, save_trajectory=False,
                                chunk_size=200),
        plots=("amplification_curves", "loss"),
        meta={"n_over_d": ratio},
    )


@preset("crowding", "amplification against features per dimension: helpful/toxic pinned 45° apart in 4-D among "
                    "8..128 features (n/d = 2..32), narrow vs full-all, 4 seeds")
def crowding() -> Suite:
    """n / d_hidden = 2, 4, 8, 16, 32 at d_hidden = 4 (8..128 features), p = 0.02, 4 seeds each; helpful
    and toxic pinned 45° apart so that the crowd, not the pair's angle, is what varies. The two named
    features have importance 1 and the crowd 0.7: with equal importance TMS drops about half the
    features of a crowded model, often a named one. Runtime on 2 shared cores: about 3 min (8 000
    pretraining steps, 2 000 fine-tuning steps)."""
    return Suite(
        name="crowding",
        members=tuple(crowding_member(r) for r in CROWDING_RATIOS),
        plots=("crowding",),
        summary="crowding",
        notes=f"helpful and toxic pinned {CROWDING_ANGLE:g}° apart in d_hidden={CROWDING_D_HIDDEN}; more and more benign "
              f"features around them. Does the spill-over onto toxic grow with crowding, and can the counter-regime "
              f"still rotate them apart?",
        meta={"d_hidden": CROWDING_D_HIDDEN, "n_over_d": list(CROWDING_RATIOS), "angle_deg": CROWDING_ANGLE},
    )


# The smoke test's tiny runs: two members of each suite instead of five.
SMOKE_OVERRIDES["overlap-table"] = {"suite.members": ["overlap-n5-m2", "overlap-n10-m5"]}
SMOKE_OVERRIDES["crowding"] = {"suite.members": ["crowding-n8", "crowding-n16"]}


# --- what survives the optimiser, the basis and the stopping point --------------------------------------
ROBUSTNESS_OPTIMIZERS = (
    OptimizerConfig("sgd", "sgd", lr=0.1),
    OptimizerConfig("momentum", "momentum", lr=0.01, momentum=0.9),   # the same effective step as sgd
    OptimizerConfig("adam", "adam", lr=1e-3),
    OptimizerConfig("adamw", "adamw", lr=1e-3, weight_decay=0.01),
    OptimizerConfig("novograd", "novograd", lr=2e-4),   # per-tensor second moment: adaptive, rotation-equivariant
)
ROBUSTNESS_ORIENTATIONS = 4        # the axis-aligned model and 3 random rotations of its hidden space
ROBUSTNESS_GAINS = (1.25, 1.5, 2.0, 2.25)
# the weak start splits seed by seed into "helpful weak" and "toxic weak" models (9 and 7 of seeds 0-15),
# which are never pooled; a stratum below 10 models claims no direction, so the member has 32
WEAK_MODELS = 32


def robustness_member(name: str, represented: bool, n_inst: int = 10) -> Config:
    """analogy-15deg's pretrained models (``represented``: both features at norm >= 0.5, the preset as it
    is; otherwise the earlier setup, equal importance and norms, where one of the pair ends near 0.45),
    fine-tuned under its four regimes x 5 optimisers x 4 orientations in one compiled sweep, with gains
    read at matched progress."""
    base = analogy_base(name, represented)
    ft = dataclasses.replace(base.finetune, optimizers=ROBUSTNESS_OPTIMIZERS, orientations=ROBUSTNESS_ORIENTATIONS,
                             matched_gains=ROBUSTNESS_GAINS, steps=2000, chunk_size=25, log_every=100,
                             save_trajectory=False)
    return dataclasses.replace(base, name=name, n_inst=n_inst, finetune=ft, plots=("robustness", "finetune_arrows"),
                               notes="analogy-15deg's models x regimes x optimisers x orientations; see the "
                                     "robustness preset.")


@preset("robustness", "which conclusions survive the optimiser (sgd, momentum, adam, adamw, novograd), the "
                      "orientation of the hidden basis (axis-aligned + 5 rotations) and the stopping point "
                      "(matched target gain), from represented and weakly represented starts")
def robustness() -> Suite:
    """Two members: ``robustness-represented`` (analogy-15deg's models, both features represented) and
    ``robustness-weak`` (the earlier setup, in which one of the pair ends at norm ~0.45). Each fine-tunes
    its 10 (weak: 32) pretrained models under 4 regimes x 5 optimisers x 4 orientations of one
    compiled sweep, probing every 25 steps so that every run can be read at matched gains. The suite's
    summary gives, per member, starting geometry and regime, whether the toxic-rate change keeps its
    direction (paired t intervals over the models) across every optimiser and orientation, and where it
    flips. Runtime on 2 cores: about 8 minutes."""
    return Suite(
        name="robustness",
        members=(robustness_member("robustness-represented", True), robustness_member("robustness-weak", False, n_inst=WEAK_MODELS)),
        plots=(),
        summary="robustness",
        notes="A conclusion survives when every optimiser and orientation moves the toxic rate the same way "
              "(paired 95% t interval over the pretrained models, excluding 0); it flips when some go up and others "
              "down. Runs identical up to a rotation count once; starting geometries are never pooled.",
        meta={"optimizers": [o.name for o in ROBUSTNESS_OPTIMIZERS], "orientations": ROBUSTNESS_ORIENTATIONS,
              "matched_gains": list(ROBUSTNESS_GAINS)},
    )


SMOKE_OVERRIDES["robustness"] = {"finetune.orientations": 2, "n_inst": 2}


# The suites' summaries are the lab's table builders (they read saved results only).
suite_summary("overlap_table", lab_tables.overlap_table_summary)
suite_summary("crowding", lab_tables.crowding_summary)
suite_summary("robustness", lab_robustness.robustness_summary)

