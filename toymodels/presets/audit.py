"""Presets of the auditor (:mod:`toymodels.audit`): SAE recovery, and risk prediction measured.

* ``sae-recovery``: the four SAE variants × dictionary sizes × sparsities on pretrained TMS models whose
  geometry is learned (5 features in 2-D, 20 in 5-D, at several sparsities), scored against the true
  features (MCC, mean max cosine), and the audit of every model.
* ``risk-prediction``: models of different shapes, planted and learned geometry and sparsities, each
  fine-tuned under three regimes × two optimisers × two orientations (one compiled sweep per member);
  before each fine-tune the candidate risk scores (geometric, and from the fine-tune's own step-0 gradient:
  :mod:`toymodels.audit.predict`), after it whether the harmful output rose relative to its baseline; the
  AUROC table per label, regime and optimiser, crosscoder diffs (BatchTopK against L1), and the geometric
  data filter with recovered directions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..audit import risk
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
from ..config.sae import AuditConfig, SAEConfig
from ..io import runs
from .registry import SMOKE_OVERRIDES, Suite, preset, suite_summary

# --- sae-recovery ---------------------------------------------------------------------------------------
# (name, n_features, d_hidden, feature probabilities, sparsity settings): the 2-D pentagon family and a
# 20-in-5-D model; the sparsest models have every feature represented, the densest (p = 0.1 in 2-D) not.
RECOVERY_MODELS = (
    ("sae-n5-m2", 5, 2, (0.02, 0.05, 0.1),
     {"l1": (0.03, 0.1, 0.3), "l0": (0.03, 0.1, 0.3), "k": (1, 2), "batch_k": (0.25, 0.5, 1.0)}),
    ("sae-n20-m5", 20, 5, (0.02, 0.05),
     {"l1": (0.1, 0.3, 1.0), "l0": (0.1, 0.3, 1.0), "k": (1, 2, 3), "batch_k": (0.5, 1.0, 2.0)}),
)
RECOVERY_SAE_STEPS = 4000
AUDIT_VARIANT = "topk"


def recovery_member(name: str, n: int, m: int, probs, sparsity: dict) -> Config:
    """TMS models of one shape at the sparsities ``probs`` (learned geometry; feature 0 'helpful', 1 'toxic'
    for the audit), every SAE variant at dictionary sizes n and 2n and each sparsity setting."""
    return Config(
        name=name, seed=0, n_inst=len(probs),
        data=DataConfig(n_features=n, feature_probability=list(probs), importance=1.0),
        model=ModelConfig(kind="relu_output", d_hidden=m),
        train=TrainConfig(steps=10_000, chunk_size=1000),
        features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="free"),
        sae=SAEConfig(dict_sizes=(n, 2 * n), steps=RECOVERY_SAE_STEPS, **sparsity),
        audit=AuditConfig(variant=AUDIT_VARIANT),
        plots=("sae_recovery", "audit"),
        notes=f"{n} features in {m}-D, learned geometry, p = {', '.join(f'{p:g}' for p in probs)}; SAEs of every "
              f"variant on the hidden activations; the auditor uses its {AUDIT_VARIANT} dictionaries.",
    )


@preset("sae-recovery", "SAEs on toy activations: ReLU-L1, TopK, BatchTopK, JumpReLU x dictionary size x sparsity on "
                        "learned TMS models (5-in-2-D, 20-in-5-D), scored against the true features (MCC); the audit")
def sae_recovery() -> Suite:
    """Two members (the 2-D pentagon family at p = 0.02, 0.05, 0.1 and 20 features in 5-D at p = 0.02, 0.05),
    each pretrained (10 000 steps) and then every SAE variant trained in the engine on its hidden activations
    (4 000 steps, batch 1024, one compiled sweep per variant over models x dictionary sizes x sparsities).
    The suite's summary.json holds every SAE's ``mcc`` (and ``mcc_abs``, ``chance``, ``beats_chance``,
    ``selected``), ``table`` per (member, model, variant) the auditor-selected and the ground-truth best SAE,
    ``by_variant`` (``selected_mean_mcc``, ``selected_beats_chance``, ``best_mcc``, ...) and ``chance`` (per
    model and width). Runtime on 2 cores: about 6
    minutes (5 min 47 s measured with another job sharing the cores)."""
    return Suite(name="sae-recovery", members=tuple(recovery_member(*m) for m in RECOVERY_MODELS),
                 plots=("sae_recovery_suite",), summary="sae_recovery",
                 notes="MCC: Hungarian matching of the alive latents' decoder directions to the true columns W_j, "
                       "mean max(cos, 0) over all true features (an unrepresented feature, or a latent along -W_j, "
                       "counts 0); |cos| (SAELens' convention) beside it; chance: random dictionaries of the same "
                       "width; headline: the SAE the auditor's rule selects, not the ground-truth best.",
                 meta={"models": [[n, m, list(p)] for _, n, m, p, _ in RECOVERY_MODELS]})


def recovery_rows(members) -> list[dict]:
    """Every SAE of every member: its ``summary["sae"]["instances"]`` entry with the member's name and shape."""
    return [{"member": m.config.name, "n_features": m.config.data.n_features, "d_hidden": m.config.model.d_hidden,
             **r} for m in members for r in m.summary["sae"]["instances"]]


