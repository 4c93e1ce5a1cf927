"""The defences' numbers in ``summary.json``: per regime a row paired with its undefended baseline,
the comparison table across runs, and the pretraining penalties' rows. Read from saved summaries only."""

from __future__ import annotations

import numpy as np

from ..config import Config
from ..lab.inference import claim
from ..stats import mean_with_ci, paired
from .registry import DEFENCES


# --- summary: one row per regime, paired with its undefended baseline -----------------------------------
def baseline_of(regimes, r) -> str | None:
    """The name of the undefended regime with r's data, loss scope and target (None if there is none)."""
    for b in regimes:
        if b["defence"] == "none" and (b["data"], b["loss_scope"], b["target"]) == (r["data"], r["loss_scope"],
                                                                                  r["target"]):
            return b["name"]
    return None


def summarize(cfg: Config, ft_summary: dict, defence: dict) -> dict:
    """The ``finetune.defences`` section of ``summary.json``: per instance the capability numbers, and
    per regime the table row (means with 95% bootstrap CIs over the pretrained seeds): harmful rate
    change [pp], pre-activation change, target gain, capability after and its change against the
    paired undefended instance, the fraction of the undefended amplification removed, and the
    measured compute overhead."""
    before, after = defence["capability_before"], defence["capability_after"]
    instances = [{"index": k, **{f"{m}_before": float(before[m][k]) for m in before},
                  **{f"{m}_after": float(after[m][k]) for m in after}}
                 for k in range(len(ft_summary["instances"]))]
    rows = per_regime_rows(ft_summary, instances, defence.get("overhead"))
    return {"instances": instances, "regimes": rows, "overhead": defence.get("overhead")}


def per_regime_rows(ft: dict, capability_rows: list[dict], overhead: dict | None,
                    baseline: tuple[dict, list[dict]] | None = None) -> dict:
    """Table rows keyed by regime name, from a run's ``finetune`` summary and capability rows.
    ``baseline`` (another run's ``finetune`` summary and capability rows, from the same pretrained
    models) supplies the undefended regime when this run has none (the LoRA run)."""
    base_ft, base_cap = baseline if baseline is not None else (ft, capability_rows)
    harm = ft["harmful"][0]
    out = {}
    for r in ft["regimes"]:
        es = [e for e in ft["instances"] if e["regime"] == r["name"]]
        # the undefended baseline trains everything; a restricted run (e.g. LoRA) needs another run's
        b_name = baseline_of(base_ft["regimes"], r) if base_ft["trainable"] == "all" else None
        b_es = {e["pretrain_instance"]: e for e in base_ft["instances"] if e["regime"] == b_name}
        cap = {e["index"]: capability_rows[e["index"]] for e in es}
        pp = [e["harmful"][harm]["rate"]["change_pp"] for e in es]
        models = [e["pretrain_instance"] for e in es]
        row = {"defence": r["defence"] if ft["trainable"] == "all" else f"{r['defence']}+{ft['trainable']}",
               "strength": r["strength"], "data": r["data"], "loss_scope": r["loss_scope"],
               "baseline": b_name, "trainable": ft["trainable"],
               # the paired test (after − before on the same inputs; t interval over the pretrained models)
               "rate_change_pp": paired(pp, clusters=models),
               "rate_after_pct": mean_with_ci([100 * e["harmful"][harm]["rate"]["after"] for e in es]),
               "preact_change": mean_with_ci([e["harmful"][harm]["preact"]["change"] for e in es]),
               "cos_after": mean_with_ci([e["harmful"][harm]["cos"]["after"] for e in es]),
               "target_gain": mean_with_ci([e["target_gain"] for e in es]),
               "target_readout_after": mean_with_ci([e["target_readout"]["after"] for e in es])}
        row["harmful_norm_after"] = mean_with_ci([e["harmful"][harm]["norm"]["after"] for e in es])
        row["harmful_norm_before"] = mean_with_ci([e["harmful"][harm]["norm"]["before"] for e in es])
        row["angle_after"] = mean_with_ci([e["harmful"][harm]["angle_deg"]["after"] for e in es])
        for m in ("recon_loss", "recon_loss_other", "recon_loss_benign", "recon_loss_harmful", "harmful_present_loss",
                  "n_represented", "dims_per_feature", "mean_cos2"):
            row[f"{m}_after"] = mean_with_ci([cap[e["index"]][f"{m}_after"] for e in es])
            row[f"{m}_before"] = mean_with_ci([cap[e["index"]][f"{m}_before"] for e in es])
        if b_name is not None:
            pairs = [(e, b_es[e["pretrain_instance"]]) for e in es if e["pretrain_instance"] in b_es]
            d_pp = [e["harmful"][harm]["rate"]["change_pp"] - b["harmful"][harm]["rate"]["change_pp"] for e, b in pairs]
            # defended − undefended fine-tune of the same model on the same data stream: "cuts" only when
            # the interval lies below 0
            row["rate_change_pp_vs_baseline"] = paired(d_pp, clusters=[e["pretrain_instance"] for e, _ in pairs])
            row["rate_change_pp_vs_baseline"]["effect"] = {"down": "cuts", "up": "raises"}.get(
                row["rate_change_pp_vs_baseline"]["direction"], "no evidence")
            base_pp = np.mean([b["harmful"][harm]["rate"]["change_pp"] for _, b in pairs])
            row["amplification_removed"] = (float(1.0 - np.mean(pp) / base_pp) if base_pp > 0 else None)
            row["target_gain_vs_baseline"] = mean_with_ci([e["target_gain"] / b["target_gain"] for e, b in pairs
                                                       if e["target_gain"] and b["target_gain"]])
            for m in ("recon_loss_other", "recon_loss_benign", "recon_loss_harmful", "harmful_present_loss"):
                row[f"{m}_vs_baseline"] = mean_with_ci([cap[e["index"]][f"{m}_after"] - base_cap[b["index"]][f"{m}_after"]
                                                    for e, b in pairs])
        if overhead and r["name"] in overhead:
            row["overhead"] = overhead[r["name"]]
        out[r["name"]] = row
    return out


