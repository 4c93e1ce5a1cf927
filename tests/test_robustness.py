"""The robustness table's verdicts on constructed summaries with known answers."""

from __future__ import annotations

from toymodels.lab import robustness


def _group(regime, opt, orient, mean, ci, push=0.966):
    stat = lambda v: {"mean": v, "std": 0.0, "min": v, "max": v}
    h = {"cos_before": stat(0.966), "per_unit_push": stat(push), "angle_before": stat(15.0), "angle_after": stat(15.0),
         "rate_change_pp": stat(mean), "rate_change_pp_ci95": ci, "n_rate_up": 3,
         "at_gain": {"1.5": {"rate_change_pp": stat(mean), "rate_change_pp_ci95": ci, "n_reached": 4, "n": 4,
                             "n_rate_up": 3, "step": stat(100.0), "per_unit_push": stat(push)}}}
    return {"regime": regime, "optimizer": opt, "orientation": orient, "data": "narrow", "loss_scope": "target",
            "n": 4, "target_gain": stat(2.0), "harmful": {"toxic": h}}


def _ft(groups):
    return {"harmful": ["toxic"], "by_group": {f"{g['regime']}|{g['optimizer']}|{g['orientation']}": g for g in groups}}


def test_direction_needs_the_whole_interval_on_one_side():
    assert robustness.direction([0.1, 0.5]) == "up"
    assert robustness.direction([-0.5, -0.1]) == "down"
    assert robustness.direction([-0.1, 0.5]) == "flat"
    assert robustness.direction(None) == "flat"


def test_verdicts_survive_flip_and_push():
    ft = _ft([_group("narrow", "sgd", "axis", 1.0, [0.5, 1.5]), _group("narrow", "adam", "rotated", 1.1, [0.6, 1.6], 1.05),
              _group("full-all", "sgd", "axis", 2.0, [1.0, 3.0]), _group("full-all", "adam", "axis", -1.0, [-2.0, -0.2]),
              _group("full", "sgd", "axis", 0.1, [-0.3, 0.4]), _group("full", "adam", "axis", -1.0, [-2.0, -0.5])])
    v = robustness.verdicts(robustness.group_rows(ft))
    assert v["narrow"]["survives"] and not v["narrow"]["flips"]
    assert not v["narrow"]["push_equals_cos"] and v["narrow"]["push_equals_cos_in"] == ["sgd, axis-aligned"]
    assert v["full-all"]["flips"] and not v["full-all"]["survives"]
    assert not v["full"]["survives"] and not v["full"]["flips"]   # flat vs down: not a flip
    assert v["full-all"]["at_gain"]["1.5"]["flips"]
    md = robustness.markdown_table(ft)
    assert md.count("\n") == 2 + 5 and "rotated" in md and "+1.00 [+0.50, +1.50]" in md


def test_a_direction_that_changes_between_a_matched_gain_and_the_end_flips_with_the_stopping_point():
    early_up = []
    for opt in ("sgd", "adam"):
        g = _group("full-all", opt, "axis", -1.0, [-2.0, -0.5])           # down at the end
        g["harmful"]["toxic"]["at_gain"]["1.5"]["rate_change_pp_ci95"] = [0.2, 0.9]   # up at gain 1.5
        early_up.append(g)
    v = robustness.verdicts(robustness.group_rows(_ft(early_up)))["full-all"]
    assert v["survives"] and v["at_gain"]["1.5"]["survives"]
    assert v["over_stopping"] == {"gain 1.5": "up", "end": "down"} and v["flips_with_stopping"]
