"""The auditor's stage of a run: SAEs after pretraining, the audit, and its scoring after fine-tuning.

:func:`toymodels.experiment.run` calls it for a config with ``[sae]`` (and ``[audit]``):

1. after pretraining, :meth:`Stage.train` trains every ``[sae]`` dictionary on every pretrained model
   (:mod:`.train`), writes ``weights_sae.npz`` (:mod:`.dictionary`) and returns ``summary["sae"]``: per SAE
   instance its explained variance, L0, dead and revived latents, its recovery of the true features
   (MCC, mean max cosine; signed and |cos|), their chance levels (random dictionaries of the same width)
   and whether the auditor's rule selects it; ``best`` per variant the selected (headline) and the
   ground-truth best;
2. with ``[audit]``, :meth:`Stage.audit` audits every pretrained model (:mod:`.auditor`) and writes
   ``audit.md``; :meth:`Stage.hooks` lets ``audit.filter_regimes`` filter with the recovered directions;
3. after fine-tuning, :meth:`Stage.after_finetune` adds the risk rows (scores before, outcome after,
   :mod:`.risk`), activation diffing (``activation_diff``, :mod:`.actdiff`), the crosscoder diffs
   (:mod:`.crosscoder`) and the filter rows to ``summary["audit"]``.

Everything is deterministic from the config's seed, so the stage reruns bit-identically (a resumed run
simply redoes it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Config
from ..config.sae import AuditConfig
from ..core.data import SIGNED_TASKS
from ..core.planting import harmful_indices, names
from . import actdiff, auditor, crosscoder, dictionary, layers, metrics, risk
from . import synthbench as SB
from . import train as T
from .hooks import SAEFilterHooks


def select(rows: list[dict], min_ev: float) -> int:
    """The auditor's choice among one model's dictionaries (``rows``: their summary entries), without
    ground truth: the lowest L0 among those with explained variance >= min_ev, else the best
    reconstruction. Returns the chosen row's ``index``."""
    ok = [r for r in rows if r["explained_variance"] >= min_ev]
    pick = min(ok, key=lambda r: (r["l0"], r["index"])) if ok else max(rows, key=lambda r: (r["explained_variance"],
                                                                                             -r["index"]))
    return pick["index"]


def sae_rows(cfg: Config, W: np.ndarray, trained: dict, evaluation: dict) -> list[dict]:
    """One ``summary["sae"]["instances"]`` entry per SAE (all variants, in order): its evaluation, its recovery
    (:func:`.train.recovery`: ``mcc``, ``mcc_abs``, ``mean_max_cos``, ``mean_max_cos_abs``, ...), its chance
    level (``chance``, ``beats_chance``: :func:`.train.chance_fields`, random dictionaries of its width on
    its model's W) and ``selected``: whether the auditor's rule (:func:`select`) picks it for its model."""
    out, chance = [], {}
    signed = cfg.data.task not in SIGNED_TASKS  # signed inputs: a latent along −W_j is as good as +W_j
    for v, tr in trained.items():
        ev = evaluation[v]
        for s in range(tr.plan.n):
            m, size = int(tr.plan.model[s]), int(tr.plan.size[s])
            rec = T.recovery(W[m], ev["directions"][s], ev["fired"][s], signed=signed)
            if (m, size) not in chance:   # one draw set per (model, width): every variant is compared to it
                chance[m, size] = metrics.chance_recovery(size, W[m])
            out.append({"index": len(out), "variant": v, "position": s, "model": m,
                        "feature_probability": float(np.mean(cfg.feature_probability()[m])),
                        "dict_size": size, "sparsity": float(tr.plan.sparsity[s]),
                        "explained_variance": float(ev["explained_variance"][s]), "l0": float(ev["l0"][s]),
                        "l0_nonempty": float(ev["l0_nonempty"][s]),
                        "dead": int(tr.plan.size[s] - ev["fired"][s].sum()), "revived": int(tr.revived[s].sum()),
                        **rec, **T.chance_fields(rec, chance[m, size], signed)})
    return mark_selected(cfg, out)


