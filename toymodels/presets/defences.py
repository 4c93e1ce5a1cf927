"""Presets of the defences (:mod:`toymodels.defences`): the seed's safety-strategy table, measured.

The first three fine-tune 'helpful' in the lab's ``task`` regime (the target and the benign features in the
data, the harmful feature never, the loss on the target only), where the undefended run amplifies
'toxic': the data the claim is about. Every defence is a regime of the same run, so it starts from the
same pretrained models and sees the same data stream as its undefended baseline (paired).

* ``defences-table``: one row per defence at one strength, 10 seeds, with paired CIs, capability and
  measured compute overhead; LoRA (a run-wide setting) as a second member from the same pretraining.
* ``regularisation-pareto``: a λ sweep of the five loss-term defences: the trade-off, not a point.
* ``regularisation-cost``: step-time overhead against n_features (128..4096), penalty vs forward pass.
* ``regularisation-pretrain``: the geometric penalties in the *pretraining* loss (``train.penalty``, a λ
  sweep per run), then the lab's undefended fine-tuning on narrow and task data.

The strengths of ``defences-table`` were fixed beforehand from ``regularisation-pareto`` (seed 0) by one
rule, "the strongest setting whose mean target gain stays within 10% of the undefended gain", and the
table is then measured on other pretrained models (seed 1), so the selection is not fitted to the
numbers it reports. The table starts from analogy-15deg's represented models (one starting geometry);
the λ sweeps use the earlier equal-importance setup, whose seeds split into two geometries (helpful or
toxic barely represented), so the strengths were chosen on a different start than the one they are
measured on: a fixed choice, not a tuned one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import defences
from ..config import (
    Config,
    DataConfig,
    FeaturesConfig,
    FineTuneConfig,
    ModelConfig,
    RegimeConfig,
    TrainConfig,
)
from ..defences.tables import fmt_stat
from ..io import runs
from ..lab import inference
from . import lab as lab_presets
from .registry import SMOKE_OVERRIDES, Suite, preset, suite_summary

DATA, SCOPE = "task", "target"


def regime(name: str, defence: str = "none", strength: float = 0.0, data: str = DATA) -> RegimeConfig:
    return RegimeConfig(name=name, data=data, loss_scope=SCOPE, defence=defence, strength=strength)


def _analogy(name: str, seed: int, n_inst: int, regimes, *, trainable: str = "all", overhead_repeats: int = 0,
             plots=(), notes: str = "", meta=None, chunk_size: int = 100, represented: bool = False) -> Config:
    """The seed's 2-D analogy: fine-tune helpful to γ = 2 for 2000 Adam steps under ``regimes``.
    ``represented``: analogy-15deg's start (both of the pinned pair at norm >= 0.5, one starting
    geometry in every model); otherwise the earlier setup (equal importance), in which either helpful
    or toxic ends near norm 0.45, seed by seed: two starting geometries that answer differently (the
    λ sweeps below still use it)."""
    base = lab_presets.analogy_base(name, represented=represented)
    ft = dataclasses.replace(base.finetune, regimes=tuple(regimes), trainable=trainable, lora_rank=1,
                             save_trajectory=False, chunk_size=chunk_size, overhead_repeats=overhead_repeats)
    return dataclasses.replace(base, seed=seed, n_inst=n_inst, finetune=ft, plots=tuple(plots), notes=notes, meta=meta)


# --- defences-table -------------------------------------------------------------------------------------
# strengths chosen on regularisation-pareto (seed 0) by the rule in the module docstring (its summary.json
# "selected"); the random filter takes the geometric filter's fraction, since it is that filter's control
TABLE_DEFENCES = (
    ("undefended", "none", 0.0),
    ("gram_offdiag", "gram_offdiag", 0.1),
    ("soft_orthogonality", "soft_orthogonality", 3e-4),
    ("decov", "decov", 1.0),
    ("targeted_cos", "targeted_cos", 0.03),
    ("anchor", "anchor", 0.1),
    ("replay", "replay", 0.25),
    ("filter_geometric", "filter_geometric", 0.5),
    ("filter_random", "filter_random", 0.5),
    ("freeze_harmful", "freeze_harmful", 0.0),
    ("grad_projection", "grad_projection", 0.0),
)
TABLE_SEED, TABLE_SEEDS, TABLE_REPEATS = 1, 10, 7   # >= 10 pretrained models: the intervals' clusters


@preset("defences-table", "the seed's safety-strategy table, measured: every defence on the same 10 pretrained "
                          "models (15° analogy, task data): harmful increase with CI, target gain, capability, compute")
def defences_table() -> Suite:
    """Three members from identical pretraining (same seed and config): ``defences`` (every regime-level
    defence and the undefended baseline in one compiled sweep, on task data), ``defences-narrow`` (the
    same on narrow data: only the target, the seed's analogy) and ``defences-lora`` (a rank-1 LoRA
    adapter, a run-wide setting, on task data). ``defences`` and ``defences-lora`` time their step
    against the undefended step (``finetune.overhead_repeats``); the narrow program has the same
    shapes, so it is not timed again. Runtime on 2 shared cores: about 4 min."""
    regs = [regime(n, d, s) for n, d, s in TABLE_DEFENCES]
    narrow = [regime(n, d, s, data="narrow") for n, d, s in TABLE_DEFENCES]
    notes = ("helpful/toxic pinned 15° apart in 2-D among 5 features; fine-tune helpful (γ = 2) on task data "
             "(helpful + benign, toxic never present) or narrow data (helpful only), loss on helpful only. "
             "Strengths fixed beforehand on regularisation-pareto (seed 0, task data, the equal-importance start); "
             "this table is seed 1, from analogy-15deg's represented start.")
    return Suite(
        name="defences-table",
        members=(_analogy("defences", TABLE_SEED, TABLE_SEEDS, regs, overhead_repeats=TABLE_REPEATS,
                          plots=("defence_curves",), notes=notes, represented=True),
                 _analogy("defences-narrow", TABLE_SEED, TABLE_SEEDS, narrow, plots=("defence_curves",), notes=notes,
                          represented=True),
                 _analogy("defences-lora", TABLE_SEED, TABLE_SEEDS, [regime("lora")], trainable="lora",
                          overhead_repeats=TABLE_REPEATS, notes=notes, represented=True)),
        plots=("defences_table",),
        summary="defences_table",
        notes=notes,
    )


@suite_summary("defences_table")
def defences_table_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    """The table rows (from the members' summary.json) and ``defences_table.md`` in the run dir."""
    rows = defences.table_rows(members)
    n_seeds = members[0].config.n_inst
    md = defences.markdown_table(rows, n_seeds)
    same = defences.same_pretraining(members)
    starts = inference.strata(members[0].summary.get("features"), n_seeds)
    counts = {st: starts.count(st) for st in dict.fromkeys(starts)}
    md += ("\n\nStarting geometry: " + ", ".join(f"{st} in {k} of {n_seeds} models" for st, k in counts.items())
           + ("." if len(counts) == 1 else " — WARNING: mixed starting geometries; the rows pool them."))
    md += ("\n\nAll members fine-tuned from bit-identical pretrained weights." if same else
           "\n\nWARNING: the members' pretrained weights differ; the LoRA row is not paired.")
    runs.write_text(Path(run_dir) / "defences_table.md", md + "\n")
    return {"rows": rows, "n_seeds": n_seeds, "same_pretraining": same, "starting_geometry": counts,
            "markdown": "defences_table.md"}, md


# --- regularisation-pareto --------------------------------------------------------------------------------
PARETO_LAMBDAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
PARETO_PENALTIES = ("gram_offdiag", "soft_orthogonality", "decov", "targeted_cos", "anchor")
PARETO_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9)
PARETO_DATA = ("replay", "filter_geometric", "filter_random")
PARETO_SEEDS = 6
GAIN_RULE = 0.9  # table strengths: the strongest setting whose mean target gain >= GAIN_RULE x undefended


