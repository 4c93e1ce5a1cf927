"""Tables of the lab's suites: the seed article's overlap benchmark and the crowding sweep, in toy form.

Both are built only from the member runs' saved ``summary.json`` (the ``finetune`` section written by
:func:`toymodels.lab.summary.summarize`), never from live training state, so they can be rebuilt and
checked independently. :func:`overlap_table_summary` and :func:`crowding_summary` are registered as
suite summaries (by :mod:`toymodels.presets.lab`): :func:`toymodels.experiment.run_suite` writes what
they return to the suite's ``summary.json``.

Overlap table (``overlap-table``)
---------------------------------
The seed article's benchmark claims that the % increase in toxic output after fine-tuning grows with
the "geometric overlap score", the cosine between the fine-tuning target and its nearest harmful feature
clipped to [0, 1] (:func:`toymodels.lab.metrics.overlap_score`). In toy form, each suite member is one
model shape (n_features, d_hidden) whose geometry is *learned* (``features.geometry = "free"``); its
instances are pretrained models at different sparsities. Feature 0 is the one harmful feature,
``toxic``. Every candidate target f1..fK is fine-tuned under every regime family in one compiled sweep;
the member's regimes are named ``<family>@<target>`` (e.g. ``narrow@f3``, see :func:`split_regime`).

Afterwards, per pretrained model, three *tasks* are chosen from the measured pretrained geometry only,
never from the outcomes (:func:`select_tasks`): ``nearest`` (largest cos(target, toxic)), ``farthest``
(smallest) and ``middling`` (the other candidate whose cosine is closest to the midpoint of the two).
Only represented candidates (‖W_t‖ >= ``MIN_NORM``) are eligible, and a model whose toxic feature is
not represented has no rows. The table has one row per (model, task, regime family); correlations are
reported over the table rows and, as a check free of that selection, over every (model, candidate) pair.

Crowding (``crowding``)
-----------------------
Members differ only in n_features at fixed d_hidden (n / d_hidden = 2 ... 32); one row per fine-tuning
instance (seed x regime) with the superposition density of the pretrained model beside the change in
the harmful feature. Aggregates are per (n / d_hidden, regime) over seeds.

Shapes: a "row" is a flat dict of JSON-able scalars. Correlation confidence intervals are percentile
bootstrap intervals (:func:`toymodels.stats.correlation_ci`, numpy ``default_rng(seed)``) that resample pretrained
models, not rows: the rows of one model share its geometry and baseline rate, so they are not
independent, and resampling them one by one would give intervals that are too narrow.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..stats import correlation, spread

MIN_NORM = 0.5          # ‖W_i‖ below this: feature not represented (as geometry.n_represented)
TASKS = ("nearest", "middling", "farthest")
N_RESAMPLES, BOOTSTRAP_SEED = 2000, 0   # the correlation intervals (toymodels.stats.correlation_ci)
FAMILY_SEP = "@"


# --- reading a member's fine-tuning summary -------------------------------------------------------------
def split_regime(name: str) -> tuple[str, str]:
    """``"narrow@f3"`` -> ``("narrow", "f3")``; a name without ``@`` is its own family, target ``""``."""
    family, _, target = name.partition(FAMILY_SEP)
    return family, target


def _finite(v) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def instance_row(run, entry: dict, harmful: str) -> dict:
    """The numbers of one fine-tuning instance (an entry of ``summary["finetune"]["instances"]``) about
    one harmful feature, flattened; ``run`` gives the model's shape and sparsity."""
    cfg = run.config
    ft = run.summary["finetune"]
    reg = next(r for r in ft["regimes"] if r["name"] == entry["regime"])
    family, _ = split_regime(entry["regime"])
    label = family  # the optimiser axis: one row group per (regime family, optimiser)
    if len(ft.get("optimizers") or ()) > 1:
        label = f"{family} · {entry['optimizer']}"
    h = entry["harmful"][harmful]
    i = entry["pretrain_instance"]
    p = float(np.mean(run.summary["instances"][i]["feature_probability"]))
    return {
        "member": cfg.name,
        "n_features": cfg.data.n_features,
        "d_hidden": cfg.model.d_hidden,
        "features_per_dim_nominal": cfg.data.n_features / cfg.model.d_hidden,
        "feature_probability": p,
        "pretrain_instance": i,
        "ft_instance": entry["index"],
        "regime": label,
        "family": family,
        "optimizer": entry.get("optimizer"),
        "data": reg["data"],
        "loss_scope": reg["loss_scope"],
        "target": entry["target"],
        "harmful": harmful,
        "overlap": entry["overlap"]["score"]["before"],
        "overlap_signed": entry["overlap"]["signed"]["before"],
        "cos_before": h["cos"]["before"],
        "cos_after": h["cos"]["after"],
        "angle_before": h["angle_deg"]["before"],
        "angle_after": h["angle_deg"]["after"],
        "rate_before": h["rate"]["before"],
        "rate_after": h["rate"]["after"],
        "rate_rel_increase_pct": _finite(h["rate"]["rel_increase_pct"]),
        "rate_change_pp": h["rate"]["change_pp"],
        "preact_change": h["preact"]["change"],
        "predicted_change": h["first_order"]["predicted"],
        "predicted_along_target": h["first_order"]["predicted_along_target"],
        "alpha": h["first_order"]["alpha"],
        "per_unit_push": h["first_order"]["per_unit_push"],
        "spurious_change": h["spurious"]["change"],
        "target_gain": entry["target_gain"],
        "target_norm": entry["target_norm"]["before"],
        "harmful_norm": h["norm"]["before"],
        "features_per_dim": entry["density"]["features_per_dim"]["before"],
        "mean_cos2": entry["density"]["mean_cos2"]["before"],
    }


