"""toymodels.reproduce: the comparison on tiny runs, the machine-aware modes (exact on the committed
machine class, a derived tolerance elsewhere), and (CI) the cheap committed results reproduce.

``test_committed_result_reproduces`` reruns analogy-15deg and tms-intro at their full committed configs
(about 1 minute together). On the machine class that made results/ it demands bit-identity; on any other
x86-64 machine it allows the drift measured across XLA CPU targets (results/<name>/drift.json). Its
message says whether a failure is a stale result or a machine difference beyond that tolerance.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from toymodels import compare, drift, experiment, presets, reproduce
from toymodels.io import runs

ROOT = Path(__file__).resolve().parent.parent


def _failing(reports) -> dict[str, list[str]]:
    return {f.name: [p for p, _ in f.worst] for f in reports if not f.ok}


def _edit_json(path: Path, edit) -> None:
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


def _edit_npz(path: Path, edit) -> None:
    with np.load(path) as z:
        arrays = {k: z[k].copy() for k in z.files}
    edit(arrays)
    np.savez(path, **arrays)


@pytest.fixture
def committed_and_copy(trained_run, tmp_path):
    """The session's tiny run (read-only) and a private copy of it to perturb."""
    dst = tmp_path / "rerun"
    shutil.copytree(trained_run[1], dst)
    return trained_run[1], dst


def test_identical_directories_pass(committed_and_copy):
    files = reproduce.compare_dirs(*committed_and_copy)
    names = {f.name for f in files}
    assert {"config.json", "summary.json", "metrics.jsonl", "weights.npz"} <= names
    assert "env.json" not in names
    assert all(f.ok and f.max_diff == 0 for f in files), reproduce.format_report([reproduce.Report("x", files)])


def test_weight_changed_by_1e_3_fails_and_is_named(committed_and_copy):
    a, b = committed_and_copy
    _edit_npz(b / "weights.npz", lambda w: w["W"].__setitem__((1, 0, 2), w["W"][1, 0, 2] + 1e-3))
    files = reproduce.compare_dirs(a, b)
    assert _failing(files) == {"weights.npz": ["W[1, 0, 2]"]}
    (bad,) = [f for f in files if not f.ok]
    assert bad.max_diff == pytest.approx(1e-3, rel=1e-3)
    assert "weights.npz" in reproduce.format_report([reproduce.Report("tiny", files)])


def test_weight_changed_within_tolerance_passes(committed_and_copy):
    a, b = committed_and_copy
    _edit_npz(b / "weights.npz", lambda w: w["b_final"].__iadd__(reproduce.WEIGHT_ATOL / 4))
    assert not _failing(reproduce.compare_dirs(a, b))


def test_weight_shape_or_key_change_fails(committed_and_copy):
    a, b = committed_and_copy
    _edit_npz(b / "weights.npz", lambda w: w.update(extra=np.zeros(2), W=w["W"][:, :, :-1]))
    assert set(_failing(reproduce.compare_dirs(a, b))["weights.npz"]) == {"W", "extra"}


def test_summary_number_changed_fails(committed_and_copy):
    a, b = committed_and_copy
    _edit_json(b / "summary.json", lambda s: s["instances"][1].__setitem__("eval_loss", s["instances"][1]["eval_loss"] * 1.01))
    assert _failing(reproduce.compare_dirs(a, b)) == {"summary.json": ["instances[1].eval_loss"]}


def test_missing_extra_and_string_differences_fail(committed_and_copy):
    a, b = committed_and_copy

    def edit(s):
        del s["n_features"]
        s["new_number"] = 1.0
        s["model"] = "linear"
        s["instances"].pop()

    _edit_json(b / "summary.json", edit)
    (f,) = [f for f in reproduce.compare_dirs(a, b) if not f.ok]
    assert set(p for p, _ in f.worst) == {"n_features", "new_number", "model", "instances"}
    assert dict(f.worst)["n_features"] == "missing in the rerun"


