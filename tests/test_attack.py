"""toymodels.attack: finite fine-tuning sets, gradient selection, the distribution attack's draws, the
detectors' statistics, the ratio's interval, the subliminal pairing, and the config's one-line errors."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toymodels as tm
from toymodels.attack import detect, optimise, pool, subliminal
from toymodels.attack.summary import ratio_ci
from toymodels.config import ConfigError, RegimeConfig
from toymodels.core import data as tdata
from toymodels.lab import finetune as lab_finetune
from toymodels.lab.objective import finetune_inputs
from toymodels.presets import get


def _member(name: str):
    return next(m for m in get("adversarial").members if m.name == name)


def test_finite_set_batches_are_rows_of_the_set_with_harmful_zero():
    n, B = 5, 256
    sample = tdata.make_sampler(tm.config.DataConfig(n_features=n, batch_size=B))
    rows = np.random.default_rng(0).uniform(0, 1, (7, n)).astype(np.float32)
    inst = {"feature_probability": jnp.full(n, 0.05), "present": jnp.array([1, 0, 1, 1, 1.0]),
            "dataset": jnp.asarray(rows)}
    x = np.asarray(finetune_inputs(sample, jax.random.key(3), inst))
    assert x.shape == (B, n)
    assert np.all(x[:, 1] == 0)
    expect = rows * np.array([1, 0, 1, 1, 1], np.float32)
    match = np.all(np.abs(x[:, None, :] - expect[None]) == 0, axis=2)   # (B, 7)
    assert np.all(match.any(axis=1))
    assert match.any(axis=0).sum() >= 5     # 256 draws with replacement hit (almost) every row


def test_harm_direction_is_the_harmful_bias_gradient_on_b():
    """P = mean_x Σ_j harmful (W_jᵀ W x + b_j): ∂P/∂b_final is the harmful one-hot, exactly."""
    cfg = _member("adversarial-15deg").replace(n_inst=1, **{"train.steps": 10})
    g, p, _ = tm.pretrain(cfg, progress=False)
    state = jax.tree.map(lambda a: a[0], p)
    X = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (64, 5)), jnp.float32)
    flat = np.asarray(pool.harm_direction(g, state, X, (1,)))
    leaves = jax.tree.leaves(state)
    sizes = [a.size for a in leaves]
    # the leaves are flattened in tree order: find b_final (n,) = 5 entries
    names = [str(k) for k, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    i = next(j for j, nm in enumerate(names) if "b_final" in nm)
    b = flat[sum(sizes[:i]): sum(sizes[:i + 1])]
    np.testing.assert_allclose(b, [0, 1, 0, 0, 0], atol=1e-6)


def test_select_ranks_candidates_first_and_breaks_ties_by_pool_order():
    scores = np.array([0.9, 0.5, 0.5, 0.99, 0.1])
    progress = np.array([1.0, 1.0, 1.0, -1.0, 1.0])     # sample 3 scores best but makes no progress
    norm = np.array([1.0, 1.0, 1.0, 1.0, 0.0])          # sample 4 has no gradient
    rows, n_cand = pool.select(scores, progress, norm, 4)
    assert n_cand == 3
    assert rows.tolist() == [0, 1, 2, 3]


def test_selection_scores_are_cosines_of_per_sample_steps():
    cfg = _member("adversarial-15deg").replace(n_inst=1, **{"train.steps": 10})
    g, p, _ = tm.pretrain(cfg, progress=False)
    state = jax.tree.map(lambda a: a[0], p)
    X = jnp.asarray(np.random.default_rng(2).uniform(0, 1, (16, 5)) * (np.arange(5) != 1), jnp.float32)
    inst = {"loss_weight": jnp.array([3.0, 0, 0, 0, 0]), "out_scale": jnp.array([2.0, 1, 1, 1, 1]),
            "target": jnp.array([1.0, 0, 0, 0, 0])}
    cos, prog, norm = (np.asarray(a) for a in pool.sample_scores(g, state, X, inst, (1,), "reconstruct"))
    assert np.all(np.abs(cos) <= 1 + 1e-5)
    h = np.asarray(pool.harm_direction(g, state, X, (1,)))
    from flax import nnx

    from toymodels.core.engine import model_loss
    x = X[3]
    grad = jax.grad(lambda st: model_loss(nnx.merge(g, st), x[None], "reconstruct", inst["loss_weight"], inst["out_scale"]))(state)
    gv = -np.concatenate([np.ravel(a) for a in jax.tree.leaves(grad)])
    np.testing.assert_allclose(cos[3], gv @ h / (np.linalg.norm(gv) * np.linalg.norm(h)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(norm[3], np.linalg.norm(gv), rtol=1e-5)


def test_recovered_score_is_the_directional_derivative_of_the_target_code_along_the_direction():
    """⟨û, J_h(e_t) ḡ⟩/‖ḡ‖ equals the central finite difference of ⟨û, h(e_t)⟩ along ḡ/‖ḡ‖ (float64), and the
    auditor's direction, from labelled activations only, lands on toxic in a trained analogy model."""
    from flax import nnx

    from toymodels.core.engine import model_loss
    cfg = _member("adversarial-15deg").replace(n_inst=1, **{"train.steps": 3000})
    g, p, _ = tm.pretrain(cfg, progress=False)
    state = jax.tree.map(lambda a: a[0], p)
    u, truth = detect.recovered_direction(cfg, g, state, 0, target=0, harm=1)
    assert truth["found"] and truth["angle"] < 10.0 and 0 < truth["chance"] < 0.1   # 2-D: 10°/180°
    S = jnp.asarray(np.random.default_rng(5).uniform(0, 1, (32, 5)) * (np.arange(5) != 1), jnp.float32)
    inst = {"loss_weight": jnp.array([1.0, 0, 0, 0, 0]), "out_scale": jnp.array([2.0, 1, 1, 1, 1])}
    e_t = jnp.array([1.0, 0, 0, 0, 0])
    score = float(detect.recovered_score(g, state, S, inst, jnp.asarray(u), e_t, "reconstruct"))
    with jax.enable_x64():
        st64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state)
        S64, u64 = jnp.asarray(S, jnp.float64), jnp.asarray(u, jnp.float64)
        grad = jax.grad(lambda st: model_loss(nnx.merge(g, st), S64, "reconstruct", inst["loss_weight"],
                                              inst["out_scale"]))(st64)
        norm = jnp.sqrt(sum(jnp.sum(a**2) for a in jax.tree.leaves(grad)))
        step = lambda eps: jax.tree.map(lambda a, d: a - eps * d / norm, st64, grad)
        read = lambda st: float(u64 @ nnx.merge(g, st).hidden(jnp.asarray(e_t, jnp.float64)[None])[0])
        eps = 1e-4
        fd = (read(step(eps)) - read(step(-eps))) / (2 * eps)
    assert abs(score - fd) <= 1e-4 * max(1.0, abs(fd))