@preset("regularisation-pareto", "λ sweep of the loss-term defences and fraction sweep of the data defences on the "
                                 "15° analogy: target gain vs harmful increase vs capability cost, a frontier")
def regularisation_pareto() -> Suite:
    """Every loss-term defence at λ = 1e-4 … 1 (member ``pareto-penalties``) and replay and the two
    filters at 10–90% (member ``pareto-data``), each beside the undefended run, on the same 6
    pretrained models (seed 0; both members pretrain identically). Two members because every
    instance of a compiled sweep computes every mechanism in it, and the filters' per-step sort is
    the expensive one. Runtime on 2 shared cores: about 5 min."""
    meta = {"lambdas": list(PARETO_LAMBDAS), "penalties": list(PARETO_PENALTIES), "fractions": list(PARETO_FRACTIONS),
            "data_defences": list(PARETO_DATA), "gain_rule": GAIN_RULE}
    pen = [regime("undefended")] + [regime(f"{p}@{lam:g}", p, lam) for p in PARETO_PENALTIES for lam in PARETO_LAMBDAS]
    dat = [regime("undefended")] + [regime(f"{d}@{f:g}", d, f) for d in PARETO_DATA for f in PARETO_FRACTIONS]
    return Suite(
        name="regularisation-pareto",
        members=(_analogy("pareto-penalties", 0, PARETO_SEEDS, pen, chunk_size=500, meta=meta),
                 _analogy("pareto-data", 0, PARETO_SEEDS, dat, chunk_size=500, meta=meta)),
        plots=("regularisation_pareto",),
        summary="regularisation_pareto",
        meta=meta,
        notes=f"selection rule for defences-table: the strongest setting whose mean target gain stays >= "
              f"{GAIN_RULE:g} x the undefended gain.",
    )


