"""The residual MLP toy (APD/SPD "compressed computation") and its noise-free control.

``residual-mlp`` reproduces the published loss behaviour (Braun et al. 2025, APD §4; Bhagat, Molas-Medina,
Giglemiani & Heimersheim 2025, "Compressed computation is (probably) not computation in superposition"):
100 features, a fixed random unit-norm embedding into a residual stream of width 1000, one block of 50
ReLU neurons, labels y = x + ReLU(x), x_i ∈ U[−1, 1] with probability p. The trained model's loss per
feature beats the naive baseline (50 neurons computing 50 ReLUs exactly, L = p/12) with the published
labels; with the embedding's mixing term removed from the labels (``model.clean_labels``) the advantage
vanishes. Two members, ``residual-noisy`` and ``residual-clean``, identical but for that flag: instance i
of both has the same seed, hence the same embedding, initial MLP and training inputs, so the label
conditions are compared paired by instance (G = number of seeds per cell, printed).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import stats
from ..config import Config, DataConfig, ModelConfig, TrainConfig
from ..core import residual
from ..io import runs
from ..lab.inference import MIN_CLUSTERS, claim
from .registry import SMOKE_OVERRIDES, Suite, preset, suite_summary

SEEDS = 10                    # instances per (p, labels) cell: the clusters of the paired test
PROBABILITIES = (0.01, 0.1)   # the default; a sweep is documented in docs/residual.md


def residual_member(name: str, clean: bool, probabilities=PROBABILITIES, seeds: int = SEEDS, n_features: int = 100,
                    d_mlp: int = 50, n_layers: int = 1, steps: int = 1000) -> Config:
    """One label condition: instance ``s * len(probabilities) + k`` is seed s at probability k. The SPD
    training recipe (``spd/experiments/resid_mlp/train_resid_mlp.py``): batch 2048, AdamW lr 3e-3 with
    weight decay 0.01 and a cosine decay to 0, 1000 steps for one layer (10 000 for three)."""
    probs = [float(p) for _ in range(seeds) for p in probabilities]
    return Config(
        name=name,
        n_inst=len(probs),
        data=DataConfig(n_features=n_features, feature_probability=probs, batch_size=2048, task="resid_relu"),
        model=ModelConfig(kind="residual_mlp", d_hidden=1000, d_mlp=d_mlp, n_layers=n_layers, clean_labels=clean),
        train=TrainConfig(steps=steps, lr=3e-3, weight_decay=0.01, schedule="cosine", eval_batch_size=1 << 15),
        meta={"probabilities": [float(p) for p in probabilities], "seeds": seeds, "clean_labels": clean},
    )


@preset("residual-mlp", "SPD/APD residual MLP (100 features, width 1000, 50 neurons): loss per feature vs the naive "
                        "baseline, published labels vs clean labels, paired over 10 seeds at p = 0.01 and 0.1")
def residual_mlp() -> Suite:
    return Suite(
        name="residual-mlp",
        members=(residual_member("residual-noisy", False), residual_member("residual-clean", True)),
        plots=("residual_loss",),
        summary="residual_mlp",
        notes="Both members train the same seeds (same embeddings, initial MLPs and inputs); only the labels differ. "
              "Runtime on 2 shared cores: 2-4 min.",
    )


SMOKE_OVERRIDES["residual-mlp"] = {"data.feature_probability": [0.05] * 2, "n_inst": 2, "train.steps": 20,
                                   "data.batch_size": 64, "model.d_hidden": 64, "data.n_features": 8,
                                   "model.d_mlp": 4, "train.eval_batch_size": 512}


# --- the summary ------------------------------------------------------------------------------------
EVAL_SAMPLES = 1 << 16   # fresh inputs per seed for the summary's losses


def instance_table(run: runs.Run) -> list[dict]:
    """Per instance: p, the loss per feature, both naive baselines (all also divided by p) and the layer records.

    ``loss`` is measured here on EVAL_SAMPLES inputs drawn for this seed alone (numpy, seed ``cfg.seed +
    instance``), not the run's ``eval_loss``: that one scores every instance on ONE shared batch, whose error
    is then common to all seeds and missing from an interval over seeds. Instance i of both label conditions
    gets the same inputs, so their paired difference still has common random numbers."""
    cfg, w = run.config, run.weights
    n, neurons = cfg.data.n_features, cfg.model.n_layers * cfg.model.d_mlp
    rows = []
    ps = [float(np.mean(s["feature_probability"])) for s in run.summary["instances"]]
    for i, (s, seed) in enumerate(zip(run.summary["instances"], residual.seed_of(ps), strict=True)):
        p = ps[i]
        layers = residual.layer_records(w, i, p=p, clean=cfg.model.clean_labels, n_samples=EVAL_SAMPLES,
                                        seed=cfg.seed + i)
        loss = layers[-1]["loss_after"]
        naive_clean = float(residual.naive_loss(p, n, neurons))
        naive_here = float(residual.naive_loss(p, n, neurons, None if cfg.model.clean_labels else w["W"][i]))
        rows.append({"index": i, "seed": int(seed), "p": p, "loss": loss, "loss_over_p": loss / p,
                     "eval_loss": float(s["eval_loss"]), "naive_clean_over_p": naive_clean / p,
                     "naive_monosemantic_over_p": naive_here / p, "layers": layers})
    return rows


def _fmt(p: dict, spec: str = "+.4f") -> str:
    return stats.fmt_paired(p, spec) + ("" if p.get("direction") in (None, "no evidence") else f" {p['direction']}")


@suite_summary("residual_mlp")
def residual_mlp_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    """Per p: the loss per feature over p of each label condition, its paired difference to the naive
    baseline p/12 (and, with the published labels, to the naive solution inside the noisy model), and the
    paired difference between the conditions (same seeds); per layer, the blocks' records. Directions
    only from intervals over >= MIN_CLUSTERS seeds."""
    by = {("clean" if m.config.model.clean_labels else "noisy"): (m, instance_table(m)) for m in members}
    probs = sorted({r["p"] for _, rows in by.values() for r in rows})
    cells, lines = [], ["residual-mlp: loss per feature / p; paired t intervals over seeds (G); naive = p(n-N)/(6n)"]
    for p in probs:
        cell = {"p": p}
        for cond, (m, rows) in by.items():
            sel = [r for r in rows if r["p"] == p]
            seeds = [r["seed"] for r in sel]
            loss = [r["loss_over_p"] for r in sel]
            cell[cond] = {
                "seeds": seeds,
                "loss_over_p": stats.cluster_t_ci(loss, seeds),
                "minus_naive": claim(stats.paired(loss, [r["naive_clean_over_p"] for r in sel], seeds)),
                "minus_naive_monosemantic": claim(stats.paired(loss, [r["naive_monosemantic_over_p"] for r in sel],
                                                               seeds)),
                "naive_clean_over_p": sel[0]["naive_clean_over_p"] if sel else None,
                "naive_monosemantic_over_p": stats.cluster_t_ci([r["naive_monosemantic_over_p"] for r in sel],
                                                                seeds)["mean"],
                "layers": _layer_means([r["layers"] for r in sel], p),
            }
            lines.append(f"  p={p:g} {cond:5s}: L/p {_fmt(cell[cond]['loss_over_p'], '.4f')}; minus naive "
                         f"{cell[cond]['naive_clean_over_p']:.4f}: {_fmt(cell[cond]['minus_naive'])}")
        if "noisy" in cell and "clean" in cell:
            # instance i of both members is the same seed (same embedding, init and inputs): pair by index
            a = {r["index"]: r["loss_over_p"] for r in by["noisy"][1] if r["p"] == p}
            b = {r["index"]: r["loss_over_p"] for r in by["clean"][1] if r["p"] == p}
            idx = sorted(set(a) & set(b))
            cell["noisy_minus_clean"] = claim(stats.paired([a[i] for i in idx], [b[i] for i in idx], idx))
            lines.append(f"  p={p:g} noisy - clean: {_fmt(cell['noisy_minus_clean'])}")
        cells.append(cell)
    summary = {"cells": cells, "min_clusters": MIN_CLUSTERS, "units": "loss per feature divided by p",
               "members": {c: m.config.name for c, (m, _) in by.items()},
               "instances": {c: [{k: v for k, v in r.items()} for r in rows] for c, (_, rows) in by.items()}}
    return summary, "\n".join(lines)


def _layer_means(per_instance: list[list[dict]], p: float) -> list[dict]:
    """Mean over instances of each layer's records (losses divided by p)."""
    if not per_instance:
        return []
    out = []
    for layer in range(len(per_instance[0])):
        recs = [inst[layer] for inst in per_instance]
        out.append({"layer": layer + 1, "loss_after_over_p": float(np.mean([r["loss_after"] for r in recs]) / p),
                    **{k: float(np.mean([r[k] for r in recs])) for k in ("mlp_out_power", "neuron_power",
                                                                          "active_neurons")}})
    return out


def sweep(probabilities, seeds: int = SEEDS, **member) -> Suite:
    """The same suite over other feature probabilities (e.g. ``np.geomspace(1e-3, 0.3, 8)``; ~45 s per
    p on 2 cores at the default sizes), for the published curve of loss/p against p."""
    base = residual_mlp()
    members = tuple(residual_member(m.name, m.model.clean_labels, probabilities, seeds, **member)
                    for m in base.members)
    return dataclasses.replace(base, members=members)
