"""One run, end to end: config → train → weights and summary on disk → figures.

``run(cfg, run_dir)`` is what ``toymodels run`` calls. It writes ``config.json`` and ``env.json``
first, appends ``metrics.jsonl`` while training, and writes ``weights.npz`` and ``summary.json``
(last) when done. A diverged run raises :class:`toymodels.errors.TrainingDiverged` after the metrics
up to the failure are on disk.

With a ``[features]`` section, pretraining plants (and may pin) the named features' geometry
(:mod:`toymodels.core.planting`). With a ``[finetune]`` section the run continues: every pretrained
instance is fine-tuned under every regime (:mod:`toymodels.lab`; with the defences' hooks when a regime
names a defence, :func:`toymodels.defences.hooks_for`), the probe rows go to
``metrics.jsonl`` with ``phase="finetune"``, and the run also writes ``weights_pretrained.npz`` /
``weights_finetuned.npz`` (aligned fine-tuning instances, same keys as ``weights.npz``),
``weights_trajectory.npz`` (W and b_final at every chunk boundary) and ``summary["finetune"]``.
``finetune.from_run = "DIR"`` skips pretraining and fine-tunes DIR's ``weights.npz`` instead.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from . import faults, plots
from .config import Config, ConfigError
from .core import geometry, sharding, stationarity
from .core import pretrain as pt
from .core.models import init_instances
from .core.planting import geometry_summary, representation_measure
from .core.pretrain import active_penalty
from . import attack
from .defences import hooks_for
from .errors import RepresentationWarning, RunFileError, short
from .io import checkpoint, runs
from .io.preflight import config_difference
from .lab import finetune as lab_finetune
from .lab import summary as lab_summary
from .lab.report import format_table
from .presets import SUITE_SUMMARIES


def params_to_weights(params) -> dict[str, np.ndarray]:
    """nnx params state (leading instance axis) → ``{"W": (n_inst, m, n), "b_final": (n_inst, n), ...}``."""
    return {k: np.asarray(v) for k, v in nnx.to_pure_dict(params).items()}


def instance_summaries(cfg: Config, weights: dict[str, np.ndarray]) -> list[dict]:
    """Per-instance numbers: its feature probability and importance, and the geometry of its W."""
    W = weights["W"]
    per = {
        "feature_norms": jax.vmap(geometry.feature_norms)(W),
        "feature_dimensionality": jax.vmap(geometry.feature_dimensionality)(W),
        "dimensions_per_feature": jax.vmap(geometry.dimensions_per_feature)(W),
        "n_represented": jax.vmap(geometry.n_represented)(W),
        "frobenius_sq": (W**2).sum((1, 2)),
    }
    per = {k: np.asarray(v) for k, v in per.items()}
    p, imp = cfg.feature_probability(), cfg.importance()
    return [
        {"index": i, "feature_probability": p[i], "importance": imp[i], **{k: v[i] for k, v in per.items()}}
        for i in range(cfg.n_inst)
    ]


def params_from_weights(cfg: Config, weights: dict[str, np.ndarray]):
    """The inverse of :func:`params_to_weights`: ``(graphdef, params)`` of a saved ``weights.npz``."""
    graphdef, params = init_instances(cfg.model, cfg.data.n_features, cfg.n_inst, jax.random.key(0))
    nnx.replace_by_pure_dict(params, {k: jax.numpy.asarray(v) for k, v in weights.items()})
    return graphdef, params


def resolve_from_run(cfg: Config) -> tuple[Config, runs.Run]:
    """For ``finetune.from_run``: the source run's config (data, model, features, n_inst, seed) with this
    config's name, finetune section and plots; and the loaded source run."""
    source = runs.load(Path(cfg.finetune.from_run).expanduser().resolve())
    src = source.config
    merged = dataclasses.replace(src, name=cfg.name, finetune=cfg.finetune, plots=cfg.plots or src.plots,
                                 notes=cfg.notes or src.notes, meta=cfg.meta if cfg.meta is not None else src.meta)
    return merged, source


CHECKPOINT_SECONDS = 10.0  # a mid-training checkpoint at most this often (and at the end of each stage)


