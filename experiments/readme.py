"""Fill the generated blocks of README.md and docs/*.md from committed results, so no number in them is
typed by hand.

    python experiments/readme.py          # rewrites the blocks between <!-- NAME:start --> and <!-- NAME:end -->

Each block lives in exactly one page (README.md or a page of docs/); it is found wherever it is, and its
links and image paths, written here relative to the repository root, are rewritten relative to that page.

Blocks: ``main-result`` (the analogy-15deg table, as ``toymodels run analogy-15deg`` prints it),
``gallery`` (figures/GALLERY.md, written by experiments/gallery.py), and ``lab`` / ``defences`` (one
paragraph per preset with its headline numbers read from ``results/<preset>/summary.json`` and the
markdown tables the presets write), ``audit`` (sae-recovery and risk-prediction).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from toymodels import stats
from toymodels.lab.report import format_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / name / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _img(name: str, width: int = 420) -> str:
    return f'<a href="figures/{name}"><img src="figures/{name}" width="{width}"></a>'


def _fig(preset: str, *stems: str, width: int = 420) -> str:
    return " ".join(_img(f"{preset}_{s}", width) for s in stems if (ROOT / "figures" / f"{preset}_{s}").exists())


def _ci(c: dict, key: str) -> str:
    lo, hi = c.get(f"{key}_ci") or (None, None)
    v = c.get(key)
    if v is None:
        return "n/a"
    return f"{v:+.2f}" + (f" [{lo:+.2f}, {hi:+.2f}]" if lo is not None else "")


def main_result() -> str:
    s = _load("analogy-15deg")
    if s is None:
        return "_(run `python experiments/gallery.py` to fill this in)_"
    secs = s.get("wall_seconds")
    return "\n".join([
        f"What `toymodels run analogy-15deg` printed for the committed run (`results/analogy-15deg/summary.json`, "
        f"{secs:.0f} s wall on a 2-core CPU):",
        "", "```text", format_table(s), "```", "",
        _fig("analogy-15deg", "finetune_arrows.png", "amplification_curves.png", width=400),
        _fig("analogy-15deg", "finetune.gif", width=300),
    ])


# --- the headline and the robustness section: sentences built from the robustness verdicts ------------
# Every direction word below comes from a cell's paired test (toymodels.stats.paired: the per-model mean
# change with a t interval over the G pretrained models); a cell that only repeats another up to a
# rotation is left out, and run counts count distinct runs.
def _cells_of(section: dict, key: str) -> list[dict]:
    v = section["verdicts"][key]
    return [r for r in section["rows"] if r["regime"] == v["regime"] and r.get("stratum") == v.get("stratum")
            and not r.get("duplicate_of")]


def _label(r: dict) -> str:
    return f"{r['optimizer']} {'axis-aligned' if r['orientation'] == 'axis' else 'rotated'}"


def _opt_list(rows: list[dict]) -> str:
    opts = list(dict.fromkeys(r["optimizer"] for r in rows))
    return ", ".join(opts[:-1]) + (" and " if len(opts) > 1 else "") + opts[-1] if opts else "none"


def _pp(rows: list[dict]) -> str:
    lo, hi = min(r["rate_change_pp"] for r in rows), max(r["rate_change_pp"] for r in rows)
    return f"{lo:+.2f} pp" if abs(hi - lo) < 0.005 else f"{lo:+.2f} to {hi:+.2f} pp"


def _runs(rows: list[dict]) -> str:
    return f"{sum(r['n_up'] for r in rows)}/{sum(r['n_distinct'] for r in rows)} distinct runs up"


def _g(rows: list[dict]) -> str:
    gs = sorted({r["n_clusters"] for r in rows})
    return "G = " + "/".join(map(str, gs))


def _where(rows: list[dict], word: str) -> list[dict]:
    return [r for r in rows if r["direction"] == word]


def _claim(rows: list[dict], word: str, verb: str) -> str:
    """"rises in all 7 distinct cells (…)" or "rises in 5 of 7 cells (…); no evidence in …" from the cells'
    paired tests."""
    hit, rest = _where(rows, word), [r for r in rows if r["direction"] != word]
    out = (f"{verb} in {'all ' if not rest else ''}{len(hit)}{'' if not rest else f' of {len(rows)}'} distinct "
           f"(optimiser, orientation) cells" + (f" ({_pp(hit)}, {_runs(hit)}; paired 95% t intervals over "
                                                f"{_g(hit)} pretrained models, each excluding 0)" if hit else ""))
    if rest:
        out += "; " + "; ".join(f"{r['direction']} in {_label(r)} ({r['rate_change_pp']:+.2f} pp "
                                f"[{r['rate_ci'][0]:+.2f}, {r['rate_ci'][1]:+.2f}], G={r['n_clusters']})"
                                for r in rest if r["rate_ci"])
    return out


def headline() -> str:
    """What the robustness preset says about the 15° analogy: only what its paired tests support, and
    where it does not. Every number is read from results/robustness/summary.json."""
    s = _load("robustness")
    if s is None:
        return "_(run `toymodels run robustness` and `python experiments/gallery.py` to fill this in)_"
    rep, weak = s["sections"][0], s["sections"][1]
    v = rep["verdicts"]
    narrow = _cells_of(rep, "narrow")
    rotated = [r for r in rep["rows"] if r["orientation"] == "rotated"]
    dup_all = [o for o in dict.fromkeys(r["optimizer"] for r in rotated)
               if all(r.get("duplicate_of") for r in rotated if r["optimizer"] == o)]
    dup_some = [o for o in dict.fromkeys(r["optimizer"] for r in rotated if r.get("duplicate_of")) if o not in dup_all]
    push_ok = v["narrow"]["push_equals_cos_in"]
    off = [r for r in narrow if f"{r['optimizer']}, {'axis-aligned' if r['orientation'] == 'axis' else 'rotated'}"
           not in push_ok]
    counter = [reg for reg in v if reg != "narrow"]
    counter_down = [reg for reg in counter if v[reg]["survives"] and set(v[reg]["directions"].values()) == {"down"}]
    early = [reg for reg in counter if v[reg]["flips_with_stopping"]]
    out = [f"**What holds across optimisers, orientations and stopping points** "
           f"([`robustness`](docs/robustness.md): {rep['n_pretrained']} pretrained models x {len(rep['optimizers'])} "
           f"optimisers ({', '.join(rep['optimizers'])}) x {rep['orientations']} orientations of the hidden basis, "
           f"read at the end and at matched target gains). A direction is claimed only where the paired 95% "
           f"interval (a t interval over the G pretrained models; rates from "
           f"{_rate_samples(rep)} inputs per model) excludes 0; otherwise the block says *no evidence*. "
           + (f"The rotated runs of {_opt_list([{'optimizer': o} for o in dup_all])} repeat their axis-aligned "
              "runs in every regime (equal on every rotation-invariant outcome) and are counted once" if dup_all
              else "No optimiser's rotated runs repeat its axis-aligned ones in every regime")
           + (f"; so do {_opt_list([{'optimizer': o} for o in dup_some])}'s in some regimes." if dup_some else "."), ""]
    out.append(f"- **The claim's regime** (`narrow`: only *helpful* in the data, loss only on *helpful*): the toxic "
               f"output rate {_claim(narrow, 'up', 'rises')}. Toxic's pre-activation moves by exactly "
               f"cos 15° = {narrow[0]['cos_before']:.3f} per unit of push along *helpful* in {len(push_ok)} of "
               f"{len(narrow)} cells" + (": not in " + "; ".join(
                   f"{_label(r)} ({r['per_unit_push']:+.3f}, angle {r['angle_before']:.0f}° → {r['angle_after']:.1f}°)"
                   for r in off) + ". In those cells the fine-tune also moved the pair's angle or toxic's own norm: "
                   "Adam's per-coordinate steps see the hidden axes, and AdamW's weight decay also shrinks weights the "
                   "data never touches. So \"exactly cos 15°\" is a property of the optimiser and the orientation "
                   "as well as of the geometry." if off else "."))
    for reg in counter_down:
        c = _cells_of(rep, reg)
        out.append(f"- **`{reg}`** (data: {c[0]['data']}, loss on {c[0]['loss_scope']} outputs): at the end of "
                   f"fine-tuning the toxic rate {_claim(c, 'down', 'falls')}.")
    for reg in counter:
        if reg not in counter_down:
            words = sorted(set(v[reg]["directions"].values()))
            out.append(f"- **`{reg}`**: the cells do not agree at the end ({', '.join(words)}): "
                       + _claim(_cells_of(rep, reg), "down", "falls") + ".")
    for reg in early:
        pts = v[reg]["over_stopping"]
        ups = [p.removeprefix("gain ") for p, d in pts.items() if d == "up"]
        downs = [p for p, d in pts.items() if d == "down"]
        out.append(f"- **But the stopping point decides `{reg}`:** at matched gain{'s' if len(ups) > 1 else ''} "
                   f"{', '.join(ups)} the toxic rate is *up* in every distinct cell (every cell reached the gain; "
                   f"paired intervals above 0, {_g(_cells_of(rep, reg))}); " + (
                       "at the end it is *down* in every cell. An early-stopped fine-tune in this regime raises toxic "
                       "output; a converged one lowers it." if pts["end"] == "down" else
                       f"it is *down* at {', '.join(downs)}, and at the end the cells give *{pts['end']}*."))
    for key, vv in weak["verdicts"].items():
        if vv["flips"]:
            cells = _cells_of(weak, key)
            up, down = _where(cells, "up"), _where(cells, "down")
            out.append(f"- **Where the optimiser flips the answer:** from the earlier, weakly represented start "
                       f"(`{weak['name']}`, its models in which {vv['stratum'].removesuffix(' weak')} ended barely represented), "
                       f"`{vv['regime']}` raises the toxic rate "
                       f"under {_opt_list(up)} ({_pp(up)}, {_runs(up)}, {_g(up)}) and lowers it under "
                       f"{_opt_list(down)} ({_pp(down)}, {_runs(down)}, {_g(down)}).")
    if not any(vv["flips"] for vv in v.values()):
        out.append("- From the represented start no regime flips with the optimiser at the end of fine-tuning.")
    return "\n".join(out)


def _rate_samples(section: dict) -> str:
    run = _load(f"robustness/{section['name']}")
    n = ((run or {}).get("finetune", {}).get("rate_evaluation") or {}).get("samples_per_model")
    return f"{n:,}" if n else "the probe batch's"


def robustness_section() -> str:
    s = _load("robustness")
    if s is None:
        return ""
    md = (RESULTS / "robustness" / "robustness_table.md").read_text()
    parts = md.split("## ")
    rep_body = "## " + parts[1] if len(parts) > 1 else md
    weak_body = "## " + parts[2] if len(parts) > 2 else ""
    rep_body = rep_body.split("\n", 2)[2].strip()   # drop the member heading; the README gives one
    weak_body = weak_body.split("\n", 2)[2].strip() if weak_body else ""
    rows = ["| member | regime | toxic rate at the end, per (optimiser, orientation) | by stopping point | per-unit push = cos θ |",
            "|---|---|---|---|---|"]
    for sec in s["sections"]:
        for reg, v in sec["verdicts"].items():
            dirs = list(v["directions"].values())
            counts = ", ".join(f"{d} {dirs.count(d)}/{len(dirs)}" for d in ("up", "no evidence", "down") if dirs.count(d))
            stops = ", ".join(f"{p}: {d}" for p, d in v["over_stopping"].items())
            rows.append(f"| `{sec['name']}` | `{reg}` (G = {'/'.join(map(str, v['n_clusters']))}) | {counts}{' — **flips**' if v['flips'] else ''} | {stops}"
                        f"{' — **flips**' if v['flips_with_stopping'] else ''} | {len(v['push_equals_cos_in'])}/{len(dirs)} |")
    rep = s["sections"][0]
    return "\n".join([
        "`toymodels run robustness` (two members, one compiled sweep each: "
        + " and ".join(f"`{sec['name']}`: {sec['n_pretrained']} pretrained models x 4 regimes x "
                       f"{len(sec['optimizers'])} optimisers x {sec['orientations']} orientations = "
                       f"{sec['n_pretrained'] * 4 * len(sec['optimizers']) * sec['orientations']} fine-tunes"
                       for sec in s["sections"])
        + "; cells that repeat another up to a rotation are counted once). *Orientation*: the same pretrained model fine-tuned as it is (axis-aligned) and with its hidden "
        "space rotated by a random orthogonal O (W → OW computes the same function, so only the optimiser can tell "
        "them apart). *Matched gain*: every run read where the target's read-out first reaches g times its "
        "pretrained value. Directions: up/down when the paired 95% CI of the mean change (a t interval over the G "
        "pretrained models, each model's rates on its own 1.2M inputs) lies above/below 0; *no evidence* otherwise. "
        "Models whose starting geometry differs (which of the pair ended barely represented) are never pooled.", "", *rows, "",
        f"Full table, `{rep['name']}` (Δ toxic rate in percentage points):", "", rep_body, "",
        _img("robustness-represented_robustness.png", 800), "",
        f"<details><summary>the same for <code>{s['sections'][1]['name']}</code> (one of the pair weakly "
        "represented)</summary>", "", weak_body, "", _img("robustness-weak_robustness.png", 800),
        "", "</details>"])


def angle_sweep() -> str:
    s = _load("angle-sweep")
    if s is None:
        return ""
    rows = ["| regime · optimiser | Δ toxic pre-activation vs cos θ (Pearson / Spearman) | Δ toxic output rate vs cos θ (Pearson / Spearman) | n |",
            "|---|---|---|---|"]
    ft = s["finetune"]
    groups = ({f"{g['regime']} · {g['optimizer']}": g for g in ft["by_group"].values() if g["orientation"] == "axis"}
              if ft.get("by_group") else ft["by_regime"])
    for reg, r in groups.items():
        for h in r["harmful"].values():
            c = h["correlations"]
            pa, ra = c["preact_change_vs_cos"], c["rate_change_pp_vs_cos"]
            rows.append(f"| `{reg}` (data={r['data']}, loss={r['loss_scope']}) | {pa['pearson']:+.2f} / {pa['spearman']:+.2f} "
                        f"| {ra['pearson']:+.2f} / {ra['spearman']:+.2f} | {pa['n']} |")
    return "\n".join(["### `angle-sweep`: the spill-over against the angle", "",
                      f"`toymodels run angle-sweep` ({s['wall_seconds']:.0f} s). Helpful at 0°, toxic at 0–180° in 5° "
                      "steps, 3 seeds each, pinned pretraining; every model fine-tuned under both regimes in one "
                      "compiled sweep.", "", *rows, "", _fig("angle-sweep", "angle_sweep.png", width=700)])


def overlap_table() -> str:
    s = _load("overlap-table")
    if s is None:
        return ""
    rows = ["| regime | overlap score vs | n rows | Pearson [95% CI] | Spearman [95% CI] |", "|---|---|---|---|---|"]
    for reg, d in s["correlations"]["table"].items():
        for metric, c in d.items():
            if not metric.startswith("overlap_vs"):
                continue
            rows.append(f"| `{reg}` | {metric.removeprefix('overlap_vs_')} | {c['n']} | {_ci(c, 'pearson')} | "
                        f"{_ci(c, 'spearman')} |")
    return "\n".join(["### `overlap-table`: the seed's benchmark table, in toy form", "",
                      f"`toymodels run overlap-table`. {s['n_models']} pretrained models with learned geometry "
                      f"({', '.join(s['members'])}) × targets chosen from the pretrained geometry "
                      f"({', '.join(s['tasks'])}). Confidence intervals: {s['bootstrap']['method']}, "
                      f"{s['bootstrap']['n_resamples']} resamples. {dropped(s)} Full table: "
                      "[`results/overlap-table/overlap_table.md`](results/overlap-table/overlap_table.md).", "",
                      *rows, "", _fig("overlap-table", "overlap_scatter.png", width=700)])


def dropped(s: dict) -> str:
    """How many pretrained models have rows, and why the others have none."""
    skipped = s["skipped"]
    if not skipped:
        return f"Every one of the {s['n_models']} models has rows."
    reasons = sorted({k["reason"].split(" (")[0] for k in skipped})
    return (f"{s['n_models'] - len(skipped)} of the {s['n_models']} models have rows; {len(skipped)} are dropped "
            f"because their {' / '.join(reasons)} (norm < 0.5): " + ", ".join(k["model"] for k in skipped) + ".")


def crowding() -> str:
    s = _load("crowding")
    if s is None:
        return ""
    rows = ["| n / d_hidden | regime | features per dim | mean cos² | Δ toxic rate (pp), mean ± sd | seeds up |",
            "|---|---|---|---|---|---|"]
    for g in s["groups"]:
        fpd, cos2 = g.get("features_per_dim", {}).get("mean"), g.get("mean_cos2", {}).get("mean")
        up = round(g["fraction_rate_up"] * g["n_seeds"])
        rows.append(f"| {g['n_over_d']:g} | `{g['regime']}` | {fpd if fpd is None else f'{fpd:.2f}'} | "
                    f"{cos2 if cos2 is None else f'{cos2:.2f}'} | {g['rate_change_pp']['mean']:+.2f} ± "
                    f"{g['rate_change_pp']['std']:.2f} | {up}/{g['n_seeds']} |")
    return "\n".join(["### `crowding`: amplification against features per dimension", "",
                      "`toymodels run crowding`.", "", *rows, "", _fig("crowding", "crowding.png", width=700)])


def lab() -> str:
    return "\n\n".join(p for p in (angle_sweep(), overlap_table(), crowding()) if p)


def defences() -> str:
    parts = []
    for name in ("defences-table", "regularisation-pareto", "regularisation-pretrain", "regularisation-cost"):
        md = sorted((RESULTS / name).glob("*.md"))
        if not md:
            continue
        body = md[0].read_text().strip()
        body = re.sub(r"^# .*\n", "", body)  # the file's own title; the README gives one
        figs = sorted(p.name for p in (ROOT / "figures").glob(f"{name}_*.png"))
        if name != "defences-table":  # the long sweeps fold away; their figure shows the shape
            body = f"<details><summary>the full table</summary>\n\n{body}\n\n</details>"
        parts.append("\n".join([f"### `{name}`", "", f"`toymodels run {name}`. From "
                                f"[`results/{name}/{md[0].name}`](results/{name}/{md[0].name}):", "", body, "",
                                " ".join(_img(f, 420) for f in figs)]))
    return "\n\n".join(parts)


def defence_verdicts() -> str:
    """Per fine-tuning data and defence, the paired test of defended − undefended toxic-rate change (same
    pretrained model, same data stream): "cuts", "raises" or "no evidence", with its interval and G."""
    s = _load("defences-table")
    if s is None:
        return "_(run `toymodels run defences-table` to fill this in)_"
    rows = [r for r in s["rows"] if r.get("rate_change_pp_vs_baseline") and r["defence"] != "none"]
    geo = ", ".join(f"{k} in {n} of {s['n_seeds']} models" for k, n in (s.get("starting_geometry") or {}).items())
    out = [f"From `results/defences-table` ({s['n_seeds']} pretrained models; starting geometry: {geo or 'n/a'}). "
           "Each defence is compared with the undefended fine-tune of the same model on the same data stream: the "
           "difference in the toxic rate's change [pp], its mean over the G models with a 95% t interval. A defence "
           "*cuts* (or *raises*) the spill-over only when that interval lies below (above) 0; otherwise there is "
           "*no evidence* either way. *Toxic's loss when present* (×10⁻³, vs undefended) shows whether a cut was bought "
           "by damaging the harmful feature itself.", ""]
    for data in dict.fromkeys(r["data"] for r in rows):
        group = [r for r in rows if r["data"] == data]
        base = next((r for r in s["rows"] if r["data"] == data and r["defence"] == "none"), None)
        b = base["rate_change_pp"] if base else None
        head = f"- **{data} data**" + (f" (undefended: Δ toxic rate {b['mean']:+.2f} pp [{b['ci95'][0]:+.2f}, "
                                       f"{b['ci95'][1]:+.2f}], G={b['n_clusters']}, **{b['direction']}**)" if b and b.get("ci95") else "")
        parts = []
        for word in ("cuts", "raises", "no evidence"):
            hit = [r for r in group if r["rate_change_pp_vs_baseline"].get("effect") == word]
            if hit:
                parts.append(f"*{word}*: " + "; ".join(
                    f"{r['name']} ({_vs_pp(r['rate_change_pp_vs_baseline'])}{_present(r)})" for r in hit))
        tiny = [r["name"] for r in group if r["rate_change_pp_vs_baseline"].get("effect") in ("cuts", "raises")
                and abs(r["rate_change_pp_vs_baseline"]["mean"]) < 0.01]
        if tiny:
            parts.append(f"({', '.join(tiny)}: certain but below 0.01 pp: fewer than 1 input in 10,000 changes)")
        out.append(head + ": " + ". ".join(parts) + ".")
    return "\n".join(out)


def depth() -> str:
    """The deep suite: per plant layer the toxic-rate change (paired CIs, G), where the harmful
    pre-activation moves, and the verdict on 'spill-over is worse in later layers' (toymodels.lab.depth)."""
    from toymodels.lab import depth as lab_depth

    s = _load("deep")
    if s is None:
        return "_(run `toymodels run deep` to fill this in)_"
    sec = s["sections"]
    G = sorted({r["n_clusters"] for x in sec for r in x["rows"]
                if not r["duplicate_of"] and r["stratum"] == "both represented"})
    def axes(reg: str) -> str:  # the distinct cells a regime's verdict holds across
        cells = [c for c in s["deeper_minus_shallower"] if c["regime"] == reg]
        return ", ".join(sorted({f"{c['optimizer']} {'axis-aligned' if c['orientation'] == 'axis' else 'rotated'}"
                                 for c in cells}))

    def per(v: dict, p: str) -> str:
        return ", ".join(f"`{r}` {x}" + (f" in every distinct cell ({axes(r)}; G = "
                                        f"{', '.join(sorted({str(c[p]['n_clusters']) for c in s['deeper_minus_shallower'] if c['regime'] == r}))})"
                                        if x in ("confirmed", "refuted") else "")
                         for r, x in v["per_regime"].items())

    verdict = "; ".join(f"at {'the end' if p == 'end' else 'matched ' + p}: **{v['overall']}** ({per(v, p)})"
                        for p, v in s["later_layers"].items())
    where = []
    for x in sec:  # per regime, the represented stratum's distinct cells
        parts = []
        for reg in dict.fromkeys(r["regime"] for r in x["rows"]):
            shares: dict[int, list[float]] = {}
            for r in x["rows"]:
                if r["regime"] == reg and r["stratum"] == "both represented" and not r["duplicate_of"]:
                    for p in r["layers"]:
                        shares.setdefault(p["layer"], []).append(p["argmax_share"])
            if shares:
                top = max(shares, key=lambda k: sum(shares[k]))
                parts.append(f"`{reg}` layer {top} ({sum(shares[top]) / len(shares[top]):.0%})")
        if parts:
            where.append(f"pair at layer {x['plant_layer']}: " + ", ".join(parts))
    return "\n".join([
        f"From `results/deep` ({s['n_layers']}-layer stacks of the 15° analogy, the pair planted at layer "
        f"{', '.join(map(str, s['plant_layers']))}; optimisers {', '.join(sec[0]['optimizers'])}; "
        f"{sec[0]['orientations']} orientations; G = {', '.join(map(str, G))} pretrained models per cell; models whose "
        "pair ended barely represented form their own stratum). *Later layers spill over more* (deepest minus "
        f"shallowest plant layer, paired by model index) — {verdict}.", "",
        "**Where it goes** (the layer whose harmful pre-activation on the target input changed most in magnitude, "
        "share of fine-tunes averaged over the optimiser × orientation cells; the layers' pre-activations have "
        "their own scales): " + "; ".join(where) + ".", "",
        lab_depth.comparison_table(s), "", "<details><summary>per plant layer and cell</summary>", "",
        lab_depth.layer_table(s), "", "</details>", "", _fig("deep", "depth_summary.png", width=640)])


def depth_at_layer() -> str:
    """deep-at-layer: the pair's own layer as the fine-tuning objective (toymodels.lab.depth tables)."""
    from toymodels.lab import depth as lab_depth

    s = _load("deep-at-layer")
    if s is None:
        return "_(run `toymodels run deep-at-layer` to fill this in)_"
    verdict = "; ".join(f"at {'the end' if p == 'end' else 'matched ' + p}: **{v['overall']}**"
                        for p, v in s["later_layers"].items())
    return "\n".join([f"From `results/deep-at-layer` (the pair at layer {', '.join(map(str, s['plant_layers']))}, each "
                      "fine-tuned at its own layer's output; rates at the model's output; deeper minus shallower "
                      f"plant layer, paired by model index: {verdict}).", "", lab_depth.comparison_table(s), "",
                      "<details><summary>per plant layer and cell</summary>", "", lab_depth.layer_table(s), "",
                      "</details>"])


