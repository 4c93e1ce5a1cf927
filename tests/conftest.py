"""Shared fixtures for the toymodels test suite.

* hypothesis runs without a deadline: the first example of a property pays JAX's compile time, and
  the default 200 ms deadline would report that as flakiness (``shared/ENGINEERING.md``).
* ``tiny_config`` builds small, fast configs; ``trained_run`` trains one small run once per session
  and is shared (read-only) by the run-directory and CLI tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from toymodels.config import Config, DataConfig, ModelConfig, TrainConfig

# derandomize: the same examples on every run, so CI is reproducible; no example database needed.
settings.register_profile("toymodels", deadline=None, max_examples=25, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("toymodels")


def tiny_config(**overrides) -> Config:
    """A 3-instance, 5-feature, 2-dimension ReLU-output config that trains in about a second.

    Overrides are dotted keys, e.g. ``tiny_config(**{"train.steps": 50})``."""
    cfg = Config(
        name="tiny",
        seed=0,
        n_inst=3,
        data=DataConfig(n_features=5, feature_probability=[1.0, 0.3, 0.05],
                        importance=[float(0.9**i) for i in range(5)], batch_size=128),
        model=ModelConfig(kind="relu_output", d_hidden=2),
        train=TrainConfig(steps=100, chunk_size=50, log_every=25, eval_batch_size=2048),
        plots=("geometry_2d", "loss"),
    )
    return cfg.replace(**overrides) if overrides else cfg


@pytest.fixture(scope="session")
def make_config():
    return tiny_config


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> tuple[Config, Path]:
    """One finished run directory (trained once per session). Tests must not modify it: copy it
    with ``copy_run`` first."""
    from toymodels import experiment
    from toymodels.io import runs

    cfg = tiny_config(**{"train.steps": 300, "train.chunk_size": 100, "train.log_every": 50,
                         "train.eval_batch_size": 65536, "data.batch_size": 256})
    run_dir = runs.prepare_run_dir(tmp_path_factory.mktemp("runs") / "tiny")
    experiment.run(cfg, run_dir, progress=False, echo=lambda s: None)
    return cfg, run_dir


@pytest.fixture
def copy_run(trained_run, tmp_path):
    """A private, modifiable copy of the session's trained run directory."""

    def copy() -> Path:
        dst = tmp_path / "run_copy"
        shutil.copytree(trained_run[1], dst)
        return dst

    return copy
