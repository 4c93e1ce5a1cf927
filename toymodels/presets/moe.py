"""Mixture-of-experts presets (:mod:`toymodels.core.moe`; Chaudhari, Nuer & Thorstenson 2025).

``moe-superposition`` reproduces their finding that the ratio of active to total experts (k / E, "network
sparsity"), not feature sparsity alone, governs how much each expert superposes, and that it changes
continuously: members (E, k) x instances over feature probability, superposition per expert read from the
saved weights. ``moe-routing`` plants helpful and toxic 15° apart in expert 0 (``analogy-15deg``'s pair)
and routes them to the same expert or to different ones (``model.route_pair``), then fine-tunes helpful:
does routing the pair apart cut the spill-over onto toxic, and what does it cost in pretraining loss?
Both summaries read saved results only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import stats
from ..config import Config, DataConfig, ModelConfig, TrainConfig
from ..core import moe
from ..defences.tables import fmt_stat, vs_baseline, with_g
from ..io import runs
from ..lab.inference import claim, represented
from .lab import FULL_ALL, NARROW, analogy_base
from .registry import SMOKE_OVERRIDES, Suite, preset, suite_summary

# --- moe-superposition ---------------------------------------------------------------------------------------
SUP_N, SUP_D = 16, 4                                  # 16 features, 4 hidden dimensions per expert
# (E, k): k/E = 1 .. 1/8; E = 2, k = 1 and E = 4, k = 2 share k/E = 1/2 at different E
SUP_EXPERTS = ((1, 1), (4, 4), (2, 1), (4, 2), (4, 1), (8, 1))
SUP_P = tuple(float(v) for v in np.geomspace(1.0, 0.01, 7))             # feature probability 1 - S
SUP_SEEDS = 2
SUP_STEPS = 3000                                                        # the authors' grid: 3000 steps
SPARSE_P = 0.1                                                          # "sparse": p <= 0.1, for the rank test


def superposition_member(E: int, k: int) -> Config:
    """One (E, k) point: SUP_SEEDS instances per feature probability in SUP_P (instance = p_index * seeds
    + seed), each its own init. The authors' grid: n = 32, d = 8, batch 512, 3000 steps, AdamW 1e-3."""
    per_inst = [p for p in SUP_P for _ in range(SUP_SEEDS)]
    return Config(
        name=f"moe-e{E}-k{k}",
        seed=0,
        n_inst=len(per_inst),
        data=DataConfig(n_features=SUP_N, feature_probability=per_inst, importance=1.0),
        model=ModelConfig(kind="moe", d_hidden=SUP_D, n_experts=E, k_active=k),
        train=TrainConfig(steps=SUP_STEPS, chunk_size=1000),
        plots=(),
        meta={"k_over_E": k / E, "instance_order": "instance = p_index * seeds + seed"},
    )


@preset("moe-superposition", "mixture-of-experts TMS (Chaudhari et al. 2025): superposition per expert against "
                             "k/E (active/total experts) x feature sparsity; phase diagram")
def moe_superposition() -> Suite:
    """Six (E, k) members, k/E from 1 (E = 1 is the dense TMS) to 1/8, 16 features, 4 dimensions per
    expert, 7 feature probabilities from 1 to 0.01, 2 seeds, 3000 steps; the gate is learned (with k = 1 it gets no
    gradient and routing stays random, as in the authors' code without the load-balancing loss)."""
    return Suite(
        name="moe-superposition",
        members=tuple(superposition_member(E, k) for E, k in SUP_EXPERTS),
        plots=("moe_phase",),
        summary="moe_superposition",
        notes="Per expert, features per dimension ‖W_e‖_F²/d and represented features (norm > 0.5) per "
              "dimension, weighted by the share of inputs the expert receives; against k/E and 1 − S.",
        meta={"n_features": SUP_N, "d_hidden": SUP_D, "experts": [list(e) for e in SUP_EXPERTS],
              "feature_probability": list(SUP_P), "seeds": SUP_SEEDS},
    )


SMOKE_OVERRIDES["moe-superposition"] = {"suite.members": ["moe-e1-k1", "moe-e4-k1"], "n_inst": 2,
                                        "data.feature_probability": [0.1, 0.01]}


