"""Figures: from arrays (:mod:`.arrays`, a Figure back) and from saved runs (the registered figures of
:mod:`.tms`, :mod:`.lab`, :mod:`.defences`, :mod:`.robustness`, drawn by :func:`draw`).

Figures drawn from a run read only its saved files (``config.json``, ``summary.json``, ``weights*.npz``,
``metrics.jsonl``), never live training state, so ``toymodels plot RUN_DIR`` redraws them. Files are named
``<config name>_<figure>.png`` and titled with the config they came from. Nothing here changes
matplotlib's backend or pyplot's state (:mod:`.registry`).
"""

from __future__ import annotations

from pathlib import Path

from .. import faults
from ..errors import ConfigError, RunFileError
from ..io import runs
from . import adversarial, audit, defences, depth, lab, moe, residual, robustness, tms  # noqa: F401  (register their figures)
from .arrays import plot_features_in_2d, plot_finetune_2d, plot_loss
from .registry import FIGURES, SUITE_FIGURES, figure, new_figure, run_label, save, suite_figure

__all__ = ["FIGURES", "SUITE_FIGURES", "draw", "figure", "new_figure", "plot_features_in_2d", "plot_finetune_2d",
           "plot_loss", "read_suite", "run_label", "save", "suite_figure"]


def draw(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw every figure the run's config (or suite) asks for into ``run_dir/figures`` (or out_dir).

    Saved files that are missing, corrupt or not what toymodels writes are a one-line
    :class:`~toymodels.errors.RunFileError` naming the file (:func:`toymodels.io.runs.load`), raised before
    any figure is written."""
    run_dir = Path(run_dir)
    if (run_dir / "suite.json").exists():
        suite = read_suite(run_dir / "suite.json")
        members = [runs.load(run_dir / m) for m in suite["members"]]
        out = Path(out_dir) if out_dir else run_dir / "figures"
        paths = [p for m in members for p in draw(m.path, out if out_dir else None)]
        for name in suite["plots"]:
            fn = SUITE_FIGURES.get_or_raise(name, field="plots", where=f"in {run_dir / 'suite.json'}")
            paths += _drawn(fn, run_dir / "suite.json", name, members, suite, out)
        return paths
    run = runs.load(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "figures"
    paths = []
    for name in run.config.plots:
        fn = FIGURES.get_or_raise(name, field="plots", where=f"in {run_dir / 'config.json'}")
        paths += _drawn(fn, run_dir, name, run, out)
        faults.point("draw")  # some figures drawn, not all (a kill point for the resume test)
    return paths


def read_suite(path: Path) -> dict:
    """suite.json, checked: member names are plain directory names, plots a list of names."""
    suite = runs.read_json(path, path.parent)
    ok = (isinstance(suite, dict) and isinstance(suite.get("members"), list) and isinstance(suite.get("plots"), list)
          and all(isinstance(m, str) and m not in ("", ".", "..") and "/" not in m and "\\" not in m
                  for m in suite["members"])
          and all(isinstance(x, str) for x in suite["plots"]))
    if not ok:
        raise RunFileError(path, "is not a toymodels suite.json (needs 'members', a list of member directory "
                                 "names, and 'plots', a list of figure names)")
    for m in suite["members"]:   # a member that is a link would be read (and drawn into) outside the suite
        if (path.parent / m).is_symlink():
            raise RunFileError(path.parent / m, "is a symbolic link; toymodels does not follow links in a run "
                                                "directory")
    return suite


def _drawn(fn, where: Path, name: str, *args) -> list[Path]:
    """``fn(*args)``; saved numbers of the wrong shape or kind (hand-edited or foreign files that passed
    the loader's checks) are a one-line RunFileError naming the run and the figure."""
    try:
        return fn(*args)
    except ConfigError:
        raise
    except (KeyError, IndexError, ValueError, TypeError, OverflowError, StopIteration, ZeroDivisionError,
            AttributeError, RecursionError) as e:
        raise RunFileError(where, f"figure {name!r} cannot be drawn from the saved files ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:120] if str(e) else ''}); they are not what "
                                  f"toymodels writes") from None
