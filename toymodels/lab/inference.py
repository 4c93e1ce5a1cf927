"""What counts as evidence in a fine-tuning sweep: strata, duplicates and the paired cells of every table.

Three rules, applied to a run's per-fine-tune records (``summary["finetune"]["instances"]``) before any
interval is computed:

* **Strata of starting geometry.** Pretrained models in which a different named feature ended barely
  represented (norm < 0.5: :func:`toymodels.core.planting.barely_represented`) start from different
  geometries, and can answer differently. Each model gets a stratum label (:func:`strata`), and cells
  never pool two strata.
* **A run is counted once.** An optimiser that commutes with rotations of the hidden space (SGD, momentum,
  per-tensor NovoGrad) fine-tunes a rotated copy of a model into the rotated copy of the same result, so
  its "rotated" runs repeat the axis-aligned ones. :func:`duplicates` finds them from the numbers
  themselves (every rotation-invariant outcome within :data:`SAME_RUN_TOL`, not from the optimiser's
  name); a cell made only of such repeats is marked ``duplicate_of`` and is not a separate piece of
  evidence, and run counts ("k of n up") count distinct runs.
* **One paired test.** A cell's change is tested by :func:`toymodels.stats.paired`: the per-model mean of
  the change (after − before on the same inputs, :mod:`.rates`), with a t interval over the models of the
  cell (the clusters), whose number is printed beside it. A cell of fewer than :data:`MIN_CLUSTERS` models
  keeps its interval but claims no direction ("no evidence").
"""

from __future__ import annotations

import numpy as np

from .. import stats
from ..core.planting import barely_represented

MIN_CLUSTERS = 10   # fewer pretrained models in a cell: its interval is printed, but no direction is claimed

# rotation-invariant outcomes of a fine-tune, and how far two copies of one run may differ in float32
SAME_RUN_TOL = {"target_gain": 1e-4, "angle_after": 1e-2, "norm_after": 1e-4, "rate_after": 1e-5}


def strata(features: dict | None, n_models: int) -> list[str]:
    """Per pretrained model, its starting geometry: ``"both represented"`` or ``"<names> weak"`` (the
    named features that ended pretraining barely represented)."""
    weak = (features or {}).get("barely_represented")
    if weak is None and features and features.get("norms") is not None:
        weak = barely_represented(features["names"], features["norms"])
    weak = weak or [[] for _ in range(n_models)]
    return ["both represented" if not w else " and ".join(w) + " weak" for w in weak]


def represented(summary: dict) -> set[int]:
    """The pretrained models of a run (its summary.json) in which no named feature ended barely represented:
    the "both represented" stratum, for comparisons across runs paired by model index."""
    weak = (summary.get("features") or {}).get("barely_represented") or []
    return {i for i, w in enumerate(weak) if not w}


def _signature(e: dict, harm: str) -> dict[str, float]:
    h = e["harmful"][harm]
    return {"target_gain": e["target_gain"] if e["target_gain"] is not None else np.nan,
            "angle_after": h["angle_deg"]["after"], "norm_after": h["norm"]["after"], "rate_after": h["rate"]["after"]}


def same_run(a: dict, b: dict, harm: str) -> bool:
    """Whether fine-tunes a and b (instance records) are one run up to a rotation: every
    rotation-invariant outcome within :data:`SAME_RUN_TOL` (and at least one of them finite). Decided
    from the numbers, not the optimiser's name: a rotation-equivariant optimiser repeats its run exactly;
    a run that ends at the same point by another path is also counted once (conservative)."""
    sa, sb = _signature(a, harm), _signature(b, harm)
    both = [k for k in SAME_RUN_TOL if np.isfinite(sa[k]) and np.isfinite(sb[k])]
    return bool(both) and all(abs(sa[k] - sb[k]) <= SAME_RUN_TOL[k] for k in both)


def duplicates(instances: list[dict], harm: str) -> set[int]:
    """Indices of fine-tunes that repeat an earlier one of the same (model, regime, optimiser) up to a
    rotation (:func:`same_run`): the rotated copies of a rotation-equivariant optimiser's run."""
    groups: dict[tuple, list[dict]] = {}
    for e in instances:
        groups.setdefault((e["pretrain_instance"], e["regime"], e["optimizer"]), []).append(e)
    dup = set()
    for rows in groups.values():
        rows = sorted(rows, key=lambda e: e["orientation"])
        for i, e in enumerate(rows):
            if any(same_run(e, f, harm) for f in rows[:i] if f["index"] not in dup):
                dup.add(e["index"])
    return dup