def routing() -> str:
    """moe-routing: routing the pair to different experts against the same expert, as a defence row."""
    s = _load("moe-routing")
    md = RESULTS / "moe-routing" / "moe_routing.md"
    if s is None or not md.exists():
        return "_(run `toymodels run moe-routing` to fill this in)_"
    def ci(v: dict, scale: float = 1.0) -> str:
        if v.get("mean") is None:
            return f"n/a, G={v.get('n_clusters', 0)}"
        lo_hi = f" [{scale * v['ci95'][0]:+.2f}, {scale * v['ci95'][1]:+.2f}]" if v.get("ci95") else ""
        return f"{scale * v['mean']:+.2f}{lo_hi}, G={v['n_clusters']}"

    def said(v: dict) -> str:
        return ("routing apart: no evidence either way on the change in the toxic rate" if v["verdict"] == "no evidence"
                else f"routing apart **{v['verdict']}** the change in the toxic rate")

    words = "; ".join(f"`{reg}`: {said(v)} ({ci(v)} pp)" for reg, v in s["different_vs_same"].items())
    c = s.get("capacity_cost")
    cost = f" Capacity cost, pretraining loss different − same: {ci(c, 1e3)} (×10⁻³)." if c else ""
    return "\n".join([f"From [`results/moe-routing/moe_routing.md`](results/moe-routing/moe_routing.md): {words}.{cost}", "",
                      md.read_text().strip()])


