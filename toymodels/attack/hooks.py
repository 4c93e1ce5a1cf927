"""The attack as the lab's fine-tuning hooks: each fine-tune's data set (or teacher), chosen before training.

:class:`AttackHooks` wraps the hooks it is given (the defences', or the lab's NO_HOOKS) and adds, through
``instance_arrays``, every fine-tune's fixed set ``inst["dataset"]`` (N, n), which the lab's
:func:`toymodels.lab.objective.finetune_inputs` draws its batches from; for the subliminal control it
adds the teacher's state, and ``wrap_objective`` distils it. Everything else is the inner hooks', so a
defence runs on an adversarial set exactly as on its stream. The lab never imports this package.

Sets, per pretrained model i (its pool from the key ``fold_in(fold_in(seed, 500), i)``, every other key
from :func:`.pool.attack_key`): random set r (numbered within its defence, so a defended fine-tune on set r
trains on the rows its undefended twin does), the gradient-selected set and the optimised distribution's draw (:mod:`.pool`, :mod:`.optimise`). A
selection or optimisation reads the fine-tune's own starting state (rotated, on the orientation axis).
The detectors (:mod:`.detect`) score ``attack.detect_sets`` more random sets and optimised draws per model.
"""

from __future__ import annotations

from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from .. import stats
from ..config import Config
from ..config.attack import TEACHER_DATASETS
from ..core.models import init_instances
from ..lab import rates as lab_rates
from ..lab.hooks import FineTuneHooks, WrappedHooks
from ..lab.plan import regime_arrays
from . import detect, optimise, pool, subliminal
from .summary import summarize


def _at(tree, k):
    """Instance ``k`` of a pytree with a leading instance axis."""
    return jax.tree.map(lambda a: a[k], tree)