def superposition_rows(run) -> list[dict]:
    """One row per instance of a member: E, k, k/E, p, the load-weighted features and represented
    features per dimension, their per-expert values and the loads (inputs from the instance's own p)."""
    cfg, w = run.config, run.weights
    sup = moe.expert_superposition(w)
    p = cfg.feature_probability()
    load = moe.expert_load(cfg.model, w, p, seed=cfg.seed)
    rows = []
    for i in range(cfg.n_inst):
        rows.append({"member": cfg.name, "instance": i, "n_experts": cfg.model.n_experts, "k_active": cfg.model.k_active,
                     "k_over_E": cfg.model.k_active / cfg.model.n_experts, "feature_probability": float(p[i, 0]),
                     "eval_loss": run.summary["instances"][i].get("eval_loss"),
                     "features_per_dim": float(load[i] @ sup["features_per_dim"][i]),
                     "represented_per_dim": float(load[i] @ sup["represented_per_dim"][i]),
                     "features_per_dim_by_expert": sup["features_per_dim"][i].tolist(),
                     "load_by_expert": load[i].tolist()})
    return rows


def superposition_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    """Rows, the (k/E, p) grid of seed means, and per k/E the largest jump of features per dimension
    between neighbouring sparsities (a discontinuous phase change would show as one large jump)."""
    rows = [r for m in members for r in superposition_rows(m)]
    grid = []
    for key in dict.fromkeys((r["n_experts"], r["k_active"]) for r in rows):
        sel = [r for r in rows if (r["n_experts"], r["k_active"]) == key]
        for p in sorted({r["feature_probability"] for r in sel}, reverse=True):
            c = [r for r in sel if r["feature_probability"] == p]
            grid.append({"n_experts": key[0], "k_active": key[1], "k_over_E": c[0]["k_over_E"], "feature_probability": p,
                         "n_seeds": len(c), "features_per_dim": float(np.mean([r["features_per_dim"] for r in c])),
                         "represented_per_dim": float(np.mean([r["represented_per_dim"] for r in c])),
                         "eval_loss": float(np.mean([r["eval_loss"] for r in c]))})
    # does k/E order superposition? Spearman over all rows at the sparse end (p <= 0.1)
    sparse = [r for r in rows if r["feature_probability"] <= SPARSE_P * (1 + 1e-6)]   # p is stored as float32
    corr = stats.correlation([r["k_over_E"] for r in sparse], [r["features_per_dim"] for r in sparse]) if sparse else None
    summary = {"suite": suite["suite"], "members": suite["members"], "rows": rows, "grid": grid,
               "sparse_k_over_E_vs_features_per_dim": corr}
    return summary, superposition_report(summary)


def superposition_report(summary: dict) -> str:
    grid = summary["grid"]
    ps = sorted({g["feature_probability"] for g in grid}, reverse=True)
    keys = list(dict.fromkeys((g["n_experts"], g["k_active"]) for g in grid))
    lines = [f"{summary['suite']}: load-weighted features per dimension ‖W_e‖²/d (mean over seeds)",
             f"{'E':>3} {'k':>3} {'k/E':>6} | " + " ".join(f"{p:>6.3g}" for p in ps) + "   <- feature probability"]
    for E, k in keys:
        vals = {g["feature_probability"]: g["features_per_dim"] for g in grid if (g["n_experts"], g["k_active"]) == (E, k)}
        lines.append(f"{E:>3} {k:>3} {k / E:>6.3f} | " + " ".join(f"{vals.get(p, np.nan):>6.2f}" for p in ps))
    c = summary.get("sparse_k_over_E_vs_features_per_dim")
    if c:
        lo, hi = c["spearman_ci"]
        lines.append(f"p <= 0.1: Spearman(k/E, features per dim) = {c['spearman']:+.2f} [{lo:+.2f}, {hi:+.2f}] "
                     f"over {c['n']} models (bootstrap over models)")
    return "\n".join(lines)


suite_summary("moe_superposition", superposition_summary)


# --- moe-routing: routing as a defence ------------------------------------------------------------------------
ROUTING_EXPERTS, ROUTING_K = 2, 1      # two experts of 2 dimensions, one active: the pair's expert is exact
ROUTING_MODELS = 12   # >= 10 models per cell once a model whose pair ended barely represented is left out


def routing_member(route: str) -> Config:
    """analogy-15deg with the model a 2-expert, top-1 mixture: helpful and toxic pinned 15° apart in
    expert 0, routed by ``route`` (same: both to expert 0; different: toxic to expert 1); helpful
    fine-tuned to γ = 2 under narrow and full-all. Seed, init draws and data streams are the same in
    both members, so instance i of one is paired with instance i of the other."""
    base = analogy_base(f"moe-routing-{route}")
    return dataclasses.replace(
        base, n_inst=ROUTING_MODELS,
        model=ModelConfig(kind="moe", d_hidden=2, n_experts=ROUTING_EXPERTS, k_active=ROUTING_K, route_pair=route),
        finetune=dataclasses.replace(base.finetune, regimes=(NARROW, FULL_ALL), save_trajectory=False, chunk_size=500),
        plots=("loss",), meta={"route_pair": route})


