"""Figures: from arrays (:mod:`.arrays`, a Figure back) and from saved runs (the registered figures of
:mod:`.tms`, :mod:`.lab`, :mod:`.defences`, :mod:`.robustness`, drawn by :func:`draw`).

Figures drawn from a run read only its saved files (``config.json``, ``summary.json``, ``weights*.npz``,
``metrics.jsonl``), never live training state, so ``toymodels plot RUN_DIR`` redraws them. Files are named
``<config name>_<figure>.png`` and titled with the config they came from. Nothing here changes
matplotlib's backend or pyplot's state (:mod:`.registry`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..io import runs
from . import defences, lab, robustness, tms  # noqa: F401  (register their figures)
from .arrays import plot_features_in_2d, plot_finetune_2d, plot_loss
from .registry import FIGURES, SUITE_FIGURES, figure, new_figure, run_label, save, suite_figure

__all__ = ["FIGURES", "SUITE_FIGURES", "draw", "figure", "new_figure", "plot_features_in_2d", "plot_finetune_2d",
           "plot_loss", "run_label", "save", "suite_figure"]


def draw(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw every figure the run's config (or suite) asks for into ``run_dir/figures`` (or out_dir)."""
    run_dir = Path(run_dir)
    if (run_dir / "suite.json").exists():
        suite = json.loads((run_dir / "suite.json").read_text())
        members = [runs.load(run_dir / m) for m in suite["members"]]
        out = Path(out_dir) if out_dir else run_dir / "figures"
        paths = [p for m in members for p in draw(m.path, out if out_dir else None)]
        for name in suite["plots"]:
            fn = SUITE_FIGURES.get_or_raise(name, field="plots", where=f"in {run_dir / 'suite.json'}")
            paths += fn(members, suite, out)
        return paths
    run = runs.load(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "figures"
    paths = []
    for name in run.config.plots:
        paths += FIGURES.get_or_raise(name, field="plots", where=f"in {run_dir / 'config.json'}")(run, out)
    return paths