def member_rows(run) -> list[dict]:
    """One row per axis-aligned fine-tuning instance of a member run and its first harmful feature. With
    an optimiser axis, a row's ``regime`` is ``"<family> · <optimiser>"``, so every table and correlation
    is per optimiser."""
    ft = run.summary["finetune"]
    return [instance_row(run, e, ft["harmful"][0]) for e in ft["instances"] if e.get("orientation", 0) == 0]


# --- the overlap table ------------------------------------------------------------------------------
def select_tasks(cos: dict[str, float], norms: dict[str, float], min_norm: float = MIN_NORM) -> dict[str, str]:
    """Pick the tasks' targets of one pretrained model from its measured geometry.

    ``cos``: candidate name -> cos(candidate, harmful) before fine-tuning; ``norms``: candidate -> ‖W_t‖.
    Eligible: ‖W_t‖ >= min_norm. nearest = argmax cos, farthest = argmin cos, middling = the remaining
    candidate whose cos is closest to (cos_nearest + cos_farthest) / 2. Ties go to the earlier candidate
    in ``cos``'s order. Fewer than three eligible candidates give fewer tasks (nearest first).
    """
    names = [t for t in cos if norms[t] >= min_norm and math.isfinite(cos[t])]
    if not names:
        return {}
    c = np.array([cos[t] for t in names])
    near = int(np.argmax(c))
    out = {"nearest": names[near]}
    rest = [k for k in range(len(names)) if k != near]
    if not rest:
        return out
    far = rest[int(np.argmin(c[rest]))]
    mid_pool = [k for k in rest if k != far]
    if mid_pool:
        mid_point = (c[near] + c[far]) / 2.0
        out["middling"] = names[mid_pool[int(np.argmin(np.abs(c[mid_pool] - mid_point)))]]
    out["farthest"] = names[far]
    return {t: out[t] for t in TASKS if t in out}


def model_label(row: dict) -> str:
    """A short model name for tables: ``n20·m5·p0.05·#1`` (shape, sparsity, pretrained instance)."""
    return (f"n{row['n_features']}·m{row['d_hidden']}·p{row['feature_probability']:.3g}"
            f"·#{row['pretrain_instance']}")