@preset("moe-routing", "routing as a defence: the 15° helpful/toxic pair in a 2-expert top-1 MoE, routed to the same "
                       "vs different experts; fine-tune helpful; toxic's rate change, paired by seed, and the cost")
def moe_routing() -> Suite:
    return Suite(
        name="moe-routing",
        members=(routing_member("same"), routing_member("different")),
        plots=("moe_routing",),
        summary="moe_routing",
        notes="Instance i of both members shares its seed, init and data stream: the routing's effect on toxic's "
              "rate change and its capacity cost (pretraining loss) are paired differences over the models (those whose pair "
              "is represented in both members, for the rates).",
        meta={"n_experts": ROUTING_EXPERTS, "k_active": ROUTING_K},
    )


SMOKE_OVERRIDES["moe-routing"] = {"n_inst": 2, "finetune.rate_samples": 20_000}


def _by_model(ft: dict, regime: str, harm: str, key: str = "change_pp") -> dict[int, float]:
    """pretrained model -> toxic's rate ``key`` under ``regime`` (axis-aligned): ``change_pp`` [pp], or
    ``before`` / ``after`` (fractions)."""
    return {e["pretrain_instance"]: e["harmful"][harm]["rate"][key] for e in ft["instances"]
            if e["regime"] == regime and e.get("orientation", 0) == 0}


def pair_routes(run) -> dict:
    """Where a unit helpful-only and a unit toxic-only input go, per pretrained model (expert index), and
    the pair's norms in expert 0 and expert 1 of the pretrained models."""
    cfg, w = run.config, run.weights
    n = cfg.data.n_features
    x = np.broadcast_to(np.eye(n, dtype=np.float32)[:2][None], (cfg.n_inst, 2, n))
    r = moe.routing(cfg.model, w, np.ascontiguousarray(x))                      # (n_inst, 2, E)
    Ws = moe.stacked_experts(w)                                                  # (n_inst, E, d, n)
    norms = np.linalg.norm(Ws[..., :2], axis=2)                                  # (n_inst, E, 2)
    return {"helpful_expert": r[:, 0].argmax(-1).tolist(), "toxic_expert": r[:, 1].argmax(-1).tolist(),
            "norms_by_expert": {"helpful": norms[..., 0].tolist(), "toxic": norms[..., 1].tolist()},
            "expert_load": moe.expert_load(cfg.model, w, cfg.feature_probability(), seed=cfg.seed).tolist()}


def routing_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    """Per routing and regime, toxic's rate change (paired after − before, t interval over models, G);
    per regime, different − same paired by model with its verdict; the capacity cost (pretraining loss,
    different − same, paired by model); and where the pair is routed. Rate rows and verdicts use only the
    models whose pair ended represented (own read-out, :func:`toymodels.lab.inference.represented`)."""
    by = {m.config.model.route_pair: m for m in members}
    ft0 = members[0].summary["finetune"]
    harm, regimes = ft0["harmful"][0], [r["name"] for r in ft0["regimes"]]
    rows, verdicts = [], {}
    for route, run in by.items():
        ft, ok = run.summary["finetune"], represented(run.summary)  # the models whose pair is represented

        def per_model(reg, key="change_pp", ft=ft, ok=ok):
            return {i: v for i, v in _by_model(ft, reg, harm, key).items() if i in ok}

        for reg in regimes:
            d = per_model(reg)
            p = claim(stats.paired(list(d.values()), clusters=list(d.keys())))
            gains = [e["target_gain"] for e in ft["instances"] if e["regime"] == reg and e["pretrain_instance"] in ok]
            rows.append({"route_pair": route, "regime": reg, "rate_change_pp": _stat(p),
                         "n_represented": len(ok), "n_models": run.config.n_inst,
                         "rate_before_pct": stats.spread([100 * v for v in per_model(reg, "before").values()]),
                         "rate_after_pct": stats.spread([100 * v for v in per_model(reg, "after").values()]),
                         "target_gain": stats.spread(gains)})
    loss = {route: [s["eval_loss"] for s in run.summary["instances"]] for route, run in by.items()}
    cost = None
    if {"same", "different"} <= by.keys():
        for reg in regimes:
            s, d = _by_model(by["same"].summary["finetune"], reg, harm), _by_model(by["different"].summary["finetune"], reg, harm)
            # models whose pair is represented in both members (a barely represented start is never pooled)
            keep = represented(by["same"].summary) & represented(by["different"].summary)
            common = sorted(s.keys() & d.keys() & keep)
            p = claim(stats.paired([d[i] for i in common], [s[i] for i in common], clusters=common))
            verdicts[reg] = _stat(p) | {"verdict": {"down": "cuts", "up": "raises"}.get(p["direction"], "no evidence")}
            # the level after fine-tuning, different − same [pp]: the change alone hides a different start
            sa, da = (_by_model(by[k].summary["finetune"], reg, harm, "after") for k in ("same", "different"))
            verdicts[reg]["rate_after_pp"] = _stat(claim(stats.paired([100 * da[i] for i in common],
                                                                      [100 * sa[i] for i in common], clusters=common)))
        cost = _stat(stats.paired(loss["different"], loss["same"]))
    summary = {"suite": suite["suite"], "members": suite["members"], "harmful": harm, "target": ft0["target"],
               "regimes": regimes, "rows": rows, "different_vs_same": verdicts, "capacity_cost": cost,
               "pretrain_loss": {k: stats.spread(v) for k, v in loss.items()},
               "routes": {route: pair_routes(run) for route, run in by.items()}}
    runs.write_text(Path(run_dir) / "moe_routing.md", markdown_table(summary) + "\n")
    return summary, routing_report(summary)