RECOVERY_KEYS = ("dict_size", "sparsity", "mcc", "mcc_abs", "mcc_represented", "mean_max_cos", "mean_max_cos_abs",
                 "explained_variance", "l0_nonempty", "dead", "revived", "chance", "beats_chance")


def recovery_table(rows: list[dict]) -> list[dict]:
    """Per (member, model, variant): the headline ``selected``, the SAE the auditor's own rule picks without
    ground truth (:func:`toymodels.audit.stage.select`, the row's ``selected`` flag), and ``best``, the highest
    MCC over dictionary sizes and sparsities (uses the truth; not available to an auditor); each with its
    scores, chance levels (random dictionaries of its width) and whether it beats them."""
    out = []
    for member, model, variant in dict.fromkeys((r["member"], r["model"], r["variant"]) for r in rows):
        sel = [r for r in rows if (r["member"], r["model"], r["variant"]) == (member, model, variant)]
        b = max(sel, key=lambda r: (r["mcc"], -r["index"]))
        pick = next((r for r in sel if r.get("selected")), b)
        out.append({k: b[k] for k in ("member", "model", "variant", "feature_probability", "n_features", "d_hidden",
                                       "n_represented")}
                   | {"selected": {k: pick.get(k) for k in RECOVERY_KEYS}, "best": {k: b.get(k) for k in RECOVERY_KEYS}})
    return out


def _pair(r: dict, key: str) -> str:
    """'signed / |cos|' of a score with a mark where it beats its chance p95 (✓) or not (✗)."""
    mark = lambda k: "✓" if r["beats_chance"][k] else "✗"
    a, b = {"mcc": ("mcc", "mcc_abs"), "mmcs": ("mean_max_cos", "mean_max_cos_abs")}[key]
    return f"{r[a]:.3f} {mark(key)} / {r[b]:.3f} {mark(key + '_abs')}"


def _chance(r: dict, key: str) -> str:
    c = r["chance"]
    return f"{c[key]['mean']:.2f}, {c[key]['p95']:.2f} / {c[key + '_abs']['mean']:.2f}, {c[key + '_abs']['p95']:.2f}"


RECOVERY_FOOTNOTE = (
    "MCC: Hungarian one-to-one matching of the alive latents' decoder directions to the true columns W_j, averaged "
    "over all true features. *signed* uses max(cos, 0) (a latent along −W_j does not recover feature j: the "
    "toy's features are non-negative); SAELens' synthetic benchmarks use |cos|, which is never lower: both are "
    "shown, each with its own chance level. MMCS: mean over features of the best cosine, no one-to-one "
    "constraint. *chance*: {n} random unit dictionaries of the same width in the same dimension, scored the same "
    "way against the same W (mean, 95th percentile); ✓ = above the chance 95th percentile, ✗ = not. *auditor-"
    "selected* is the headline: per model the SAE the auditor's own rule picks without ground truth (the lowest "
    "L0 among those explaining >= {ev:.0%} of the variance). *ground-truth best* picks the highest MCC over the "
    "sweep: it uses the truth and is not available to an auditor.")