def overlap_rows(members) -> tuple[list[dict], list[dict], list[dict]]:
    """(table rows, all-pair rows, skipped models) of the overlap-table suite's member runs.

    all-pair rows: every eligible (model, candidate target, regime family): the model's harmful feature
    and the candidate are both represented (norm >= MIN_NORM). Table rows: the selected tasks
    (:func:`select_tasks`), the all-pair rows of those targets with a ``task`` field added. Skipped:
    models whose harmful feature is not represented. Every row has a ``model`` label."""
    table, pairs, skipped = [], [], []
    for run in members:
        rows = member_rows(run)
        for r in rows:
            r["model"] = model_label(r)
        for i in sorted({r["pretrain_instance"] for r in rows}):
            mine = [r for r in rows if r["pretrain_instance"] == i]
            if mine[0]["harmful_norm"] < MIN_NORM:
                skipped.append({"model": mine[0]["model"], "reason": f"harmful feature not represented "
                                                                     f"(norm {mine[0]['harmful_norm']:.3f})"})
                continue
            pairs += [r for r in mine if r["target_norm"] >= MIN_NORM]
            first = mine[0]["regime"]  # geometry is the same in every family: read it off one
            cos = {r["target"]: r["cos_before"] for r in mine if r["regime"] == first}
            norms = {r["target"]: r["target_norm"] for r in mine if r["regime"] == first}
            for task, target in select_tasks(cos, norms).items():
                table += [{**r, "task": task} for r in mine if r["target"] == target]
    order = {t: k for k, t in enumerate(TASKS)}
    fams = {f: k for k, f in enumerate(dict.fromkeys(r["regime"] for r in pairs))}  # the config's order
    members = {m: k for k, m in enumerate(dict.fromkeys(r["member"] for r in pairs))}
    table.sort(key=lambda r: (fams[r["regime"]], members[r["member"]], r["pretrain_instance"], order[r["task"]]))
    return table, pairs, skipped


CORRELATED = (("overlap", "rate_rel_increase_pct"), ("overlap", "rate_change_pp"), ("overlap", "preact_change"),
              ("overlap_signed", "rate_change_pp"), ("overlap_signed", "preact_change"))


def _column(rows: list[dict], key: str) -> list[float]:
    return [np.nan if r[key] is None else r[key] for r in rows]


def model_key(row: dict) -> str:
    """The pretrained model a row belongs to (its rows share geometry and baseline rate)."""
    return f"{row['member']}#{row['pretrain_instance']}"


def correlations_by_regime(rows: list[dict], pairs=CORRELATED, **bootstrap) -> dict:
    """Per regime family, ``"<x>_vs_<y>"`` -> :func:`correlation` over the rows (finite pairs), with a
    cluster bootstrap over pretrained models (:func:`model_key`)."""
    out = {}
    for fam in dict.fromkeys(r["regime"] for r in rows):
        sel = [r for r in rows if r["regime"] == fam]
        groups = [model_key(r) for r in sel]
        out[fam] = {f"{x}_vs_{y}": correlation(_column(sel, x), _column(sel, y), groups=groups, **bootstrap)
                    for x, y in pairs}
    return out


def _fmt(v, spec: str, none: str = "n/a") -> str:
    return none if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _ci(c: dict, stat: str) -> str:
    lo, hi = c[f"{stat}_ci"]
    return f"{_fmt(c[stat], '+.2f')} [{_fmt(lo, '+.2f')}, {_fmt(hi, '+.2f')}]"


TABLE_COLUMNS = ("model", "task (target)", "overlap score", "signed cos", "toxic rate before → after",
                 "% increase", "Δ pp", "Δ pre-act", "target gain", "features/dim", "mean cos²")