class _Saver:
    """``on_chunk`` / ``on_checkpoint`` hook: save the engine state (and the fine-tuning probes) to
    ``path`` when ``every_s`` seconds have passed since the last save; ``point`` is the fault-injection
    name of this moment (:mod:`toymodels.faults`)."""

    def __init__(self, path: Path, run_dir: Path, every_s: float, point: str):
        self.path, self.run_dir, self.every_s, self.point = path, run_dir, every_s, point
        self.last = time.perf_counter()

    def __call__(self, state, probes=None, frames=None) -> None:
        faults.point(self.point)
        if time.perf_counter() - self.last < self.every_s:
            return
        extra = checkpoint.probes_to_arrays(probes, frames) if probes is not None else None
        checkpoint.save_state(self.path, state, checkpoint.metrics_bytes(self.run_dir), extra)
        self.last = time.perf_counter()


def _pretrained(cfg: Config, source: runs.Run | None, log, progress, run_dir: Path, resume: bool,
                every_s: float):
    """Pretrain (with planted/pinned features if configured), or load ``source``'s weights; with
    ``resume``, from the run's latest pretraining checkpoint. Returns (graphdef, params, info)."""
    if source is not None:
        graphdef, params = params_from_weights(cfg, source.weights)
        losses = np.array([s.get("eval_loss", np.nan) for s in source.summary.get("instances", [])] or
                          [np.nan] * cfg.n_inst)
        return graphdef, params, {"eval_loss": losses, "restart": np.zeros(cfg.n_inst, int),
                                  "all_eval_loss": losses[:, None], "seconds": 0.0}
    ck = run_dir / checkpoint.DIR
    pre = pt.setup(cfg)
    if resume and (ck / "pretrained.npz").exists():   # pretraining finished before the run stopped
        params, meta, extra = checkpoint.load_tree(ck / "pretrained.npz", _kept_like(pre))
        info = {k.removeprefix("info_"): v for k, v in extra.items()} | {"seconds": meta["seconds"]}
        return pre.graphdef, params, info
    state = None
    if resume and (ck / "pretrain.npz").exists():
        state, _, _ = checkpoint.load_state(ck / "pretrain.npz", pre.state)
    t = time.perf_counter()
    state = pt.train(pre, state, on_log=log, progress=progress,
                     on_chunk=_Saver(ck / "pretrain.npz", run_dir, every_s, "pretrain-chunk"))
    graphdef, params, info = pt.finish(pre, state, time.perf_counter() - t)
    arrays = {f"info_{k}": np.asarray(v) for k, v in info.items() if k != "seconds"}
    checkpoint.save_tree(ck / "pretrained.npz", params, {"seconds": info["seconds"],
                                                        "metrics_bytes": checkpoint.metrics_bytes(run_dir)}, arrays)
    return graphdef, params, info


def _kept_like(pre: pt.Pretraining):
    """The structure of the kept parameters: one instance per setting (restarts removed)."""
    r = pre.cfg.train.restarts
    return jax.tree.map(lambda a: a[::r], pre.state.params)


def _logger(path: Path, on_log: Callable[[dict], None] | None, **fixed) -> Callable[[dict], None]:
    """Append each row to metrics.jsonl, then hand it (as written, with ``phase`` and ``kind``) to
    ``on_log``, the user's tracker hook (wandb, a notebook plot, ...)."""
    write = runs.MetricsLog(path, **fixed)
    if on_log is None:
        return write

    def log(row: dict) -> None:
        write(row)
        on_log({**fixed, **row})

    return log


