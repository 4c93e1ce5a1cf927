"""toymodels command line: list, show, run, plot.

    toymodels list
    toymodels show PRESET|CONFIG.toml [key=value ...]
    toymodels run  PRESET|CONFIG.toml [--out DIR] [--overwrite] [--quiet] [key=value ...]
    toymodels plot RUN_DIR

Overrides are dotted config keys, e.g. train.steps=200 data.batch_size=256 seed=3; values are
read as TOML ([0.1, 0.2], 1e-3, "cosine" or a bare word). A bad value prints one line
naming the field, the value and what is allowed, and exits with code 2. JAX is imported only by the
commands that need it, so --help and list are instant.

The CLI is the only part of toymodels that chooses a matplotlib backend (Agg, for files); the library
leaves a user's session alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, load_toml, parse_override


def _fail(msg: str, code: int = 2) -> int:
    print(f"toymodels: error: {msg}", file=sys.stderr)
    return code


def resolve(target: str, overrides: list[str]):
    """A preset name or a TOML path, with overrides applied: a Config or a Suite."""
    from . import presets

    if target.endswith(".toml") or Path(target).is_file():
        if not Path(target).is_file():
            raise ConfigError("CONFIG", target, "no such TOML file")
        cfg = load_toml(target)
    else:
        cfg = presets.get(target)
    if overrides:
        cfg = cfg.replace(**dict(parse_override(o) for o in overrides))
    return cfg


def check_plots(cfg) -> None:
    """Unknown figure names fail before training, not after it."""
    from . import plots

    for m in getattr(cfg, "members", (cfg,)):
        for name in m.plots:
            if name not in plots.FIGURES:
                raise ConfigError("plots", name, f"unknown figure; known: {', '.join(sorted(plots.FIGURES))}")
    for name in (cfg.plots if hasattr(cfg, "members") else ()):
        if name not in plots.SUITE_FIGURES:
            raise ConfigError("plots", name, f"unknown suite figure; known: {', '.join(sorted(plots.SUITE_FIGURES))}")


def cmd_list(args) -> int:
    from .presets import PRESETS

    width = max(len(n) for n in PRESETS)
    for name, p in PRESETS.items():
        print(f"{name:<{width}}  {p.summary}")
    return 0


def cmd_show(args) -> int:
    cfg = resolve(args.target, args.overrides)
    if hasattr(cfg, "members"):
        print(json.dumps({**cfg.to_dict(), "members": [m.to_dict() for m in cfg.members]}, indent=2))
    else:
        print(json.dumps(cfg.to_dict(), indent=2))
    return 0


def _files_backend() -> None:
    """Figures go to files: the non-interactive Agg backend. Only the CLI sets it (see the docstring)."""
    import matplotlib

    matplotlib.use("Agg")


def cmd_run(args) -> int:
    from .io import runs

    cfg = resolve(args.target, args.overrides)
    check_plots(cfg)
    out = Path(args.out) if args.out else runs.default_run_dir(cfg)
    run_dir = runs.prepare_run_dir(out, overwrite=args.overwrite)
    _files_backend()
    from . import experiment
    from .errors import TrainingDiverged

    echo = (lambda s: None) if args.quiet else print
    try:
        if hasattr(cfg, "members"):
            experiment.run_suite(cfg, run_dir, progress=not args.quiet, echo=echo)
        else:
            experiment.run(cfg, run_dir, progress=not args.quiet, echo=echo)
    except TrainingDiverged as e:
        return _fail(f"{e} Run directory: {run_dir}", code=1)
    return 0


def cmd_plot(args) -> int:
    from . import plots

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        return _fail(f"RUN_DIR={str(run_dir)!r}: no such directory")
    _files_backend()
    try:
        paths = plots.draw(run_dir)
    except FileNotFoundError as e:
        return _fail(str(e))
    for p in paths:
        print(p)
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("toymodels")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="toymodels", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"toymodels {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the presets, one line each").set_defaults(fn=cmd_list)

    p = sub.add_parser("show", help="print a preset's or TOML file's fully resolved config as JSON")
    p.add_argument("target", metavar="PRESET|CONFIG.toml")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("run", help="run a preset or a TOML config",
                       epilog="example: toymodels run tms-intro train.steps=2000 --out runs/quick")
    p.add_argument("target", metavar="PRESET|CONFIG.toml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=200")
    p.add_argument("--out", help="run directory (default: runs/<name>-seed<seed>-<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="replace the run in a non-empty --out (its files and figures are deleted first)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("plot", help="redraw a run's figures from its saved results")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(fn=cmd_plot)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    # Overrides (key=value) may stand anywhere after the target, also between options.
    args, extra = ap.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        ap.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    try:
        return args.fn(args)
    except ConfigError as e:
        return _fail(str(e))
    except FileExistsError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted; files written so far are kept", code=130)


if __name__ == "__main__":
    sys.exit(main())
