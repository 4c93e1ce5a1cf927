"""A user's session is theirs: importing toymodels and running it (figures included) leaves the
matplotlib backend as the user set it, never imports pyplot, and sets no JAX flags."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import sys, tempfile
import matplotlib
matplotlib.use("svg")                       # the user's choice, not a default toymodels could match by luck
import jax
flags_before = {k: v for k, v in jax.config.values.items()}
import toymodels as tm
import toymodels.plots, toymodels.cli       # importing everything, the CLI module included
cfg = tm.get_preset("tms-intro").replace(**{"train.steps": 20, "train.restarts": 1, "data.batch_size": 64,
                                            "train.eval_batch_size": 256, "n_inst": 2,
                                            "data.feature_probability": [1.0, 0.1]})
out = tm.run(cfg, tempfile.mkdtemp() + "/r", progress=False, echo=lambda s: None)
fig = tm.plot_features_in_2d([[[1.0, 0.0], [0.0, 1.0]]])
assert (out / "figures" / "tms-intro_geometry_2d.png").is_file()
changed = {k for k, v in jax.config.values.items() if flags_before.get(k) != v}
print("backend", matplotlib.get_backend(), "pyplot", "matplotlib.pyplot" in sys.modules, "changed", sorted(changed))
"""


def test_importing_and_running_leaves_the_session_alone():
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "backend svg pyplot False changed []" in res.stdout, res.stdout
