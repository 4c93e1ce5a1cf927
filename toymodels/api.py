"""The notebook-first surface: short functions over the packages, re-exported by ``import toymodels``.

    import toymodels as tm
    cfg = tm.get_preset("analogy-15deg").replace(**{"train.steps": 2000})
    graphdef, params, info = tm.pretrain(cfg)               # planted features honoured
    y = tm.apply(graphdef, params, x, instance=0)            # the model of instance 0 on a batch
    h = tm.hidden(graphdef, params, x, instance=0)           # its hidden activations h = W x
    result = tm.finetune(cfg, graphdef, params)             # defences' hooks chosen from the config
    summary = tm.summarize(cfg, result)                     # the summary.json "finetune" section
    run_dir = tm.run(cfg)                                   # a whole run on disk, as the CLI does
    tables = tm.load_run(run_dir)                           # tidy pandas tables
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax
from flax import nnx

from . import presets
from .config import Config, ConfigError
from .experiment import config_hooks
from .lab import finetune as _lab
from .lab import summary as _summary


def get_preset(name: str):
    """The Config (or Suite) of a preset; ``list_presets()`` names them."""
    return presets.get(name)


def list_presets() -> dict[str, str]:
    """Preset name -> one-line summary."""
    return {n: p.summary for n, p in presets.PRESETS.items()}


def pretrain(cfg: Config, **kwargs):
    """:func:`toymodels.core.pretrain.pretrain` (``(graphdef, params, info)``), and, as a run does, a
    :class:`~toymodels.errors.RepresentationWarning` for each planted feature that ended barely represented
    (norm < 0.5): numbers measured on it describe a feature the model hardly carries."""
    from .core.planting import geometry_summary
    from .core.pretrain import pretrain as _pretrain
    from .experiment import warn_barely_represented

    graphdef, params, info = _pretrain(cfg, **kwargs)
    if cfg.features is not None:
        import numpy as np

        warn_barely_represented(geometry_summary(cfg, np.asarray(params["W"][...]), graphdef, params))
    return graphdef, params, info


def instance_model(graphdef, params, instance: int = 0):
    """The nnx model of one instance of a stacked ``params`` state (leading instance axis)."""
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[instance], params))


def apply(graphdef, params, x, instance: int | None = None):
    """The model's output on a batch x (batch, n_features): of ``instance`` (→ (batch, n)), or of every
    instance when None (x broadcast; → (n_inst, batch, n))."""
    if instance is not None:
        return instance_model(graphdef, params, instance)(x)
    return jax.vmap(lambda p: nnx.merge(graphdef, p)(x))(params)


def hidden(graphdef, params, x, instance: int | None = None):
    """The hidden activations on a batch x (batch, n_features): h = W x (ReLU(W x) for the models with a
    privileged hidden basis), of ``instance`` (→ (batch, d_hidden)), or of every instance when None
    (→ (n_inst, batch, d_hidden)). This is what an SAE or a probe reads (TMS §Demonstrating
    Superposition: the d_hidden-dimensional bottleneck)."""
    if instance is not None:
        return instance_model(graphdef, params, instance).hidden(x)
    return jax.vmap(lambda p: nnx.merge(graphdef, p).hidden(x))(params)


def finetune(cfg: Config, graphdef, params, **kwargs):
    """Fine-tune as a run does: :func:`toymodels.lab.finetune.finetune` with the hooks the config asks for
    (:func:`toymodels.experiment.config_hooks`: the defences', and the attack's sets)."""
    return _lab.finetune(cfg, graphdef, params, hooks=kwargs.pop("hooks", None) or config_hooks(cfg), **kwargs)


def summarize(cfg: Config, result) -> dict:
    """The ``finetune`` section of ``summary.json`` for a :func:`finetune` result."""
    return _summary.summarize(cfg, result, config_hooks(cfg))


def load_config_json(path: str | Path):
    """A run's ``config.json`` (or ``suite.json``, its members read beside it), or what ``toymodels show``
    printed, as a Config or a Suite: every run can be run again from the file it wrote."""
    from .io import runs
    from .presets import Suite

    path = Path(path)
    if not path.is_file():
        raise ConfigError("CONFIG", str(path), "no such JSON file; must be a run's config.json or suite.json, or "
                                              "what toymodels show printed")
    d = runs.read_json(path)
    if not isinstance(d, dict):
        raise ConfigError("CONFIG", str(path), "is not a JSON object; must be a run's config.json or suite.json")
    if "suite" not in d:
        return Config.from_dict(d)
    members = d.get("members")
    if not isinstance(members, list) or not members:
        raise ConfigError("CONFIG", str(path), "a suite's 'members' must be a non-empty list")
    if all(isinstance(m, dict) for m in members):      # toymodels show SUITE: the members inline
        configs = tuple(Config.from_dict(m) for m in members)
    elif all(isinstance(m, str) and m not in ("", ".", "..") and "/" not in m for m in members):
        configs = tuple(Config.from_dict(runs.read_json(path.parent / m / "config.json")) for m in members)
    else:
        raise ConfigError("CONFIG", str(path), "a suite's 'members' must be member names or member configs")
    return Suite(d["suite"], configs, tuple(d.get("plots", ())), d.get("notes", ""), d.get("meta", {}),
                 d.get("summary", ""))


def check_plots(cfg) -> None:
    """Unknown figure names (of a Config or a Suite) are a ConfigError naming ``plots``, before training."""
    from . import plots

    for m in getattr(cfg, "members", (cfg,)):
        for name in m.plots:
            if name not in plots.FIGURES:
                raise ConfigError("plots", name, f"unknown figure; known: {', '.join(sorted(plots.FIGURES))}")
    for name in (cfg.plots if hasattr(cfg, "members") else ()):
        if name not in plots.SUITE_FIGURES:
            raise ConfigError("plots", name, f"unknown suite figure; known: {', '.join(sorted(plots.SUITE_FIGURES))}")


# With finetune.from_run the source run's data, model, train, features, seed and n_inst are used.
FROM_RUN_IGNORES = ("data", "model", "train", "features", "seed", "n_inst")


def check_run(cfg, *, given: dict | None = None, out: str | Path | None = None, resume: bool = False) -> None:
    """Everything about a run of ``cfg`` (a Config or a Suite) that can fail before compute: figure names;
    with ``finetune.from_run``, the source run (a finished run, that this ``[finetune]`` can fine-tune,
    not inside ``out``) and the fields the user gave (``given``: dotted key -> value) that it would
    ignore; the memory and compute the run needs against the machine's (:mod:`toymodels.io.budget`); names
    and values that must become file names and JSON; with ``resume``, that the run in ``out`` was started
    with this config (:mod:`toymodels.io.preflight`). Raises a one-line ConfigError."""
    from .io import budget, compute, preflight

    preflight.check_names(cfg)
    preflight.check_serialisable(cfg)
    if resume and out is not None:
        # a from_run run's config.json holds the config after the source run was merged in: compare that
        members = getattr(cfg, "members", None)
        resolved = [_check_from_run(m, given or {}, out) if m.finetune is not None and m.finetune.from_run else m
                    for m in (members if members is not None else (cfg,))]
        target = dataclasses.replace(cfg, members=tuple(resolved)) if members is not None else resolved[0]
        preflight.check_resume(target, runs_path(out))
    check_plots(cfg)
    for m in getattr(cfg, "members", (cfg,)):
        if m.finetune is not None and m.finetune.from_run:
            m = _check_from_run(m, given or {}, out)
        budget.check(m)
        compute.check(m)


def runs_path(out: str | Path) -> Path:
    from .io import runs

    return runs.check_out_path(out)


def _check_from_run(cfg: Config, given: dict, out) -> Config:
    """The config a ``finetune.from_run`` run will have (the source's, with this finetune section)."""
    from . import experiment
    from .errors import RunFileError
    from .io import runs

    src = cfg.finetune.from_run
    ignored = [k for k in given if k.split(".")[0] in FROM_RUN_IGNORES]
    if ignored:
        also = f" (also {', '.join(ignored[1:])})" if len(ignored) > 1 else ""
        raise ConfigError(ignored[0], given[ignored[0]],
                          f"is ignored with finetune.from_run, which fine-tunes the source run's models with their "
                          f"data, model, train, features, seed and n_inst{also}: drop it, or pretrain without "
                          f"from_run")
    if out is not None:
        src_dir, out_dir = Path(src).expanduser().resolve(), runs.check_out_path(out)
        if src_dir == out_dir or out_dir in src_dir.parents:
            raise ConfigError("finetune.from_run", src, f"lies in --out {str(out_dir)!r}, which this run writes; "
                                                        f"choose another --out")
    try:
        merged, _ = experiment.resolve_from_run(cfg)
        # the checks a config with from_run defers to the merged one ([features] present, target, ...)
        dataclasses.replace(merged, finetune=dataclasses.replace(merged.finetune, from_run=""))
    except RunFileError as e:
        raise ConfigError("finetune.from_run", src, f"must be a finished toymodels run directory: {e}") from None
    except ConfigError as e:
        raise ConfigError("finetune.from_run", src, f"that run's models cannot be fine-tuned by this [finetune]: "
                                                    f"{e}") from None
    check_plots(merged)
    return merged


def run(cfg, out: str | Path | None = None, *, overwrite: bool = False, resume: bool = False,
        progress: bool = True, echo: Callable[[str], None] = print,
        on_log: Callable[[dict], None] | None = None) -> Path:
    """Run a Config or Suite into ``out`` (default ``runs/<name>-seed<seed>-<time>``) as ``toymodels run``
    does; ``on_log(row)`` sees every metrics row as it is written. Figures are written to files; the
    session's matplotlib backend is left as it is. Returns the run directory.

    The run is checked first (:func:`check_run`), then ``out`` is opened with
    :func:`toymodels.io.runs.open_run`: an existing run is replaced only with ``overwrite`` (only its own
    files are deleted), an unfinished one is continued with ``resume`` (a finished one: nothing to do),
    and a non-empty directory that is not a toymodels run is never touched."""
    from . import experiment
    from .io import runs

    if resume and out is None:
        raise ConfigError("out", None, "resume=True needs the directory of the run to continue")
    out = out if out is not None else runs.default_run_dir(cfg)
    check_run(cfg, out=out, resume=resume)
    with runs.open_run(out, overwrite=overwrite, resume=resume) as handle:
        if handle.complete:
            echo(f"{handle.path}: the run is complete; nothing to resume")
            return handle.path
        fn = experiment.run_suite if hasattr(cfg, "members") else experiment.run
        return fn(cfg, handle.path, progress=progress, echo=echo, on_log=on_log, resume=handle.resuming)
