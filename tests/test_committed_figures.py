"""figures/ comes only from results/: what ``toymodels plot results/<preset>`` draws is exactly the set of
committed figures of that preset (experiments/gallery.py draws them from results/ and names them
``<preset>_<figure>`` or ``<member>_<figure>``).

The cheap presets run in the default suite (a few seconds); every preset runs with ``-m slow`` (~45 s).
Names are compared, not bytes: PNG bytes are stable on one machine but not across matplotlib builds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from toymodels import plots, reproduce

ROOT = Path(__file__).resolve().parent.parent


def _gallery():
    spec = importlib.util.spec_from_file_location("gallery", ROOT / "experiments" / "gallery.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GALLERY = _gallery()


def _committed(name: str) -> set[str]:
    """The committed figures of preset ``name`` (the gallery's own rule for which files are the preset's)."""
    return {p.name for p in GALLERY.preset_figures(name)}


def _redrawn(name: str, tmp: Path) -> set[str]:
    out = set()
    for png in map(Path, plots.draw(ROOT / "results" / name, tmp)):
        stem = png.stem if png.stem.startswith(name) else f"{name}_{png.stem}"
        out.add(f"{stem}{png.suffix}")
    return out


def _check(name: str, tmp: Path) -> None:
    if not (ROOT / "results" / name).is_dir():
        pytest.skip(f"results/{name} is not committed")
    committed, redrawn = _committed(name), _redrawn(name, tmp)
    assert committed, f"figures/ holds no figure of {name}"
    assert committed == redrawn, (f"{name}: committed but not drawn from results/: {sorted(committed - redrawn)}; "
                                  f"drawn but not committed: {sorted(redrawn - committed)}")


@pytest.mark.parametrize("name", reproduce.CHEAP)
def test_cheap_presets_figures_redraw_from_results(name, tmp_path):
    _check(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [p for p in GALLERY.PRESETS if p not in reproduce.CHEAP])
def test_every_committed_figure_redraws_from_results(name, tmp_path):
    _check(name, tmp_path)


def test_every_committed_figure_belongs_to_a_preset():
    """No figure in figures/ outside the gallery's presets (a renamed or dropped preset leaves none behind)."""
    figs = {p.name for ext in ("png", "gif") for p in (ROOT / "figures").glob(f"*.{ext}")}
    owned = set().union(*(_committed(n) for n in GALLERY.PRESETS))
    assert figs - owned == set()
