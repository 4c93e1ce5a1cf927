"""The robustness table's verdicts on constructed fine-tune records with known answers: paired t intervals
over pretrained models, rotation-equivalent runs counted once, strata never pooled."""

from __future__ import annotations

import numpy as np

from toymodels.lab import inference, robustness

MODELS = 10   # inference.MIN_CLUSTERS: a cell of fewer models claims no direction


def _inst(index, model, regime, opt, orient, change, gain=2.0, angle_after=15.0, push=0.966, at=None):
    rate = {"before": 0.04, "after": 0.04 + change / 100, "change_pp": change, "se_change_pp": 0.01}
    h = {"rate": rate, "cos": {"before": 0.966}, "angle_deg": {"before": 15.0, "after": angle_after},
         "norm": {"after": 0.55}, "first_order": {"per_unit_push": push},
         "at_gain": {"1.5": {"rate_change_pp": change if at is None else at, "step": 100.0}}}
    return {"index": index, "pretrain_instance": model, "regime": regime, "optimizer": opt, "orientation": orient,
            "target_gain": gain, "harmful": {"toxic": h}}


def _ft(cells, orientations=(0,)):
    """cells: (regime, optimizer, mean change, spread across models[, push, at-gain change])."""
    inst = []
    for reg, opt, mean, spread, *rest in cells:
        push, at = (rest + [0.966, None])[:2] if rest else (0.966, None)
        for m in range(MODELS):
            for o in orientations:
                # rotated copies differ per model but (for a "rotation-equivariant" optimiser) not per rotation
                jitter = 0.0 if opt in ("sgd",) else 0.01 * o
                inst.append(_inst(len(inst), m, reg, opt, o, mean + spread * (m - 4.5) + jitter,
                                  angle_after=15.0 + jitter, push=push, at=at))
    regs = list(dict.fromkeys(c[0] for c in cells))
    opts = list(dict.fromkeys(c[1] for c in cells))
    return {"harmful": ["toxic"], "matched_gains": [1.5], "instances": inst,
            "regimes": [{"name": r, "data": "narrow", "loss_scope": "target"} for r in regs],
            "optimizers": [{"name": o} for o in opts]}


def test_direction_needs_the_whole_interval_on_one_side():
    assert robustness.direction([0.1, 0.5]) == "up"
    assert robustness.direction([-0.5, -0.1]) == "down"
    assert robustness.direction([-0.1, 0.5]) == "no evidence"
    assert robustness.direction(None) == "no evidence"


def test_verdicts_survive_flip_and_push():
    ft = _ft([("narrow", "sgd", 1.0, 0.1), ("narrow", "adam", 1.1, 0.1, 1.05),
              ("full-all", "sgd", 2.0, 0.1), ("full-all", "adam", -1.0, 0.1),
              ("full", "sgd", 0.1, 1.0), ("full", "adam", -1.0, 0.1)])
    rows = robustness.group_rows(ft)
    v = robustness.verdicts(rows)
    assert v["narrow"]["survives"] and not v["narrow"]["flips"]
    assert not v["narrow"]["push_equals_cos"] and v["narrow"]["push_equals_cos_in"] == ["sgd, axis-aligned"]
    assert v["full-all"]["flips"] and not v["full-all"]["survives"]
    assert not v["full"]["survives"] and not v["full"]["flips"]   # no evidence vs down: not a flip
    assert v["full"]["directions"]["sgd, axis-aligned"] == "no evidence"
    assert v["full-all"]["at_gain"]["1.5"]["flips"]
    assert all(r["n_clusters"] == MODELS for r in rows)
    md = robustness.markdown_table(ft)
    assert md.count("\n") == 2 + 5 and "(G=10)" in md


def test_the_interval_is_a_t_interval_over_the_models():
    ft = _ft([("narrow", "sgd", 1.0, 0.2)])
    r = robustness.group_rows(ft)[0]
    changes = 1.0 + 0.2 * (np.arange(MODELS) - 4.5)
    half = 2.2621571627409915 * changes.std(ddof=1) / np.sqrt(MODELS)   # t(0.975, 9)
    assert np.allclose(r["rate_ci"], [changes.mean() - half, changes.mean() + half], atol=1e-12)


