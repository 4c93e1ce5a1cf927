"""The notebook-first surface: short functions over the packages, re-exported by ``import toymodels``.

    import toymodels as tm
    cfg = tm.get_preset("analogy-15deg").replace(**{"train.steps": 2000})
    graphdef, params, info = tm.pretrain(cfg)               # planted features honoured
    y = tm.apply(graphdef, params, x, instance=0)            # the model of instance 0 on a batch
    result = tm.finetune(cfg, graphdef, params)             # defences' hooks chosen from the config
    summary = tm.summarize(cfg, result)                     # the summary.json "finetune" section
    run_dir = tm.run(cfg)                                   # a whole run on disk, as the CLI does
    tables = tm.load_run(run_dir)                           # tidy pandas tables
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
from flax import nnx

from . import presets
from .config import Config
from .defences import hooks_for
from .lab import finetune as _lab
from .lab import summary as _summary


def get_preset(name: str):
    """The Config (or Suite) of a preset; ``list_presets()`` names them."""
    return presets.get(name)


def list_presets() -> dict[str, str]:
    """Preset name -> one-line summary."""
    return {n: p.summary for n, p in presets.PRESETS.items()}


def instance_model(graphdef, params, instance: int = 0):
    """The nnx model of one instance of a stacked ``params`` state (leading instance axis)."""
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[instance], params))


def apply(graphdef, params, x, instance: int | None = None):
    """The model's output on a batch x (batch, n_features): of ``instance`` (→ (batch, n)), or of every
    instance when None (x broadcast; → (n_inst, batch, n))."""
    if instance is not None:
        return instance_model(graphdef, params, instance)(x)
    return jax.vmap(lambda p: nnx.merge(graphdef, p)(x))(params)


def finetune(cfg: Config, graphdef, params, **kwargs):
    """Fine-tune as a run does: :func:`toymodels.lab.finetune.finetune` with the defences' hooks when the
    config's regimes name defences (:func:`toymodels.defences.hooks_for`)."""
    return _lab.finetune(cfg, graphdef, params, hooks=kwargs.pop("hooks", None) or hooks_for(cfg), **kwargs)


def summarize(cfg: Config, result) -> dict:
    """The ``finetune`` section of ``summary.json`` for a :func:`finetune` result."""
    return _summary.summarize(cfg, result, hooks_for(cfg))


def run(cfg, out: str | Path | None = None, *, overwrite: bool = False, progress: bool = True,
        echo: Callable[[str], None] = print, on_log: Callable[[dict], None] | None = None) -> Path:
    """Run a Config or Suite into ``out`` (default ``runs/<name>-seed<seed>-<time>``) as ``toymodels run``
    does; ``on_log(row)`` sees every metrics row as it is written. Figures are written to files; the
    session's matplotlib backend is left as it is. Returns the run directory."""
    from . import experiment
    from .io import runs

    run_dir = runs.prepare_run_dir(Path(out) if out else runs.default_run_dir(cfg), overwrite=overwrite)
    if hasattr(cfg, "members"):
        return experiment.run_suite(cfg, run_dir, progress=progress, echo=echo, on_log=on_log)
    return experiment.run(cfg, run_dir, progress=progress, echo=echo, on_log=on_log)
