"""The figure registries and the pieces every figure shares, without pyplot.

Figures are ``matplotlib.figure.Figure`` objects on their own Agg canvas, made by :data:`plt` (a small
stand-in for the few pyplot calls the figures use). Nothing here touches pyplot's global state or the
user's backend, so importing or drawing in a notebook leaves ``matplotlib.get_backend()`` as it was;
only the CLI chooses a backend. The Agg canvas with pinned metadata gives byte-stable PNGs.

A file-writing figure is ``fn(run, out_dir) -> [paths]`` registered with :func:`figure` (or, for a
suite, ``fn(members, suite, out_dir)`` with :func:`suite_figure`); it reads only the saved files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.lines
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import runs
from ..registry import Registry

PNG_META = {"Software": None}  # no matplotlib version stamp: byte-stable files
FIGURES: Registry[Callable] = Registry("figure")
SUITE_FIGURES: Registry[Callable] = Registry("suite figure")


def figure(name: str):
    """Decorator: register ``fn(run, out_dir) -> [paths]`` as the figure ``name`` (a config's ``plots``)."""
    return FIGURES.register(name)


def suite_figure(name: str):
    """Decorator: register ``fn(members, suite, out_dir) -> [paths]`` as the suite figure ``name``."""
    return SUITE_FIGURES.register(name)


def new_figure(figsize=None, **kwargs) -> Figure:
    """A Figure on its own Agg canvas (not pyplot's): no global state, no backend."""
    fig = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(fig)
    return fig


class _Figures:
    """The pyplot calls the figures use, as pyplot-free equivalents (see the module docstring)."""

    Line2D = matplotlib.lines.Line2D

    @staticmethod
    def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
        fig = new_figure(figsize)
        return fig, fig.subplots(nrows, ncols, **kwargs)

    @staticmethod
    def figure(figsize=None, **kwargs) -> Figure:
        return new_figure(figsize, **kwargs)

    @staticmethod
    def get_cmap(name: str):
        return matplotlib.colormaps[name]

    @staticmethod
    def close(fig) -> None:  # a Figure without pyplot is freed with its last reference
        return None


plt = _Figures()


def save(fig: Figure, out_dir: Path, stem: str) -> Path:
    """Write ``out_dir/<stem>.png`` (dpi 110, tight, no version stamp) and return its path. Written to a
    temporary name and renamed (:func:`toymodels.io.files._atomic`), so a run killed while drawing leaves
    no half-written PNG; an open run registers it in its manifest."""
    path = Path(out_dir) / f"{stem}.png"
    return runs._atomic(path, lambda f: fig.savefig(f, format="png", dpi=110, metadata=PNG_META,
                                                      bbox_inches="tight"))


def run_label(run: runs.Run) -> str:
    """A short provenance line for titles: name, model, sizes, steps, seed (and a pretraining penalty)."""
    c = run.config
    pen = ""
    if c.train.penalty_active():
        lam = np.asarray(c.train.penalty_strength, np.float64)
        pen = f" · penalty {c.train.penalty} λ={lam:g}" if lam.ndim == 0 else f" · penalty {c.train.penalty} (λ per instance)"
    return (f"{c.name} · {c.model.kind} n={c.data.n_features} m={c.model.d_hidden} · "
            f"{c.train.steps} steps{pen} · seed {c.seed}")
