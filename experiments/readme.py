"""Fill the README's generated blocks from committed results, so no number in it is typed by hand.

    python experiments/readme.py          # rewrites the blocks between <!-- NAME:start --> and <!-- NAME:end -->

Blocks: ``main-result`` (the analogy-15deg table, as ``toymodels run analogy-15deg`` prints it),
``gallery`` (figures/GALLERY.md, written by experiments/gallery.py), and ``lab`` / ``defences`` (one
paragraph per preset with its headline numbers read from ``results/<preset>/summary.json`` and the
markdown tables the presets write).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from toymodels.finetune import format_table

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


def angle_sweep() -> str:
    s = _load("angle-sweep")
    if s is None:
        return ""
    rows = ["| regime | Δ toxic pre-activation vs cos θ (Pearson / Spearman) | Δ toxic output rate vs cos θ (Pearson / Spearman) | n |",
            "|---|---|---|---|"]
    for reg, r in s["finetune"]["by_regime"].items():
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
                      f"{s['bootstrap']['n_resamples']} resamples. Full table: "
                      "[`results/overlap-table/overlap_table.md`](results/overlap-table/overlap_table.md).", "",
                      *rows, "", _fig("overlap-table", "overlap_scatter.png", width=700)])


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


BLOCKS = {"main-result": main_result, "gallery": lambda: (ROOT / "figures" / "GALLERY.md").read_text().strip(),
          "lab": lab, "defences": defences}


def fill(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {name}:start --> ... <!-- {name}:end --> block")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main() -> None:
    path = ROOT / "README.md"
    text = path.read_text()
    for name, make in BLOCKS.items():
        text = fill(text, name, make())
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