@suite_summary("sae_recovery")
def sae_recovery_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    rows = recovery_rows(members)
    table = recovery_table(rows)
    by_variant = {}
    for v in dict.fromkeys(r["variant"] for r in rows):
        sel = [b for b in table if b["variant"] == v]
        full = [b for b in sel if b["n_represented"] == b["n_features"]]
        pick = [b["selected"] for b in sel]
        by_variant[v] = {"selected_mean_mcc": float(np.mean([p["mcc"] for p in pick])),
                         "selected_min_mcc": min(p["mcc"] for p in pick),
                         "selected_beats_chance": int(sum(p["beats_chance"]["mcc"] for p in pick)),
                         "selected_beats_chance_abs": int(sum(p["beats_chance"]["mcc_abs"] for p in pick)),
                         "n_models": len(sel),
                         "best_mcc": max(b["best"]["mcc"] for b in sel),
                         "mean_best_mcc": float(np.mean([b["best"]["mcc"] for b in sel])),
                         "min_best_mcc_all_represented": min((b["best"]["mcc"] for b in full), default=None)}
    chance = {f"{b['member']} model {b['model']}, {w} latents": b[k]["chance"]
              for b in table for k in ("selected", "best") for w in [b[k]["dict_size"]]}
    min_ev = members[0].config.audit.min_explained_variance if members[0].config.audit else 0.9
    n_draws = 200
    lines = ["| member | model (p) | represented | variant | **auditor-selected** MCC signed / \\|cos\\| | MMCS signed "
             "/ \\|cos\\| | chance MCC (mean, p95) signed / \\|cos\\| | at (latents, sparsity) | explained variance | "
             "L0 (non-empty) | ground-truth best MCC (uses truth; not available to an auditor) | at |", "|" + "---|" * 12]
    for b in table:
        p, g = b["selected"], b["best"]
        lines.append(f"| {b['member']} | {b['model']} ({b['feature_probability']:g}) | {b['n_represented']}/"
                     f"{b['n_features']} | {b['variant']} | {_pair(p, 'mcc')} | {_pair(p, 'mmcs')} | "
                     f"{_chance(p, 'mcc')} | {p['dict_size']}, {p['sparsity']:g} | {p['explained_variance']:.3f} | "
                     f"{p['l0_nonempty']:.2f} | {_pair(g, 'mcc')} | {g['dict_size']}, {g['sparsity']:g} |")
    audits = {m.config.name: m.summary["audit"]["scoring"] for m in members if "audit" in m.summary}
    per_variant = "; ".join(
        f"{v}: auditor-selected mean {s['selected_mean_mcc']:.3f} (min {s['selected_min_mcc']:.3f}), above chance "
        f"in {s['selected_beats_chance']}/{s['n_models']} models (|cos|: {s['selected_beats_chance_abs']}/"
        f"{s['n_models']}); ground-truth best mean {s['mean_best_mcc']:.3f}" for v, s in by_variant.items())
    md = "\n".join(["# sae-recovery", "", "Per (model, variant): the SAE the auditor selects (headline) beside the "
                    "ground-truth best over dictionary sizes and sparsities, and random dictionaries of the same "
                    "width.", "", *lines, "", RECOVERY_FOOTNOTE.format(n=n_draws, ev=min_ev), "",
                    "Per variant: " + per_variant])
    runs.write_text(Path(run_dir) / "sae_recovery.md", md + "\n")
    summary = {"suite": suite["suite"], "members": suite["members"], "by_variant": by_variant, "table": table,
               "chance": chance, "audit": audits, "mcc": [r["mcc"] for r in rows], "instances": rows,
               "markdown": "sae_recovery.md"}
    report = "\n".join(f"{v}: auditor-selected MCC mean {s['selected_mean_mcc']:.3f}, above chance in "
                       f"{s['selected_beats_chance']}/{s['n_models']} models; ground-truth best {s['best_mcc']:.3f}"
                       for v, s in by_variant.items())
    return summary, report


SMOKE_OVERRIDES["sae-recovery"] = {"suite.members": ["sae-n5-m2"], "n_inst": 1, "data.feature_probability": [0.05],
                                   "sae.dict_sizes": [10], "sae.l1": [0.1], "sae.l0": [0.1], "sae.k": [1],
                                   "sae.batch_k": [0.5]}


# --- risk-prediction ------------------------------------------------------------------------------------
NARROW = RegimeConfig(name="narrow", data="narrow", loss_scope="target")
TASK = RegimeConfig(name="task", data="task", loss_scope="target")
FULL_ALL = RegimeConfig(name="full-all", data="full", loss_scope="all")
RISK_OPTIMIZERS = (OptimizerConfig("adam", "adam", lr=1e-3), OptimizerConfig("sgd", "sgd", lr=0.1))
RISK_PROBS = (0.02, 0.035, 0.05)   # x 4 cosines (or seeds): 12 pretrained models per (shape, geometry)
RISK_COS = (0.9, 0.6, 0.3, 0.0)     # planted cos(helpful, toxic); pinned during pretraining
RISK_FT_STEPS, RISK_CHECKPOINT = 2000, 100
RISK_MATCHED_GAINS = (1.5,)          # the earlier stopping point of the rel_gain label
RISK_THRESHOLD_PP = 0.25
DIFF_VARIANTS = ("batch_topk", "relu_l1")