def mark_selected(cfg: Config, out: list[dict]) -> list[dict]:
    """Set every row's ``selected``: whether the auditor's rule (:func:`select`) picks it among its variant's
    dictionaries of its model."""
    min_ev = (cfg.audit or AuditConfig()).min_explained_variance
    for v in dict.fromkeys(r["variant"] for r in out):
        for m in sorted({r["model"] for r in out if r["variant"] == v}):
            pick = select([r for r in out if r["variant"] == v and r["model"] == m], min_ev)
            for r in out:
                if r["variant"] == v and r["model"] == m:
                    r["selected"] = r["index"] == pick
    return out


def best_by_variant(rows: list[dict]) -> dict:
    """Per variant: the headline ``selected`` (per model, the SAE the auditor's rule picks, :func:`select`, no
    ground truth: its ``mcc``, ``mcc_abs``, their chance p95 and whether it beats it) and the ground-truth best
    MCC over the sweep (``mcc``, ``index``, ...: uses the truth, not available to an auditor), with the mean
    over models of each model's best (``mean_over_models_of_best_mcc``) and selected one
    (``mean_over_models_of_selected_mcc``)."""
    out = {}
    for v in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == v]
        best = max(sel, key=lambda r: (r["mcc"], -r["index"]))
        models = sorted({r["model"] for r in sel})
        per_model = [max(r["mcc"] for r in sel if r["model"] == m) for m in models]
        picked = [r for r in sel if r.get("selected")]
        out[v] = {"mcc": best["mcc"], "index": best["index"], "model": best["model"], "dict_size": best["dict_size"],
                  "sparsity": best["sparsity"], "mean_over_models_of_best_mcc": float(np.mean(per_model)),
                  "mean_over_models_of_selected_mcc": float(np.mean([r["mcc"] for r in picked])) if picked else None,
                  "selected": [{k: r[k] for k in ("model", "index", "dict_size", "sparsity", "mcc", "mcc_abs")}
                               | {"chance_p95": r["chance"]["mcc"]["p95"], "chance_abs_p95": r["chance"]["mcc_abs"]["p95"],
                                  "beats_chance": r["beats_chance"]["mcc"],
                                  "beats_chance_abs": r["beats_chance"]["mcc_abs"]} for r in picked]}
    return out