def run(cfg: Config, run_dir: str | Path, *, progress: bool = True, echo: Callable[[str], None] = print,
        on_log: Callable[[dict], None] | None = None, resume: bool = False,
        checkpoint_seconds: float = CHECKPOINT_SECONDS) -> Path:
    """Train ``cfg`` (and fine-tune, with a ``[finetune]`` section) and write everything into
    ``run_dir`` (already created by :func:`toymodels.io.runs.open_run`). Returns the run directory.

    ``on_log(row)`` receives every row written to ``metrics.jsonl`` as it is written (``phase``
    ``pretrain`` or ``finetune``; ``kind`` ``loss`` or ``probe``), so any tracker can follow the run
    without toymodels depending on it.

    Checkpoints (:mod:`toymodels.io.checkpoint`) are taken at most every ``checkpoint_seconds`` and at
    the end of pretraining and of fine-tuning. ``resume=True`` continues an unfinished run in
    ``run_dir`` from its latest checkpoint, with the same config; the result is bit-identical to an
    uninterrupted run's (timings aside). The checkpoints are removed once the run is complete.

    Several processes (``jax.distributed``, :mod:`toymodels.core.sharding`): every process trains its
    slice of the instances and receives the whole result; process 0 writes ``run_dir``, the others
    work in a private temporary directory that is removed (resuming is then not supported)."""
    if jax.process_index() > 0:
        with tempfile.TemporaryDirectory(prefix=f"toymodels-process{jax.process_index()}-") as tmp:
            _run(cfg, tmp, progress=False, echo=lambda s: None, on_log=None, resume=False, checkpoint_seconds=math.inf)
        return Path(run_dir)
    return _run(cfg, run_dir, progress=progress, echo=echo, on_log=on_log, resume=resume,
                checkpoint_seconds=checkpoint_seconds)


def _run(cfg: Config, run_dir: str | Path, *, progress: bool, echo: Callable[[str], None],
         on_log: Callable[[dict], None] | None, resume: bool, checkpoint_seconds: float) -> Path:
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    source = None
    if cfg.finetune is not None and cfg.finetune.from_run:
        cfg, source = resolve_from_run(cfg)
    if resume and os.path.lexists(run_dir / "config.json"):
        _same_config(run_dir, cfg)
    else:
        if resume and os.path.lexists(run_dir / checkpoint.DIR):
            # the checkpoint's config is unknown: continuing it under this config could mix two runs
            raise ConfigError("--resume", str(run_dir), "config.json is missing, so the checkpoint there cannot be "
                                                        "checked against this config; pass --overwrite to start again")
        resume = False
        runs.write_json(run_dir / "config.json", cfg.to_dict())
    runs.write_json(run_dir / "env.json", runs.env_info())
    if resume:  # metrics.jsonl back to the latest checkpoint: the rows after it are written again
        checkpoint.truncate_metrics(run_dir, checkpoint.resume_bytes(run_dir))
    log = _logger(run_dir / "metrics.jsonl", on_log, phase="pretrain")
    graphdef, params, info = _pretrained(cfg, source, log, progress, run_dir, resume, checkpoint_seconds)
    faults.point("between")
    weights = params_to_weights(params)
    runs.write_npz(run_dir / "weights.npz", **weights)
    instances = instance_summaries(cfg, weights)
    for s, loss, r in zip(instances, info["eval_loss"], info["restart"]):
        s["eval_loss"], s["restart"] = float(loss), int(r)
    for s, entry in zip(instances, stationarity.instance_entries(cfg, graphdef, params)):
        s.update(entry)  # the objective's gradient on a large fresh batch: grad_norm, grad_z, stationary, ...
    if info.get("eval_penalty") is not None:  # train.penalty: its λ and its value P (without λ) at the end
        for s, pen, lam in zip(instances, info["eval_penalty"], info["penalty_strength"]):
            s["penalty_strength"], s["penalty"] = float(lam), float(pen)
    summary = {
        "name": cfg.name,
        "seed": cfg.seed,
        "model": cfg.model.kind,
        "n_inst": cfg.n_inst,
        "n_features": cfg.data.n_features,
        "d_hidden": cfg.model.d_hidden,
        "steps": cfg.train.steps,
        "restarts": cfg.train.restarts,
        "penalty": active_penalty(cfg),
        "train_seconds": round(info["seconds"], 3),
        "instance_steps_per_second": round(cfg.n_inst * cfg.train.restarts * cfg.train.steps
                                           / max(info["seconds"], 1e-9), 1),
        "all_restart_eval_loss": info["all_eval_loss"],
        "instances": instances,
        **sharding.topology(),  # devices and processes the instances were split over (not compared)
    }
    if source is not None:
        summary["pretrained_from"] = str(source.path)
    if cfg.features is not None:
        summary["features"] = geometry_summary(cfg, weights["W"], graphdef, params)
        warn_barely_represented(summary["features"])
    stage = None
    if cfg.sae is not None:  # SAEs on the pretrained activations, and the audit (toymodels.audit)
        from .audit import Stage

        stage = Stage(cfg, graphdef, params, run_dir, write_npz=runs.write_npz, write_text=runs.write_text,
                      read_npz=runs.read_npz, read_metrics=runs.read_metrics, progress=progress,
                      log_sae=(lambda v: _logger(run_dir / "metrics.jsonl", on_log, phase="sae", kind="loss", variant=v))
                      if cfg.sae.synthbench else None)   # (the other [sae] runs keep their metrics.jsonl as it was)
        summary.update(stage.before_finetune())
    if cfg.finetune is not None:
        summary["finetune"] = _finetune(cfg, graphdef, params, run_dir, progress, on_log, resume, checkpoint_seconds,
                                        stage)
    if stage is not None:
        summary.update(stage.after_finetune(summary))
    summary["wall_seconds"] = round(time.perf_counter() - t0, 3)
    runs.write_json(run_dir / "summary.json", summary)
    paths = plots.draw(run_dir)
    shutil.rmtree(run_dir / checkpoint.DIR, ignore_errors=True)  # complete: nothing left to resume
    what = (f"loaded {cfg.n_inst} pretrained instances from {source.path}" if source is not None else
            f"trained {cfg.n_inst}x{cfg.train.restarts} instances x {cfg.train.steps} steps in {info['seconds']:.1f}s")
    if cfg.finetune is not None:
        ft = summary["finetune"]
        what += f"; fine-tuned {ft['n_instances']} x {ft['steps']} steps in {ft['train_seconds']:.1f}s"
    echo(f"{cfg.name}: {what}; results in {run_dir}")
    if cfg.finetune is not None:
        # numbers as written to disk, not as held in memory
        echo(format_table(runs.read_json(run_dir / "summary.json", run_dir)))
    for p in paths:
        echo(f"  figure: {p}")
    echo(f"{cfg.name}: done in {time.perf_counter() - t0:.1f}s")
    return run_dir