def risk_member(n: int, m: int, geometry: str, diff: bool = True) -> Config:
    """One shape and geometry: 12 pretrained models (3 sparsities x 4 planted cosines, or x 4 seeds when
    learned), helpful and toxic at importance 2 (so both stay represented), each fine-tuned under narrow,
    task and full-all data, with Adam and SGD, axis-aligned and rotated: 144 fine-tunes in one sweep (SGD's
    rotated ones are copies, dropped from the AUROC: 108 distinct). The probe reads the harmful rate at
    target gain 1.5 too (``matched_gains``). The auditor uses TopK dictionaries (2 latents per feature,
    k = 1 or 2, its own choice)."""
    n_inst = len(RISK_PROBS) * len(RISK_COS)
    probs = [p for p in RISK_PROBS for _ in RISK_COS]
    if geometry == "free":
        features = FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="free")
    else:
        cos = [[[1.0, c], [c, 1.0]] for _ in RISK_PROBS for c in RISK_COS]
        features = FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="pinned", cosines=cos)
    return Config(
        name=f"risk-n{n}-m{m}-{geometry}", seed=0, n_inst=n_inst,
        data=DataConfig(n_features=n, feature_probability=probs, importance=[2.0, 2.0] + [1.0] * (n - 2)),
        model=ModelConfig(kind="relu_output", d_hidden=m),
        train=TrainConfig(steps=10_000, chunk_size=1000),
        features=features,
        finetune=FineTuneConfig(target="helpful", objective="amplify", gamma=2.0, steps=RISK_FT_STEPS,
                                regimes=(NARROW, TASK, FULL_ALL), optimizers=RISK_OPTIMIZERS, orientations=2,
                                tau=0.1, chunk_size=RISK_CHECKPOINT, log_every=500, save_trajectory=True,
                                matched_gains=RISK_MATCHED_GAINS),
        sae=SAEConfig(variants=tuple(dict.fromkeys((AUDIT_VARIANT, *(DIFF_VARIANTS if diff else ())))),
                      dict_sizes=(2 * n,), k=(1, 2), l1=(0.3,), batch_k=(0.5,), steps=3000),
        audit=AuditConfig(variant=AUDIT_VARIANT, threshold_pp=RISK_THRESHOLD_PP, diff=DIFF_VARIANTS if diff else ()),
        plots=("audit",),
        meta={"geometry": geometry, "planted_cos": list(RISK_COS) if geometry != "free" else None,
              "instance_order": f"pretrain instance = probability_index * {len(RISK_COS)} + cos_index (or seed)"},
    )


def filter_member() -> Config:
    """The geometric data filter with true, recovered and random choice at the same budget (50% of the
    non-empty samples), on task data (toxic never present) and full data (toxic present): helpful and
    toxic pinned 15° apart in 2-D among 5 features, 8 seeds, as analogy-15deg."""
    from .lab import analogy_base

    base = analogy_base("risk-filter")
    regs = []
    for data in ("task", "full"):
        regs += [RegimeConfig(name=f"{data}-undefended", data=data, loss_scope="target"),
                 RegimeConfig(name=f"{data}-filter-true", data=data, loss_scope="target", defence="filter_geometric",
                              strength=0.5),
                 RegimeConfig(name=f"{data}-filter-sae", data=data, loss_scope="target", defence="filter_geometric",
                              strength=0.5),
                 RegimeConfig(name=f"{data}-filter-random", data=data, loss_scope="target", defence="filter_random",
                              strength=0.5)]
    ft = FineTuneConfig(target="helpful", objective="amplify", gamma=2.0, steps=RISK_FT_STEPS, regimes=tuple(regs),
                        tau=0.1, chunk_size=500, save_trajectory=False)
    return Config(name="risk-filter", seed=1, n_inst=8, data=base.data, model=base.model, train=base.train,
                  features=base.features, finetune=ft,
                  sae=SAEConfig(variants=(AUDIT_VARIANT,), dict_sizes=(10,), k=(1, 2), steps=3000),
                  audit=AuditConfig(variant=AUDIT_VARIANT, threshold_pp=RISK_THRESHOLD_PP,
                                    filter_regimes=("task-filter-sae", "full-filter-sae")),
                  plots=("sae_filter",))


RISK_SHAPES = ((5, 2), (20, 5))