class Stage:
    """The ``[sae]`` / ``[audit]`` stage of one run (see the module docstring). ``write_npz(path, **arrays)``
    and ``write_text(path, text)`` are the run's writers (:mod:`toymodels.io.runs`: atomic, registered in
    the run's manifest); ``read_npz`` and ``read_metrics`` its checked readers, for the files the run wrote."""

    def __init__(self, cfg: Config, graphdef, params, run_dir: Path, *, write_npz, write_text, read_npz, read_metrics,
                 progress=True, log_sae=None):
        self.cfg, self.graphdef, self.params, self.run_dir = cfg, graphdef, params, Path(run_dir)
        self.write_npz, self.write_text, self.progress = write_npz, write_text, progress
        self.read_npz, self.read_metrics = read_npz, read_metrics
        self.log_sae = log_sae   # variant -> on_log for its training rows (metrics.jsonl, phase "sae"), or None
        self.W = np.asarray(params["W"][...], np.float64)
        self.audits: list[dict] = []

    def before_finetune(self) -> dict:
        """``{"sae": ...}`` and, with ``[audit]``, ``{"audit": ...}``: the summary sections (files written)."""
        out = {"sae": self.train()}
        if self.cfg.audit is not None:
            out["audit"] = self.audit()
        return out

    # --- 1. the dictionaries ------------------------------------------------------------------------
    def train(self) -> dict:
        cfg = self.cfg
        scale = T.activation_scale(cfg, self.graphdef, self.params)
        trained, evaluation, bench = {}, {}, []
        for v in cfg.sae.variants:
            on_log = self.log_sae(v) if self.log_sae is not None else None
            trained[v] = T.train_variant(cfg, self.graphdef, self.params, v, scale, progress=self.progress, on_log=on_log)
            if cfg.sae.synthbench:   # the SynthSAEBench protocol's scores replace the default recovery rows
                evaluation[v], rows = SB.evaluate(cfg, self.graphdef, self.W, trained[v])
                bench += [r | {"index": len(bench) + i} for i, r in enumerate(rows)]
            else:
                evaluation[v] = T.evaluate(cfg, self.graphdef, trained[v])
        self.arrays = dictionary.to_arrays(trained, evaluation, scale, T.kmax(cfg), cfg.sae.bandwidth)
        self.write_npz(self.run_dir / "weights_sae.npz", **self.arrays)
        self.rows = mark_selected(cfg, bench) if cfg.sae.synthbench else sae_rows(cfg, self.W, trained, evaluation)
        extra = {"synthbench": {"by_config": SB.by_config(self.rows), "seeds": cfg.sae.seeds,
                                "chance_draws": cfg.sae.chance_draws}} if cfg.sae.synthbench else {}
        return {**self._layer(), **extra, "variants": list(cfg.sae.variants), "dict_sizes": list(cfg.sae.sizes(cfg.data.n_features)),
                "steps": cfg.sae.steps, "train_seconds": {v: round(t.seconds, 3) for v, t in trained.items()},
                "activation_scale": np.asarray(scale).tolist(), "best": best_by_variant(self.rows),
                "mcc": [r["mcc"] for r in self.rows], "instances": self.rows}

    # --- 2. the audit ---------------------------------------------------------------------------------
    def audit(self) -> dict:
        cfg = self.cfg
        self.audits = audit_models(cfg, self.graphdef, self.params, self.arrays, self.rows)
        text = "\n\n".join(auditor.markdown_audit(a, model_title(cfg, a)) for a in self.audits)
        at = self._layer()
        title = f"# audit: {cfg.name}" + (f" (layer {at['layer']} of {at['n_layers']})" if at else "")
        self.write_text(self.run_dir / "audit.md", f"{title}\n\n{AUDIT_NOTE}\n\n{text}")
        return {**self._layer(), "variant": cfg.audit.variant, "target": target_name(cfg), "harmful": list(cfg.features.harmful),
                "models": self.audits, "scoring": scoring_summary(self.audits)}

    def _layer(self) -> dict:
        """``layer`` (W's, the one the stage reads) and ``n_layers`` of a multi-layer model, else {} (a
        single-layer run's summary is what it was)."""
        layer, L = layers.layer_of(self.graphdef, self.params, None)
        return {"layer": layer, "n_layers": L} if L > 1 else {}

    def _encoder(self, a: dict) -> np.ndarray:
        """The encoder columns (d, size) of the dictionary audit ``a`` used."""
        dic = dictionary.dictionary(self.arrays, self.cfg.audit.variant, a["sae"]["position"])
        return np.asarray(dic.params["W_enc"])[:, : dic.size]

    def hooks(self, inner):
        """The fine-tuning hooks: ``inner`` (the defences'), with ``audit.filter_regimes`` filtering along the
        auditor's recovered harmful directions."""
        if self.cfg.audit is None or not self.cfg.audit.filter_regimes:
            return inner
        dirs = np.stack([recovered_harmful(a, self.arrays, self.cfg.audit.variant, self.cfg.model.d_hidden)
                         for a in self.audits])
        return SAEFilterHooks(self.cfg, inner, dirs)

    # --- 3. after fine-tuning ---------------------------------------------------------------------------
    def after_finetune(self, summary: dict) -> dict:
        """``{"audit": ...}`` with the risk rows, the diffs and the filter rows added (needs ``[audit]`` and
        the run's fine-tuning files), else {}."""
        cfg = self.cfg
        if cfg.audit is None or "finetune" not in summary:
            return {}
        ft, out = summary["finetune"], dict(summary["audit"])
        traj = self.run_dir / "weights_trajectory.npz"
        out["risk"] = risk.member_rows(cfg, self.graphdef, ft, self.audits, self.arrays,
                                       self.read_npz(traj) if traj.exists() else None,
                                       self.read_metrics(self.run_dir / "metrics.jsonl"), pre_params=self.params)
        pre_f, post_f = self.run_dir / "weights_pretrained.npz", self.run_dir / "weights_finetuned.npz"
        if cfg.model.kind in ("relu_output", "linear") and pre_f.exists() and post_f.exists() and self.audits:
            units = [actdiff.audit_units(a, self._encoder(a))[0] for a in self.audits]
            res = actdiff.activation_diff(cfg, units, self.read_npz(pre_f), self.read_npz(post_f), cfg.audit.amplified,
                                          list(harmful_indices(cfg)))
            out["activation_diff"] = {**res, "rows": [{k: v for k, v in r.items() if k not in ("scores", "units_feature")}
                                                      for r in res["rows"]]}
        if cfg.audit.diff and not layers.hidden_is_Wx(cfg):   # the crosscoders read h = W x from W alone
            out["diff"] = None
        elif cfg.audit.diff:
            pre = self.read_npz(pre_f)
            post = self.read_npz(post_f)
            idx = np.array([e["pretrain_instance"] for e in ft["instances"]])
            out["diff"] = {v: crosscoder.diff_summary(cfg, v, pre["W"], post["W"], idx, progress=self.progress)
                           for v in cfg.audit.diff}
        if cfg.audit.filter_regimes and "defences" in ft:
            out["filter"] = filter_rows(cfg, ft["defences"]["regimes"])
        return {"audit": out}