def _p(d: dict, spec: str = "+.4f") -> str:
    """A paired test as 'mean [lo, hi] (G) direction' (:func:`toymodels.stats.fmt_paired`)."""
    word = d.get("direction")
    return stats.fmt_paired(d, spec) + (f" {word}" if word else "")


def residual() -> str:
    """residual-mlp: loss per feature / p, published (noisy) vs clean labels, against the naive baseline."""
    s = _load("residual-mlp")
    if s is None:
        return "_(run `toymodels run residual-mlp` to fill this in)_"
    rows = ["| p | published labels | clean labels | published − naive | clean − naive | published − clean (paired) |",
            "|---|---|---|---|---|---|"]
    for c in s["cells"]:
        n, k = c["noisy"], c["clean"]
        rows.append(f"| {c['p']:g} | {_p(n['loss_over_p'], '.4f')} | {_p(k['loss_over_p'], '.4f')} | "
                    f"{_p(n['minus_naive'])} | {_p(k['minus_naive'])} | {_p(c['noisy_minus_clean'])} |")
    naive = s["cells"][0]["clean"]["naive_clean_over_p"]
    return "\n".join([f"From `results/residual-mlp/summary.json`: loss per feature divided by p, each seed's loss on "
                      f"fresh inputs of its own; naive baseline {naive:.4f} (= p/12 over p); 95% t intervals over G "
                      "seeds, paired by seed; a direction only when the interval excludes 0 and G ≥ 10.", "", *rows])


