"""toymodels: Toy Models of Superposition in JAX, and a lab for fine-tuning spill-over.

``import toymodels as tm`` gives the main API (loaded on first use, so ``import toymodels`` is quick
and changes no global state: no matplotlib backend, no JAX flags):

* configs and presets: ``Config`` (and its sections), ``load_toml``, ``load_config_json`` (a run's own
  config.json or suite.json, to run it again), ``get_preset``, ``list_presets``;
* training: ``pretrain`` (planted features honoured), ``finetune``, ``summarize``, ``run``;
* models: ``apply`` (instance i on a batch), ``hidden`` (its hidden activations h = W x), ``instance_model``;
* plug-ins: ``FineTuneHooks`` (what a defence, audit or data attack may change in fine-tuning; see
  ``examples/custom_hook.py``), ``NO_HOOKS``;
* metrics: ``feature_norms``, ``feature_dimensionality``, ``dimensions_per_feature``, ``n_represented``,
  ``cosine_matrix``, ``feature_interference``, ``first_order_prediction``, ``toxic_output_rate``,
  ``overlap_score``, ``superposition_density``;
* figures: ``plot_features_in_2d``, ``plot_finetune_2d``, ``plot_loss`` (arrays in, Figure out),
  ``draw`` (a run directory's figures to files);
* results: ``load_run`` (tidy pandas tables of a run, or of each member of a suite), ``format_table``
  (the printed fine-tuning table).

Packages, bottom to top (nothing imports upward): ``errors``/``registry``/``stats``/``directions`` →
``config`` → ``core`` → ``lab`` → ``defences``, ``audit``, ``attack`` → ``presets``, ``plots``, ``io`` → ``experiment`` → ``cli``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("toymodels")
except PackageNotFoundError:  # an uninstalled checkout
    __version__ = "0+unknown"

# public name -> (module, attribute)
_API = {
    **{n: ("toymodels.config", n) for n in ("Config", "DataConfig", "ModelConfig", "TrainConfig", "FeaturesConfig",
                                             "FineTuneConfig", "RegimeConfig", "OptimizerConfig", "load_toml")},
    "ConfigError": ("toymodels.errors", "ConfigError"),
    "TrainingDiverged": ("toymodels.errors", "TrainingDiverged"),
    **{n: ("toymodels.api", n) for n in ("get_preset", "list_presets", "finetune", "summarize", "run", "apply",
                                          "hidden", "instance_model", "load_config_json")},
    "FineTuneHooks": ("toymodels.lab.hooks", "FineTuneHooks"),
    "NO_HOOKS": ("toymodels.lab.hooks", "NO_HOOKS"),
    "RepresentationWarning": ("toymodels.errors", "RepresentationWarning"),
    "pretrain": ("toymodels.api", "pretrain"),
    **{n: ("toymodels.core.geometry", n) for n in ("feature_norms", "feature_dimensionality", "dimensions_per_feature",
                                                    "n_represented", "cosine_matrix", "feature_interference")},
    **{n: ("toymodels.lab.metrics", n) for n in ("first_order_prediction", "toxic_output_rate", "overlap_score",
                                                  "superposition_density")},
    **{n: ("toymodels.plots", n) for n in ("plot_features_in_2d", "plot_finetune_2d", "plot_loss", "draw")},
    "load_run": ("toymodels.io.load", "load_run"),
    "format_table": ("toymodels.lab.report", "format_table"),
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'toymodels' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