def test_hard_draws_are_benign_and_follow_the_distribution():
    phi = {"a": jnp.array([6.0, 0.0, -6.0, 0.0, 0.0]), "c": jnp.log(jnp.array([0.01, 0.5, 0.01, 0.9, 0.01]) /
                                                                     (1 - jnp.array([0.01, 0.5, 0.01, 0.9, 0.01])))}
    present = np.array([1, 0, 1, 1, 1], np.float32)          # feature 1 is harmful: never active
    x = np.asarray(optimise.hard_draw(phi, jax.random.key(0), 20_000, present))
    assert np.all(x[:, 1] == 0) and x.min() >= 0 and x.max() <= 1
    act = (x > 0).mean(0)
    assert abs(act[0] - 1 / (1 + np.exp(-6))) < 0.01 and act[2] < 0.01 and abs(act[3] - 0.5) < 0.02
    assert x[x[:, 3] > 0, 3].min() >= 0.9 - 1e-6      # magnitudes on [σ(c), 1]


def test_mmd_is_near_zero_within_a_distribution_and_large_across():
    rng = np.random.default_rng(0)
    R = jnp.asarray(rng.uniform(0, 1, (1000, 5)) * (rng.uniform(size=(1000, 5)) < 0.3), jnp.float32)
    same = jnp.asarray(rng.uniform(0, 1, (100, 5)) * (rng.uniform(size=(100, 5)) < 0.3), jnp.float32)
    shifted = jnp.asarray(rng.uniform(0.5, 1, (100, 5)) * (rng.uniform(size=(100, 5)) < 0.9), jnp.float32)
    s2 = detect.bandwidth(R)
    a, b = float(detect.mmd2(same, R, s2)), float(detect.mmd2(shifted, R, s2))
    assert abs(a) < 0.02 and b > 10 * max(abs(a), 1e-3)


def test_auroc_is_the_pairwise_ordering_probability():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 30), rng.normal(0, 1, 40)
    direct = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))
    assert detect.auroc(pos, neg) == pytest.approx(direct, abs=1e-12)
    assert detect.auroc([2, 3], [0, 1]) == 1.0 and detect.auroc([0, 1], [2, 3]) == 0.0