def _stat(p: dict) -> dict:
    """A paired test without its per-model values list (kept short in summary.json)."""
    return {k: v for k, v in p.items() if k != "values"}


def _pct(spread: dict) -> str:
    """A mean rate [%], or n/a when no model of the row has its pair represented."""
    return "n/a" if spread.get("mean") is None else f"{spread['mean']:.2f}"


def markdown_table(summary: dict) -> str:
    """The routing rows in the defences table's format: every number from the summary."""
    head = ("| routing | regime | toxic rate before → after [%] | Δ toxic rate [pp] (95% CI, G models) | "
            "vs same expert [pp] (paired 95% CI) | rate after vs same expert [pp] (paired 95% CI) | "
            "target gain (×) | pretraining loss vs same (×10⁻³, paired 95% CI) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    cost = summary.get("capacity_cost")
    for r in summary["rows"]:
        diff = r["route_pair"] == "different"
        v = summary["different_vs_same"].get(r["regime"]) or {}
        vs = vs_baseline(v) if diff else "(the baseline)"
        after = vs_baseline(v.get("rate_after_pp")).replace("cuts", "lower").replace("raises", "higher") if diff else "–"
        level = f"{_pct(r['rate_before_pct'])} → {_pct(r['rate_after_pct'])}"
        c = ("–" if not diff or not cost else
             fmt_stat({"mean": 1e3 * cost["mean"], "ci95": [1e3 * v for v in cost["ci95"]] if cost.get("ci95") else None})
             + f" (G={cost['n_clusters']})")
        lines.append(f"| {r['route_pair']} experts | {r['regime']} | {level} | {with_g(r['rate_change_pp'])} | {vs} | {after} | "
                     f"{fmt_stat(r['target_gain'], '{:.2f}', ci=False)} | {c} |")
    return "\n".join(lines)


def routing_report(summary: dict) -> str:
    lines = [f"{summary['suite']}: '{summary['target']}' fine-tuned, '{summary['harmful']}' watched"]
    for r in summary["rows"]:
        lines.append(f"  {r['route_pair']:<9} {r['regime']:<10} rate {_pct(r['rate_before_pct'])}% → "
                     f"{_pct(r['rate_after_pct'])}%, Δ {stats.fmt_paired(r['rate_change_pp'])} pp "
                     f"({r['rate_change_pp']['direction']})")
    for reg, v in summary["different_vs_same"].items():
        lines.append(f"  different − same, {reg:<10} Δ rate {stats.fmt_paired(v)} pp: routing apart {v['verdict']}; "
                     f"rate after {stats.fmt_paired(v['rate_after_pp'])} pp")
    if summary["capacity_cost"]:
        lines.append(f"  capacity cost: pretraining loss different − same {stats.fmt_paired(summary['capacity_cost'], '+.2e')}")
    for route, rt in summary["routes"].items():
        lines.append(f"  {route:<9} helpful -> expert {sorted(set(rt['helpful_expert']))}, toxic -> expert "
                     f"{sorted(set(rt['toxic_expert']))}; toxic norm in expert 0: "
                     f"{np.mean([v[0] for v in rt['norms_by_expert']['toxic']]):.2f}")
    return "\n".join(lines)


suite_summary("moe_routing", routing_summary)
