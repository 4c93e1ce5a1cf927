"""Rebuild the paper-reproduction gallery: figures/ and results/ from the TMS presets.

    python experiments/gallery.py                                   # rerun every preset (slow: ~60 min)
    python experiments/gallery.py tms-intro=runs/tms-intro ...      # use these finished run directories
    python experiments/gallery.py --only tms-intro tms-phase
    python experiments/gallery.py --reuse                           # keep finished runs/<preset> as they are
    python experiments/gallery.py --redraw                          # figures/ from committed results/ only

For each preset it runs the preset afresh into ``runs/<preset>`` (replacing what a previous gallery run left
there; ``--reuse`` keeps a finished one, and PRESET=RUN_DIR names one), so ``results/`` never mixes code
versions; then replaces ``results/<preset>/`` with the run's result files (``toymodels plot
results/<preset>`` redraws the figures from them), draws its figures from those files alone into
``figures/<preset>_<figure>.png``,
and writes the markdown table ``figures/GALLERY.md`` over every preset in ``results/`` (paths relative to
the repository root, for the README). ``python experiments/reproduce.py`` then checks that the current code
reproduces every committed result.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from toymodels import experiment, plots, presets
from toymodels.io import runs

ROOT = Path(__file__).resolve().parent.parent
TMS_PRESETS = ("tms-intro", "tms-geometry", "tms-phase", "tms-correlated", "tms-privileged")
LAB_PRESETS = ("analogy-15deg", "robustness", "angle-sweep", "overlap-table", "crowding",
               "defences-table", "regularisation-pareto", "regularisation-pretrain", "regularisation-cost")
AUDIT_PRESETS = ("sae-recovery", "risk-prediction")
FAMILY_PRESETS = ("deep", "deep-at-layer", "moe-superposition", "moe-routing", "residual-mlp")   # beyond one layer (issue 18)
ATTACK_PRESETS = ("adversarial",)   # benign-looking data that breaks things (issue 19)
PRESETS = TMS_PRESETS + LAB_PRESETS + AUDIT_PRESETS + FAMILY_PRESETS + ATTACK_PRESETS
SMALL = 2_000_000  # bytes: optional result files above this stay out of results/
ESSENTIAL = ("config.json", "summary.json", "weights.npz", "env.json")  # always copied: a run needs them
METRICS_FIGURES = ("loss", "defence_curves", "amplification_curves", "finetune_gif")  # drawn from metrics.jsonl
RESULT_FILES = ESSENTIAL + ("weights_pretrained.npz", "weights_finetuned.npz", "weights_trajectory.npz",
                            "weights_sae.npz", "audit.md")


def finished(run_dir: Path) -> bool:
    if (run_dir / "suite.json").exists():
        suite = json.loads((run_dir / "suite.json").read_text())
        return all(finished(run_dir / m) for m in suite["members"])
    return (run_dir / "summary.json").exists()


def members(run_dir: Path) -> list[Path]:
    """The run directories holding summary.json: the run itself, or each member of a suite."""
    if (run_dir / "suite.json").exists():
        return [run_dir / m for m in json.loads((run_dir / "suite.json").read_text())["members"]]
    return [run_dir]


def ensure_run(name: str, run_dir: Path | None, reuse: bool = False) -> Path:
    """A finished run of preset ``name``: ``run_dir`` if given, else a fresh run into runs/<name>
    (a finished one there is kept with ``reuse``)."""
    if run_dir is not None:
        if not finished(run_dir):
            raise SystemExit(f"{name}={run_dir}: not a finished run directory")
        return run_dir
    run_dir = ROOT / "runs" / name
    if reuse and finished(run_dir):
        return run_dir
    if run_dir.exists():
        print(f"{name}: replacing the previous gallery run in {run_dir}")
        shutil.rmtree(run_dir)
    cfg = presets.get(name)
    run_dir = runs.prepare_run_dir(run_dir)
    (experiment.run_suite if isinstance(cfg, presets.Suite) else experiment.run)(cfg, run_dir)
    return run_dir


def copy_results(name: str, run_dir: Path) -> None:
    """Copy small result files into results/<name>/ and every figure into figures/<name>_<figure>.png."""
    dest = ROOT / "results" / name
    if dest.exists():  # results/<name> is generated: nothing of an older run may stay behind
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)
    # suite files and the markdown tables a preset writes next to its results
    for f in [run_dir / "suite.json", *sorted(run_dir.glob("*.md"))] + (
            [run_dir / "summary.json"] if (run_dir / "suite.json").exists() else []):
        if f.exists():
            shutil.copy2(f, dest / f.name)
    for m in members(run_dir):
        out = dest / m.relative_to(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        # metrics.jsonl whatever its size when a figure is drawn from it: every committed figure redraws from results/
        reads_metrics = set(runs.load(m).config.plots) & set(METRICS_FIGURES)
        needed = ESSENTIAL + (("metrics.jsonl",) if reads_metrics else ())
        for f in dict.fromkeys(RESULT_FILES + needed):
            if (m / f).exists() and (f in needed or (m / f).stat().st_size < SMALL):
                shutil.copy2(m / f, out / f)
    redraw(name)  # figures/ is drawn from results/ alone, so every committed figure redraws from what is committed


def preset_figures(name: str) -> list[Path]:
    """The files in figures/ that belong to preset ``name`` (``<name>_*`` or ``<name>-<member>_*``), not to a
    preset whose name extends it."""
    longer = [q for q in PRESETS if q != name and q.startswith(name)]
    return sorted(p for p in (ROOT / "figures").iterdir()
                  if p.suffix in (".png", ".gif") and p.name.startswith(name) and p.name[len(name)] in "_-"
                  and not any(p.name.startswith(q) and p.name[len(q)] in "_-" for q in longer))


def copy_figures(name: str, pngs: list[Path]) -> None:
    """figures/<name>_<figure>.png; a suite member's figures get the preset name in front."""
    for png in pngs:
        stem = png.stem if png.stem.startswith(name) else f"{name}_{png.stem}"
        shutil.copy2(png, ROOT / "figures" / f"{stem}{png.suffix}")


