"""Run configuration: frozen dataclasses, validated on construction, loaded from TOML or presets.

* :mod:`.schema`: the sections (``[data]``, ``[train]``, ``[features]``, ``[finetune]``);
* :mod:`.model`: ``[model]``, the model kinds and their fields;
* :mod:`.attack`: ``[attack]``, benign-looking fine-tuning sets (and the regimes' ``dataset``);
* :mod:`.run`: :class:`Config`, the whole run, with the checks across sections;
* :mod:`.serde`: to and from JSON-able dicts, TOML values and ``key=value`` overrides;
* :mod:`.checks`: the one-line validation helpers.

Validation errors are :class:`~toymodels.errors.ConfigError` with one line naming the field, the value
and what is allowed; the CLI prints that line and exits with code 2.
"""

from ..errors import ConfigError
from .run import Config, feature_names, load_toml, read_toml
from .schema import (
    BASES,
    DECAYING_OPTIMIZERS,
    FT_DATA,
    FT_DEFENCES,
    FT_FRACTION_DEFENCES,
    FT_OBJECTIVES,
    FT_SCOPES,
    FT_TRAINABLE,
    GEOMETRIES,
    OPTIMIZERS,
    RNGS,
    SCHEDULES,
    TASKS,
    TRAIN_PENALTIES,
    DataConfig,
    FeaturesConfig,
    FineTuneConfig,
    OptimizerConfig,
    OptimizerFields,
    RegimeConfig,
    TrainConfig,
)
from .model import INITS, MODEL_KINDS, ModelConfig
from .attack import FT_DATASETS, AttackConfig
from .serde import parse_override, set_dotted, to_jsonable

__all__ = [
    "BASES", "DECAYING_OPTIMIZERS", "FT_DATA", "FT_DEFENCES", "FT_FRACTION_DEFENCES", "FT_OBJECTIVES", "FT_SCOPES",
    "FT_TRAINABLE", "GEOMETRIES", "INITS", "MODEL_KINDS", "OPTIMIZERS", "RNGS", "SCHEDULES", "TASKS",
    "TRAIN_PENALTIES", "AttackConfig", "FT_DATASETS", "Config", "ConfigError", "DataConfig", "FeaturesConfig", "FineTuneConfig", "ModelConfig",
    "OptimizerConfig", "OptimizerFields", "RegimeConfig", "TrainConfig", "feature_names", "load_toml",
    "parse_override", "read_toml", "set_dotted", "to_jsonable",
]
