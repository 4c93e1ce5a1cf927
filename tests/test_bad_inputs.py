"""A catalogue of bad inputs through the command line: every one exits 2 with ONE stderr line,
``toymodels: error: <field or file>=...``, naming what is wrong, without a traceback, and without
modifying anything that existed (every path and byte under the case's directory is compared).

The cases run in-process through ``toymodels.cli.main`` (fast: all fail before any compute; the
machine's memory is fixed at 8 GB so that the memory checks do not depend on the machine), and a few
through a real ``python -m toymodels.cli`` to prove that no traceback reaches stderr."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import toymodels
from toymodels import cli
from toymodels.io import budget, runs

ROOT = Path(toymodels.__file__).resolve().parent.parent
MEMORY = 8 * 2**30
AN = "analogy-15deg"


# --- setups: each builds the case's pre-existing tree in d (the trained run is the session's) --------------
def copy_run(d: Path, trained: Path) -> Path:
    shutil.copytree(trained, d / "run")
    return d / "run"


def marked(d: Path, status: str, name: str = "m") -> Path:
    with runs.open_run(d / name) as run:
        runs.write_json(run.path / "config.json", {"x": 1})
    m = json.loads((run.path / runs.MARKER).read_text())
    (run.path / runs.MARKER).write_text(json.dumps({**m, "status": status}))
    return run.path


def corrupt(name: str, how):
    """A setup: copy the trained run, then ``how(path of its file name)``."""

    def setup(d: Path, trained: Path) -> None:
        how(copy_run(d, trained) / name)

    return setup


def truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def write(data: bytes):
    return lambda p: p.write_bytes(data)


def savez(**arrays):
    return lambda p: np.savez(p, **arrays)


def edit_json(fn):
    def how(p: Path) -> None:
        d = json.loads(p.read_text())
        fn(d)
        p.write_text(json.dumps(d))

    return how


def toml(text: str | bytes, name: str = "c.toml"):
    def setup(d: Path, trained: Path) -> None:
        (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


def foreign(d: Path, trained: Path) -> None:
    (d / "foreign" / "figures").mkdir(parents=True)
    (d / "foreign" / "figures" / "committed.png").write_bytes(b"png")
    (d / "foreign" / "notes.txt").write_text("mine")


def suite_json(text: str):
    def setup(d: Path, trained: Path) -> None:
        copy_run(d, trained)
        (d / "suite.json").write_text(text)

    return setup


HELD: list[int] = []   # lock file descriptors that the "locked" setup holds for the case


def locked(d: Path, trained: Path, path: Path | None = None) -> None:
    """A run directory whose lock another writer holds (here: this process, through another descriptor;
    flock locks belong to the open file, so the CLI's own attempt is refused as a second process's is)."""
    path = path or marked(d, "running")
    fd = os.open(path / runs.LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    HELD.append(fd)


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    while HELD:
        os.close(HELD.pop())


def locked_run(d: Path, trained: Path) -> None:
    """The trained run, marked finished, with its lock held (``plot`` would write figures into it)."""
    path = copy_run(d, trained)
    (path / runs.MARKER).write_text(json.dumps({"toymodels": "0", "status": "complete", "pid": 1,
                                                "started_utc": "", "files": []}))
    locked(d, trained, path)


def leftover(d: Path, trained: Path) -> None:
    """What a run killed before its marker existed, or a failed older version, leaves: an empty figures/."""
    (d / "left" / "figures").mkdir(parents=True)


SETUPS = {
    "run": lambda d, t: copy_run(d, t),
    "file": lambda d, t: (d / "file").write_text("x"),
    "foreign": foreign,
    "empty": lambda d, t: (d / "empty").mkdir(),
    "complete": lambda d, t: marked(d, "complete"),
    "failed": lambda d, t: marked(d, "failed"),
    "running": lambda d, t: marked(d, "running"),
    "diverged": lambda d, t: marked(d, "diverged"),
    "locked": locked,
    "locked-run": locked_run,
    "leftover": leftover,
    "bad-marker": lambda d, t: ((d / "m").mkdir(), (d / "m" / runs.MARKER).write_text("{not json"),
                                (d / "m" / "config.json").write_text("{}")),
}

OUT = ["--out", "{d}/out", "--quiet"]
FROM = "finetune.from_run={d}/run"

# (id, argv, the line starts "toymodels: error: <start>", other words it must contain, setup)
CASES = [
    # --- values -----------------------------------------------------------------------------------------
    ("steps-negative", ["run", "tms-intro", "train.steps=-5", *OUT], "train.steps=", (), None),
    ("lr-word", ["run", "tms-intro", "train.lr=abc", *OUT], "train.lr=", (), None),
    ("lr-zero", ["run", "tms-intro", "train.lr=0", *OUT], "train.lr=", (), None),
    ("model-kind", ["run", "tms-intro", "model.kind=mlp", *OUT], "model.kind=", ("relu_output",), None),
    ("probability-2", ["run", "tms-intro", "data.feature_probability=2", *OUT], "data.feature_probability=", (), None),
    ("probability-shape", ["run", "tms-intro", "data.feature_probability=[0.5, 0.5]", *OUT],
     "data.feature_probability=", ("n_inst=10",), None),
    ("n_inst-0", ["run", "tms-intro", "n_inst=0", *OUT], "n_inst=", (), None),
    ("seed-negative", ["run", "tms-intro", "seed=-1", *OUT], "seed=", (), None),
    ("n_features-0", ["run", "tms-intro", "data.n_features=0", *OUT], "data.n_features=", (), None),
    ("schedule", ["run", "tms-intro", "train.schedule=exponential", *OUT], "train.schedule=", ("cosine",), None),
    ("unknown-field", ["run", "tms-intro", "train.nonsense=1", *OUT], "train.nonsense=", ("known fields",), None),
    ("unknown-top", ["run", "tms-intro", "bogus=1", *OUT], "bogus=", (), None),
    ("no-equals", ["run", "tms-intro", "train.steps", *OUT], "train.steps=", ("key=value",), None),
    ("unknown-preset", ["run", "tms-nonexistent", *OUT], "preset=", ("tms-intro",), None),
    ("eval-batch-too-big", ["run", "tms-intro", "n_inst=1", "data.feature_probability=0.1",
                            "train.eval_batch_size=2000000", *OUT], "train.eval_batch_size=", ("1000000",), None),
    ("eval-batch-zero", ["run", "tms-intro", "train.eval_batch_size=0", *OUT], "train.eval_batch_size=", (), None),
    ("ft-eval-batch-too-big", ["run", AN, "finetune.eval_batch_size=2000000", *OUT], "finetune.eval_batch_size=",
     ("1000000",), None),
    ("ft-eval-batch-zero", ["run", AN, "finetune.eval_batch_size=0", *OUT], "finetune.eval_batch_size=", (), None),
    ("plots-string", ["run", "tms-intro", "plots=loss", *OUT], "plots='loss'", ("list",), None),
    ("plots-unknown", ["run", "tms-intro", "plots=[\"nope\"]", *OUT], "plots=", ("geometry_2d",), None),
    ("angles-strings", ["run", AN, "features.angles=[\"a\", \"b\"]", *OUT], "features.angles=", (), None),
    ("angles-400", ["run", AN, "features.angles=[0, 400]", *OUT], "features.angles=", ("360",), None),
    ("angles-below", ["run", AN, "features.angles=[-361, 0]", *OUT], "features.angles=", ("360",), None),
    ("angles-nan", ["run", AN, "features.angles=[0, nan]", *OUT], "features.angles=", ("finite",), None),
    ("cosines-strings", ["run", AN, "features.angles=[]", "features.cosines=[[1, \"a\"], [\"a\", 1]]", *OUT],
     "features.cosines=", (), None),
    ("name-nul", ["run", "tms-intro", "name=\"a\\u0000b\"", *OUT], "name=", ("control",), None),
    ("name-newline", ["run", "tms-intro", "name=\"a\\nb\"", *OUT], "name=", ("control",), None),
    ("name-slash", ["run", "tms-intro", "name=\"a/b\"", *OUT], "name=", (), None),
    ("feature-name-nul", ["run", AN, "features.names=[\"help\\u0000ful\", \"toxic\"]", *OUT], "features.names=",
     (), None),
    ("regime-name-control", ["run", AN, "finetune.regimes=[{name=\"a\\u0007\"}]", *OUT], "finetune.regimes.name=",
     (), None),
    ("gamma-under-importance", ["run", AN, "finetune.objective=importance", "finetune.gamma=3", *OUT],
     "finetune.gamma=", ("importance",), None),
    ("factor-under-amplify", ["run", AN, "finetune.importance_factor=5", *OUT], "finetune.importance_factor=",
     ("amplify",), None),
    ("lora-rank-without-lora", ["run", AN, "finetune.lora_rank=2", *OUT], "finetune.lora_rank=", ("lora",), None),
    ("ft-decay-under-adam", ["run", AN, "finetune.weight_decay=0.1", *OUT], "finetune.weight_decay=", (), None),
    ("ft-momentum-under-adam", ["run", AN, "finetune.momentum=0.5", *OUT], "finetune.momentum=", (), None),
    ("train-momentum-under-adamw", ["run", "tms-intro", "train.momentum=0.5", *OUT], "train.momentum=", (), None),
    ("train-decay-under-sgd", ["run", "tms-intro", "train.optimizer=sgd", "train.weight_decay=0.1", *OUT],
     "train.weight_decay=", ("sgd",), None),
    ("ft-lr-beside-optimizer-axis", ["run", AN, "finetune.optimizers=[{name=\"s\", optimizer=\"sgd\", lr=0.1}]",
                                     "finetune.lr=0.01", *OUT], "finetune.lr=", ("finetune.optimizers",), None),
    ("strength-without-defence", ["run", AN, "finetune.regimes=[{name=\"n\", strength=1.0}]", *OUT],
     "finetune.regimes.strength=", (), None),
    ("norms-under-free-geometry", ["run", "tms-intro", "features.norms=2", *OUT], "features.norms=", ("free",), None),
    ("axis-momentum-under-adam", ["run", AN, "finetune.optimizers=[{name=\"a\", optimizer=\"adam\", momentum=0.5}]",
                                  *OUT], "finetune.optimizers.momentum=", (), None),
    ("lora-rank-too-big", ["run", AN, "finetune.trainable=lora", "finetune.lora_rank=5", *OUT], "finetune.lora_rank=",
     (), None),
    ("ft-target-unknown", ["run", AN, "finetune.target=nope", *OUT], "finetune.target=", ("helpful",), None),
    ("from-run-nul", ["run", AN, "finetune.from_run=\"a\\u0000b\"", *OUT], "finetune.from_run=", (), None),
    ("args-unknown-option", ["run", "tms-intro", "--bogus", *OUT], "unrecognized arguments: --bogus", (), None),
    ("args-no-target", ["run"], "the following arguments are required: PRESET", (), None),
    ("args-extra-to-list", ["list", "extra"], "unrecognized arguments: extra", (), None),
    # --- the output directory -----------------------------------------------------------------------------
    ("out-empty-string", ["run", "tms-intro", "--out", "", "--quiet"], "--out=''", (), None),
    ("out-unwritable", ["run", "tms-intro", "--out", "/sys/toymodels-test-out", "--quiet"], "--out=",
     ("cannot be created",), None),
    ("out-under-a-file", ["run", "tms-intro", "--out", "{d}/file/sub", "--quiet"], "--out=", ("is a file",), "file"),
    ("out-is-a-file", ["run", "tms-intro", "--out", "{d}/file", "--quiet"], "--out=", ("not a directory",), "file"),
    ("out-nul", ["run", "tms-intro", "--out", "{d}/a\x00b", "--quiet"], "--out=", ("NUL",), None),
    ("out-not-a-run", ["run", "tms-intro", "--out", "{d}/foreign", "--quiet"], "--out=", ("not a toymodels run",),
     "foreign"),
    ("out-not-a-run-overwrite", ["run", "tms-intro", "--out", "{d}/foreign", "--overwrite", "--quiet"], "--out=",
     ("deletes nothing",), "foreign"),
    ("out-complete-run", ["run", "tms-intro", "--out", "{d}/m", "--quiet"], "--out=", ("--overwrite",), "complete"),
    ("out-failed-run", ["run", "tms-intro", "--out", "{d}/m", "--quiet"], "--out=", ("--resume", "--overwrite"),
     "failed"),
    ("out-killed-run", ["run", "tms-intro", "--out", "{d}/m", "--quiet"], "--out=", ("unfinished", "--resume"),
     "running"),
    ("out-bad-marker", ["run", "tms-intro", "--out", "{d}/m", "--overwrite", "--quiet"], "marker=", (runs.MARKER,),
     "bad-marker"),
    ("out-locked", ["run", "tms-intro", "--out", "{d}/m", "--overwrite", "--quiet"], "--out=", ("PID {pid}",),
     "locked"),
    ("resume-locked", ["run", "tms-intro", "--out", "{d}/m", "--resume", "--quiet"], "--out=", ("PID {pid}",),
     "locked"),
    ("plot-locked", ["plot", "{d}/run"], "RUN_DIR=", ("PID {pid}",), "locked-run"),
    ("out-leftover-dir-resume", ["run", "tms-intro", "--out", "{d}/left", "--resume", "--quiet"], "--out=",
     ("no toymodels run",), "leftover"),
    ("resume-without-out", ["run", "tms-intro", "--resume", "--quiet"], "--resume=", ("--out",), None),
    ("resume-and-overwrite", ["run", "tms-intro", "--out", "{d}/m", "--resume", "--overwrite", "--quiet"], "--out=",
     ("exclude",), "failed"),
    ("resume-missing-dir", ["run", "tms-intro", "--out", "{d}/nope", "--resume", "--quiet"], "--out=",
     ("no run to resume",), None),
    ("resume-empty-dir", ["run", "tms-intro", "--out", "{d}/empty", "--resume", "--quiet"], "--out=",
     ("no toymodels run",), "empty"),
    ("resume-not-a-run", ["run", "tms-intro", "--out", "{d}/foreign", "--resume", "--quiet"], "--out=",
     ("nothing to resume",), "foreign"),
    ("resume-diverged", ["run", "tms-intro", "--out", "{d}/m", "--resume", "--quiet"], "--out=", ("diverged",),
     "diverged"),
    # --- memory (the machine is taken to have 8 GB) -------------------------------------------------------
    ("memory-n_inst", ["run", AN, "n_inst=1000000", *OUT], "n_inst=1000000", ("TB", "memory"), None),
    ("memory-ft-eval-batch", ["run", AN, "n_inst=100", "finetune.eval_batch_size=1000000", *OUT],
     "finetune.eval_batch_size=", ("GB",), None),
    ("memory-n_features", ["run", "tms-intro", "n_inst=1", "data.feature_probability=0.1", "data.n_features=100000",
                           "data.batch_size=100000", "data.importance=1.0", *OUT], "data.n_features=", ("GB",), None),
    ("memory-restarts", ["run", "tms-intro", "n_inst=5000", "data.feature_probability=0.1", "train.restarts=1000",
                         *OUT], "train.restarts=", ("GB",), None),
    # --- finetune.from_run -----------------------------------------------------------------------------------
    ("from-missing-dir", ["run", AN, "finetune.from_run={d}/nope", *OUT], "finetune.from_run=",
     ("no such run directory",), None),
    ("from-not-a-run", ["run", AN, "finetune.from_run={d}/empty", *OUT], "finetune.from_run=", ("config.json",),
     "empty"),
    ("from-truncated-npz", ["run", AN, FROM, *OUT], "finetune.from_run=", ("weights.npz",),
     corrupt("weights.npz", truncate)),
    ("from-bad-config", ["run", AN, FROM, *OUT], "finetune.from_run=", ("config.json", "JSON"),
     corrupt("config.json", write(b"{\"name\": "))),
    ("from-wrong-kind", ["run", AN, FROM, *OUT], "finetune.from_run=", ("features",), "run"),
    ("from-with-angles", ["run", AN, FROM, "features.angles=[0, 30]", *OUT], "features.angles=", ("from_run",), "run"),
    ("from-with-seed", ["run", AN, FROM, "seed=3", *OUT], "seed=", ("from_run",), "run"),
    ("from-with-train", ["run", AN, FROM, "train.steps=5", *OUT], "train.steps=", ("from_run",), "run"),
    ("from-with-n_inst", ["run", AN, FROM, "n_inst=3", *OUT], "n_inst=", ("from_run",), "run"),
    ("from-with-data", ["run", AN, FROM, "data.batch_size=64", *OUT], "data.batch_size=", ("from_run",), "run"),
    ("from-is-out", ["run", AN, FROM, "--out", "{d}/run", "--overwrite", "--quiet"], "finetune.from_run=",
     ("--out",), "run"),
    ("from-toml-with-data", ["run", "{d}/c.toml", *OUT], "data.n_features=", ("from_run",),
     toml("[data]\nn_features = 5\n[features]\n[finetune]\nfrom_run = \"/nowhere\"\n")),
    # --- TOML files ---------------------------------------------------------------------------------------
    ("toml-syntax", ["run", "{d}/c.toml", *OUT], "{d}/c.toml=", ("TOML",), toml("[train\nsteps = 3\n")),
    ("toml-not-utf8", ["run", "{d}/c.toml", *OUT], "{d}/c.toml=", ("UTF-8",), toml(b"name = \"caf\xe9\"\n")),
    ("toml-unknown-field", ["run", "{d}/c.toml", *OUT], "train.learning_rate=", (),
     toml("[train]\nlearning_rate = 0.1\n")),
    ("toml-missing", ["run", "{d}/missing.toml", *OUT], "CONFIG=", (), None),
    ("toml-plots-string", ["run", "{d}/c.toml", *OUT], "plots=", (), toml("plots = \"loss\"\n")),
    ("toml-angle-400", ["run", "{d}/c.toml", *OUT], "features.angles=", (),
     toml("[features]\ngeometry = \"planted\"\nangles = [0.0, 400.0]\n")),
    ("toml-section-not-table", ["run", "{d}/c.toml", *OUT], "train=", (), toml("train = 3\n")),
    # --- toymodels audit ------------------------------------------------------------------------------------
    ("audit-missing-dir", ["audit", "{d}/nope"], "RUN_DIR=", ("no such directory",), None),
    ("audit-a-file", ["audit", "{d}/file"], "RUN_DIR=", ("not a directory",), "file"),
    ("audit-not-a-run", ["audit", "{d}/empty"], "{d}/empty/config.json", ("missing",), "empty"),
    ("audit-bad-variant", ["audit", "{d}/run", "--variant", "nope"], "--variant=", ("batch_topk",), "run"),
    ("audit-sae-run-missing", ["audit", "{d}/run", "--sae-run", "{d}/nope"], "--sae-run=", ("no such",), "run"),
    ("audit-no-features", ["audit", "{d}/run"], "{d}/run/config.json", ("harmful",), "run"),
    ("audit-truncated-npz", ["audit", "{d}/run"], "{d}/run/weights.npz", (), corrupt("weights.npz", truncate)),
    ("audit-out-nul", ["audit", "{d}/run", "--out", "{d}/a\x00b"], "--out=", ("NUL",), "run"),
    # --- toymodels plot on corrupt or foreign runs ------------------------------------------------------
    ("plot-empty-string", ["plot", ""], "RUN_DIR=''", (), None),
    ("audit-empty-string", ["audit", ""], "RUN_DIR=''", (), None),
    ("audit-sae-run-empty", ["audit", "{d}/run", "--sae-run", ""], "--sae-run=''", (), "run"),
    ("plot-missing-dir", ["plot", "{d}/nope"], "RUN_DIR=", (), None),
    ("plot-a-file", ["plot", "{d}/file"], "RUN_DIR=", (), "file"),
    ("plot-unfinished", ["plot", "{d}/run"], "{d}/run/summary.json:", ("missing",),
     corrupt("summary.json", lambda p: p.unlink())),
    ("plot-truncated-npz", ["plot", "{d}/run"], "{d}/run/weights.npz:", ("truncated",), corrupt("weights.npz", truncate)),
    ("plot-random-bytes-npz", ["plot", "{d}/run"], "{d}/run/weights.npz:", ("not an .npz",),
     corrupt("weights.npz", write(os.urandom(64).replace(b"P", b"Q")))),
    ("plot-empty-npz-file", ["plot", "{d}/run"], "{d}/run/weights.npz:", ("empty",), corrupt("weights.npz", write(b""))),
    ("plot-empty-npz-archive", ["plot", "{d}/run"], "{d}/run/weights.npz:", ("no array 'W'",),
     corrupt("weights.npz", savez())),
    ("plot-npz-without-W", ["plot", "{d}/run"], "{d}/run/weights.npz:", ("'W'",),
     corrupt("weights.npz", savez(b_final=np.zeros((3, 5), np.float32)))),
    ("plot-npz-wrong-shape", ["plot", "{d}/run"], "{d}/run/weights.npz:", ("shape",),
     corrupt("weights.npz", savez(W=np.zeros((3, 5), np.float32), b_final=np.zeros((3, 5), np.float32)))),
    ("plot-npz-pickled-object", ["plot", "{d}/run"], "{d}/run/weights.npz:", (),
     corrupt("weights.npz", savez(W=np.array([{"evil": 1}], dtype=object)))),
    ("plot-npy-not-npz", ["plot", "{d}/run"], "{d}/run/weights.npz:", ("zip",),
     corrupt("weights.npz", lambda p: np.save(open(p, "wb"), np.zeros(3)))),
    ("plot-truncated-summary", ["plot", "{d}/run"], "{d}/run/summary.json:", ("JSON",),
     corrupt("summary.json", truncate)),
    ("plot-summary-without-instances", ["plot", "{d}/run"], "{d}/run/summary.json:", ("instances",),
     corrupt("summary.json", edit_json(lambda d: d.pop("instances")))),
    ("plot-summary-a-list", ["plot", "{d}/run"], "{d}/run/summary.json:", ("instances",),
     corrupt("summary.json", write(b"[1, 2]"))),
    ("plot-bad-json-config", ["plot", "{d}/run"], "{d}/run/config.json:", ("JSON",),
     corrupt("config.json", write(b"{'name': 'x'}"))),
    ("plot-invalid-config", ["plot", "{d}/run"], "{d}/run/config.json:", ("model.kind",),
     corrupt("config.json", edit_json(lambda d: d["model"].update(kind="mlp")))),
    ("plot-config-not-utf8", ["plot", "{d}/run"], "{d}/run/config.json:", ("UTF-8",),
     corrupt("config.json", write(b"\xff\xfe{}"))),
    ("plot-truncated-metrics", ["plot", "{d}/run"], "{d}/run/metrics.jsonl:", ("line",),
     corrupt("metrics.jsonl", truncate)),
    ("plot-metrics-not-rows", ["plot", "{d}/run"], "{d}/run/metrics.jsonl:", ("line 1",),
     corrupt("metrics.jsonl", write(b"[1, 2]\n"))),
    ("plot-unknown-figure", ["plot", "{d}/run"], "plots=", ("no_such_figure",),
     corrupt("config.json", edit_json(lambda d: d.update(plots=["loss", "no_such_figure"])))),
    ("plot-corrupt-suite", ["plot", "{d}"], "{d}/suite.json:", ("JSON",), suite_json("{\"members\": [")),
    ("plot-suite-member-escapes", ["plot", "{d}"], "{d}/suite.json:", ("members",),
     suite_json("{\"members\": [\"../run\"], \"plots\": []}")),
]


def tree(d: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


def expand(a: str, d: Path) -> str:
    return a.replace("{d}", str(d)).replace("{pid}", str(os.getpid()))


@pytest.fixture
def case_dir(tmp_path, trained_run, request):
    """The case's directory with its pre-existing tree; the trained run is passed to the setups."""
    return tmp_path