def test_timing_keys_are_ignored(committed_and_copy):
    a, b = committed_and_copy

    def edit(s):
        s["train_seconds"] *= 7
        s["wall_seconds"] += 100
        del s["instance_steps_per_second"]

    _edit_json(b / "summary.json", edit)
    assert not _failing(reproduce.compare_dirs(a, b))
    assert {"train_seconds", "wall_seconds", "elapsed_s", "ratio_median", "step_ms"} <= reproduce.IGNORED_KEYS


def test_config_json_is_compared_exactly(committed_and_copy):
    a, b = committed_and_copy
    _edit_json(b / "config.json", lambda c: c["train"].__setitem__("lr", c["train"]["lr"] * (1 + 1e-9)))
    assert _failing(reproduce.compare_dirs(a, b)) == {"config.json": ["train.lr"]}


def test_committed_file_not_rewritten_fails(committed_and_copy):
    a, b = committed_and_copy
    (b / "metrics.jsonl").unlink()
    assert "metrics.jsonl" in _failing(reproduce.compare_dirs(a, b))


def test_rates_tolerate_a_few_samples_not_a_real_change():
    one = 1 / 8192  # one sample of an 8192 evaluation batch, as a fraction
    pp = 100 * one
    base = {"harmful": {"toxic": {"rate_before": {"mean": 0.0244}, "rate_change_pp": {"mean": 1.73},
                                  "rate_rel_increase_pct": {"mean": 88.0}, "preact_change": {"mean": 0.76}}}}

    def moved(**delta):
        d = json.loads(json.dumps(base))
        for k, v in delta.items():
            d["harmful"]["toxic"][k]["mean"] += v
        return reproduce.compare_json(base, d)[1]

    assert not moved(rate_before=2 * one, rate_change_pp=2 * pp, rate_rel_increase_pct=1.0)
    assert [p for _, p, _ in moved(rate_before=20 * one)] == ["harmful.toxic.rate_before.mean"]
    assert [p for _, p, _ in moved(rate_change_pp=8 * pp)] == ["harmful.toxic.rate_change_pp.mean"]
    assert [p for _, p, _ in moved(preact_change=1e-3)] == ["harmful.toxic.preact_change.mean"]  # not a rate
    corr = {"correlations": {"overlap_vs_rate_change_pp": {"pearson": 0.41}}}
    assert not reproduce.compare_json(corr, {"correlations": {"overlap_vs_rate_change_pp": {"pearson": 0.44}}})[1]
    assert reproduce.compare_json(corr, {"correlations": {"overlap_vs_rate_change_pp": {"pearson": 0.61}}})[1]
    assert reproduce.number_tolerance(("finetune", "train_seconds")) is None
    assert reproduce.number_tolerance(("rows", 0, "overhead", "step_ms", 3)) is None


def test_preset_check(tmp_path):
    d = tmp_path / "tms-intro"
    d.mkdir()
    cfg = presets.get("tms-intro")
    runs.write_json(d / "config.json", cfg.to_dict())
    assert reproduce.preset_diffs(d) == []
    runs.write_json(d / "config.json", cfg.replace(**{"train.steps": 10}).to_dict())
    (diff,) = reproduce.preset_diffs(d)
    assert diff.startswith("config.json: train.steps: 10 committed, 10000 preset")
    assert reproduce.preset_diffs(tmp_path) == [f"no preset named {tmp_path.name!r}"]


def test_suite_reruns_from_its_committed_files(make_config, tmp_path):
    small = {"train.steps": 50, "plots": []}
    members = (make_config(name="m1", **small), make_config(name="m2", seed=1, **small))
    suite = presets.Suite("tiny-suite", members)
    committed = experiment.run_suite(suite, runs.prepare_run_dir(tmp_path / "tiny-suite"), progress=False,
                                     echo=lambda s: None)
    assert isinstance(reproduce.load_committed(committed), presets.Suite)
    report = reproduce.check(committed, keep=tmp_path / "keep")
    assert report.preset_diffs == ["no preset named 'tiny-suite'"] and not report.error
    assert {f.name for f in report.files} >= {"suite.json", "m1/weights.npz", "m2/summary.json"}
    assert all(f.ok for f in report.files), reproduce.format_report([report])