def redraw(name: str) -> None:
    """Replace a preset's figures in figures/ by those drawn from results/<name>/ alone (``toymodels plot``)."""
    for old in preset_figures(name):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        copy_figures(name, plots.draw(ROOT / "results" / name, tmp))


def runtime(result_dir: Path) -> tuple[float, float]:
    """(train seconds, wall seconds) summed over the run's members, from summary.json."""
    s = [json.loads((m / "summary.json").read_text()) for m in members(result_dir)]
    return sum(x["train_seconds"] for x in s), sum(x["wall_seconds"] for x in s)


def gallery() -> str:
    """The markdown table over every preset with committed results (paths relative to the repo root)."""
    rows, env = [], None
    for name in TMS_PRESETS:
        res = ROOT / "results" / name
        if not finished(res):
            continue
        env = env or json.loads((members(res)[0] / "env.json").read_text())
        wall_s = runtime(res)[1]
        meta = res / "suite.json" if (res / "suite.json").exists() else res / "config.json"
        shown = [p for p in json.loads(meta.read_text())["plots"] if p != "loss"]  # the suite's own figures
        figs = [ROOT / "figures" / f"{name}_{p}.png" for p in shown]
        thumbs = " ".join(f'<a href="figures/{f.name}"><img src="figures/{f.name}" width="200"></a>' for f in figs)
        rows.append(f"| `{name}` | {presets.PRESETS[name].summary} | `toymodels run {name}` | {thumbs} | "
                    f"{wall_s:.0f} s |")
    note = (f"\nCPU runtime: wall-clock seconds of the whole run (compilation included; {{}} s of it training), "
            f"from each run's `summary.json`, on a {env['cpu_count']}-core CPU, jax {env['jax']}.\n" if env else "")
    head = "| preset | reproduces | command | figures | CPU runtime |\n|---|---|---|---|---|\n"
    train_total = sum(runtime(ROOT / "results" / n)[0] for n in TMS_PRESETS if finished(ROOT / "results" / n))
    return head + "\n".join(rows) + "\n" + note.format(f"{train_total:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("given", nargs="*", metavar="PRESET=RUN_DIR", help="finished run directories to reuse")
    ap.add_argument("--only", nargs="+", choices=PRESETS, default=PRESETS)
    ap.add_argument("--redraw", action="store_true", help="only redraw figures/ from results/, no training")
    ap.add_argument("--reuse", action="store_true", help="keep finished runs/<preset> instead of rerunning")
    args = ap.parse_args()
    given = {k: Path(v) for k, v in (a.split("=", 1) for a in args.given)}
    (ROOT / "figures").mkdir(exist_ok=True)
    for name in args.only:
        if args.redraw:
            redraw(name)
            continue
        run_dir = ensure_run(name, given.get(name), reuse=args.reuse)
        copy_results(name, run_dir)
        print(f"{name}: {run_dir} -> results/{name}/")
    (ROOT / "figures" / "GALLERY.md").write_text(gallery())
    print(f"wrote {ROOT / 'figures' / 'GALLERY.md'}")


if __name__ == "__main__":
    main()