def _mean(v) -> float | None:
    v = [x for x in v if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def claim(p: dict) -> dict:
    """A paired test (:func:`toymodels.stats.paired`) with its direction kept only when it rests on at
    least :data:`MIN_CLUSTERS` models; below that the interval stays and the direction is "no evidence".
    Every table that prints up/down/cuts goes through this."""
    if p["n_clusters"] < MIN_CLUSTERS:
        return p | {"direction": "no evidence", "below_min_clusters": True}
    return p


def cell(rows: list[dict], harm: str, gains, dup: set[int]) -> dict:
    """One table cell from its fine-tunes ``rows``: means of the geometric numbers, the paired test of
    the toxic-rate change [pp] at the end and at each matched gain, and distinct-run counts."""
    distinct = [e for e in rows if e["index"] not in dup]
    h = [e["harmful"][harm] for e in rows]
    models = [e["pretrain_instance"] for e in rows]
    pu = [x["first_order"]["per_unit_push"] for x in h]
    pu_f = [x for x in pu if x is not None]
    end = claim(stats.paired([x["rate"]["change_pp"] for x in h], clusters=models))
    se = [x["rate"].get("se_change_pp") for x in h]
    out = {"n": len(rows), "n_distinct": len(distinct), "n_clusters": end["n_clusters"],
           "n_up_distinct": int(sum(e["harmful"][harm]["rate"]["change_pp"] > 0 for e in distinct)),
           "cos_before": _mean([x["cos"]["before"] for x in h]), "per_unit_push": _mean(pu),
           "per_unit_push_range": [min(pu_f), max(pu_f)] if pu_f else None,
           "angle_before": _mean([x["angle_deg"]["before"] for x in h]),
           "angle_after": _mean([x["angle_deg"]["after"] for x in h]),
           "target_gain": _mean([e["target_gain"] for e in rows]),
           "rate_change": end, "max_eval_se_pp": max((s for s in se if s is not None), default=None),
           "at_gain": {}}
    for g in gains:
        at = [(x.get("at_gain") or {}).get(g) for x in h]
        hit = [(a["rate_change_pp"], m) for a, m in zip(at, models) if a is not None]
        p = claim(stats.paired([v for v, _ in hit], clusters=[m for _, m in hit]))
        out["at_gain"][g] = p | {"n_reached": len(hit), "step": _mean([a["step"] for a in at if a is not None])}
    return out


def cells(ft: dict, features: dict | None, harmful: str | None = None) -> list[dict]:
    """The sweep's cells: one per (stratum, regime, optimiser, orientation class), in the config's
    order. ``orientation`` is ``axis`` or ``rotated``; a rotated cell whose every run repeats an
    axis-aligned one has ``duplicate_of = "axis"``."""
    harm = harmful or ft["harmful"][0]
    inst = ft["instances"]
    n_models = 1 + max(e["pretrain_instance"] for e in inst)
    label = strata(features, n_models)
    dup = duplicates(inst, harm)
    gains = [f"{g:g}" for g in ft.get("matched_gains", [])]
    regimes = [r["name"] for r in ft["regimes"]]
    optimizers = [o["name"] for o in ft["optimizers"]]
    out = []
    for st in dict.fromkeys(label):
        for reg in regimes:
            for opt in optimizers:
                for cls in ("axis", "rotated"):
                    rows = [e for e in inst if label[e["pretrain_instance"]] == st and e["regime"] == reg
                            and e["optimizer"] == opt and (e["orientation"] == 0) == (cls == "axis")]
                    if not rows:
                        continue
                    c = cell(rows, harm, gains, dup)
                    reg_cfg = next(r for r in ft["regimes"] if r["name"] == reg)
                    out.append({"stratum": st, "regime": reg, "optimizer": opt, "orientation": cls,
                                "data": reg_cfg["data"], "loss_scope": reg_cfg["loss_scope"],
                                "duplicate_of": "axis" if cls == "rotated" and c["n_distinct"] == 0 else None,
                                **c})
    return out
