"""Config validation, overrides, TOML loading and JSON round trips (toymodels.config)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from toymodels.config import Config, ConfigError, DataConfig, load_toml, parse_override
from toymodels.presets import PRESETS

# (dotted key, bad value, the field the error must name). Applied to the tiny config (n_inst=3,
# n_features=5, feature_probability [1.0, 0.3, 0.05]).
BAD_VALUES = [
    ("name", "", "name"),
    ("name", "a/b", "name"),
    ("seed", -1, "seed"),
    ("seed", 1.5, "seed"),
    ("n_inst", 0, "n_inst"),
    ("data.n_features", 0, "data.n_features"),
    ("data.n_features", True, "data.n_features"),
    ("data.feature_probability", 0.0, "data.feature_probability"),
    ("data.feature_probability", 1.5, "data.feature_probability"),
    ("data.feature_probability", math.nan, "data.feature_probability"),
    ("data.feature_probability", "high", "data.feature_probability"),
    ("data.feature_probability", [0.1, 0.2], "data.feature_probability"),  # 1-D needs n_inst entries
    ("data.feature_probability", [[0.1] * 4] * 3, "data.feature_probability"),  # 2-D needs (3, 5)
    ("data.importance", -1.0, "data.importance"),
    ("data.importance", [1.0, 2.0], "data.importance"),  # 1-D needs n_features entries
    ("data.batch_size", 0, "data.batch_size"),
    ("data.task", "classify", "data.task"),
    ("data.rng", "mt19937", "data.rng"),
    ("data.correlated", [1], "data.correlated"),
    ("data.correlated", [3, 3], "data.correlated"),  # more features in sets than n_features
    ("data.anticorrelated", [2], "data.anticorrelated"),  # 2 · p(=1.0 for instance 0) > 1
    # a set shares one activity draw, so its members need one probability (else marginals are wrong)
    ("data.feature_probability", [[0.5, 0.1, 0.5, 0.5, 0.5]] * 3, "data.feature_probability", {"data.correlated": [2]}),
    ("model.kind", "mlp", "model.kind"),
    ("model.kind", "abs_computation", "data.task"),  # |x| needs task="abs"
    ("model.d_hidden", 0, "model.d_hidden"),
    ("model.d_hidden", 2.5, "model.d_hidden"),
    ("model.init", "he", "model.init"),
    ("train.steps", -1, "train.steps"),
    ("train.lr", 0.0, "train.lr"),
    ("train.lr", 100.0, "train.lr"),
    ("train.lr", "fast", "train.lr"),
    ("train.lr", math.inf, "train.lr"),
    ("train.weight_decay", -0.1, "train.weight_decay"),
    ("train.optimizer", "lion", "train.optimizer"),
    ("train.schedule", "step", "train.schedule"),
    ("train.chunk_size", 0, "train.chunk_size"),
    ("train.log_every", 0, "train.log_every"),
    ("train.restarts", 0, "train.restarts"),
    ("train.eval_batch_size", 0, "train.eval_batch_size"),
    ("train.nonsense", 1, "train.nonsense"),
    ("nonsense", 1, "nonsense"),
]


@pytest.mark.parametrize("case", BAD_VALUES, ids=[f"{c[0]}={c[1]!r}" for c in BAD_VALUES])
def test_bad_value_raises_one_line_error_naming_the_field(make_config, case):
    key, value, field, *extra = case
    with pytest.raises(ConfigError) as err:
        make_config(**{key: value, **(extra[0] if extra else {})})
    msg = str(err.value)
    assert err.value.field == field
    assert msg.startswith(field) and "\n" not in msg
    assert len(msg) < 400


def test_defaults_are_the_tms_notebook_defaults():
    cfg = Config()
    assert (cfg.data.batch_size, cfg.train.steps, cfg.train.lr, cfg.train.weight_decay) == (1024, 10_000, 1e-3, 0.01)
    assert (cfg.train.optimizer, cfg.train.schedule, cfg.model.kind) == ("adamw", "constant", "relu_output")


def test_configs_are_frozen(make_config):
    cfg = make_config()
    with pytest.raises(AttributeError):
        cfg.seed = 3
    with pytest.raises(AttributeError):
        cfg.train.steps = 3


def test_replace_applies_dotted_overrides_and_keeps_the_rest(make_config):
    cfg = make_config()
    new = cfg.replace(**{"train.steps": 7, "data.batch_size": 33, "seed": 4})
    assert (new.train.steps, new.data.batch_size, new.seed) == (7, 33, 4)
    assert new.replace(**{"train.steps": cfg.train.steps, "data.batch_size": cfg.data.batch_size,
                          "seed": cfg.seed}) == cfg
    assert cfg.train.steps == 100  # the original is untouched


def test_feature_probability_and_importance_shapes(make_config):
    """Scalar, 1-D (per instance / per feature) and 2-D specs resolve to (n_inst, n_features)."""
    cfg = make_config()
    p, imp = cfg.feature_probability(), cfg.importance()
    assert p.shape == imp.shape == (3, 5) and p.dtype == imp.dtype == np.float32
    np.testing.assert_allclose(p[:, 0], [1.0, 0.3, 0.05], rtol=1e-6)
    assert np.all(p == p[:, :1])  # 1-D feature_probability: one value per instance
    np.testing.assert_allclose(imp[1], 0.9 ** np.arange(5), rtol=1e-6)
    assert np.all(imp == imp[:1])  # 1-D importance: one value per feature
    two_d = np.arange(1, 16, dtype=float).reshape(3, 5) / 16
    cfg2 = cfg.replace(**{"data.feature_probability": two_d.tolist(), "data.importance": 2.0})
    np.testing.assert_allclose(cfg2.feature_probability(), two_d, rtol=1e-6)
    assert np.all(cfg2.importance() == 2.0)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name):
    """config.json is written from to_dict(); json → from_dict rebuilds an equal Config (every suite
    member too)."""
    built = PRESETS[name].build()
    members = built.members if hasattr(built, "members") else (built,)
    for cfg in members:
        text = json.dumps(cfg.to_dict())
        again = Config.from_dict(json.loads(text))
        assert again == cfg
        assert json.dumps(again.to_dict()) == text


def test_toml_loading_and_round_trip(tmp_path, make_config):
    path = tmp_path / "c.toml"
    path.write_text(
        'name = "from-toml"\nseed = 3\nn_inst = 2\n'
        '[data]\nn_features = 4\nfeature_probability = [0.5, 0.1]\nimportance = 1\n'
        '[model]\nd_hidden = 2\n'
        '[train]\nsteps = 10\nlr = 1e-2\nschedule = "cosine"\n'
    )
    cfg = load_toml(path)
    assert cfg.name == "from-toml" and cfg.seed == 3 and cfg.n_inst == 2
    assert cfg.data.feature_probability == (0.5, 0.1) and cfg.train.schedule == "cosine"
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1e-2
    assert cfg.train.weight_decay == 0.01  # missing fields take their defaults
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("text,field", [
    ("name = 'x'\n[train]\nsteps = \n", None),                   # not TOML
    ("[train]\nstepz = 10\n", "train.stepz"),                    # unknown field in a section
    ("colour = 'red'\n", "colour"),                              # unknown top-level field
    ("[model]\nkind = 3\n", "model.kind"),                       # wrong type
    ("data = 3\n", "data"),                                      # a section that is not a table
])
def test_bad_toml_raises_config_error(tmp_path, text, field):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_toml(path)
    assert err.value.field == (field if field is not None else str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text,key,value", [
    ("train.steps=200", "train.steps", 200),
    ("train.lr=1e-3", "train.lr", 1e-3),
    ("data.feature_probability=[0.1, 0.2]", "data.feature_probability", [0.1, 0.2]),
    ("train.schedule=cosine", "train.schedule", "cosine"),
    ('name="a b"', "name", "a b"),
    ("--seed=3", "seed", 3),
])
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


def test_override_without_equals_sign_is_a_config_error():
    with pytest.raises(ConfigError):
        parse_override("train.steps")


def test_anticorrelated_sets_need_size_times_p_at_most_one():
    ok = Config(n_inst=1, data=DataConfig(n_features=4, feature_probability=0.5, anticorrelated=(2,)))
    assert ok.data.anticorrelated == (2,)
    with pytest.raises(ConfigError) as err:
        Config(n_inst=1, data=DataConfig(n_features=4, feature_probability=0.5, anticorrelated=(3,)))
    assert err.value.field == "data.anticorrelated"


def test_feature_sets_need_equal_probabilities_within_the_set():
    """Equal p inside each set is accepted, per instance; unequal p inside a set is rejected, since the
    set's single activity draw would silently give every member the first member's probability."""
    p = [[0.5, 0.5, 0.2, 0.2, 0.9], [0.1, 0.1, 0.3, 0.3, 0.3]]
    ok = Config(n_inst=2, data=DataConfig(n_features=5, feature_probability=p, correlated=(2,), anticorrelated=(2,)))
    assert ok.feature_probability().shape == (2, 5)
    bad = [[0.5, 0.5, 0.2, 0.3, 0.9], [0.1, 0.1, 0.3, 0.3, 0.3]]  # anticorrelated set {2, 3} differs
    with pytest.raises(ConfigError) as err:
        Config(n_inst=2, data=DataConfig(n_features=5, feature_probability=bad, correlated=(2,), anticorrelated=(2,)))
    assert err.value.field == "data.feature_probability" and "2..3" in str(err.value)


def test_the_shipped_example_toml_is_a_valid_config():
    from pathlib import Path

    cfg = load_toml(Path(__file__).resolve().parent.parent / "examples" / "planted_30deg.toml")
    assert cfg.features.angles == (0.0, 30.0) and [o.name for o in cfg.finetune.optimizer_list()] == ["adam", "sgd"]
    assert Config.from_dict(cfg.to_dict()) == cfg