class AttackHooks(WrappedHooks):
    """``inner``'s hooks with the attack's data (module docstring)."""

    def __init__(self, cfg: Config, inner: FineTuneHooks):
        super().__init__(inner)
        self.cfg = cfg
        self.shared_stream = True    # every regime of a model draws the same batch rows (common random numbers)
        self.report: dict = {}
        self.datasets = [r.dataset for r in cfg.finetune.regimes]
        self.teacher = self.datasets[0] in TEACHER_DATASETS

    # --- the hooks ---------------------------------------------------------------------------------
    def instance_arrays(self, plan, base) -> dict:
        out = dict(self.inner.instance_arrays(plan, base))
        graphdef = init_instances(self.cfg.model, self.cfg.data.n_features, 1, jax.random.key(0))[0]
        if self.teacher:
            out.update(self._teacher_arrays(plan, base, graphdef))
        else:
            out["dataset"] = jnp.asarray(self._sets(plan, base, graphdef))
        return out

    def wrap_objective(self, undefended, graphdef, sample):
        if self.teacher:
            undefended = subliminal.distill_objective(graphdef, sample, self.cfg.finetune.trainable)
        return self.inner.wrap_objective(undefended, graphdef, sample)

    def evaluate(self, graphdef, pre_params, result) -> dict:
        """The inner hooks' evaluation, and the attack's record of its sets (so that the summary can be
        rebuilt from the result alone, e.g. by ``toymodels.summarize``)."""
        return {"inner": self.inner.evaluate(graphdef, pre_params, result), "attack": self.report}

    def summary_section(self, ft_summary: dict, evaluation: dict) -> dict:
        inner = evaluation.get("inner")
        out = {} if inner is None else dict(self.inner.summary_section(ft_summary, inner))
        out["attack"] = summarize(self.cfg, ft_summary, evaluation.get("attack", {}), out.get("defences"))
        return out

    # --- the sets -----------------------------------------------------------------------------------
    def _sets(self, plan, base, graphdef) -> np.ndarray:
        cfg, at = self.cfg, self.cfg.attack
        N, M = at.n_samples, at.pool_size
        arrays = regime_arrays(cfg, plan)
        harmful = tuple(int(j) for j in plan.harmful)
        # random set r of a model is numbered within its defence, so a defended fine-tune on random set r
        # trains on the very rows its undefended twin does (the defences' comparison pairs sets)
        random_no, seen = {}, defaultdict(int)
        for r, reg in enumerate(cfg.finetune.regimes):
            if reg.dataset == "random":
                random_no[r], seen[reg.defence] = seen[reg.defence], seen[reg.defence] + 1
        pools, sets = {}, np.zeros((plan.n_ft, N, cfg.data.n_features), np.float32)
        inst_of = lambda k: {name: jnp.asarray(a[k]) for name, a in arrays.items()}
        state_of = lambda k: _at(base, k)
        selected, optimised_keys = {}, {}
        for k in range(plan.n_ft):
            i = int(plan.pretrain_index[k])
            if i not in pools:
                pools[i] = np.asarray(pool.draw_pool(cfg, pool.pool_key(cfg, i), arrays["feature_probability"][k],
                                                     arrays["present"][k], M))
            d = self.datasets[int(plan.regime_index[k])]
            cell = (i, int(plan.orientation_index[k]))
            if d == "random":
                sets[k] = pools[i][pool.random_rows(pool.attack_key(cfg, i, pool.RANDOM, random_no[int(plan.regime_index[k])]), M, N)]
            elif d == "selected":
                if cell not in selected:
                    X = jnp.asarray(pools[i])
                    sc = pool.sample_scores(graphdef, state_of(k), X, inst_of(k), harmful, cfg.data.task)
                    rows, n_cand = pool.select(*sc, N)
                    selected[cell] = (pools[i][rows], n_cand, float(np.mean(np.asarray(sc[0])[rows])))
                sets[k] = selected[cell][0]
            elif d == "optimised":
                optimised_keys.setdefault(cell, []).append(k)
        opt = self._optimise(plan, base, graphdef, arrays, pools, optimised_keys) if optimised_keys else {}
        for cell, ks in optimised_keys.items():
            for k in ks:
                sets[k] = opt[cell]["set"]
        self.report = {"selected": {f"{c[0]},{c[1]}": {"candidates": v[1], "mean_cos": v[2]} for c, v in selected.items()},
                       "optimised": {f"{c[0]},{c[1]}": {"J": v["J"], "probability": v["probability"], "low": v["low"]}
                                     for c, v in opt.items()},
                       "set_stats": self._set_stats(plan, sets),
                       "detection": self._detect(plan, base, graphdef, arrays, pools, selected, opt)}
        return sets

    def _optimise(self, plan, base, graphdef, arrays, pools, cells) -> dict:
        """Train the distribution of every optimised cell at once (:func:`.optimise.optimise`)."""
        cfg, at = self.cfg, self.cfg.attack
        ks = [ks[0] for ks in cells.values()]
        harm = np.zeros(cfg.data.n_features, np.float32)
        harm[plan.harmful] = 1
        onehot = arrays["target"][ks]
        idx = jnp.asarray(ks)
        g_harm = jnp.stack([pool.harm_direction(graphdef, _at(base, k), jnp.asarray(pools[int(plan.pretrain_index[k])]),
                                                tuple(int(j) for j in plan.harmful)) for k in ks])
        g_prog = jnp.stack([pool.progress_direction(graphdef, _at(base, k),
                                                    {"target": jnp.asarray(arrays["target"][k])}) for k in ks])
        inst = {"state": jax.tree.map(lambda a: a[idx], base), "g_harm": g_harm, "g_prog": g_prog,
                "loss_weight": jnp.asarray(arrays["loss_weight"][ks]), "out_scale": jnp.asarray(arrays["out_scale"][ks]),
                "present": jnp.asarray(arrays["present"][ks]), "probability": jnp.asarray(arrays["feature_probability"][ks]),
                "trainable_mask": jnp.asarray((1 - onehot) * (1 - harm[None]) * arrays["present"][ks])}
        keys = jnp.stack([pool.attack_key(cfg, c[0], pool.OPTIMISE, c[1]) for c in cells])
        phi, J = optimise.optimise(graphdef, cfg.data.task, inst, keys, steps=at.optimise_steps, lr=at.optimise_lr,
                                   batch=at.optimise_batch)
        out = {}
        for j, c in enumerate(cells):
            ph = _at(phi, j)
            key = pool.attack_key(cfg, c[0], pool.DRAW, c[1])
            out[c] = {"phi": ph, "J": float(J[j]), "present": arrays["present"][ks[j]],
                      "set": np.asarray(optimise.hard_draw(ph, key, at.n_samples, arrays["present"][ks[j]])),
                      "probability": np.asarray(jnp.where(arrays["present"][ks[j]] > 0, jax.nn.sigmoid(ph["a"]), 0.0)).tolist(),
                      "low": np.asarray(jax.nn.sigmoid(ph["c"])).tolist()}
        return out

    def _set_stats(self, plan, sets) -> dict:
        """Per regime (over its fine-tunes): the mean active fraction and magnitude of every feature."""
        st = pool.feature_stats(sets)
        out = {}
        for r, reg in enumerate(plan.regimes):
            ks = np.flatnonzero(plan.regime_index == r)
            out[reg.name] = {"dataset": reg.dataset, "active": st["active"][ks].mean(0).tolist(),
                             "magnitude": stats.mean_present(st["magnitude"][ks], 0).tolist(),
                             "co_active": float(st["co_active"][ks].mean()),
                             "per_model_active": st["active"][ks].tolist()}
        return out

    def _detect(self, plan, base, graphdef, arrays, pools, selected, opt) -> dict:
        """Score random sets and the adversarial ones of every pretrained model (orientation 0) with the
        three detectors, and each method's AUROC against the random sets."""
        cfg, at = self.cfg, self.cfg.attack
        N, M = at.n_samples, at.pool_size
        scores = {"random": [], "selected": [], "optimised": []}
        recovered = []
        for i in sorted(pools):
            k = int(np.flatnonzero((plan.pretrain_index == i) & (plan.orientation_index == 0))[0])
            state = _at(base, k)
            inst = {name: jnp.asarray(a[k]) for name, a in arrays.items()}
            harm, target = int(plan.harmful[0]), int(plan.target[k])
            # the defender's own task sample: the distance detector's reference and the gradient detector's P
            ref = pool.draw_pool(cfg, pool.attack_key(cfg, i, pool.REFERENCE),
                                 arrays["feature_probability"][k], arrays["present"][k], detect.REFERENCE)
            g_harm = pool.harm_direction(graphdef, state, ref, tuple(int(j) for j in plan.harmful))
            u_harm, truth = detect.recovered_direction(cfg, graphdef, state, i, target, harm)
            recovered.append({"model": i, **truth})
            e_t = jnp.asarray(np.eye(cfg.data.n_features, dtype=np.float32)[target])

            rnd = [pools[i][pool.random_rows(pool.attack_key(cfg, i, pool.DETECT_RANDOM, j), M, N)] for j in range(at.detect_sets)]
            groups = {"random": rnd}
            if (i, 0) in selected:
                groups["selected"] = [selected[(i, 0)][0]]
            if (i, 0) in opt:
                o = opt[(i, 0)]
                keys = [pool.attack_key(cfg, i, pool.DETECT_DRAW, j) for j in range(at.detect_sets)]
                groups["optimised"] = [np.asarray(optimise.hard_draw(o["phi"], key, N, o["present"])) for key in keys]
            for name, sets in groups.items():
                per = detect.score_sets(graphdef, state, jnp.asarray(np.stack(sets)), inst, g_harm,
                                        jnp.asarray(u_harm), e_t, ref, cfg.data.task)
                scores[name] += [(i, *map(float, row)) for row in zip(*map(np.asarray, per))]
        out = {"scores": scores, "auroc": {}, "detectors": list(detect.DETECTORS),
               "recovered_direction": {"models": recovered,
                                       "found": float(np.mean([r["found"] for r in recovered])) if recovered else None,
                                       "chance": recovered[0]["chance"] if recovered else None}}
        neg = np.asarray(scores["random"], np.float64).reshape(-1, 1 + len(detect.DETECTORS))
        for method in ("selected", "optimised"):
            pos = np.asarray(scores[method], np.float64).reshape(-1, 1 + len(detect.DETECTORS))
            if not len(pos):
                continue
            out["auroc"][method] = {name: detect.auroc_with_ci(pos[:, c], neg[:, c], pos[:, 0], neg[:, 0])
                                    for c, name in enumerate(detect.DETECTORS, start=1)}
        return out

    # --- the subliminal control -------------------------------------------------------------------------
    def _teacher_arrays(self, plan, base, graphdef) -> dict:
        # the pretrained models, un-rotated: each model's first axis-aligned fine-tune starts from it
        first = [int(np.flatnonzero((plan.pretrain_index == i) & (plan.orientation_index == 0))[0])
                 for i in range(self.cfg.n_inst)]
        pre_params = jax.tree.map(lambda a: a[jnp.asarray(first)], base)
        T = subliminal.teachers(self.cfg, graphdef, pre_params)
        idx = subliminal.teacher_index(plan, self.datasets, self.cfg.n_inst)
        keep = np.ones(self.cfg.data.n_features, np.float32)
        keep[plan.harmful] = 0.0
        self.report = {"teacher_index": idx.tolist(), "teacher_change_pp": self._teacher_rise(graphdef, pre_params, T, plan)}
        return {"teacher": jax.tree.map(lambda a: a[jnp.asarray(idx)], T),
                "keep_output": jnp.asarray(np.broadcast_to(keep, (plan.n_ft, keep.shape[0])))}

    def _teacher_rise(self, graphdef, pre_params, T, plan) -> list[float]:
        """Per teacher i: its own change of the (first) harmful rate against pretrained model i, in pp, on
        model i's ``finetune.rate_samples`` rate inputs (:func:`toymodels.lab.rates.measure`): the trait the
        students could inherit, so a null result is read against it."""
        n = self.cfg.n_inst
        both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), pre_params, T)
        m = lab_rates.measure(self.cfg, graphdef, both, np.tile(np.arange(n), 2), np.tile(np.arange(n), 2),
                              np.asarray(plan.harmful)[:1])
        return (100 * m["change"][n:, 0]).tolist()
