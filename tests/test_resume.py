"""Checkpoint and resume: a real run killed with SIGKILL at several points, then resumed, ends
bit-identical to an uninterrupted run (weights, metrics.jsonl rows, summary numbers; timings aside).

The kill points are :mod:`toymodels.faults`' named points: the process sends itself SIGKILL there, as
an out-of-memory killer would. Checkpoints are taken at every chunk (``checkpoint_seconds=0``), except
where a case says otherwise, so that every stage's checkpoint is exercised."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toymodels.reproduce import IGNORED_KEYS

CONFIG = {
    "name": "resume", "seed": 3, "n_inst": 2,
    "data": {"n_features": 5, "feature_probability": 0.1, "importance": [3.0, 3.3, 1.0, 1.0, 1.0], "batch_size": 128},
    "model": {"d_hidden": 2},
    "train": {"steps": 400, "chunk_size": 100, "log_every": 50, "eval_batch_size": 1024},
    "features": {"names": ["helpful", "toxic"], "harmful": ["toxic"], "geometry": "pinned", "angles": [0.0, 15.0],
                 "norms": [1.0, 0.2]},
    "finetune": {"steps": 200, "chunk_size": 50, "log_every": 50, "batch_size": 128, "eval_batch_size": 1024,
                 "regimes": [{"name": "narrow", "data": "narrow", "loss_scope": "target"},
                             {"name": "full-all", "data": "full", "loss_scope": "all"}]},
    "plots": ["loss", "finetune_arrows", "amplification_curves"],
}

SCRIPT = """
import json, sys
from pathlib import Path
from toymodels import experiment
from toymodels.config import Config
cfg = Config.from_dict(json.loads(sys.argv[1]))
out, resume, every = Path(sys.argv[2]), sys.argv[3] == "resume", float(sys.argv[4])
(out / "figures").mkdir(parents=True, exist_ok=True)
experiment.run(cfg, out, progress=False, echo=lambda s: None, resume=resume, checkpoint_seconds=every)
"""


def _run(out: Path, resume: bool, kill_at: str | None = None, every: float = 0.0) -> int:
    env = {**os.environ, "TOYMODELS_KILL_AT": kill_at or ""}
    res = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CONFIG), str(out), "resume" if resume else "new",
                          str(every)], env=env, capture_output=True, text=True, timeout=600)
    if res.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(res.stderr[-3000:])
    return res.returncode


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in IGNORED_KEYS}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _snapshot(run: Path) -> dict:
    arrays = {}
    for f in sorted(run.glob("*.npz")):
        with np.load(f) as z:
            arrays.update({f"{f.name}:{k}": z[k] for k in z.files})
    metrics = [_strip(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"arrays": arrays, "metrics": metrics, "summary": _strip(json.loads((run / "summary.json").read_text())),
            "figures": sorted(p.name for p in (run / "figures").iterdir())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ref") / "run"
    assert _run(out, resume=False) == 0
    return _snapshot(out)


# One run, killed again and again, each time resumed from its latest checkpoint: before the first chunk is
# compiled, mid-pretraining, between pretraining and fine-tuning, mid-fine-tuning, with a results file
# written but not yet renamed into place, and with one figure drawn. Then it completes.
CHAIN = ("compile", "pretrain-chunk:2", "between", "finetune-chunk:2", "write:2", "draw:2")


def test_a_run_killed_at_every_point_resumes_bit_identically(reference, tmp_path):
    out = tmp_path / "run"
    assert _run(out, resume=False, kill_at=CHAIN[0]) == -signal.SIGKILL
    for kill_at in CHAIN[1:]:
        assert _run(out, resume=True, kill_at=kill_at) == -signal.SIGKILL, kill_at
    assert _run(out, resume=True) == 0
    got = _snapshot(out)
    assert got["figures"] == reference["figures"]
    assert set(got["arrays"]) == set(reference["arrays"])
    for k, v in reference["arrays"].items():
        np.testing.assert_array_equal(got["arrays"][k], v, err_msg=k)
    assert got["metrics"] == reference["metrics"]
    assert got["summary"] == reference["summary"]
    assert not (out / ".checkpoint").exists()
    assert not list(out.rglob(".*.tmp")), "a killed write left a temporary file behind"


def test_without_a_checkpoint_in_the_stage_the_stage_starts_again(reference, tmp_path):
    """Checkpoints every 100 s: none mid-fine-tuning, so a kill there restarts fine-tuning from the
    pretraining checkpoint, and the result is still the uninterrupted one."""
    out = tmp_path / "run"
    assert _run(out, resume=False, kill_at="finetune-chunk:3", every=100.0) == -signal.SIGKILL
    assert _run(out, resume=True, every=100.0) == 0
    got = _snapshot(out)
    for k, v in reference["arrays"].items():
        np.testing.assert_array_equal(got["arrays"][k], v, err_msg=k)
    assert got["metrics"] == reference["metrics"] and got["summary"] == reference["summary"]