def prepare(case, d: Path, trained: Path):
    _id, argv, start, contains, setup = case
    if isinstance(setup, str):
        SETUPS[setup](d, trained)
    elif setup is not None:
        setup(d, trained)
    return [expand(a, d) for a in argv], expand(start, d), [expand(c, d) for c in contains]


def check_error(code: int, err: str, start: str, contains: list[str]) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    line = err.rstrip("\n")
    assert line.startswith(f"toymodels: error: {start}"), line
    for word in contains:
        assert word in line, (word, line)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path, trained_run, capsys, monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda: MEMORY)
    argv, start, contains = prepare(case, tmp_path, trained_run[1])
    before = tree(tmp_path)
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    _out, err = capsys.readouterr()
    check_error(code, err, start, contains)
    assert tree(tmp_path) == before, "a failed command modified what existed"
    assert not Path("/sys/toymodels-test-out").exists()


def test_the_catalogue_is_large_and_covers_every_class():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60
    for prefix in ("out-", "resume-", "memory-", "from-", "toml-", "plot-", "audit-"):
        assert sum(i.startswith(prefix) for i in ids) >= 3, prefix


SUBPROCESS = ["out-unwritable", "plot-random-bytes-npz"]


@pytest.mark.parametrize("name", SUBPROCESS)
def test_no_traceback_reaches_stderr_of_a_real_process(name, tmp_path, trained_run):
    """The real ``python -m toymodels.cli``: the same one line, exit 2, on the real machine's memory."""
    case = next(c for c in CASES if c[0] == name)
    argv, start, contains = prepare(case, tmp_path, trained_run[1])
    before = tree(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "toymodels.cli", *argv], capture_output=True, text=True, env=env,
                       timeout=300, check=False)
    check_error(r.returncode, r.stderr, start, contains)
    assert tree(tmp_path) == before