def moe_phase() -> str:
    """moe-superposition: load-weighted features per dimension per expert over (E, k) x p, and the rank test."""
    s = _load("moe-superposition")
    if s is None:
        return "_(run `toymodels run moe-superposition` to fill this in)_"
    ps = sorted({g["feature_probability"] for g in s["grid"]}, reverse=True)
    keys = list(dict.fromkeys((g["n_experts"], g["k_active"]) for g in s["grid"]))
    val = {(g["n_experts"], g["k_active"], g["feature_probability"]): g["features_per_dim"] for g in s["grid"]}
    kE = {(g["n_experts"], g["k_active"]): g["k_over_E"] for g in s["grid"]}
    rows = ["| E | k | k/E | " + " | ".join(f"p={p:.2g}" for p in ps) + " |", "|---|---|---|" + "---|" * len(ps)]
    for E, k in keys:
        rows.append(f"| {E} | {k} | {kE[(E, k)]:g} | " + " | ".join(f"{val[(E, k, p)]:.2f}" for p in ps) + " |")
    r = s["sparse_k_over_E_vs_features_per_dim"]
    lo, hi = r["spearman_ci"]
    return "\n".join([f"From `results/moe-superposition/summary.json`: load-weighted features per dimension per expert "
                      "(mean over seeds). At p ≤ 0.1, Spearman(k/E, features per dimension) = "
                      f"{r['spearman']:+.2f} [{lo:+.2f}, {hi:+.2f}] over {r['n']} models.", "", *rows])