def markdown_table(rows: list[dict]) -> str:
    """One markdown row per table row (callers pass one regime's rows: one per (model, task))."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for r in rows:
        cells = [r["model"], f"{r['task']} ({r['target']})", _fmt(r["overlap"], ".2f"),
                 _fmt(r["overlap_signed"], "+.2f"),
                 f"{100 * r['rate_before']:.2f}% → {100 * r['rate_after']:.2f}%",
                 _fmt(r["rate_rel_increase_pct"], "+.0f") + ("%" if r["rate_rel_increase_pct"] is not None else ""),
                 _fmt(r["rate_change_pp"], "+.2f"), _fmt(r["preact_change"], "+.3f"), _fmt(r["target_gain"], ".2f"),
                 _fmt(r["features_per_dim"], ".2f"), _fmt(r["mean_cos2"], ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def overlap_markdown(summary: dict) -> str:
    """The whole ``overlap_table.md``: per regime family a table (one row per (model, task)) and the
    correlations with bootstrap intervals."""
    out = [f"# {summary['suite']}: the seed's benchmark table in toy form", "",
           "Generated from the member runs' summary.json by toymodels; do not edit by hand.", "",
           (f"Harmful feature: `{summary['harmful']}`. τ = {summary['tau']:g}: toxic output rate = "
            f"P(x'_toxic > τ | x_toxic = 0) on the pretraining distribution. Overlap score = "
            f"clip(cos(target, toxic), 0, 1) of the pretrained model; signed cos beside it. Tasks per model: "
            f"the represented candidate nearest to toxic, one at a middling angle, the farthest "
            f"(chosen from pretrained geometry only). % increase is n/a when the rate before is 0. Δ pre-act: "
            f"change of toxic's pre-activation on the unit target input. Density of the pretrained model: "
            f"features/dim = ‖W‖_F² / d_hidden, mean off-diagonal cos²."), ""]
    for fam, info in summary["regimes"].items():
        rows = [r for r in summary["rows"] if r["regime"] == fam]
        out += [f"## regime `{fam}` (data={info['data']}, loss={info['loss_scope']}): {len(rows)} rows", "",
                markdown_table(rows), ""]
        out += ["| correlation over | x | y | n | Pearson r [95% CI] | Spearman ρ [95% CI] |",
                "|---|---|---|---|---|---|"]
        for where in ("table", "all_pairs"):
            for key, c in summary["correlations"][where].get(fam, {}).items():
                x, _, y = key.partition("_vs_")
                out.append(f"| {where.replace('_', ' ')} | {x} | {y} | {c['n']} | {_ci(c, 'pearson')} | "
                           f"{_ci(c, 'spearman')} |")
        out.append("")
    if summary["skipped"]:
        out += ["Models without rows: " + "; ".join(f"{s['model']} ({s['reason']})" for s in summary["skipped"]), ""]
    b = summary["bootstrap"]
    out.append(f"Intervals: percentile cluster bootstrap over pretrained models (a model's rows are resampled "
               f"together), {b['n_resamples']} resamples, numpy default_rng"
               f"({b['seed']}). 'all pairs' = every (model, candidate target) with both features represented, "
               f"without the task selection.")
    return "\n".join(out) + "\n"


def overlap_table_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    """The overlap-table suite's ``summary.json`` (rows, correlations) and ``overlap_table.md``."""
    table, pairs, skipped = overlap_rows(members)
    ft0 = members[0].summary["finetune"]
    regimes = {r["regime"]: {"data": r["data"], "loss_scope": r["loss_scope"], "optimizer": r["optimizer"]}
               for r in pairs}  # row groups: regime families, or (family, optimiser) with an optimiser axis
    summary = {
        "suite": suite["suite"],
        "members": suite["members"],
        "harmful": ft0["harmful"][0],
        "tau": ft0["tau"],
        "tasks": list(TASKS),
        "min_norm": MIN_NORM,
        "regimes": regimes,
        "n_models": sum(m.config.n_inst for m in members),
        "n_rows": len(table),
        "rows": table,
        "skipped": skipped,
        "bootstrap": {"n_resamples": N_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95,
                      "method": "percentile, cluster bootstrap over pretrained models"},
        "correlations": {"table": correlations_by_regime(table), "all_pairs": correlations_by_regime(pairs)},
        "all_pairs": [{k: r[k] for k in ("model", "regime", "target", "overlap", "overlap_signed", "rate_change_pp",
                                         "rate_rel_increase_pct", "preact_change", "target_gain")} for r in pairs],
    }
    (Path(run_dir) / "overlap_table.md").write_text(overlap_markdown(summary))
    return summary, overlap_report(summary, Path(run_dir) / "overlap_table.md")


def overlap_report(summary: dict, md_path: Path) -> str:
    """A few lines for the terminal: the correlations of the table rows per regime."""
    lines = [(f"{summary['suite']}: {summary['n_models']} pretrained models x {len(summary['tasks'])} tasks "
              f"-> {summary['n_rows']} rows ({len(summary['skipped'])} models skipped); table: {md_path}")]
    for fam, corr in summary["correlations"]["table"].items():
        for key in ("overlap_vs_rate_rel_increase_pct", "overlap_vs_rate_change_pp", "overlap_vs_preact_change"):
            c = corr[key]
            lines.append(f"  {fam:<10} {key:<34} n={c['n']:<3} Pearson {_ci(c, 'pearson')}  "
                         f"Spearman {_ci(c, 'spearman')}")
    return "\n".join(lines)


# --- crowding ---------------------------------------------------------------------------------------------
CROWDING_METRICS = ("rate_change_pp", "rate_rel_increase_pct", "preact_change", "predicted_change",
                    "predicted_along_target", "alpha", "per_unit_push", "rate_before",
                    "rate_after", "angle_before", "angle_after", "target_gain", "features_per_dim", "mean_cos2",
                    "harmful_norm", "target_norm")