AUDIT_NOTE = ("The auditor's columns (role, cos(target), scale, predicted spill-over, selectivities) use only the "
              "model's activations, its SAE and a small labelled sample; the matched feature and the true cosines "
              "(ground truth) are for scoring only. Predicted spill-over: the latent's scale × its cosine with the "
              "target latent, the first-order change of its pre-activation per unit push along the target.")


def target_name(cfg: Config) -> str:
    return names(cfg)[cfg.penalty_target()]


def model_title(cfg: Config, a: dict) -> str:
    return (f"model {a['model']} (p = {np.mean(cfg.feature_probability()[a['model']]):.3g}): {a['sae']['variant']} "
            f"SAE #{a['sae']['index']}, {a['sae']['dict_size']} latents, sparsity {a['sae']['sparsity']:g}, "
            f"explained variance {a['sae']['explained_variance']:.3f}, L0 {a['sae']['l0']:.2f}{_recovery(a['sae'])}")


def _recovery(s: dict) -> str:
    """The selected SAE's recovery (ground truth, for scoring) beside its chance level, when known."""
    c = s.get("chance")
    if not c or s.get("mcc_abs") is None:
        return ""
    return (f"; truth: MCC {s['mcc']:.3f} signed (chance mean {c['mcc']['mean']:.2f}, p95 {c['mcc']['p95']:.2f}), "
            f"{s['mcc_abs']:.3f} |cos| (chance {c['mcc_abs']['mean']:.2f}, p95 {c['mcc_abs']['p95']:.2f})")


def audit_models(cfg: Config, graphdef, params, arrays: dict, rows: list[dict], variant: str | None = None,
                 models=None, target: str | None = None, harmful: list[str] | None = None,
                 min_ev: float | None = None, labelled: int | None = None, layer: int | None = None) -> list[dict]:
    """Audit each pretrained model with its chosen dictionary of ``variant`` (:func:`select`), on the
    activations of ``layer`` (None: ``W``'s), scored against that layer's true directions (:mod:`.layers`)."""
    a_cfg = cfg.audit or AuditConfig()
    variant = variant or a_cfg.variant
    min_ev = a_cfg.min_explained_variance if min_ev is None else min_ev
    labelled = a_cfg.labelled if labelled is None else labelled
    all_names = names(cfg)
    target = target or target_name(cfg)
    harmful = harmful or [all_names[j] for j in harmful_indices(cfg)]
    W = layers.true_directions_all(graphdef, params, layer)
    out = []
    for m in (range(cfg.n_inst) if models is None else models):
        mine = [r for r in rows if r["variant"] == variant and r["model"] == m]
        pick = next(r for r in rows if r["index"] == select(mine, min_ev))
        dic = dictionary.dictionary(arrays, variant, pick["position"])
        classes = {c: all_names.index(c) for c in [target, *harmful]}
        x = auditor.samples(cfg, m, classes, labelled)
        state = _instance(params, m)
        h = {c: auditor.hidden(graphdef, state, a, layer) for c, a in x.items()}
        a = auditor.audit_model(dic, h, target, harmful, W[m], all_names)
        a = {"model": m, "sae": {k: pick.get(k) for k in ("index", "variant", "position", "dict_size", "sparsity",
                                                           "explained_variance", "l0", "mcc", "mcc_abs", "chance")}, **a}
        out.append(a)
    return out


