"""The overlap-table and crowding presets: the pure functions of toymodels.lab_tables (task selection,
crowding groups) and one tiny real overlap-table suite
whose table, summary.json and overlap_table.md are checked against the member runs' own summaries."""

from __future__ import annotations

import json
import math
import re

import pytest
import scipy.stats

from toymodels import experiment, presets, stats
from toymodels.config import ConfigError
from toymodels.io import runs
from toymodels.lab import suites as lt
from toymodels.presets.lab import overlap_member


# --- task selection and regimes -----------------------------------------------------------------------
def test_select_tasks_picks_nearest_farthest_and_the_one_nearest_the_midpoint():
    cos = {"f1": 0.1, "f2": 0.9, "f3": -0.8, "f4": 0.2, "f5": 0.95}
    norms = {"f1": 1.0, "f2": 1.0, "f3": 1.0, "f4": 1.0, "f5": 0.1}  # f5 is not represented
    assert lt.select_tasks(cos, norms) == {"nearest": "f2", "middling": "f1", "farthest": "f3"}
    # midpoint (0.9 - 0.8) / 2 = 0.05: f1 (0.1) is nearer than f4 (0.2)
    assert lt.select_tasks(cos, {**norms, "f5": 0.5})["nearest"] == "f5"
    assert lt.select_tasks({"a": 0.3, "b": -0.2}, {"a": 1.0, "b": 1.0}) == {"nearest": "a", "farthest": "b"}
    assert lt.select_tasks({"a": 0.3}, {"a": 0.2}) == {}
    tie = lt.select_tasks({"a": 0.5, "b": 0.5, "c": 0.0}, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert tie == {"nearest": "a", "middling": "b", "farthest": "c"}


def test_regime_names_split_into_family_and_target():
    assert lt.split_regime("narrow@f3") == ("narrow", "f3")
    assert lt.split_regime("full-all@f12") == ("full-all", "f12")
    assert lt.split_regime("narrow") == ("narrow", "")
    regs = overlap_member(0, 6, 2, (0.1,)).finetune.regimes
    assert [r.name for r in regs[:2]] == ["narrow@f1", "narrow@f2"]
    assert {(lt.split_regime(r.name)[1], r.target) for r in regs} == {(r.target, r.target) for r in regs}


def test_suite_members_override_keeps_named_members_only():
    suite = presets.get("crowding")
    sub = suite.replace(**{"suite.members": ["crowding-n16", "crowding-n8"], "train.steps": 7})
    assert [m.name for m in sub.members] == ["crowding-n8", "crowding-n16"]  # the suite's order
    assert all(m.train.steps == 7 for m in sub.members) and sub.summary == "crowding"
    with pytest.raises(ConfigError, match="suite.members"):
        suite.replace(**{"suite.members": ["crowding-n9"]})


def test_crowding_groups_aggregate_seeds_per_ratio_and_regime():
    def row(ratio, regime, pp, seed):
        base = {k: 0.0 for k in lt.CROWDING_METRICS}
        return {**base, "features_per_dim_nominal": ratio, "n_features": 4 * ratio, "d_hidden": 4, "regime": regime,
                "rate_change_pp": pp, "angle_before": 45.0, "angle_after": 45.0 + seed, "pretrain_instance": seed}

    rows = [row(2, "narrow", pp, s) for s, pp in enumerate([0.1, 0.3, -0.1])] + \
           [row(2, "full-all", -1.0, s) for s in range(3)] + [row(8, "narrow", 0.2, s) for s in range(2)]
    groups = lt.crowding_groups(rows)
    assert [(g["n_over_d"], g["regime"], g["n_seeds"]) for g in groups] == [(2, "narrow", 3), (2, "full-all", 3),
                                                                             (8, "narrow", 2)]
    g = groups[0]
    assert g["rate_change_pp"]["mean"] == pytest.approx(0.1) and g["rate_change_pp"]["min"] == pytest.approx(-0.1)
    assert g["fraction_rate_up"] == pytest.approx(2 / 3) and g["rotation_deg"]["max"] == pytest.approx(2.0)


# --- one tiny real suite -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def overlap_suite(tmp_path_factory):
    """A one-member overlap-table suite (5 features in 2-D, 2 sparsities), trained long enough for the
    features to be represented, fine-tuned briefly."""
    member = overlap_member(0, 5, 2, (0.1, 0.05)).replace(**{
        "train.steps": 2000, "train.chunk_size": 1000, "data.batch_size": 256, "train.eval_batch_size": 4096,
        "finetune.steps": 60, "finetune.chunk_size": 60, "finetune.batch_size": 256,
        "finetune.eval_batch_size": 4096, "plots": []})
    suite = presets.Suite("overlap-tiny", (member,), plots=("overlap_scatter",), summary="overlap_table")
    run_dir = runs.prepare_run_dir(tmp_path_factory.mktemp("suite") / "overlap-tiny")
    experiment.run_suite(suite, run_dir, progress=False, echo=lambda s: None)
    return run_dir, member


def test_table_rows_equal_the_member_summary_values(overlap_suite):
    run_dir, member = overlap_suite
    summary = json.loads((run_dir / "summary.json").read_text())
    ft = json.loads((run_dir / member.name / "summary.json").read_text())["finetune"]
    rows = summary["rows"]
    assert rows, "the tiny suite should have represented features (else this test checks nothing)"
    assert summary["n_rows"] == len(rows) and summary["n_models"] == member.n_inst
    for r in rows:
        e = ft["instances"][r["ft_instance"]]
        h = e["harmful"]["toxic"]
        assert (r["family"], r["target"]) == lt.split_regime(e["regime"]) and e["target"] == r["target"]
        assert r["regime"] == f"{r['family']} · {e['optimizer']}" and r["optimizer"] == e["optimizer"]
        assert r["pretrain_instance"] == e["pretrain_instance"]
        assert r["overlap"] == e["overlap"]["score"]["before"] == max(0.0, min(1.0, r["overlap_signed"]))
        assert r["overlap_signed"] == pytest.approx(h["cos"]["before"], abs=1e-6)
        assert (r["rate_before"], r["rate_after"], r["rate_change_pp"]) == \
               (h["rate"]["before"], h["rate"]["after"], h["rate"]["change_pp"])
        assert r["rate_change_pp"] == pytest.approx(100 * (r["rate_after"] - r["rate_before"]))
        if r["rate_before"] > 0:
            assert r["rate_rel_increase_pct"] == pytest.approx(100 * (r["rate_after"] / r["rate_before"] - 1))
        else:
            assert r["rate_rel_increase_pct"] is None
        assert r["target_gain"] == e["target_gain"]
    # the tasks are chosen from the pretrained geometry: nearest has the largest cos among eligible candidates
    for (model, fam) in {(r["model"], r["regime"]) for r in rows}:
        mine = {r["task"]: r for r in rows if r["model"] == model and r["regime"] == fam}
        near = mine["nearest"]
        cands = [e for e in ft["instances"] if e["pretrain_instance"] == near["pretrain_instance"]
                 and lt.split_regime(e["regime"])[0] == near["family"] and e["optimizer"] == near["optimizer"]
                 and e["target_norm"]["before"] >= lt.MIN_NORM]
        best = max(e["harmful"]["toxic"]["cos"]["before"] for e in cands)
        assert mine["nearest"]["cos_before"] == best
        if "farthest" in mine:
            assert mine["farthest"]["cos_before"] == min(e["harmful"]["toxic"]["cos"]["before"] for e in cands)
        assert len({r["target"] for r in mine.values()}) == len(mine)


def test_suite_summary_correlations_recompute_from_its_rows(overlap_suite):
    run_dir, _ = overlap_suite
    summary = json.loads((run_dir / "summary.json").read_text())
    for fam, corr in summary["correlations"]["table"].items():
        sel = [r for r in summary["rows"] if r["regime"] == fam]
        x = [r["overlap"] for r in sel]
        y = [r["rate_change_pp"] for r in sel]
        c = corr["overlap_vs_rate_change_pp"]
        assert c["n"] == len(sel)
        constant = len(set(x)) < 2 or len(set(y)) < 2
        for stat, fn in (("pearson", scipy.stats.pearsonr), ("spearman", scipy.stats.spearmanr)):
            want = math.nan if constant else float(fn(x, y).statistic)
            if math.isnan(want):  # e.g. every overlap 0: no correlation, and summary.json says NaN
                assert math.isnan(c[stat])
            else:
                assert c[stat] == pytest.approx(want)
            ci = stats.correlation_ci(x, y, stat, groups=[lt.model_key(r) for r in sel])  # resampling models
            assert c[f"{stat}_ci"] == [pytest.approx(ci["lo"], nan_ok=True), pytest.approx(ci["hi"], nan_ok=True)]


def test_markdown_table_has_one_row_per_model_and_task(overlap_suite):
    run_dir, _ = overlap_suite
    summary = json.loads((run_dir / "summary.json").read_text())
    md = (run_dir / "overlap_table.md").read_text()
    sections = re.split(r"^## regime `([^`]+)`.*$", md, flags=re.MULTILINE)
    fams = sections[1::2]
    assert fams == list(summary["regimes"])
    for fam, body in zip(fams, sections[2::2]):
        table = body.split("\n\n")[1]  # the first table of the section; the correlations follow
        lines = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| model")]
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
        keys = [(c[0], c[1].split(" ")[0]) for c in cells]
        want = [(r["model"], r["task"]) for r in summary["rows"] if r["regime"] == fam]
        assert keys == want and len(set(keys)) == len(keys)
        for c, r in zip(cells, [r for r in summary["rows"] if r["regime"] == fam]):
            assert c[2] == f"{r['overlap']:.2f}" and c[6] == f"{r['rate_change_pp']:+.2f}"
    assert (run_dir / "figures" / "overlap-tiny_overlap_scatter.png").stat().st_size > 0