def crowding_groups(rows: list[dict]) -> list[dict]:
    """Per (n / d_hidden, regime): :func:`spread` over seeds of every CROWDING_METRICS column, plus the
    rotation angle_after − angle_before and the fraction of seeds whose toxic rate rose."""
    out = []
    keys = sorted({(r["features_per_dim_nominal"], r["regime"]) for r in rows},
                  key=lambda k: (k[0], [r["regime"] for r in rows].index(k[1])))
    for ratio, fam in keys:
        sel = [r for r in rows if r["features_per_dim_nominal"] == ratio and r["regime"] == fam]
        g = {"n_over_d": ratio, "n_features": sel[0]["n_features"], "d_hidden": sel[0]["d_hidden"], "regime": fam,
             "n_seeds": len(sel)}
        g.update({k: spread([r[k] for r in sel]) for k in CROWDING_METRICS})
        g["rotation_deg"] = spread([r["angle_after"] - r["angle_before"] for r in sel])
        g["fraction_rate_up"] = float(np.mean([r["rate_change_pp"] > 0 for r in sel]))
        out.append(g)
    return out


def crowding_summary(members, suite: dict, run_dir: Path) -> tuple[dict, str]:
    """The crowding suite's ``summary.json``: rows, per-(n/d, regime) groups, and per regime the
    correlations of the changes with log2(n / d_hidden) and with the measured density."""
    rows = [r for run in members for r in member_rows(run)]
    for r in rows:
        r["log2_n_over_d"] = math.log2(r["features_per_dim_nominal"])
    pairs = (("log2_n_over_d", "rate_change_pp"), ("log2_n_over_d", "preact_change"),
             ("log2_n_over_d", "rate_rel_increase_pct"), ("features_per_dim", "rate_change_pp"),
             ("mean_cos2", "rate_change_pp"))
    ft0 = members[0].summary["finetune"]
    summary = {
        "suite": suite["suite"],
        "members": suite["members"],
        "harmful": ft0["harmful"][0],
        "target": ft0["target"],
        "tau": ft0["tau"],
        "n_rows": len(rows),
        "groups": crowding_groups(rows),
        "correlations": correlations_by_regime(rows, pairs),
        "bootstrap": {"n_resamples": N_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95,
                      "method": "percentile, cluster bootstrap over pretrained models"},
        "rows": rows,
    }
    return summary, crowding_report(summary)


def crowding_report(summary: dict) -> str:
    """One line per (n / d_hidden, regime): means over seeds, and the trend correlations."""
    head = (f"{'n/d':>5} {'regime':<10} {'seeds':>5} {'feat/dim':>8} {'cos²':>5} {'Δpre-act':>9} {'(1st ord)':>9} "
            f"{'rate% b→a':>13} {'Δpp':>7} {'rotation':>8} {'up':>4}")
    lines = [f"{summary['suite']}: '{summary['target']}' fine-tuned, '{summary['harmful']}' watched; means over seeds",
             head, "-" * len(head)]
    m = lambda s, spec: _fmt(s["mean"], spec)
    for g in summary["groups"]:
        lines.append(f"{g['n_over_d']:>5g} {g['regime']:<10} {g['n_seeds']:>5} {m(g['features_per_dim'], '.2f'):>8} "
                     f"{m(g['mean_cos2'], '.2f'):>5} {m(g['preact_change'], '+.3f'):>9} "
                     f"{'(' + m(g['predicted_change'], '+.3f') + ')':>9} "
                     f"{_fmt(100 * g['rate_before']['mean'], '.2f') + '→' + _fmt(100 * g['rate_after']['mean'], '.2f'):>13} "
                     f"{m(g['rate_change_pp'], '+.2f'):>7} {m(g['rotation_deg'], '+.1f') + '°':>8} "
                     f"{round(g['fraction_rate_up'] * g['n_seeds'])}/{g['n_seeds']}")
    for fam, corr in summary["correlations"].items():
        for key in ("log2_n_over_d_vs_rate_change_pp", "log2_n_over_d_vs_preact_change"):
            c = corr[key]
            lines.append(f"  {fam:<10} {key:<32} n={c['n']:<3} Spearman {_ci(c, 'spearman')}  "
                         f"Pearson {_ci(c, 'pearson')}")
    return "\n".join(lines)