# --- the measured comparison table ---------------------------------------------------------------------
def _is_baseline_run(run) -> bool:
    """A run that holds its own undefended baseline: trains everything and has a ``none`` regime."""
    ft = run.summary.get("finetune", {})
    return ft.get("trainable") == "all" and "defences" in ft and any(r["defence"] == "none" for r in ft["regimes"])


def _baseline_for(run, candidates: list):
    """(finetune summary, capability rows) of the first baseline run that has an undefended regime
    with the data, loss scope and target of ``run``'s first regime; None if there is none."""
    r0 = run.summary["finetune"]["regimes"][0]
    for b in candidates:
        ft = b.summary["finetune"]
        if baseline_of(ft["regimes"], r0) is not None:
            return ft, ft["defences"]["instances"]
    return None


def table_rows(runs_: list) -> list[dict]:
    """One row per defence regime of every run (loaded :class:`toymodels.io.runs.Run` objects), read from
    their ``summary.json``. A run that trains everything and has an undefended regime is its own
    baseline; a run that trains something else (LoRA) is paired with the undefended regime, same data
    and loss scope, of such a run (same seed and config, so the same pretrained weights:
    :func:`same_pretraining` checks it). Rows keep the summary's dicts, plus ``name``, ``run`` and
    ``plugs``."""
    runs_ = [r for r in runs_ if "defences" in r.summary.get("finetune", {})]
    baselines = [r for r in runs_ if _is_baseline_run(r)]
    if not baselines:
        raise ValueError("no member has an undefended regime (defence 'none', trainable 'all')")
    rows = []
    for run in runs_:
        ft = run.summary["finetune"]
        d = ft["defences"]
        own = run in baselines
        regs = d["regimes"] if own else per_regime_rows(ft, d["instances"], d.get("overhead"),
                                                        _baseline_for(run, baselines))
        for name, row in regs.items():
            key = "lora" if ft["trainable"] == "lora" else row["defence"]
            label = name if own or name == ft["trainable"] else f"{name} ({ft['trainable']})"
            rows.append({"name": label, "run": run.config.name,
                         "plugs": DEFENCES[key].plugs if key in DEFENCES else ft["trainable"], **row})
    return rows


def pretraining_rows(run) -> list[dict]:
    """Per λ of a run whose ``train.penalty_strength`` sweeps λ (``regularisation-pretrain``), from its
    saved summary, means with 95% bootstrap CIs over the seeds at that λ (the toxic-rate change: the paired
    test, :func:`toymodels.stats.paired`, a t interval over the seeds):

    * ``cos``: cos(target, first harmful feature) as pretraining left it;
    * ``recon_loss`` (the pretraining loss without the penalty), also ``recon_loss_vs_unpenalised``,
      paired seed by seed with the run's λ = 0 instances (same initialisations);
    * ``n_represented``, ``dims_per_feature`` (D*), ``penalty`` (P at the end, without λ);
    * per fine-tuning regime: ``rate_change_pp[regime]`` (the harmful feature's toxic rate change) and
      ``target_gain[regime]``."""
    c = run.config
    lams = np.broadcast_to(np.asarray(c.train.penalty_strength, np.float64), (c.n_inst,))
    inst = run.summary["instances"]
    ft = run.summary["finetune"]
    names = run.summary["features"]["names"]
    harmful = ft["harmful"][0]
    cos = np.asarray(run.summary["features"]["cosines"], np.float64)[:, names.index(ft["target"]),
                                                                     names.index(harmful)]
    base = [i for i in range(c.n_inst) if lams[i] == 0]
    regimes = [r["name"] for r in ft["regimes"]]
    rows = []
    for lam in dict.fromkeys(lams.tolist()):
        idx = [i for i in range(c.n_inst) if lams[i] == lam]
        per = {reg: [e for e in ft["instances"] if e["pretrain_instance"] in idx and e["regime"] == reg]
               for reg in regimes}
        rows.append({
            "lambda": float(lam), "n": len(idx), "target": ft["target"], "harmful": harmful,
            "cos": mean_with_ci(cos[idx]),
            "recon_loss": mean_with_ci([inst[i]["eval_loss"] for i in idx]),
            "recon_loss_vs_unpenalised": (mean_with_ci([inst[i]["eval_loss"] - inst[b]["eval_loss"]
                                                    for i, b in zip(idx, base)]) if len(base) == len(idx) else None),
            "n_represented": mean_with_ci([inst[i]["n_represented"] for i in idx]),
            "dims_per_feature": mean_with_ci([inst[i]["dimensions_per_feature"] for i in idx]),
            "penalty": mean_with_ci([inst[i]["penalty"] for i in idx if "penalty" in inst[i]]),
            "rate_change_pp": {reg: claim(paired([e["harmful"][harmful]["rate"]["change_pp"] for e in es],
                                                 clusters=[e["pretrain_instance"] for e in es]))
                               for reg, es in per.items()},
            "target_gain": {reg: mean_with_ci([e["target_gain"] for e in es]) for reg, es in per.items()},
        })
    return rows


def same_pretraining(runs_: list) -> bool:
    """Whether every run fine-tuned from bit-identical pretrained weights (``weights.npz``)."""
    ref = runs_[0].weights
    return all(set(r.weights) == set(ref) and all(np.array_equal(r.weights[k], ref[k]) for k in ref) for r in runs_)