@preset("risk-prediction", "risk prediction measured: 576 fine-tunes (2 shapes x planted/learned geometry x 12 "
                           "models x 3 regimes x 2 optimisers x 2 orientations), scores before each (geometric, and "
                           "from its step-0 gradient) against its relative harmful-rate rise: AUROC per regime and "
                           "optimiser with CIs; crosscoder diffs; SAE-guided data filter")
def risk_prediction() -> Suite:
    """Four members of 144 fine-tunes each (5-in-2-D and 20-in-5-D, planted-and-pinned or learned geometry;
    12 pretrained models each), every member one compiled fine-tuning sweep (shapes cannot share one
    program), and ``risk-filter``, the data filter with recovered directions. The suite's summary.json has
    ``auroc``: score -> AUROC with CI, n and clusters, per label, regime and optimiser
    (:func:`toymodels.audit.risk.table`), and ``score_kind``: score -> "before" or "during". Crosscoders
    run on one member only (they cost about as much as the member itself). Runtime on 2 cores: 7 min 32 s
    and 8 min 52 s measured (other jobs sharing the cores); the before-scores take about 50 s of it."""
    # crosscoders (BatchTopK against L1) on the 96 fine-tunes of the planted 5-in-2-D member only: they cost
    # about as much as the member itself, and one member's fine-tunes are enough to compare the two
    members = tuple(risk_member(n, m, g, diff=(n, m, g) == (5, 2, "pinned")) for n, m in RISK_SHAPES
                    for g in ("pinned", "free"))
    return Suite(name="risk-prediction", members=members + (filter_member(),), plots=("risk_roc",),
                 summary="risk_prediction",
                 notes="A fine-tune raises harmful output when P(x'_toxic > 0.1 | x_toxic = 0) rises by more than "
                       "10% of its model's baseline (floor 1%); the old label (more than "
                       f"{RISK_THRESHOLD_PP:g} pp) is kept beside it. Before-scores take no fine-tuning step.",
                 meta={"threshold_pp": RISK_THRESHOLD_PP, "shapes": [list(s) for s in RISK_SHAPES]})


@suite_summary("risk_prediction")
def risk_prediction_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    # the risk sweep's members only: risk-filter's undefended fine-tunes are the filter's baselines
    rows = [r for m in members if "risk" in m.summary.get("audit", {}) and not m.config.audit.filter_regimes
            for r in m.summary["audit"]["risk"]["rows"] if r.get("defence", "none") == "none"]
    thr = members[0].config.audit.threshold_pp
    t = risk.table(rows)
    diffs = {m.config.name: {v: {k: d[k] for k in d if k != "instances"} for v, d in m.summary["audit"]["diff"].items()}
             for m in members if "diff" in m.summary.get("audit", {})}
    filt = {m.config.name: m.summary["audit"]["filter"] for m in members if "filter" in m.summary.get("audit", {})}
    cost = {m.config.name: m.summary["audit"]["risk"].get("predict") for m in members
            if "risk" in m.summary.get("audit", {}) and not m.config.audit.filter_regimes}
    claim = risk.seed_claim(t)
    diag = risk.diagnostics(rows)
    md = ["# risk-prediction", "", risk.markdown(t, thr), "", "## What it means", "", claim, "",
          risk.diagnostics_note(diag, RISK_FT_STEPS), "", risk.cost_note(cost)]
    runs.write_text(Path(run_dir) / "risk_table.md", "\n".join(md) + "\n")
    auroc = {s: {**{k: c[risk.PRIMARY]["all"][k] for k in ("auroc", "n", "n_clusters")},
                 "ci95": c[risk.PRIMARY]["all"]["ci95"], "score_kind": risk.score_kind(s), "by_label": c}
             for s, c in t["auroc"].items()}
    summary = {"suite": suite["suite"], "members": suite["members"], "threshold_pp": thr, "n": t["n"],
               "n_rose": t["n_rose"], "primary_label": risk.PRIMARY, "labels": risk.LABELS, "auroc": auroc,
               "score_kind": {s: risk.score_kind(s) for s in risk.SCORES}, "table": t, "seed_claim": claim,
               "predict_cost": cost, "diagnostics": diag, "diff": diffs, "filter": filt, "rows": rows, "markdown": "risk_table.md"}
    return summary, risk.report(t, claim)


SMOKE_OVERRIDES["risk-prediction"] = {"suite.members": ["risk-n5-m2-pinned"], "n_inst": 2,
                                      "data.feature_probability": [0.02, 0.05],
                                      "features.cosines": [[[1.0, 0.9], [0.9, 1.0]], [[1.0, 0.3], [0.3, 1.0]]],
                                      "finetune.chunk_size": 10, "sae.variants": ["topk"], "audit.diff": []}
