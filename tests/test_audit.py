"""The audit: its config sections, the auditor on a dictionary of the true directions, the filter hooks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from toymodels.audit import auditor, dictionary
from toymodels.audit.hooks import SAEFilterHooks
from toymodels.audit.stage import select
from toymodels.config import (
    Config,
    ConfigError,
    DataConfig,
    FeaturesConfig,
    FineTuneConfig,
    ModelConfig,
    RegimeConfig,
)
from toymodels.config.sae import AuditConfig, SAEConfig
from toymodels.lab.hooks import NO_HOOKS, FineTuneHooks
from toymodels.lab.plan import make_plan, orientation_matrices


# --- the config sections ----------------------------------------------------------------------------------
def _cfg(**kw) -> Config:
    base = dict(n_inst=2, data=DataConfig(n_features=5), model=ModelConfig(d_hidden=2),
                features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",)))
    return Config(**(base | kw))


def test_sections_round_trip_and_default_to_none():
    assert Config().sae is None and Config().audit is None
    cfg = _cfg(sae=SAEConfig(dict_sizes=(5, 10), k=(1, 2)), audit=AuditConfig(variant="topk"))
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(**{"sae.steps": 7}).sae.steps == 7
    assert Config().replace(**{"sae.steps": 7}).sae == SAEConfig(steps=7)   # an absent section gets its defaults
    assert cfg.sae.sizes(5) == (5, 10) and SAEConfig().sizes(5) == (10,)


@pytest.mark.parametrize("kw, field", [
    ({"audit": AuditConfig()}, "audit.variant"),                                            # [audit] without [sae]
    ({"sae": SAEConfig(variants=("topk",)), "audit": AuditConfig(variant="relu_l1")}, "audit.variant"),
    ({"sae": SAEConfig(dict_sizes=(4,), k=(5,))}, "sae.k"),                                # k > dictionary size
    ({"sae": SAEConfig(), "audit": AuditConfig(diff=("relu_l1",))}, "audit.diff"),        # diff needs [finetune]
    ({"sae": SAEConfig(), "audit": AuditConfig(filter_regimes=("narrow",)),
      "finetune": FineTuneConfig()}, "audit.filter_regimes"),                              # not a filter regime
])
def test_cross_section_checks(kw, field):
    with pytest.raises(ConfigError) as e:
        _cfg(**kw)
    assert e.value.field == field


def test_section_checks():
    with pytest.raises(ConfigError, match="sae.variants"):
        SAEConfig(variants=("gated",))
    with pytest.raises(ConfigError, match="sae.batch_k"):
        SAEConfig(batch_k=(0.0,))
    with pytest.raises(ConfigError, match="sae.dict_sizes"):
        SAEConfig(dict_sizes=(4, 4))
    with pytest.raises(ConfigError, match="audit.labelled"):
        AuditConfig(labelled=0)
    with pytest.raises(ConfigError, match="audit"):
        Config(sae=SAEConfig(), audit=AuditConfig())   # no [features]: no target, no harmful feature


# --- the auditor --------------------------------------------------------------------------------------
def _model_cfg(W: np.ndarray, p: float = 0.05) -> Config:
    n = W.shape[1]
    return Config(name="t", n_inst=1, data=DataConfig(n_features=n, feature_probability=p),
                  model=ModelConfig(d_hidden=W.shape[0]),
                  features=FeaturesConfig(names=("helpful", "toxic"), harmful=("toxic",)))


def _audit(W: np.ndarray, labelled: int = 64):
    """Audit the model with hidden activations h = W x, with the true directions as the dictionary."""
    cfg = _model_cfg(W)
    names = cfg.feature_names()
    x = auditor.samples(cfg, 0, {"helpful": 0, "toxic": 1}, labelled, n_unlabelled=4096)
    h = {c: a @ W.T for c, a in x.items()}
    return auditor.audit_model(dictionary.from_true_directions(W), h, "helpful", ["toxic"], W, names)


def _directions(angles_deg, norms=None):
    a = np.deg2rad(np.asarray(angles_deg, np.float64))
    W = np.stack([np.cos(a), np.sin(a)])
    return W * (1.0 if norms is None else np.asarray(norms))


def test_true_dictionary_ranks_the_nearest_harmful_feature_first():
    # helpful at 0°, toxic at 30° (the nearest), three benign features further away
    W = _directions([0, 30, 100, 190, 270])
    a = _audit(W)
    assert a["target"]["latent"] == 0
    h = a["harmful"][0]
    assert h["latent"] == 1 and h["rank"] == 1
    assert h["cos"] == pytest.approx(np.cos(np.deg2rad(30)), abs=1e-5)
    assert a["rows"][1]["latent"] == 1 and a["rows"][1]["role"] == "harmful"
    t = a["truth"]
    assert t["target_found"] and t["harmful"][0]["found"] and t["harmful"][0]["true_rank"] == 1
    assert abs(t["harmful"][0]["cos_error"]) < 1e-5
    assert t["spearman_predicted_vs_true"] == pytest.approx(1.0)
    assert all(r["truth"]["match_cos"] == pytest.approx(1.0, abs=1e-5) for r in a["rows"])


def test_a_farther_harmful_feature_is_found_but_not_ranked_first():
    W = _directions([0, 120, 20, 200, 280])          # toxic at 120°, a benign feature at 20°
    a = _audit(W)
    h = a["harmful"][0]
    assert h["latent"] == 1 and h["rank"] > 1 and h["predicted"] < 0
    assert a["rows"][1]["latent"] == 2                  # the benign neighbour spills most
    assert a["truth"]["harmful"][0]["true_rank"] == h["rank"]


def test_the_audit_text_separates_the_auditor_from_the_truth():
    a = _audit(_directions([0, 30, 100, 190, 270]))
    text = auditor.format_audit(a, "model 0")
    assert "harmful 'toxic' -> latent 1" in text and "RAISE" in text and "matched feature" in text
    md = auditor.markdown_audit(a, "model 0")
    assert md.count("\n| ") == len(a["rows"]) + 1


def test_the_auditors_dictionary_choice_uses_no_ground_truth():
    rows = [{"index": 0, "explained_variance": 0.95, "l0": 2.0, "mcc": 0.1},
            {"index": 1, "explained_variance": 0.92, "l0": 1.0, "mcc": 0.2},
            {"index": 2, "explained_variance": 0.80, "l0": 0.5, "mcc": 1.0}]
    assert select(rows, 0.9) == 1                        # the sparsest that reconstructs; MCC is not read
    assert select(rows, 0.99) == 0                       # none reconstructs enough: the best reconstruction


# --- the filter with recovered directions ------------------------------------------------------------
class _Inner(FineTuneHooks):
    shared_stream = True

    def instance_arrays(self, plan, base):
        return {"filter_dirs": np.zeros((plan.n_ft, 2, 1), np.float32), "other": np.ones(plan.n_ft)}


def test_filter_hooks_swap_in_the_recovered_directions_only_where_asked():
    regs = (RegimeConfig(name="undefended", data="task"),
            RegimeConfig(name="true", data="task", defence="filter_geometric", strength=0.5),
            RegimeConfig(name="sae", data="task", defence="filter_geometric", strength=0.5))
    cfg = _cfg(finetune=FineTuneConfig(regimes=regs, orientations=2), sae=SAEConfig(variants=("topk",)),
               audit=AuditConfig(variant="topk", filter_regimes=("sae",)))
    plan = make_plan(cfg)
    dirs = np.stack([np.array([[1.0], [0.0]]), np.array([[0.0], [1.0]])]).astype(np.float32)   # per model
    out = SAEFilterHooks(cfg, _Inner(), dirs).instance_arrays(plan, None)
    O = orientation_matrices(cfg)
    for k in range(plan.n_ft):
        got = np.asarray(out["filter_dirs"][k])
        if plan.regime_name(k) == "sae":
            want = O[plan.orientation_index[k]] @ dirs[plan.pretrain_index[k]]
            assert np.allclose(got, want, atol=1e-6)
        else:
            assert np.all(got == 0)
    assert np.all(out["other"] == 1)
    assert SAEFilterHooks(cfg, NO_HOOKS, dirs).instance_arrays(plan, None) == {}   # no filter: nothing to swap


def test_audit_config_is_inert_without_fields_set():
    cfg = _cfg(sae=SAEConfig(), audit=AuditConfig())
    assert dataclasses.replace(cfg, sae=None, audit=None) == _cfg()


# --- the command's one-line errors ---------------------------------------------------------------------------
def _fake_run(path, cfg: Config):
    """A finished-looking run directory (config.json, summary.json, weights.npz) without training."""
    import json

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg.to_dict()))
    (path / "summary.json").write_text(json.dumps({"instances": [{} for _ in range(cfg.n_inst)]}))
    W = np.zeros((cfg.n_inst, cfg.model.d_hidden, cfg.data.n_features), np.float32)
    np.savez(path / "weights.npz", W=W, b_final=np.zeros((cfg.n_inst, cfg.data.n_features), np.float32))
    return path


def _args(run_dir, **kw):
    return type("Args", (), {"run_dir": str(run_dir), "sae_run": None, "variant": None, "out": None,
                             "quiet": True, **kw})()


def test_audit_command_reports_bad_input_in_one_line(tmp_path):
    from toymodels.audit_command import main_audit
    from toymodels.errors import RunFileError

    cases = [(_args(tmp_path / "nope"), RunFileError, "no such run directory"),
             (_args(tmp_path), RunFileError, "config.json")]
    plain = Config(name="plain", n_inst=1, data=DataConfig(n_features=5), model=ModelConfig(d_hidden=2))
    cases.append((_args(_fake_run(tmp_path / "plain", plain)), RunFileError, "harmful"))
    named = _fake_run(tmp_path / "named", _cfg(n_inst=1))
    cases.append((_args(named, variant="relu"), ConfigError, "--variant"))
    cases.append((_args(named, sae_run=str(named)), RunFileError, "no SAEs"))
    for args, err, text in cases:
        with pytest.raises(err) as e:
            main_audit(args)
        msg = str(e.value)
        assert "\n" not in msg and text in msg, msg
