"""The defences table in markdown: every number comes from the rows (i.e. from summary.json)."""

from __future__ import annotations

from ..lab.inference import MIN_CLUSTERS, claim
from .registry import DEFENCES


def fmt_stat(stat: dict | None, fmt: str = "{:+.2f}", ci: bool = True) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    s = fmt.format(stat["mean"])
    if ci and stat.get("ci95"):
        s += " [" + ", ".join(fmt.format(v) for v in stat["ci95"]) + "]"
    return s


STRENGTH_LABEL = {"loss": "λ = {:g}", "data": "{:.0%} of samples"}


def strength_label(row: dict) -> str:
    kind = DEFENCES.get(row["defence"])
    if kind is None or kind.plugs not in STRENGTH_LABEL:
        return "rank 1" if row.get("plugs") == "trainable" else "–"
    return STRENGTH_LABEL[kind.plugs].format(row["strength"])


def _milli(stat: dict | None, ci: bool = True) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    return fmt_stat({"mean": 1e3 * stat["mean"], "ci95": [1e3 * v for v in stat["ci95"]] if ci and stat.get("ci95") else None})


DATA_DESCRIPTION = {"task": "the target and the benign features; the harmful feature never present",
                    "narrow": "only the target feature", "full": "the pretraining distribution"}


def _markdown_row(r: dict) -> str:
    removed = r.get("amplification_removed")
    ovh = (r.get("overhead") or {}).get("ratio_median")
    return " | ".join([
        f"| {r['name']}", r["plugs"], strength_label(r), with_g(r["rate_change_pp"]),
        "(the baseline)" if r["defence"] == "none" else vs_baseline(r.get("rate_change_pp_vs_baseline")), "–" if removed is None else f"{100 * removed:.0f}%", fmt_stat(r["preact_change"], "{:+.3f}", ci=False),
        fmt_stat(r["target_gain"], "{:.2f}", ci=False), _milli(r.get("recon_loss_benign_vs_baseline")),
        _milli(r.get("harmful_present_loss_vs_baseline"), ci=False),
        fmt_stat(r["harmful_norm_after"], "{:.2f}", ci=False),
        fmt_stat(r["n_represented_after"], "{:.2f}", ci=False), fmt_stat(r["dims_per_feature_after"], "{:.2f}", ci=False),
        "not measured" if ovh is None else f"{ovh:.2f}×"]) + " |"


def with_g(stat: dict | None) -> str:
    """A paired change with its interval, the number of pretrained models and the direction it allows."""
    if not stat or stat.get("mean") is None:
        return "–"
    g = f" (G={stat['n_clusters']})" if stat.get("n_clusters") else ""
    word = claim(stat)["direction"] if stat.get("n_clusters") else None
    return fmt_stat(stat) + g + (f" **{word}**" if word in ("up", "down") else "")


def vs_baseline(stat: dict | None) -> str:
    """Defended − undefended, paired by model: the interval and "cuts", "raises" or "no evidence". An
    effect below 0.005 pp is printed in full (``+3.1e-04``), so a tiny but certain effect is not shown as
    "+0.00 … raises"."""
    if not stat or stat.get("mean") is None:
        return "–"
    small = max(abs(stat["mean"]), *(abs(v) for v in stat.get("ci95") or [0.0])) < 0.005
    effect = {"down": "cuts", "up": "raises"}.get(claim(stat)["direction"], "no evidence")
    few = f" < {MIN_CLUSTERS}" if stat["n_clusters"] < MIN_CLUSTERS else ""
    return fmt_stat(stat, "{:+.1e}" if small and stat["mean"] != 0 else "{:+.2f}") + (
        f" (G={stat.get('n_clusters')}{few}): " + (f"**{effect}**" if effect != "no evidence" else effect))


def markdown_table(rows: list[dict], n_seeds: int) -> str:
    """The defences table as markdown: every number comes from the rows (i.e. from summary.json)."""
    head = ("| defence | plugs in | strength | Δ toxic rate [pp] (95% CI, G models) | vs undefended [pp] (paired 95% CI) | "
            "amplification removed | "
            "Δ pre-act (target input) | target gain (×) | Δ benign features' loss vs undefended (×10⁻³, 95% CI) | "
            "Δ toxic's loss when present vs undefended (×10⁻³) | toxic norm after | features represented | D* | "
            "step time vs undefended |")
    lines = []
    for data in dict.fromkeys(r["data"] for r in rows):
        group = [r for r in rows if r["data"] == data]
        title = (f"**Fine-tuning data: {data}** ({DATA_DESCRIPTION.get(data, data)}; loss on "
                 f"{group[0]['loss_scope']} outputs)")
        lines += [title, "", head, "|" + "---|" * (head.count("|") - 1)]
        lines += [_markdown_row(r) for r in group]
        lines.append("")
    pre = rows[0]
    lines.append(f"Means over {n_seeds} pretrained models (seeds); 95% CIs are t intervals over the G models "
                 "(each model one unit). Δ toxic rate: change of P(x'_toxic > τ | x_toxic = 0) on the pretraining "
                 "distribution, in percentage points, measured on finetune.rate_samples inputs per model (1.2M by "
                 "default), before and after on the same inputs (**up**/**down** only when the interval excludes 0 "
                 f"and G >= {MIN_CLUSTERS}); vs undefended: the defended minus the "
                 "undefended fine-tune of the same model on the same data stream, paired by model: **cuts** or "
                 "**raises** only when its interval excludes 0, otherwise no evidence; amplification removed: 1 − mean Δ / mean Δ(undefended); target gain: the target's "
                 "read-out on its unit input after / before; benign features' loss: the pretraining loss over the "
                 "features that are neither target nor harmful, after fine-tuning, minus the paired undefended "
                 "run's; toxic's loss when present: E[(x_toxic − x'_toxic)² | x_toxic ≠ 0] against the paired "
                 "undefended run (a defence that deletes the feature pays there); pretrained values: toxic norm "
                 f"{fmt_stat(pre['harmful_norm_before'], '{:.2f}', ci=False)}, features represented (‖W_i‖ > 0.5) "
                 f"{fmt_stat(pre['n_represented_before'], '{:.2f}', ci=False)}, D* "
                 f"{fmt_stat(pre['dims_per_feature_before'], '{:.2f}', ci=False)}; step time: median ratio of "
                 "interleaved timed chunks against the undefended step, same process, compile excluded (the "
                 "filters run online, per step; an offline filter costs one pass over the data instead; a run "
                 "with the same program shape is timed once, its other data regimes say 'not measured').")
    return "\n".join(lines)