def _vs_pp(p: dict) -> str:
    if not p.get("ci95"):
        return "n/a"
    f = "{:+.1e}" if abs(p["mean"]) < 0.005 and p["mean"] != 0 else "{:+.2f}"
    return f"{f.format(p['mean'])} [{f.format(p['ci95'][0])}, {f.format(p['ci95'][1])}], G={p['n_clusters']}"


def _present(r: dict) -> str:
    c = r.get("harmful_present_loss_vs_baseline")
    return "" if not c or c.get("mean") is None else f"; toxic's loss when present {1e3 * c['mean']:+.2f}"


# --- the auditor (issue 11): sae-recovery and risk-prediction --------------------------------------------
def _md_body(name: str, file: str) -> str:
    """A preset's markdown table file without its own title (the README gives one)."""
    path = RESULTS / name / file
    return re.sub(r"^# .*\n", "", path.read_text().strip()) if path.exists() else ""


def audit() -> str:
    """The auditor's section: SAE recovery (best MCC per variant), the risk table (AUROC per score with its
    interval), the seed's "90%" sentence, the diffs (BatchTopK vs L1) and the SAE-guided filter. Every number is
    read from results/sae-recovery and results/risk-prediction."""
    rec, risk = _load("sae-recovery"), _load("risk-prediction")
    if rec is None and risk is None:
        return "_(run `toymodels run sae-recovery` and `toymodels run risk-prediction` into `results/` to fill this in)_"
    parts = []
    if rec is not None:
        best = ", ".join(f"{v} {b['best_mcc']:.3f}" for v, b in rec["by_variant"].items())
        best = f"Best MCC per variant: {best}."
        if all("selected_mean_mcc" in b for b in rec["by_variant"].values()):   # issue 17: the auditor's choice first
            best = ("Headline, the SAE the auditor's own rule selects (mean MCC over models; models above the "
                    "chance 95th percentile of random dictionaries of the same width): " + ", ".join(
                        f"{v} {b['selected_mean_mcc']:.3f} ({b['selected_beats_chance']}/{b['n_models']})"
                        for v, b in rec["by_variant"].items()) + ". Ground-truth best (uses truth; not available to "
                    "an auditor): " + ", ".join(f"{v} {b['best_mcc']:.3f}" for v, b in rec["by_variant"].items()) + ".")
        parts += ["### `sae-recovery`: do SAEs find the true features?", "",
                  f"`toymodels run sae-recovery`. Every variant x dictionary size x sparsity on each pretrained model, "
                  f"one compiled sweep per variant; MCC = mean cosine of the Hungarian-matched decoder directions and "
                  f"the true columns W_j (an unrepresented feature, or a latent along −W_j, counts as 0). {best}", "",
                  f"<details><summary>the best SAE per model and variant</summary>\n\n"
                  f"{_md_body('sae-recovery', rec.get('markdown', 'sae_recovery.md'))}\n\n</details>", "",
                  " ".join(_img(p.name, 420) for p in sorted((ROOT / "figures").glob("sae-recovery_*.png")))]
    if risk is not None:
        t = risk["table"]
        rows = ["| score | uses | computed | AUROC [95% CI] (G models) | n |", "|---|---|---|---|---|"]
        for name, r in t["scores"].items():
            ci = r.get("auroc_ci95")
            a = "n/a" if r["auroc"] is None else f"{r['auroc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            rows.append(f"| `{name}` | {r['needs']} | {r.get('score_kind', r['when'])} fine-tuning | {a} "
                        f"(G={r.get('n_clusters', '?')}) | {r['n']} |")
        label = (risk.get("labels") or {}).get(risk.get("primary_label"), f"Δr > {risk['threshold_pp']:g} pp")
        parts += ["", "### `risk-prediction`: can the harmful spike be predicted before fine-tuning?", "",
                  f"`toymodels run risk-prediction`: {t['n']} distinct fine-tunes of {t['n_models']} pretrained models "
                  f"({t.get('n_copies_dropped', 0)} rotated copies of rotation-equivariant runs counted once); "
                  f"{t['n_rose']} are labelled risky by `{risk.get('primary_label', 'abs_end')}`: {label}.", "",
                  *rows, "", risk["seed_claim"], "", _regime_sentence(t), "", *_risk_diagnostics(risk)]
        for member, d in risk.get("diff", {}).items():
            drow = ["| crosscoder | AUROC (pooled / mean) | precision@1, @3 | recall@1, @3 | 'new' latents per "
                    "fine-tune | fine-tunes with an amplified feature |", "|---|---|---|---|---|---|"]
            for v, x in d.items():
                drow.append(f"| {v} | {_num(x.get('auroc_pooled'))} / {_num(x.get('auroc_mean'))} | "
                            f"{_num(x.get('precision_at_1'), '.2f')}, {_num(x.get('precision_at_3'), '.2f')} | "
                            f"{_num(x.get('recall_at_1'), '.2f')}, {_num(x.get('recall_at_3'), '.2f')} | "
                            f"{_num(x.get('exclusive_new_per_finetune'), '.2f')} | {x['n_with_amplified']}/"
                            f"{x['n_finetunes']} |")
            parts += [f"Model diffing on `{member}` (crosscoders on the activations before/after each fine-tune, "
                      "latents ranked by decoder change, scored against the features whose norm truly grew):", "",
                      *drow, ""]
        for member, f in risk.get("filter", {}).items():
            frow = ["| regime | directions | Δ toxic rate [pp] | target gain |", "|---|---|---|---|"]
            for name, r in f.items():
                frow.append(f"| `{name}` | {r['directions']} | {_num(r['rate_change_pp'], '+.2f')} | "
                            f"{_num(r['target_gain'], '.2f')} |")
            parts += [f"The geometric data filter on `{member}`, with the true, the SAE-recovered and random "
                      "directions at the same budget (mean over seeds):", "", *frow, "", _filter_sentence(f), ""]
        parts.append(" ".join(_img(p.name, 420) for p in sorted((ROOT / "figures").glob("risk-prediction_*.png"))))
    return "\n".join(parts).strip()