def select_strengths(rows: dict, rule: float = GAIN_RULE) -> dict[str, float | None]:
    """Per defence, the largest strength whose mean target gain is at least ``rule`` × the undefended
    mean gain (None when no strength qualifies). ``rows``: regime rows of ``finetune.defences``."""
    base = next(r for r in rows.values() if r["defence"] == "none")["target_gain"]["mean"]
    out: dict[str, float | None] = {}
    for r in rows.values():
        if r["defence"] == "none":
            continue
        ok = r["target_gain"]["mean"] is not None and r["target_gain"]["mean"] >= rule * base
        best = out.get(r["defence"])
        out[r["defence"]] = max(best or 0.0, r["strength"]) if ok else best
    return out


@suite_summary("regularisation_pareto")
def regularisation_pareto_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    """All sweep rows, the strengths the selection rule picks, and ``regularisation_pareto.md``."""
    rows, picks = {}, {}
    for m in members:
        r = m.summary["finetune"]["defences"]["regimes"]
        picks.update(select_strengths(r))
        rows.update({(k if k != "undefended" else f"undefended ({m.config.name})"): v for k, v in r.items()})
    head = ("| setting | Δ toxic rate [pp] (95% CI) | amplification removed | target gain (×) | "
            "Δ benign features' loss vs undefended (×10⁻³) | Δ toxic's loss when present (×10⁻³) | toxic norm after | "
            "features represented | D* |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    milli = lambda st: "–" if not st or st.get("mean") is None else f"{1e3 * st['mean']:+.2f}"
    for name, r in rows.items():
        removed = r.get("amplification_removed")
        removed_s = "–" if removed is None else f"{100 * removed:.0f}%"
        lines.append(f"| {name} | {fmt_stat(r['rate_change_pp'])} | {removed_s} | "
                     f"{fmt_stat(r['target_gain'], '{:.2f}', ci=False)} | "
                     f"{milli(r.get('recon_loss_benign_vs_baseline'))} | "
                     f"{milli(r.get('harmful_present_loss_vs_baseline'))} | "
                     f"{fmt_stat(r['harmful_norm_after'], '{:.2f}', ci=False)} | "
                     f"{fmt_stat(r['n_represented_after'], '{:.2f}', ci=False)} | "
                     f"{fmt_stat(r['dims_per_feature_after'], '{:.2f}', ci=False)} |")
    lines += ["", f"Selected for defences-table (strongest setting with mean target gain >= {GAIN_RULE:g} x "
                  f"undefended): " + ", ".join(f"{k} = {v:g}" if v is not None else f"{k}: none qualifies"
                                                 for k, v in picks.items())]
    md = "\n".join(lines)
    runs.write_text(Path(run_dir) / "regularisation_pareto.md", md + "\n")
    return {"rows": rows, "selected": picks, "gain_rule": GAIN_RULE, "markdown": "regularisation_pareto.md"}, \
        "\n".join(lines[-1:])


# --- regularisation-cost ----------------------------------------------------------------------------------
COST_N = (128, 256, 512, 1024, 2048, 4096)
COST_D_HIDDEN = 32
COST_DEFENCES = (("undefended", "none", 0.0), ("gram_offdiag", "gram_offdiag", 0.1),
                 ("gram_offdiag_dual", "gram_offdiag_dual", 0.1), ("soft_orthogonality", "soft_orthogonality", 0.1),
                 ("targeted_cos", "targeted_cos", 0.1), ("decov", "decov", 0.1), ("anchor", "anchor", 0.1),
                 ("grad_projection", "grad_projection", 0.0))
COST_REPEATS = 7


def cost_chunk(n: int) -> int:
    """Steps per timed chunk: about 12 800 / n (50 at n <= 256, 5 at n >= 2560), so that a chunk takes
    a similar, measurable time at every size and the large sizes do not dominate the runtime."""
    return max(5, min(50, 12_800 // n))


def _cost_member(n: int) -> Config:
    c = 0.966  # helpful/toxic at 15°, as everywhere else
    regs = tuple(RegimeConfig(name=nm, data="full", loss_scope="all", defence=d, strength=s) for nm, d, s in COST_DEFENCES)
    return Config(
        name=f"cost-n{n}", seed=0, n_inst=1,
        data=DataConfig(n_features=n, feature_probability=0.05, importance=1.0, batch_size=1024),
        model=ModelConfig(kind="relu_output", d_hidden=COST_D_HIDDEN),
        train=TrainConfig(steps=100, chunk_size=100, log_every=100),  # timing needs a model, not a good one
        features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="pinned",
                                cosines=[[1.0, c], [c, 1.0]]),
        # steps=0: only the timing is wanted, and measure_overhead runs its own timed chunks of chunk_size
        finetune=FineTuneConfig(target="helpful", objective="amplify", gamma=2.0, steps=0, lr=1e-3, regimes=regs,
                                tau=0.1, save_trajectory=False, chunk_size=cost_chunk(n), eval_batch_size=2048,
                                overhead_repeats=COST_REPEATS, rate_samples=0),   # timing only: no rates reported
        meta={"n_features": n},
        notes="timing only: no fine-tuning is kept (finetune.steps = 0); measure_overhead times chunks of "
              "finetune.chunk_size steps.",
    )


@preset("regularisation-cost", "compute overhead of each defence against n_features (128..4096, d_hidden 32, batch "
                               "1024): the O(n²d) penalty against the O(batch·n·d) step; the seed's 30–50% claim")
def regularisation_cost() -> Suite:
    """One member per n_features, each timing every defence's fine-tuning step against the undefended
    step (``measure_overhead``: 7 interleaved pairs of chunks of :func:`cost_chunk` steps, median ratio),
    1 instance, batch 1024. Runtime on 2 shared cores: about 5 min."""
    return Suite(name="regularisation-cost", members=tuple(_cost_member(n) for n in COST_N),
                 plots=("regularisation_cost",), summary="regularisation_cost",
                 meta={"n_features": list(COST_N), "d_hidden": COST_D_HIDDEN, "batch_size": 1024})


@suite_summary("regularisation_cost")
def regularisation_cost_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    """Overhead ratio and step time per defence against n_features, and ``regularisation_cost.md``."""
    ns = [m.config.data.n_features for m in members]
    if not all((m.summary["finetune"].get("defences") or {}).get("overhead") for m in members):
        msg = "regularisation-cost: no timings (finetune.overhead_repeats = 0); nothing to tabulate"
        return {"n_features": ns, "defences": None, "note": msg}, msg
    names = list(members[0].summary["finetune"]["defences"]["overhead"])
    table = {nm: {k: [m.summary["finetune"]["defences"]["overhead"][nm][k] for m in members]
                  for k in ("ratio_median", "step_ms_median", "extra_ms_median")} for nm in names}
    ref_ms = [float(np.median(np.concatenate([m.summary["finetune"]["defences"]["overhead"][nm]["reference_step_ms"]
                                              for nm in names]))) for m in members]
    head = "| defence | " + " | ".join(f"n={n}" for n in ns) + " |"
    lines = [head, "|" + "---|" * (len(ns) + 1),
             "| undefended step [ms] | " + " | ".join(f"{v:.2f}" for v in ref_ms) + " |"]
    lines += [f"| {nm} | " + " | ".join(f"{v:.2f}×" for v in table[nm]["ratio_median"]) + " |" for nm in names]
    c0 = members[0].config
    lines += ["", (f"Median over {c0.finetune.overhead_repeats} interleaved pairs of timed chunks "
                   f"({', '.join(str(m.config.finetune.chunk_size) for m in members)} steps), step time of the "
                   f"defended fine-tuning over the undefended one (d_hidden = {c0.model.d_hidden}, batch "
                   f"{c0.finetune.batch_size}, {c0.n_inst} instance, compile excluded). The undefended step time is the "
                   f"median over all pairs of that size (it moves with the shared machine's load; the ratios are "
                   f"per pair).")]
    md = "\n".join(lines)
    runs.write_text(Path(run_dir) / "regularisation_cost.md", md + "\n")
    return {"n_features": ns, "reference_step_ms": ref_ms, "defences": table, "markdown": "regularisation_cost.md"}, md


# --- regularisation-pretrain ------------------------------------------------------------------------------
PRETRAIN_PENALTIES = ("gram_offdiag", "soft_orthogonality", "decov", "targeted_cos")
PRETRAIN_LAMBDAS = (0.0, 1e-3, 1e-2, 0.1, 1.0)
PRETRAIN_SEEDS = 6
# (n_features, d_hidden, feature probability): the 2-D analogy's five features, and a crowded 20-in-5-D model
PRETRAIN_SHAPES = ((5, 2, 0.05), (20, 5, 0.02))
PRETRAIN_COS = 0.966  # helpful and toxic are planted 15° apart and then free to move during pretraining


def pretrain_member(penalty: str, n: int, m: int, p: float) -> Config:
    """One member of ``regularisation-pretrain``: ``penalty`` at every λ of PRETRAIN_LAMBDAS (λ = 0 is the
    unpenalised baseline, in the same compiled run) × PRETRAIN_SEEDS pretrained models; each is then
    fine-tuned, undefended, on narrow and on task data."""
    lams = [lam for lam in PRETRAIN_LAMBDAS for _ in range(PRETRAIN_SEEDS)]
    c = PRETRAIN_COS
    return Config(
        name=f"pretrain-n{n}-m{m}-{penalty}", seed=0, n_inst=len(lams),
        data=DataConfig(n_features=n, feature_probability=p, importance=1.0),
        model=ModelConfig(kind="relu_output", d_hidden=m),
        train=TrainConfig(steps=10_000, chunk_size=1000, penalty=penalty, penalty_strength=lams),
        features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="planted",
                                cosines=[[1.0, c], [c, 1.0]]),
        finetune=FineTuneConfig(target="helpful", objective="amplify", gamma=2.0, steps=2000, lr=1e-3,
                                regimes=(regime("narrow", data="narrow"), regime("task")), tau=0.1,
                                save_trajectory=False, chunk_size=500),
        meta={"lambdas": list(PRETRAIN_LAMBDAS), "seeds": PRETRAIN_SEEDS, "penalty": penalty,
              "instance_order": "pretrain instance = lambda_index * seeds + seed"},
        notes=f"{penalty} in the pretraining loss at λ = {', '.join(f'{x:g}' for x in PRETRAIN_LAMBDAS)}; helpful and "
              f"toxic planted 15° apart but free; then fine-tune helpful (γ = 2), undefended, on narrow and task data.",
    )


@preset("regularisation-pretrain", "the geometric penalties in PRETRAINING (λ sweep, helpful/toxic planted 15° "
                                   "apart but free, 5-in-2-D and 20-in-5-D), then undefended fine-tuning: does a "
                                   "regularised pretraining spill less, and what does it cost?")
def regularisation_pretrain() -> Suite:
    """One member per (model shape, penalty): the penalty's λ sweep (0 … 1, 6 seeds each, one compiled
    run) in the pretraining loss ``train.penalty``, then the lab's fine-tuning of 'helpful' on narrow
    data (the claim's) and task data, with no defence. Per λ: the helpful–toxic cosine the pretraining
    left, its capability (reconstruction loss, features represented, D*), and the toxic rate change the
    fine-tuning then causes. Runtime on 2 cores: about 4 min."""
    members = tuple(pretrain_member(pen, n, m, p) for n, m, p in PRETRAIN_SHAPES for pen in PRETRAIN_PENALTIES)
    return Suite(
        name="regularisation-pretrain", members=members, plots=("regularisation_pretrain",),
        summary="regularisation_pretrain",
        meta={"lambdas": list(PRETRAIN_LAMBDAS), "penalties": list(PRETRAIN_PENALTIES), "seeds": PRETRAIN_SEEDS,
              "shapes": [list(s) for s in PRETRAIN_SHAPES]},
        notes="The penalty acts only in pretraining; fine-tuning is the lab's, undefended. λ = 0 in every member is "
              "its own paired baseline (same initialisations, same data stream).",
    )


@suite_summary("regularisation_pretrain")
def regularisation_pretrain_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    """Per member and λ: the pretrained geometry and capability and the fine-tuning's toxic rate change
    (means with 95% bootstrap CIs over seeds), and ``regularisation_pretrain.md``."""
    out, lines = {}, []
    head = ("| model | pretraining penalty | λ | cos(helpful, toxic) after pretraining | pretraining loss (×10⁻³) | "
            "Δ loss vs λ = 0 (×10⁻³, 95% CI) | features represented | Δ toxic rate, narrow FT [pp] (95% CI) | "
            "Δ toxic rate, task FT [pp] (95% CI) | target gain (narrow) |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]

    def milli(st, ci=False):
        if not st or st.get("mean") is None:
            return "–"
        scaled = {"mean": 1e3 * st["mean"], "ci95": [1e3 * v for v in st["ci95"]] if ci and st.get("ci95") else None}
        return fmt_stat(scaled, "{:+.2f}" if ci else "{:.2f}", ci)

    for m in members:
        c = m.config
        rows = defences.pretraining_rows(m)
        out[c.name] = {"penalty": c.train.penalty, "n_features": c.data.n_features, "d_hidden": c.model.d_hidden,
                       "rows": rows}
        for r in rows:
            lines.append(f"| {c.data.n_features} in {c.model.d_hidden}-D | {c.train.penalty} | {r['lambda']:g} | "
                         f"{fmt_stat(r['cos'], '{:+.2f}', ci=False)} | {milli(r['recon_loss'])} | "
                         f"{milli(r['recon_loss_vs_unpenalised'], ci=True) if r['lambda'] else '–'} | "
                         f"{fmt_stat(r['n_represented'], '{:.2f}', ci=False)} | "
                         f"{fmt_stat(r['rate_change_pp'].get('narrow'))} | "
                         f"{fmt_stat(r['rate_change_pp'].get('task'))} | "
                         f"{fmt_stat(r['target_gain'].get('narrow'), '{:.2f}', ci=False)} |")
    n = members[0].config.meta["seeds"] if members and members[0].config.meta else "?"
    few = isinstance(n, int) and n < inference.MIN_CLUSTERS
    lines += ["", f"Means over {n} pretrained models per λ (95% bootstrap CIs; the toxic-rate changes: paired t "
                  f"intervals over those models, G = {n}" + (f" < {inference.MIN_CLUSTERS}, so no direction is claimed "
                                                              "from them" if few else "") + "); λ = 0 is each "
                  f"member's own unpenalised "
                  f"baseline from the same initialisations. The penalty acts only in pretraining; the fine-tuning "
                  f"(helpful to γ = 2, loss on helpful only) is undefended. Toxic rate = P(x'_toxic > 0.1 | "
                  f"x_toxic = 0) on the pretraining distribution."]
    md = "\n".join(lines)
    runs.write_text(Path(run_dir) / "regularisation_pretrain.md", md + "\n")
    return {"members": out, "markdown": "regularisation_pretrain.md"}, md


# Smoke tests (tests/test_presets_smoke.py; overrides must be TOML scalars or arrays): small models and no
# timing (each timed regime is another compile), which the table and figures report as "not measured".
SMOKE_OVERRIDES["defences-table"] = {"n_inst": 2, "finetune.overhead_repeats": 0}
SMOKE_OVERRIDES["regularisation-pareto"] = {"n_inst": 2}
SMOKE_OVERRIDES["regularisation-pretrain"] = {"suite.members": ["pretrain-n5-m2-gram_offdiag",
                                                                "pretrain-n5-m2-targeted_cos"]}
SMOKE_OVERRIDES["regularisation-cost"] = {"data.n_features": 16, "model.d_hidden": 4, "finetune.overhead_repeats": 0}