def test_a_direction_that_changes_between_a_matched_gain_and_the_end_flips_with_the_stopping_point():
    ft = _ft([("full-all", "sgd", -1.0, 0.1, 0.966, 0.5), ("full-all", "adam", -1.0, 0.1, 0.966, 0.5)])
    v = robustness.verdicts(robustness.group_rows(ft))["full-all"]
    assert v["survives"] and v["at_gain"]["1.5"]["survives"]
    assert v["over_stopping"] == {"gain 1.5": "up", "end": "down"} and v["flips_with_stopping"]


def test_rotation_equivalent_runs_are_counted_once():
    # sgd's rotated runs repeat its axis-aligned ones exactly; adam's differ by rotation
    ft = _ft([("narrow", "sgd", 1.0, 0.1), ("narrow", "adam", 1.0, 0.1)], orientations=(0, 1, 2))
    rows = {(r["optimizer"], r["orientation"]): r for r in robustness.group_rows(ft)}
    assert rows[("sgd", "rotated")]["duplicate_of"] == "axis" and rows[("sgd", "rotated")]["n_distinct"] == 0
    assert rows[("adam", "rotated")]["duplicate_of"] is None and rows[("adam", "rotated")]["n_distinct"] == 2 * MODELS
    v = robustness.verdicts(list(rows.values()))["narrow"]
    assert set(v["directions"]) == {"sgd, axis-aligned", "adam, axis-aligned", "adam, rotated"}
    md = robustness.markdown_table(ft)
    assert "counted once" in md


def test_models_of_different_starting_geometry_are_never_pooled():
    ft = _ft([("narrow", "sgd", 1.0, 0.1)])
    weak = [["helpful"]] * 6 + [["toxic"]] * 3 + [[]]
    feats = {"names": ["helpful", "toxic"], "barely_represented": weak}
    rows = robustness.group_rows(ft, features=feats)
    assert sorted(r["stratum"] for r in rows) == ["both represented", "helpful weak", "toxic weak"]
    assert [r["n_clusters"] for r in rows if r["stratum"] == "helpful weak"] == [6]
    assert inference.strata(feats, MODELS)[5:7] == ["helpful weak", "toxic weak"]
    v = robustness.verdicts(rows)
    assert set(v) == {"narrow · helpful weak", "narrow · toxic weak", "narrow · both represented"}
    # every stratum here has fewer than MIN_CLUSTERS models: intervals are printed, no direction is claimed
    assert v["narrow · helpful weak"]["directions"] == {"sgd, axis-aligned": "no evidence"}
    assert "not claimed" in robustness.markdown_table(ft, features=feats)


def test_a_cell_of_ten_models_claims_its_direction_and_one_of_nine_does_not():
    assert robustness.group_rows(_ft([("narrow", "sgd", 1.0, 0.1)]))[0]["direction"] == "up"
    nine = _ft([("narrow", "sgd", 1.0, 0.1)])
    nine["instances"] = [e for e in nine["instances"] if e["pretrain_instance"] < 9]
    r = robustness.group_rows(nine)[0]
    assert r["rate_ci"][0] > 0 and r["direction"] == "no evidence" and r["n_clusters"] == 9


def test_runs_with_no_finite_outcome_are_never_called_the_same_run():
    a = _inst(0, 0, "narrow", "sgd", 0, 1.0)
    b = _inst(1, 0, "narrow", "sgd", 1, 1.0)
    for e in (a, b):
        e["target_gain"] = None
        h = e["harmful"]["toxic"]
        h["angle_deg"]["after"] = h["norm"]["after"] = h["rate"]["after"] = float("nan")
    assert not inference.same_run(a, b, "toxic")
    assert inference.duplicates([a, b], "toxic") == set()