def warn_barely_represented(features: dict) -> list[str]:
    """One :class:`RepresentationWarning` per planted feature that ended pretraining barely represented
    (norm < ``represented_norm``) in some instance; returns the messages."""
    msgs = []
    per_inst = features.get("barely_represented") or []
    names = features["names"]
    what, values, bound = representation_measure(features)
    for k, name in enumerate(names):
        where = [i for i, weak in enumerate(per_inst) if name in weak]
        if not where:
            continue
        role = "harmful " if name in features.get("harmful", []) else ""
        w = RepresentationWarning(
            "features.names", name,
            f"the {role}feature ended pretraining barely represented ({what} {_span(values[where, k])} < "
            f"{bound:g}) in {len(where)} of {len(per_inst)} models (instances "
            f"{_ids(where)}); its rates, gains and spill-over describe a feature the model hardly carries, so a "
            f"0.00 -> 0.00 is no evidence of no spill-over (summary.json: features.barely_represented)")
        warnings.warn(w, stacklevel=2)
        msgs.append(str(w))
    return msgs


def _span(v) -> str:
    return f"{v.min():.2f}" if v.max() - v.min() < 0.005 else f"{v.min():.2f}-{v.max():.2f}"


def _ids(ix: list[int]) -> str:
    return ", ".join(map(str, ix[:8])) + (f", ... ({len(ix)})" if len(ix) > 8 else "")


def config_hooks(cfg: Config):
    """The fine-tuning hooks a config asks for: the defences' (:func:`toymodels.defences.hooks_for`), inside
    the attack's data sets when it has an ``[attack]`` section (:func:`toymodels.attack.hooks`)."""
    return attack.hooks(cfg, hooks_for(cfg))