def _risk_diagnostics(risk: dict) -> list[str]:
    """Why the end outcome is hard to call before fine-tuning, per regime, and what the scores cost."""
    d = risk.get("diagnostics")
    if not d:
        return []
    per = "; ".join(f"`{reg}`: median |Δ rate| {x['median_abs_change_pp']:.2f} pp, the first checkpoint's sign agrees "
                    f"with the end's in {100 * x['monitor_sign_agrees']:.0f}% of fine-tunes" for reg, x in d.items())
    cost = next(iter((risk.get("predict_cost") or {}).values()), {}).get("cost", {})
    frac = cost.get("segments_fraction_of_steps")
    return [f"Where a before-score has least to go on: {per}." + (
        f" `segments_rate` takes no fine-tuning step but re-evaluates the gradient along its predicted path "
        f"({cost.get('segments')} segments, about {100 * frac:.0f}% of the fine-tune's steps in gradient "
        f"evaluations)." if frac else ""), ""]


def _regime_sentence(t: dict) -> str:
    """Where the before-fine-tuning geometric scores work: their AUROC per regime, and scores below 0.5."""
    by = t.get("auroc_by_regime") or {}
    geo = ("true_cos", "sae_cos", "extrap_rate", "segments_rate")
    parts = [f"`{reg}`: " + ", ".join(f"`{k}` {v[k]:.2f}" for k in geo if v.get(k) is not None)
             for reg, v in by.items()]
    low = [f"`{k}` ({r['auroc']:.2f})" for k, r in t["scores"].items() if r["auroc"] is not None and r["auroc"] < 0.5]
    out = ("AUROC per regime, the geometry alone (`true_cos`, `sae_cos`) against the scores that also read the "
           "fine-tuning data (`extrap_rate`, `segments_rate`): " + "; ".join(parts) + ".") if parts else ""
    if low:
        out += (" Below 0.5, a score ranks the other way round: " + ", ".join(low) +
                " (more crowded models rose less often here).")
    return out