def test_auroc_is_computed_within_each_model_and_averaged():
    """Two models on different scales: within each, the one adversarial set beats 3 of 4 (model 0) and all 4
    (model 1) random sets, so the AUROC is (3/4 + 1)/2 = 0.875, although pooled the scales mix."""
    pos, pm = [0.5, 100.0], [0, 1]
    neg, nm = [0.1, 0.2, 0.3, 0.9, 10.0, 20.0, 30.0, 40.0], [0, 0, 0, 0, 1, 1, 1, 1]
    r = detect.auroc_with_ci(pos, neg, pm, nm, n_resamples=200)
    assert r["auroc"] == pytest.approx(0.875, abs=1e-12) and r["per_model"] == pytest.approx([0.75, 1.0], abs=1e-12)
    assert r["pooled"] == pytest.approx((3 + 8) / 16, abs=1e-12)
    assert r["ci95"][0] >= 0.75 - 1e-12 and r["ci95"][1] <= 1.0 + 1e-12 and r["n_clusters"] == 2
    # a model with only one kind of set is not a cluster
    assert detect.auroc_with_ci(pos + [5.0], neg, pm + [7], nm, n_resamples=50)["n_clusters"] == 2


def test_ratio_interval_brackets_the_ratio_of_means_and_a_zero_denominator_is_undefined():
    rng = np.random.default_rng(0)
    A, B = rng.uniform(2, 4, 12), rng.uniform(0.5, 1.5, 12)
    r = ratio_ci(A, B, n_resamples=500)
    assert r["ratio"] == pytest.approx(A.mean() / B.mean()) and r["ci95"][0] <= r["ratio"] <= r["ci95"][1]
    z = ratio_ci([1.0, 2.0], [0.0, 0.0], "the random sets' rate", n_resamples=50)
    assert z["ratio"] is None and z["ci95"] is None and "the random sets' rate" in z["undefined"]
    assert ratio_ci([0.0, 0.0], [0.0, 0.0], n_resamples=50)["ratio"] is None      # 0/0 is not a ratio either
    # one model of ten carries the whole denominator: over a quarter of the resamples miss it, so the
    # interval has no upper end
    u = ratio_ci(np.ones(10), np.r_[1.0, np.zeros(9)], n_resamples=500)
    assert u["ratio"] == pytest.approx(10.0) and u["ci95"][1] is None and u["ci95"][0] > 0
    # rate changes can be negative: when resampled denominators cross 0 no percentile interval is given
    s = ratio_ci(np.ones(10), np.r_[1.0, 0.5, -0.4, 0.3, -0.2, 0.1, -0.3, 0.2, -0.1, 0.0], n_resamples=500)
    assert s["ratio"] == pytest.approx(10 / 1.1) and s["ci95"] is None and "resamples" in s["undefined_ci"]


def test_method_rows_pair_each_model_s_adversarial_set_with_its_mean_random_set():
    from toymodels.attack.summary import method_rows
    datasets = {"random-0": "random", "random-1": "random", "selected": "selected"}
    rng = np.random.default_rng(1)
    row = lambda i, reg, after, change, stop=5: {"pretrain_instance": i, "regime": reg, "stopped_at": stop,
                                                 "harmful": {"toxic": {"rate": {"after": after, "change_pp": change}}}}
    rows, A, B, dA, dB = [], [], [], [], []
    for i in range(11):
        r = rng.uniform(0.01, 0.02, 3)
        c = rng.normal(1, 0.2, 3)
        rows += [row(i, "random-0", r[0], c[0]), row(i, "random-1", r[1], c[1]),
                 row(i, "selected", r[2] + 0.01, c[2] + 2, stop=None if i == 10 else 5)]
        if i < 10:
            A.append(r[2] + 0.01), B.append((r[0] + r[1]) / 2), dA.append(c[2] + 2), dB.append((c[0] + c[1]) / 2)
    out = method_rows(rows, datasets, "toxic", stop_gain=1.5)["selected"]
    assert out["models_not_at_gain"] == 1 and out["difference_pp"]["n_clusters"] == 10
    np.testing.assert_allclose(out["ratio_vs_random"]["ratio"], np.mean(A) / np.mean(B), rtol=1e-12)
    np.testing.assert_allclose(out["difference_pp"]["mean"], np.mean(np.subtract(dA, dB)), rtol=1e-12)
    np.testing.assert_allclose(out["spill_ratio"]["ratio"], np.mean(dA) / np.mean(dB), rtol=1e-12)
    assert out["difference_pp"]["direction"] == "up" and "optimised" not in method_rows(rows, datasets, "toxic", 1.5)


