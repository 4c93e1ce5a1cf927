"""toymodels command line: list, show, run, plot, audit.

    toymodels list
    toymodels show PRESET|CONFIG.toml|CONFIG.json [key=value ...]
    toymodels run  PRESET|CONFIG.toml|CONFIG.json [--out DIR] [--overwrite | --resume] [--quiet] [key=value ...]
    toymodels plot RUN_DIR [--out DIR]
    toymodels audit RUN_DIR [--sae-run DIR] [--variant NAME] [--target F] [--harmful F ...] [--layer L] [--out DIR]

CONFIG.json is a run's own config.json (or suite.json), or what ``toymodels show`` printed: any run
can be run again from the files it wrote. Overrides are dotted config keys, e.g. train.steps=200 data.batch_size=256 seed=3; values are
read as TOML ([0.1, 0.2], 1e-3, "cosine" or a bare word). Every failure prints one line,
``toymodels: error: <field or file>=<value>: <what is allowed>``, and exits with code 2 (a diverged
loss: code 1; Ctrl-C: 130 and SIGTERM: 143, both leaving the run ``interrupted`` for --resume); the
whole config (the output directory, the source run of ``finetune.from_run``, the memory and compute the
run needs, names and values that become files) is checked before any compute or directory is created. JAX is imported only
by the commands that need it, so --help and list are instant.

The CLI is the only part of toymodels that chooses a matplotlib backend (Agg, for files); the library
leaves a user's session alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from pathlib import Path

# Only the light errors module at import: the config pulls in numpy and scipy (about 2 s on a loaded
# machine), and until main() has installed its signal handlers a Ctrl-C would print a traceback.
from .errors import ConfigError, ConfigWarning, TrainingDiverged


def _fail(msg: str, code: int = 2) -> int:
    print(f"toymodels: error: {msg}", file=sys.stderr)
    return code


def resolve(target: str, overrides: list[str]):
    """A preset name or a TOML path, with overrides applied: a Config or a Suite."""
    return _resolve(target, overrides)[0]


def _resolve(target: str, overrides: list[str]):
    """(Config or Suite, {dotted key: value} the user gave: the overrides and the TOML file's fields)."""
    from . import presets
    from .config import Config, parse_override, read_toml

    if "\x00" in target:
        raise ConfigError("CONFIG", target, "contains a NUL byte; must be a preset name or a TOML file")
    given: dict = {}
    if target.endswith(".json"):
        from .api import load_config_json

        cfg = load_config_json(target)
    elif target.endswith(".toml") or Path(target).is_file():
        if not os.path.lexists(target):
            raise ConfigError("CONFIG", target, "no such TOML file")
        table = read_toml(target)
        for k, v in table.items():
            given.update({f"{k}.{kk}": vv for kk, vv in v.items()} if isinstance(v, dict) else {k: v})
        cfg = Config.from_dict(table)
    else:
        cfg = presets.get(target)
    if overrides:
        pairs = _merge_sections(cfg, dict(parse_override(o) for o in overrides))
        given.update(pairs)
        cfg = cfg.replace(**pairs)
    return cfg, given


def _merge_sections(cfg, pairs: dict) -> dict:
    """``train={steps=50}`` sets train.steps and keeps the section's other fields (it used to replace the
    whole section: the preset's restarts went from 4 to 1, its regimes from 4 to 1)."""
    base = cfg.to_dict() if hasattr(cfg, "to_dict") else {}
    out: dict = {}
    for key, value in pairs.items():
        if "." not in key and isinstance(value, dict) and isinstance(base.get(key), dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def check_plots(cfg) -> None:
    """Unknown figure names fail before training, not after it."""
    from .api import check_plots as check

    check(cfg)


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
    if args.resume and args.out is None:
        raise ConfigError("--resume", True, "needs --out DIR, the directory of the run to continue")
    cfg, given = _resolve(args.target, args.overrides)
    from . import api
    from .io import runs

    out = args.out if args.out is not None else runs.default_run_dir(cfg)
    api.check_run(cfg, given=given, out=out, resume=args.resume and not args.overwrite)   # everything that can fail before compute
    _files_backend()
    from . import experiment, faults

    faults.check()   # a signal during the imports and checks: stop before the run directory is created
    echo = (lambda s: None) if args.quiet else print
    run_dir = out
    try:
        with runs.open_run(out, overwrite=args.overwrite, resume=args.resume) as run:
            run_dir = run.path
            if run.complete:
                echo(f"{run.path}: the run is complete; nothing to resume")
                return 0
            fn = experiment.run_suite if hasattr(cfg, "members") else experiment.run
            fn(cfg, run.path, progress=not args.quiet, echo=echo, resume=run.resuming)
    except TrainingDiverged as e:
        return _fail(f"{e} Run directory: {run_dir}", code=1)
    return 0


def cmd_plot(args) -> int:
    from . import plots
    from .io import runs

    run_dir = Path(args.run_dir)
    if args.run_dir == "":
        raise ConfigError("RUN_DIR", "", "must be a run directory path (. for the current directory)")
    if "\x00" in args.run_dir or not run_dir.is_dir():
        raise ConfigError("RUN_DIR", args.run_dir, "no such directory" if "\x00" in args.run_dir or not run_dir.exists()
                          else "is not a directory; must be a toymodels run directory")
    # every saved file is checked before anything is written
    members = plots.read_suite(run_dir / "suite.json")["members"] if (run_dir / "suite.json").exists() else ["."]
    for m in members:
        runs.load(run_dir / m)
    out = None
    if args.out is not None:   # a new or empty directory: nothing already there is overwritten
        out = runs.check_out_path(args.out)
        if out.exists() and (not out.is_dir() or out.is_symlink() or any(out.iterdir())):
            raise ConfigError("--out", args.out, "exists and is not an empty directory; name a new or empty "
                                                 "directory for the figures")
    _files_backend()
    if out is not None:   # the run directory is only read: no lock on it
        out.mkdir(parents=True, exist_ok=True)
        paths = plots.draw(run_dir, out)
    else:
        with runs.attach_run(run_dir):
            paths = plots.draw(run_dir)
    for p in paths:
        print(p)
    return 0


def cmd_audit(args) -> int:
    """Audit a finished run's pretrained models (:func:`toymodels.audit_command.main_audit`); the run
    directory is locked while audit.md is written into it."""
    from .io import runs

    for flag, value in (("RUN_DIR", args.run_dir), ("--sae-run", args.sae_run)):
        if value == "":
            raise ConfigError(flag, "", "must be a run directory path (. for the current directory)")
        if value is not None and ("\x00" in value or not Path(value).is_dir()):
            raise ConfigError(flag, value, "is not a directory; must be a toymodels run directory"
                              if "\x00" not in value and Path(value).exists() else "no such directory")
    name = "audit.md"
    if getattr(args, "layer", None) is not None:   # checked against the run's model before anything trains
        from .audit_command import output_name

        name = output_name(args.run_dir, args.layer)
    if args.out is not None:
        args.out = str(_audit_out(runs.check_out_path(args.out), name))
    else:  # written into the run directory: a file of that name there must be one toymodels wrote
        _audit_out(Path(args.run_dir), name, field="RUN_DIR")
    _files_backend()
    from .audit_command import main_audit

    with runs.attach_run(args.run_dir) if args.out is None else contextlib.nullcontext():
        return main_audit(args)


def _audit_out(out: Path, name: str = "audit.md", field: str = "--out") -> Path:
    """``audit --out DIR``, checked before the SAEs train: a directory (or to be created), and an audit.md
    (``name``: audit-layer{l}.md for ``--layer l``) in it only if toymodels wrote it (a run's manifest lists
    it, or it is a regular file that begins as every toymodels audit.md does); a user's own file is never
    replaced."""
    from .io import runs, safe

    for p in (out, *out.parents):
        if os.path.lexists(p) and not p.is_dir():
            raise ConfigError(field, str(out), f"{'is' if p == out else f'lies under {p}, which is'} not a "
                                               f"directory; {field} names the directory {name} is written to")
        if p.exists():
            break
    f = out / name
    if os.path.lexists(f):
        marker = runs.read_marker(out)
        try:
            ours = safe.read_bytes(f, 2**24, out).startswith(b"# audit: ")
        except (OSError, ConfigError):
            ours = False
        if not ours and (marker is None or name not in marker["files"] or f.is_symlink() or not f.is_file()):
            raise ConfigError(field, str(out), f"already holds an {name} that no toymodels run there wrote; "
                                               f"{'choose another --out' if field == '--out' else 'pass --out DIR'} "
                                               f"or move it")
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("toymodels")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line every other failure prints (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"toymodels: error: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="toymodels", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"toymodels {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the presets, one line each").set_defaults(fn=cmd_list)

    p = sub.add_parser("show", help="print a preset's or TOML file's fully resolved config as JSON")
    p.add_argument("target", metavar="PRESET|CONFIG.toml|CONFIG.json")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("run", help="run a preset or a TOML config",
                       epilog="example: toymodels run tms-intro train.steps=2000 --out runs/quick")
    p.add_argument("target", metavar="PRESET|CONFIG.toml|CONFIG.json")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=200")
    p.add_argument("--out", help="run directory (default: runs/<name>-seed<seed>-<timestamp>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the toymodels run in --out: the files it wrote (its manifest) are deleted first, "
                        "nothing else")
    p.add_argument("--resume", action="store_true",
                   help="continue the unfinished run in --out from its last checkpoint (a finished one: nothing to do)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("plot", help="redraw a run's figures from its saved results",
                       epilog="example: toymodels plot results/analogy-15deg --out /tmp/figs")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", metavar="DIR", help="write the figures to DIR (new or empty) instead of RUN_DIR/figures")
    p.set_defaults(fn=cmd_plot)

    p = sub.add_parser("audit", help="audit a finished run's pretrained models with sparse autoencoders",
                       epilog="example: toymodels audit results/analogy-15deg --variant batch_topk")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--sae-run", dest="sae_run", metavar="DIR",
                   help="take the SAEs from this run (one with [sae] and the same pretrained weights)")
    p.add_argument("--variant", metavar="NAME", help="the SAE variant to audit with")
    p.add_argument("--target", metavar="FEATURE", help="the fine-tuning target (default: the run's)")
    p.add_argument("--harmful", metavar="FEATURE", nargs="+", help="the harmful features (default: the run's)")
    p.add_argument("--layer", metavar="L", type=int,
                   help="audit layer L's activations (1..n_layers of a deep model; default: the planted layer, "
                        "written to audit.md; another layer to audit-layerL.md)")
    p.add_argument("--out", metavar="DIR", help="write audit.md (audit-layerL.md with --layer L) here instead of "
                                                "RUN_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_audit)
    return ap


def _install_signal_handlers() -> dict:
    """SIGINT and SIGTERM end a run the same way: one line, the lock released, the marker ``interrupted``
    (:func:`toymodels.faults.on_signal`); ``--resume`` continues it. Returns the handlers replaced."""
    import signal

    from . import faults

    faults._PENDING.clear()
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):   # not the main thread: leave the defaults
            old[sig] = signal.signal(sig, faults.on_signal)
    return old


def main(argv: list[str] | None = None) -> int:
    import signal

    old = {}
    from . import faults

    try:
        old = _install_signal_handlers()
        code = _main(argv)
        return _interrupted() if faults.pending() else code   # a signal after the last safe point
    except BaseException:
        if faults.pending():   # whatever the signal turned into (KeyboardInterrupt, an ImportError, ...)
            return _interrupted()
        raise
    finally:
        for sig, handler in old.items():   # an in-process caller (a test, a notebook) gets its own back
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)


def _interrupted() -> int:
    import signal

    from . import faults

    sig = faults.pending() or signal.SIGINT
    return _fail(f"interrupted ({signal.Signals(sig).name}); files written so far are kept, and toymodels run "
                 f"--resume continues an interrupted run", code=128 + int(sig))


def _main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    # Overrides (key=value) may stand anywhere after the target, also between options.
    args, extra = ap.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        ap.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", ConfigWarning)
            warnings.showwarning = _show_warning
            return args.fn(args)
    except ConfigError as e:
        return _fail(_one_line(e))
    except FileExistsError as e:   # RunExistsError, RunLockedError: --out named
        return _fail(_one_line(e))
    except TrainingDiverged as e:
        return _fail(_one_line(e), code=1)
    except MemoryError:
        return _fail("memory: the run ran out of memory; use a smaller n_inst, batch size or eval_batch_size")
    except OSError as e:   # the disk: full, read-only, permissions
        where = e.filename if e.filename is not None else "file"
        return _fail(f"{where}: {e.strerror or type(e).__name__}")
    except Exception as e:  # noqa: BLE001 - XLA's out-of-memory is a RuntimeError subclass of jaxlib
        if "RESOURCE_EXHAUSTED" in str(e):
            return _fail("memory: the run needs more memory than the device has (XLA RESOURCE_EXHAUSTED); use a "
                         "smaller n_inst, batch size or eval_batch_size")
        raise


_WARNED: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """ConfigWarnings as one line each (once per message, though a config is rebuilt several times)."""
    if issubclass(category, ConfigWarning):
        if str(message) not in _WARNED:
            _WARNED.add(str(message))
            print(f"toymodels: warning: {message}", file=sys.stderr)
        return
    print(warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr, end="")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split("\n"))


if __name__ == "__main__":
    sys.exit(main())
