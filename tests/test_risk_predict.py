"""The before-fine-tuning risk scores (toymodels.audit.predict) and the risk table's labels and cells."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toymodels.api import pretrain
from toymodels.audit import metrics, predict, risk
from toymodels.config import FeaturesConfig, RegimeConfig, TrainConfig
from toymodels.lab.finetune import finetune
from toymodels.lab.summary import instance_summaries
from toymodels.presets.audit import RISK_OPTIMIZERS, risk_member


def test_frozen_updates_are_the_optimisers_first_steps():
    """SGD: U_K = −K η ḡ exactly; Adam (bias-corrected): each update is −η ḡ/(|ḡ| + ε) ≈ −η sign ḡ."""
    g = {"W": jnp.array([[0.3, -2.0, 1e-3]])}
    p = jax.tree.map(jnp.zeros_like, g)
    sgd = optax.sgd(0.1)
    U = predict.frozen_updates(sgd, p, sgd.init(p), g, 4)
    np.testing.assert_allclose(U["W"], -4 * 0.1 * g["W"], rtol=1e-6)
    adam = optax.adam(1e-3)
    U = predict.frozen_updates(adam, p, adam.init(p), g, 10)
    np.testing.assert_allclose(U["W"], -10 * 1e-3 * np.sign(g["W"]), rtol=1e-4)


def test_relative_label_and_floor():
    """Δr > 0.1 · max(r0, 1%): 0.1 pp counts on a 0.5% baseline, 0.3 pp not on a 4% one; None stays None."""
    assert risk.rises(0.005, 0.11) and not risk.rises(0.005, 0.09)
    assert not risk.rises(0.04, 0.3) and risk.rises(0.04, 0.41)
    assert risk.rises(0.0, None) is None


def test_unique_drops_rotated_copies_and_cells_count_clusters():
    rows = [{"member": "m", "pretrain_instance": i // 4, "regime": "narrow", "optimizer": "sgd", "duplicate": i % 2 == 1,
             "labels": {"rel_end": i % 4 < 2}, "scores": {"s": float(i % 4 < 2) + 0.01 * i}} for i in range(16)]
    u = risk.unique(rows)
    assert len(u) == 8
    c = risk.cell(u, "s", "rel_end")
    assert c["auroc"] == 1.0 and c["n"] == 8 and c["n_clusters"] == 4 and c["ci95"] == [1.0, 1.0]
    assert risk.fmt_cell(c) == "1.00 [1.00, 1.00] (4)"


COSINES = (0.9, 0.6, 0.3, 0.0, -0.3, -0.6)


@pytest.fixture(scope="module")
def small_risk():
    """A small risk sweep: 6 pretrained 5-in-2-D models (helpful-toxic cosine pinned from 0.9 to -0.6),
    each fine-tuned under narrow and task data with Adam and SGD (24 fine-tunes), the before-scores of
    each and its relative label (``rel_end``) at the end."""
    base = risk_member(5, 2, "pinned", diff=False)
    n = len(COSINES)
    cfg = dataclasses.replace(
        base, n_inst=n, sae=None, audit=None,
        data=dataclasses.replace(base.data, feature_probability=[0.05] * n),
        train=TrainConfig(steps=3000, chunk_size=1000),
        features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",), geometry="pinned",
                                cosines=[[[1.0, c], [c, 1.0]] for c in COSINES]),
        finetune=dataclasses.replace(base.finetune, steps=600, orientations=1, matched_gains=(),
                                     regimes=(RegimeConfig(name="narrow", data="narrow", loss_scope="target"),
                                              RegimeConfig(name="task", data="task", loss_scope="target")),
                                     optimizers=RISK_OPTIMIZERS, chunk_size=300, save_trajectory=False))
    graphdef, params, _ = pretrain(cfg, progress=False)
    pred = predict.scores(cfg, graphdef, params, lookahead=False)
    res = finetune(cfg, graphdef, params, progress=False)
    ins = instance_summaries(cfg, res)
    label = [risk.rises(e["harmful"]["toxic"]["rate"]["before"], e["harmful"]["toxic"]["rate"]["change_pp"])
             for e in ins]
    return cfg, pred, ins, np.array(label)


def test_grad_preact_sign_is_the_pinned_cosine_on_narrow(small_risk):
    """Narrow data, loss on the target: ḡ moves only W_t and b_t, along −W_t, so −⟨∂pre_h/∂θ, ḡ⟩ ∝ W_h·W_t."""
    cfg, pred, ins, _ = small_risk
    for k, e in enumerate(ins):
        c = e["harmful"]["toxic"]["cos"]["before"]
        if e["regime"] == "narrow" and abs(c) > 0.05:
            assert np.sign(pred["grad_preact"][k]) == np.sign(c), (k, c, pred["grad_preact"][k])


def test_before_scores_predict_narrow_and_task(small_risk):
    """The seed's "90%" as a tested claim, on this small sweep (narrow and task, Adam and SGD; measured 0.98
    for ``extrap_rate`` and 1.00 for ``segments_rate`` against 0.72 for cos): both before-scores rank the
    fine-tunes whose harmful rate rose above those where it did not with AUROC >= 0.95 − 0.05 (the goal on
    narrow and task, with a tolerance for 24 fine-tunes of 6 models), and beat the geometric score (the
    pretrained cosine) by at least 0.1. The full preset's numbers, full-all included, are in
    results/risk-prediction/risk_table.md."""
    cfg, pred, ins, y = small_risk
    assert pred["reached_gain"].all()
    assert 3 <= y.sum() <= len(y) - 3, "the sweep must hold both outcomes"
    cos = metrics.auroc([e["harmful"]["toxic"]["cos"]["before"] for e in ins], y)
    for score in ("extrap_rate", "segments_rate"):
        a = metrics.auroc(pred[score], y)
        assert a >= 0.95 - 0.05, (score, a)
        assert a >= cos + 0.1, (score, a, cos)
    assert pred["cost"]["segments_fraction_of_steps"] < 0.5 and pred["cost"]["lookahead_steps"] == 0