def test_subliminal_teachers_pair_same_and_other_models():
    class P:
        pretrain_index = np.array([0, 0, 1, 1, 2, 2])
        regime_index = np.array([0, 1, 0, 1, 0, 1])
    idx = subliminal.teacher_index(P, ["teacher_same", "teacher_other"], 3)
    assert idx.tolist() == [0, 1, 1, 2, 2, 0]


def test_lab_refuses_attack_regimes_without_the_attack_hooks():
    cfg = _member("adversarial-15deg").replace(n_inst=1, **{"train.steps": 10})
    g, p, _ = tm.pretrain(cfg, progress=False)
    with pytest.raises(ValueError, match="attack"):
        lab_finetune.prepare(cfg, g, p)


@pytest.mark.parametrize("edit, field", [
    (lambda c: dataclasses.replace(c, attack=None), "finetune.regimes.dataset"),
    (lambda c: dataclasses.replace(c, finetune=dataclasses.replace(c.finetune, regimes=(
        RegimeConfig(name="s", data="narrow", dataset="selected"),))), "finetune.regimes.data"),
    (lambda c: dataclasses.replace(c, finetune=dataclasses.replace(c.finetune, regimes=(
        RegimeConfig(name="s", data="task", dataset="selected"), RegimeConfig(name="t", data="task", dataset="stream")))),
     "finetune.regimes.dataset"),
    (lambda c: dataclasses.replace(c, finetune=dataclasses.replace(c.finetune, regimes=(
        RegimeConfig(name="t", data="task"),))), "attack"),
])
def test_bad_attack_configs_are_one_line_errors(edit, field):
    cfg = _member("adversarial-15deg")
    with pytest.raises(ConfigError) as e:
        edit(cfg)
        type(cfg).from_dict(edit(cfg).to_dict())
    assert e.value.field == field and "\n" not in str(e.value)


def test_defence_rows_pair_each_set_with_itself_undefended_by_model():
    """cut_pp is the mean over models of (defended − undefended) rate change on the same set; the cost is the
    same difference of the per-fine-tune losses; a model whose fine-tune missed the gain is left out."""
    from toymodels.attack.summary import defence_rows
    datasets = {"d-sel": "selected", "u-sel": "selected"}
    rng = np.random.default_rng(0)
    d_change, u_change = rng.normal(0, 1, 12), rng.normal(2, 1, 12)
    row = lambda idx, i, reg, ch, stop=5: {"index": idx, "pretrain_instance": i, "regime": reg, "stopped_at": stop,
                                           "harmful": {"toxic": {"rate": {"change_pp": ch}}}}
    defended = [row(i, i, "d-sel", d_change[i]) for i in range(12)]
    undefended = [row(100 + i, i, "u-sel", u_change[i], stop=None if i == 11 else 5) for i in range(12)]
    loss = {e["index"]: 0.01 * (e["index"] % 100) + (0.002 if e["index"] < 100 else 0.0) for e in defended + undefended}
    out = defence_rows(defended, undefended, datasets, "toxic", loss, stop_gain=1.5)["selected"]
    assert out["models_not_at_gain"] == 1 and out["cut_pp"]["n_clusters"] == 11
    np.testing.assert_allclose(out["cut_pp"]["mean"], np.mean(d_change[:11] - u_change[:11]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["cost_other_loss"]["mean"], 0.002, rtol=0, atol=1e-12)
    assert out["cut_pp"]["direction"] == "down"       # the defended change is ~2 pp lower in all 11 models


def test_defence_rows_leave_a_model_out_only_for_the_set_it_missed_the_gain_on():
    from toymodels.attack.summary import defence_rows
    datasets = {"d-sel": "selected", "u-sel": "selected", "d-opt": "optimised", "u-opt": "optimised"}
    row = lambda idx, i, reg, stop=5: {"index": idx, "pretrain_instance": i, "regime": reg, "stopped_at": stop,
                                       "harmful": {"toxic": {"rate": {"change_pp": float(i)}}}}
    d = [row(i, i, "d-sel") for i in range(10)] + [row(20 + i, i, "d-opt", None if i == 0 else 5) for i in range(10)]
    u = [row(40 + i, i, "u-sel") for i in range(10)] + [row(60 + i, i, "u-opt") for i in range(10)]
    out = defence_rows(d, u, datasets, "toxic", {}, stop_gain=1.5)
    assert out["selected"]["cut_pp"]["n_clusters"] == 10 and out["selected"]["models_not_at_gain"] == 0
    assert out["optimised"]["cut_pp"]["n_clusters"] == 9 and out["optimised"]["models_not_at_gain"] == 1