def _instance(params, m: int):
    import jax

    return jax.tree.map(lambda a: a[m], params)


def scoring_summary(audits: list[dict]) -> dict:
    """Over the audited models: how often the dictionary's target and harmful latents matched the true
    features, the mean |error| of its cos(target, harmful), how often the harmful latent was ranked first;
    and for the labelled directions (:func:`.auditor.labelled_directions`, the headline) ``probe_target_found``,
    ``probe_harmful_found`` (within ``found_deg`` of the truth and nearest to it; ``found_chance``: a random
    direction's probability), ``probe_max_angle`` (degrees, target and harmful) and ``probe_raise`` (the
    fraction of models with the verdict "raise")."""
    ok = [a for a in audits if a.get("truth")]
    if not ok:
        return {"n": 0}
    h = lambda a: a["truth"]["harmful"][0]
    out = {"n": len(ok), "target_found": float(np.mean([a["truth"]["target_found"] for a in ok])),
           "harmful_found": float(np.mean([h(a)["found"] for a in ok])),
           "mean_abs_cos_error": float(np.mean([abs(h(a)["cos_error"]) for a in ok])),
           "harmful_ranked_first": float(np.mean([a["harmful"][0]["rank"] == 1 for a in ok])),
           "harmful_truly_first": float(np.mean([h(a)["true_rank"] == 1 for a in ok]))}
    pr = [a for a in ok if a["truth"].get("probe")]
    if pr:
        cls = lambda a, c: a["truth"]["probe"]["classes"][c]
        t, hn = pr[0]["probe"]["target"]["name"], pr[0]["probe"]["harmful"][0]["name"]
        out |= {"probe_target_found": float(np.mean([cls(a, t)["found"] for a in pr])),
                "probe_harmful_found": float(np.mean([cls(a, hn)["found"] for a in pr])),
                "probe_max_angle": float(max(max(cls(a, t)["angle"], cls(a, hn)["angle"]) for a in pr)),
                "probe_raise": float(np.mean([a["probe"]["harmful"][0]["predicted"] > 0 for a in pr])),
                "found_deg": pr[0]["truth"]["probe"]["found_deg"], "found_chance": pr[0]["truth"]["probe"]["chance"]}
    return out


def recovered_harmful(a: dict, arrays: dict, variant: str, d: int) -> np.ndarray:
    """The auditor's harmful directions of one model, (d, H): the unit decoder rows of its harmful latents
    (zeros when the audit found none)."""
    if not a.get("harmful"):
        return np.zeros((d, 1))
    D = dictionary.dictionary(arrays, variant, a["sae"]["position"]).directions()
    return np.stack([D[h["latent"]] for h in a["harmful"]], axis=1)


def filter_rows(cfg: Config, regimes: dict) -> dict:
    """The filter comparison: per regime of the run, its defence rows (Δ toxic rate, amplification removed,
    target gain), labelled by which directions the filter used."""
    out = {}
    for name, r in regimes.items():
        kind = {"none": "undefended", "filter_random": "random"}.get(r["defence"], r["defence"])
        if r["defence"] == "filter_geometric":
            kind = "recovered (SAE)" if name in cfg.audit.filter_regimes else "true"
        out[name] = {"directions": kind, "data": r["data"], "strength": r["strength"],
                     "rate_change_pp": r["rate_change_pp"], "amplification_removed": r.get("amplification_removed"),
                     "rate_change_pp_vs_baseline": r.get("rate_change_pp_vs_baseline"),
                     "target_gain": r["target_gain"]}
    return out