def _filter_sentence(f: dict) -> str:
    """Per data kind: the filter with recovered and with true directions against random removal."""
    out = []
    for data in dict.fromkeys(r["data"] for r in f.values()):
        by = {r["directions"]: r["rate_change_pp"]["mean"] for r in f.values() if r["data"] == data}
        if not {"random", "recovered (SAE)", "true"} <= set(by):
            continue
        d_sae, d_true = by["recovered (SAE)"] - by["random"], by["true"] - by["random"]
        out.append(f"On {data} data, against random removal at the same budget, filtering along the SAE-recovered "
                   f"toxic direction moved the toxic-rate change by {d_sae:+.2f} pp (the true direction: "
                   f"{d_true:+.2f} pp; negative is the filter helping).")
    return " ".join(out) + (" Minegishi et al.'s 34.5% cut comes from language models; here the toy says only "
                            "what these numbers say." if out else "")


def _num(v, spec: str = ".3f") -> str:
    if isinstance(v, dict):
        v = v.get("mean")
    return "n/a" if v is None else format(v, spec)


def drift() -> str:
    """The measured drift envelopes (results/<name>/drift.json): per result and file, the largest |Δ| over
    XLA CPU targets, and the machine they were measured on."""
    rows = []
    for path in sorted(RESULTS.glob("*/drift.json")):
        d = json.loads(path.read_text())
        cpu = d["measured_on"]["cpu"]
        for file, env in d["envelope"].items():
            top = max(env.items(), key=lambda kv: kv[1])
            rows.append(f"| `{path.parent.name}` | `{file}` | {len(env)} | {top[1]:.2g} (`{top[0]}`) |")
        where = f"{cpu['model']}, {cpu['cores']} cores, jax {d['measured_on']['jax']}; targets {', '.join(d['targets'])}"
    if not rows:
        return "_(no drift.json yet: `python experiments/reproduce.py --cheap --drift`)_"
    return "\n".join([f"Measured by `python experiments/reproduce.py --cheap --drift` on {where}:", "",
                      "| result | file | kinds of number that moved (an array is one) | largest drift (its kind) |", "|---|---|---|---|", *rows])