def _finetune(cfg: Config, graphdef, params, run_dir: Path, progress, on_log=None, resume: bool = False,
              every_s: float = CHECKPOINT_SECONDS, stage=None) -> dict:
    """Fine-tune (with the defences' hooks when the regimes name defences), write the weight files, and
    return the ``finetune`` section of the summary; with ``resume``, from the latest checkpoint."""
    ck = run_dir / checkpoint.DIR
    if resume and os.path.lexists(ck / "finetuned.json"):   # fine-tuning finished before the run stopped
        return checkpoint.read_finetuned(ck / "finetuned.json")["finetune"]
    path = run_dir / "metrics.jsonl"
    resume_from = None
    if resume and (ck / "finetune.npz").exists():
        def resume_from(fresh):
            state, _, extra = checkpoint.load_state(ck / "finetune.npz", fresh)
            return (state, *checkpoint.arrays_to_probes(extra))
    hooks = config_hooks(cfg) if stage is None else stage.hooks(config_hooks(cfg))  # the audit's filter directions
    result = lab_finetune.finetune(cfg, graphdef, params, on_log=_logger(path, on_log, phase="finetune", kind="loss"),
                                   on_probe=_logger(path, on_log, phase="finetune"), progress=progress, hooks=hooks,
                                   resume=resume_from,
                                   on_checkpoint=_Saver(ck / "finetune.npz", run_dir, every_s, "finetune-chunk"))
    runs.write_npz(run_dir / "weights_pretrained.npz", **params_to_weights(result.pretrained))
    runs.write_npz(run_dir / "weights_finetuned.npz", **params_to_weights(result.finetuned))
    if result.trajectory is not None:
        runs.write_npz(run_dir / "weights_trajectory.npz", **result.trajectory)
    out = runs.to_jsonable(lab_summary.summarize(cfg, result, hooks))
    runs.write_json(ck / "finetuned.json", {"finetune": out, "metrics_bytes": checkpoint.metrics_bytes(run_dir)})
    return out


def _same_config(run_dir: Path, cfg: Config) -> None:
    """--resume continues a run only with the config it was started with."""
    d = runs.read_json(run_dir / "config.json", run_dir)
    try:
        saved = Config.from_dict(d) if isinstance(d, dict) else None
    except ConfigError:
        saved = None
    if saved is None:
        raise RunFileError(run_dir / "config.json", "is not a valid toymodels config, so --resume cannot check "
                                                    "the run against it; pass --overwrite to start again")
    if saved != cfg:
        field_name, was, now = config_difference(saved.to_dict(), cfg.to_dict())
        raise ConfigError(field_name, now, f"differs from the run in --out {str(run_dir)!r} (started with "
                          f"{short(was)}); --resume continues a run only with the config it was started with: "
                          f"resume with the same preset and overrides, or pass --overwrite")



def run_suite(suite, run_dir: str | Path, *, progress: bool = True, echo: Callable[[str], None] = print,
              on_log: Callable[[dict], None] | None = None, resume: bool = False,
              checkpoint_seconds: float = CHECKPOINT_SECONDS) -> Path:
    """Run each member of a :class:`toymodels.presets.Suite` into ``run_dir/<member>/``, then write the
    suite's ``summary.json`` (when ``suite.summary`` names one) and draw the suite's own figures into
    ``run_dir/figures``. ``suite.json`` is written first and lists the members. With ``resume``, finished
    members are kept and an unfinished one continues from its checkpoint."""
    run_dir = Path(run_dir)
    runs.write_json(run_dir / "suite.json", suite.to_dict())
    for member in suite.members:
        member_dir = run_dir / member.name
        finished = (member_dir / "summary.json").exists() and not (member_dir / checkpoint.DIR).exists()
        if resume and finished:
            _same_config(member_dir, member)
            echo(f"{member.name}: finished before; kept")
            continue
        (member_dir / "figures").mkdir(parents=True, exist_ok=True)
        run(member, member_dir, progress=progress, echo=echo, resume=resume and (member_dir / "config.json").exists(),
            checkpoint_seconds=checkpoint_seconds,
            on_log=None if on_log is None else (lambda row, m=member.name: on_log({"member": m, **row})))
    if getattr(suite, "summary", ""):
        loaded = [runs.load(run_dir / m.name) for m in suite.members]
        summary, report = SUITE_SUMMARIES.get_or_raise(suite.summary, field="summary")(loaded, suite.to_dict(), run_dir)
        runs.write_json(run_dir / "summary.json", summary)
        echo(report)
    for name in suite.plots:
        for p in plots.SUITE_FIGURES.get_or_raise(name, field="plots")([runs.load(run_dir / m.name) for m in suite.members],
                                            suite.to_dict(), run_dir / "figures"):
            echo(f"  figure: {p}")
    return run_dir