def test_cli_exit_codes(trained_run, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("reproduce_cli", ROOT / "experiments" / "reproduce.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    shutil.copytree(trained_run[1], tmp_path / "results" / "tiny")
    assert cli.main(["--results", str(tmp_path / "results"), "nope"]) == 2
    assert cli.main(["--results", str(tmp_path / "results"), "tiny"]) == 1  # reproduces, but is no preset
    out = capsys.readouterr().out
    assert "no preset named 'tiny'" in out and "ok   weights.npz" in out


# --- machines ----------------------------------------------------------------------------------------
def _other_machine(fp: dict) -> dict:
    other = json.loads(json.dumps(fp))
    other["cpu"]["isa"] = [f for f in other["cpu"]["isa"] if not f.startswith("avx512")]
    other["cpu"]["model"] = "Another CPU"
    return other


def test_env_fingerprint_decides_the_mode(committed_and_copy):
    a, b = committed_and_copy
    here = reproduce.this_fingerprint()
    assert reproduce.committed_fingerprint(a) == here   # the tiny run was made on this machine
    mode, rep = reproduce.mode_for(a)
    assert mode.exact and rep.machine == "same"
    mode, rep = reproduce.mode_for(a, here=_other_machine(here))
    assert not mode.exact and rep.machine == "other" and rep.envelope == "none"
    _edit_json(b / "env.json", lambda e: e.pop("cpu"))   # an env.json from before the CPU was recorded
    mode, rep = reproduce.mode_for(b)
    assert not mode.exact and rep.machine == "unknown" and "unrecorded" in rep.committed_on


def test_same_machine_is_exact_other_machine_is_tolerant(committed_and_copy):
    a, b = committed_and_copy
    _edit_npz(b / "weights.npz", lambda w: w["W"].__setitem__((0, 0, 0), np.nextafter(w["W"][0, 0, 0], np.inf)))
    exact, _ = reproduce.mode_for(a)
    assert _failing(compare.compare_dirs(a, b, exact)) == {"weights.npz": ["W[0, 0, 0]"]}   # one ulp: a change
    other, _ = reproduce.mode_for(a, here=_other_machine(reproduce.this_fingerprint()))
    assert not _failing(compare.compare_dirs(a, b, other))   # one ulp is well inside WEIGHT_ATOL


def test_drift_envelope_widens_the_cross_machine_tolerance_only_where_measured(committed_and_copy, tmp_path):
    a, b = committed_and_copy
    step = 3 * reproduce.WEIGHT_ATOL
    # a fake "rerun on another target" that moved W[1, 0, 2] by `step`: the measured envelope
    target = tmp_path / "target"
    shutil.copytree(a, target)
    _edit_npz(target / "weights.npz", lambda w: w["W"].__setitem__((1, 0, 2), w["W"][1, 0, 2] + step))
    env = drift.envelope_of(a, [target])
    assert env == {"weights.npz": {"W": pytest.approx(step, rel=0.01)}}
    mode = compare.Mode(envelope=env)
    # allowed: WEIGHT_ATOL + 2 x envelope (compare.CROSS_MACHINE_FACTOR)
    for delta, ok in ((1.9 * step, True), (2 * step + 2 * reproduce.WEIGHT_ATOL, False)):
        shutil.rmtree(b)
        shutil.copytree(a, b)
        _edit_npz(b / "weights.npz", lambda w, d=delta: w["W"].__setitem__((0, 1, 1), w["W"][0, 1, 1] + d))
        assert (not _failing(compare.compare_dirs(a, b, mode))) is ok, delta
    # b_final has no envelope: the base tolerance only
    _edit_npz(b / "weights.npz", lambda w: w["b_final"].__iadd__(2 * reproduce.WEIGHT_ATOL))
    assert "weights.npz" in _failing(compare.compare_dirs(a, b, mode))


def test_drift_json_is_used_only_for_the_files_it_was_measured_on(committed_and_copy):
    a, b = committed_and_copy
    doc = {"envelope": {"weights.npz": {"W": 1.0}}, "results_sha256": reproduce.results_digest(b)}
    runs.write_json(b / reproduce.DRIFT_FILE, doc)
    env, status = reproduce.read_envelope(b)
    assert status == "measured" and env == {"weights.npz": {"W": 1.0}}
    assert reproduce.results_digest(b) == reproduce.results_digest(a)   # drift.json itself is not hashed
    _edit_json(b / "summary.json", lambda s: s.__setitem__("seed", 99))
    assert reproduce.read_envelope(b) == ({}, "stale")
    (b / reproduce.DRIFT_FILE).write_text("{not json")
    assert reproduce.read_envelope(b) == ({}, "stale")


def _report(a, b, here) -> reproduce.Report:
    mode, rep = reproduce.mode_for(a, here=here)
    rep.files = compare.compare_dirs(a, b, mode)
    return rep


def test_failures_say_stale_or_beyond_tolerance_and_never_advise_overwriting(committed_and_copy):
    a, b = committed_and_copy
    here, other = reproduce.this_fingerprint(), _other_machine(reproduce.this_fingerprint())
    _edit_npz(b / "weights.npz", lambda w: w["W"].__setitem__((1, 0, 2), w["W"][1, 0, 2] + 1e-3))
    same, far = _report(a, b, here), _report(a, b, other)
    assert same.verdict == "stale" and far.verdict == "beyond-tolerance"
    assert "STALE" in reproduce.format_report([same])
    text = reproduce.format_report([far])
    assert "BEYOND THE CROSS-MACHINE TOLERANCE" in text and "Another CPU" in text
    _edit_json(b / "summary.json", lambda s: s.__setitem__("new_key", 1.0))   # structure: stale anywhere
    assert _report(a, b, other).verdict == "stale"
    for r in (same, far):
        words = reproduce.format_report([r]).lower()
        assert "regenerate" not in words and "gallery.py" not in words and "then commit" not in words


@pytest.mark.parametrize("name", reproduce.CHEAP)
def test_committed_result_reproduces(name):
    """CI: the committed results of the cheap presets are what the current code produces at their full
    configs (bit for bit on the machine class that made them; within the derived cross-machine tolerance
    elsewhere), and their configs are still the presets'."""
    report = reproduce.check(ROOT / "results" / name)
    if not report.ok:
        pytest.fail(f"results/{name} did not reproduce ({report.verdict}):\n" + reproduce.format_report([report]),
                    pytrace=False)


def test_config_floats_may_differ_by_a_few_ulp_across_machines_only(committed_and_copy):
    """numpy's SIMD pow/log kernels (used to build presets' configs) are CPU-dependent to a few ulp."""
    a, b = committed_and_copy
    _edit_json(b / "config.json", lambda c: c["train"].__setitem__("lr", float(np.nextafter(c["train"]["lr"], 1.0))))
    exact, _ = reproduce.mode_for(a)
    assert _failing(compare.compare_dirs(a, b, exact)) == {"config.json": ["train.lr"]}
    other, _ = reproduce.mode_for(a, here=_other_machine(reproduce.this_fingerprint()))
    assert not _failing(compare.compare_dirs(a, b, other))
    _edit_json(b / "config.json", lambda c: c["train"].__setitem__("lr", c["train"]["lr"] * (1 + 1e-12)))
    assert _failing(compare.compare_dirs(a, b, other)) == {"config.json": ["train.lr"]}
