"""Issue 17, items 2, 4, 4b: chance levels of recovery scores, the auditor-selected headline, the labelled
directions that find the 15° pair, and activation diffing that flags a feature whose weights never moved."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from toymodels.audit import actdiff, auditor, metrics
from toymodels.audit.dictionary import Dictionary
from toymodels.presets.audit import recovery_table

PENTAGON = np.array([[np.cos(a), np.sin(a)] for a in 2 * np.pi * np.arange(5) / 5]).T    # (2, 5)


# --- item 2: chance levels ------------------------------------------------------------------------------
def test_random_dictionary_chance_is_high_in_low_dimension():
    c = metrics.chance_recovery(10, PENTAGON, n_draws=200, seed=0)
    # the issue measured 0.91-0.93 for 10 random latents against the 2-D pentagon
    assert 0.88 < c["mcc"]["mean"] < 0.96
    assert c["mcc"]["mean"] <= c["mcc"]["p95"] <= 1.0
    for k in ("mcc", "mmcs"):   # |cos| is never below max(cos, 0), and MMCS never below MCC
        assert c[k + "_abs"]["mean"] >= c[k]["mean"] - 1e-12
    assert c["mmcs"]["mean"] >= c["mcc"]["mean"] - 1e-12
    assert metrics.chance_recovery(10, PENTAGON, seed=0) == c            # seeded: bit-identical
    assert metrics.chance_recovery(10, PENTAGON, seed=1) != c
    # in 5-D with 20 features and 40 latents the issue measured 0.83
    W = np.random.default_rng(3).standard_normal((5, 20))
    assert 0.78 < metrics.chance_recovery(40, W, n_draws=100)["mcc"]["mean"] < 0.88
    # fewer latents than features: the unmatched features count 0, so chance drops
    assert metrics.chance_recovery(2, PENTAGON)["mcc"]["mean"] < 0.45
    with pytest.raises(ValueError, match="L = 0"):
        metrics.chance_recovery(0, PENTAGON)


def test_cap_probability_is_the_fraction_of_random_directions_within_the_angle():
    assert metrics.cap_probability(10.0, 2) == pytest.approx(10 / 180)
    assert metrics.cap_probability(30.0, 3) == pytest.approx((1 - np.cos(np.radians(30))) / 2)
    u = np.random.default_rng(0).standard_normal((200_000, 5))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    for deg in (20.0, 60.0, 120.0):
        mc = np.mean(u[:, 0] >= np.cos(np.radians(deg)))
        assert metrics.cap_probability(deg, 5) == pytest.approx(mc, abs=3e-3)


def _row(i, model, mcc, ev, l0, selected):
    chance = {k: {"mean": 0.9, "p95": 0.95} for k in ("mcc", "mcc_abs", "mmcs", "mmcs_abs")}
    return {"index": i, "member": "m", "model": model, "variant": "topk", "feature_probability": 0.05,
            "n_features": 5, "d_hidden": 2, "n_represented": 5, "dict_size": 5 + 5 * (i % 2), "sparsity": 1.0,
            "mcc": mcc, "mcc_abs": mcc, "mcc_represented": mcc, "mean_max_cos": mcc, "mean_max_cos_abs": mcc,
            "explained_variance": ev, "l0": l0, "l0_nonempty": l0, "dead": 0, "revived": 0, "selected": selected,
            "chance": chance, "beats_chance": {k: mcc > 0.95 for k in chance}}


def test_recovery_table_headline_is_the_auditors_choice_not_the_best():
    rows = [_row(0, 0, 0.61, 0.95, 1.0, True), _row(1, 0, 1.00, 0.99, 1.0, False),
            _row(2, 1, 0.97, 0.99, 1.0, True), _row(3, 1, 0.90, 0.99, 2.0, False)]
    t = {b["model"]: b for b in recovery_table(rows)}
    assert t[0]["selected"]["mcc"] == 0.61 and t[0]["best"]["mcc"] == 1.00
    assert not t[0]["selected"]["beats_chance"]["mcc"] and t[0]["best"]["beats_chance"]["mcc"]
    assert t[1]["selected"]["mcc"] == t[1]["best"]["mcc"] == 0.97


# --- item 4: the labelled directions --------------------------------------------------------------------
def test_median_contrast_ignores_a_minority_of_contaminated_samples():
    w = np.array([np.cos(0.3), np.sin(0.3)])
    angle = lambda v: np.degrees(np.arccos(v @ w / np.linalg.norm(v)))
    for seed in range(8):
        rng = np.random.default_rng(seed)
        H = rng.random((64, 1)) * w                            # the class's feature alone ...
        on = rng.random(64) < 0.2                              # ... and in ~20% another feature on too
        H[on] += rng.random((on.sum(), 1)) * np.array([-1.0, 0.2])
        gm = auditor.geometric_median(H)
        assert angle(gm) < 3.0 and angle(gm) < 0.6 * angle(H.mean(0)), seed


def test_direction_found_needs_the_angle_and_the_nearest_feature():
    W = np.array([[1.0, np.cos(np.radians(15))], [0.0, np.sin(np.radians(15))]])
    u = lambda deg: np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))])
    assert auditor.direction_found(u(14.0), W, 1)["found"]
    assert not auditor.direction_found(u(7.0), W, 1)["found"]     # within 10° of toxic but nearer helpful
    assert not auditor.direction_found(u(40.0), W, 1)["found"]
    assert auditor.direction_found(u(40.0), W, 1)["angle"] == pytest.approx(25.0)


@pytest.fixture(scope="module")
def analogy():
    """analogy-15deg's pretrained models (10 seeds, as the preset's n_inst = 10) fine-tuned under its narrow
    regime only: built here, so the test does not depend on results/."""
    from toymodels.core.pretrain import pretrain
    from toymodels.lab import finetune as lab_ft
    from toymodels.presets import get

    cfg = get("analogy-15deg")
    cfg = dataclasses.replace(cfg, n_inst=10, finetune=dataclasses.replace(
        cfg.finetune, regimes=tuple(r for r in cfg.finetune.regimes if r.name == "narrow"), save_trajectory=False))
    graphdef, params, _ = pretrain(cfg, progress=False)
    res = lab_ft.finetune(cfg, graphdef, params, progress=False)
    return cfg, graphdef, params, res


def merged_dictionary(W: np.ndarray) -> Dictionary:
    """The failure mode: one latent on the bisector of helpful and toxic (TopK's merge), one per other feature."""
    D = metrics.unit_rows(W.T)
    D = np.concatenate([metrics.unit_rows(D[:1] + D[1:2]), D[2:]])
    n, d = D.shape
    params = {"W_enc": D.T.astype(np.float32), "b_enc": np.zeros(n, np.float32), "W_dec": D.astype(np.float32),
              "b_dec": np.zeros(d, np.float32), "log_threshold": np.zeros(n, np.float32)}
    return Dictionary("topk", params, n, 1.0, 1.0, 0.0, kmax=1)


def _audit(cfg, graphdef, params, m):
    names = ["helpful", "toxic", "f2", "f3", "f4"]
    W = np.asarray(params["W"][...], np.float64)[m]
    x = auditor.samples(cfg, m, {"helpful": 0, "toxic": 1}, 64)
    h = {c: auditor.hidden(graphdef, jax.tree.map(lambda a: a[m], params), v) for c, v in x.items()}
    return auditor.audit_model(merged_dictionary(W), h, "helpful", ["toxic"], W, names)


def test_labelled_directions_find_the_15_degree_pair_in_every_model(analogy):
    cfg, graphdef, params, _ = analogy
    for m in range(cfg.n_inst):
        a = _audit(cfg, graphdef, params, m)
        cls = a["truth"]["probe"]["classes"]
        assert cls["helpful"]["found"] and cls["toxic"]["found"], (m, cls)
        assert max(cls["helpful"]["angle"], cls["toxic"]["angle"]) < 5.0, (m, cls)
        assert a["probe"]["harmful"][0]["predicted"] > 0                       # the verdict: raise
        assert a["probe"]["harmful"][0]["cos"] == pytest.approx(np.cos(np.radians(15)), abs=0.05)
        assert not a["truth"]["harmful"][0]["found"]       # the merged dictionary cannot name toxic
    assert a["truth"]["probe"]["chance"] == pytest.approx(10 / 180)
    assert "VERDICT" in auditor.format_audit(a, "m") and "RAISE" in auditor.format_audit(a, "m")


# --- item 4b: activation diffing --------------------------------------------------------------------------
def test_activation_diff_units_and_truth_on_a_hand_made_case():
    E = np.array([[2.0, 0.0], [0.0, 1.0]])
    H0, H1 = np.zeros((3, 2)), np.array([[1.0, 0.0], [3.0, 1.0], [2.0, -1.0]])
    assert actdiff.unit_changes(E, H0, H1) == pytest.approx([2.0, 0.0])      # per unit read norm
    W0 = np.eye(2)
    W1 = np.array([[2.0, 0.0], [0.0, 1.0]])
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    rise = actdiff.output_rise(W0, np.zeros(2), W1, np.zeros(2), X)
    assert rise == pytest.approx([0.0, 0.0])               # orthogonal: nothing spills
    assert actdiff.affected_features(W0, W1, rise, 0.1).tolist() == [True, False]
    # several units of one feature do not push another feature down the ranking
    assert actdiff.feature_rank([0.9, 0.8, 0.7, 0.1], [0, 0, 1, 2], 1) == (2, 3)
    assert actdiff.feature_rank([0.0, 0.0, 0.0], [0, 1, 2], 1) == (3, 3)    # ties count against it


def test_activation_diff_flags_toxic_where_weight_diff_cannot(analogy):
    cfg, graphdef, params, res = analogy
    pre = {k: np.asarray(v) for k, v in nnx_pure(res.pretrained).items()}
    post = {k: np.asarray(v) for k, v in nnx_pure(res.finetuned).items()}
    # the premise: under narrow data and a target-only loss, toxic's weights never change
    assert np.abs(post["W"][:, :, 1] - pre["W"][:, :, 1]).max() < 1e-6
    units = []
    for m in range(cfg.n_inst):
        a = _audit(cfg, graphdef, params, m)
        units.append(actdiff.audit_units(a, merged_dictionary(np.asarray(params["W"][...])[m]).params["W_enc"])[0])
    out = actdiff.activation_diff(cfg, units, pre, post, 0.1, [1])
    for r in out["rows"]:
        h = r["harmful"][1]
        assert h["affected"] and h["rise"] > actdiff.SPILL, r
        assert h["flagged_activation"] and h["rank_activation"] == 2, r    # after the target only
        assert not h["flagged_weight"], r
    g = out["by_regime"]["narrow"]
    assert g["harmful"][1]["flagged_activation"] == 1.0 and g["harmful"][1]["flagged_weight"] == 0.0
    a, w = g["activation"], g["weight_oracle"]
    assert a["auroc"] > 0.99 and w["auroc"] < a["auroc"] - 0.1
    assert a["recall_at_3"] == pytest.approx(1.0) and a["chance_recall_at_3"] < 0.75 and w["recall_at_3"] < 0.9


def nnx_pure(state) -> dict:
    """{"W": (n_ft, d, n), "b_final": (n_ft, n)} of an nnx state."""
    from flax import nnx

    d = nnx.to_pure_dict(state)
    return {"W": d["W"], "b_final": d["b_final"]}


@pytest.mark.slow
def test_the_committed_analogy_audit_names_toxic_in_every_model(tmp_path):
    """``toymodels audit results/analogy-15deg`` (trains its BatchTopK dictionaries: about 20-60 s)."""
    from pathlib import Path

    from toymodels.audit_command import run_audit

    run = Path(__file__).resolve().parents[1] / "results" / "analogy-15deg"
    text, _ = run_audit(run, out_dir=tmp_path, progress=False)
    assert "labelled directions: target found 100%, harmful found 100%" in text
    assert "verdict 'raise' in 100%" in text
    narrow = next(line for line in text.splitlines() if line.strip().startswith("narrow "))
    assert narrow.split()[4] == "100%" and narrow.split()[5] == "0%", narrow   # activation flags, weights do not
