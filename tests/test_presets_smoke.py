"""Every registered preset runs end to end from the CLI with tiny overrides and writes its files and
figures. Presets are discovered from ``toymodels.presets.PRESETS``, so presets added later are
covered automatically.

Tiny overrides are found generically: every ``steps``, ``batch_size``, ``eval_batch_size`` and
``restarts`` field of every config section that the preset uses (``train``, ``data``, and optional
sections such as ``finetune``) is shrunk; ``toymodels.presets.SMOKE_OVERRIDES[name]`` (dotted keys)
is applied on top, for presets that need something else to stay small.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toymodels import cli, presets
from toymodels.config import Config

TINY_FIELDS = {"steps": 20, "batch_size": 64, "eval_batch_size": 256, "restarts": 1}


def _tiny_keys(d: dict, prefix: str = "") -> dict[str, object]:
    """Dotted keys of every TINY_FIELDS field present in the config dict (sections that are None
    are absent, and stay absent)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_tiny_keys(v, f"{prefix}{k}."))
        elif prefix and k in TINY_FIELDS and isinstance(v, int) and not isinstance(v, bool):
            out[prefix + k] = min(v, TINY_FIELDS[k])
    return out


def smoke_overrides(name: str) -> dict[str, object]:
    built = presets.PRESETS[name].build()
    members = built.members if isinstance(built, presets.Suite) else (built,)
    keys = [_tiny_keys(m.to_dict()) for m in members]
    common = {k: v for k, v in keys[0].items() if all(k in ks for ks in keys)}  # a suite applies them to all
    common = {k: min(ks[k] for ks in keys) for k in common}
    return {**common, **getattr(presets, "SMOKE_OVERRIDES", {}).get(name, {})}


def check_config_run(cfg: Config, run_dir: Path) -> None:
    """The files of one finished run, and a non-empty file for every figure its config asks for."""
    for f in ("config.json", "env.json", "metrics.jsonl", "summary.json", "weights.npz"):
        assert (run_dir / f).is_file() and (run_dir / f).stat().st_size > 0, f"{run_dir}: no {f}"
    saved = Config.from_dict(json.loads((run_dir / "config.json").read_text()))
    assert saved.name == cfg.name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["instances"]) == cfg.n_inst
    if cfg.finetune is not None:
        for f in ("weights_pretrained.npz", "weights_finetuned.npz"):
            assert (run_dir / f).is_file(), f"{run_dir}: no {f}"
        assert "finetune" in summary
    check_figures(run_dir / "figures", cfg.plots)


def _is_figure_file(p: Path, name: str) -> bool:
    """``<config name>_<figure>.<ext>``; a figure named after its format (``finetune_gif``) may drop
    that suffix from the stem (``..._finetune.gif``)."""
    base, _, fmt = name.rpartition("_")
    return p.stat().st_size > 0 and (name in p.stem or (fmt == p.suffix[1:] and p.stem.endswith(base)))


def check_figures(fig_dir: Path, names) -> None:
    files = [p for p in fig_dir.iterdir() if p.is_file()] if fig_dir.is_dir() else []
    for name in names:
        hits = [p for p in files if _is_figure_file(p, name)]
        assert hits, f"{fig_dir}: no figure file for {name!r} (have {sorted(p.name for p in files)})"
    for p in files:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p


# The regularisation suites run the defences' machinery (smoke-tested by defences-table in the default suite)
# with their own suite summaries; at ~15 s each they run with -m slow, to keep the default suite near 10 min.
SLOW_SMOKE = {"regularisation-cost", "regularisation-pareto", "regularisation-pretrain"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_SMOKE else n
                                  for n in sorted(presets.PRESETS)])
def test_preset_runs_with_tiny_overrides(name, tmp_path, capsys):
    overrides = smoke_overrides(name)
    assert any(k.endswith("steps") for k in overrides), f"{name}: found no steps field to shrink"
    argv = ["run", name, *(f"{k}={json.dumps(v)}" for k, v in overrides.items()), "--out", str(tmp_path / name),
            "--quiet"]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 0, f"toymodels {' '.join(argv)} exited {code}: {err}"
    run_dir = tmp_path / name
    built = presets.get(name).replace(**overrides)
    if isinstance(built, presets.Suite):
        assert (run_dir / "suite.json").is_file()
        for member in built.members:
            check_config_run(member, run_dir / member.name)
        check_figures(run_dir / "figures", built.plots)
    else:
        check_config_run(built, run_dir)