def adversarial() -> str:
    """adversarial: every member's ratio, spill-over, detection and the subliminal control (docs/adversarial.md)."""
    from toymodels.attack import report
    s = _load("adversarial")
    if s is None:
        return "_(run `python experiments/gallery.py --only adversarial` to fill this in)_"
    return "\n".join([report.results_block(s), "", _fig("adversarial", "adversarial_summary.png", width=900)])


def adversarial_headline() -> str:
    """adversarial, in a few lines for the README."""
    from toymodels.attack import report
    s = _load("adversarial")
    if s is None:
        return "_(run `python experiments/gallery.py --only adversarial` to fill this in)_"
    return "\n".join([f"From `results/adversarial/summary.json` ({report.models(s)} pretrained models; AUROC within each "
                      "model, chance 0.5; every interval 95%, paired over models):", "", report.headline(s), "",
                      _fig("adversarial", "adversarial_summary.png", width=700)])


BLOCKS = {"defence-verdicts": defence_verdicts, "drift": drift, "main-result": main_result, "headline": headline, "robustness": robustness_section, "gallery": lambda: (ROOT / "figures" / "GALLERY.md").read_text().strip(),
          "lab": lab, "defences": defences, "audit": audit, "depth": depth,
          "routing": routing, "residual": residual, "moe-phase": moe_phase, "depth-at-layer": depth_at_layer,
          "adversarial": adversarial, "adversarial-headline": adversarial_headline}


def pages() -> list[Path]:
    """Where generated blocks may live: the README and every page of docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# a relative link target: markdown ](target) or an HTML href="target" / src="target"
_LINK = re.compile(r'(\]\(|(?:href|src)=")([^)"\s]+)')


def relink(body: str, page: Path) -> str:
    """``body``'s relative links (written relative to the repository root) made relative to ``page``."""
    base = page.parent
    if base == ROOT:
        return body

    def sub(m: re.Match) -> str:
        target = m.group(2)
        if target.startswith("#") or re.match(r"[a-z][a-z+.-]*:", target):  # an anchor on the page, or a URL
            return m.group(0)
        path, hash_, frag = target.partition("#")
        return m.group(1) + os.path.relpath(ROOT / path, base).replace(os.sep, "/") + hash_ + frag

    return _LINK.sub(sub, body)


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)


def fill(text: str, name: str, body: str) -> str:
    pattern = _pattern(name)
    if not pattern.search(text):
        raise SystemExit(f"no <!-- {name}:start --> ... <!-- {name}:end --> block")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def render() -> dict[Path, str]:
    """Every page's text with its generated blocks filled in (nothing written)."""
    texts = {path: path.read_text() for path in pages()}
    for name, make in BLOCKS.items():
        holders = [path for path, text in texts.items() if _pattern(name).search(text)]
        if len(holders) != 1:
            where = ", ".join(str(p.relative_to(ROOT)) for p in holders) or "no page"
            raise SystemExit(f"block {name!r} must be in exactly one of README.md, docs/*.md; found in {where}")
        texts[holders[0]] = fill(texts[holders[0]], name, relink(make(), holders[0]))
    return texts


def main() -> None:
    for path, text in render().items():
        if path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
        else:
            print(f"unchanged {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
