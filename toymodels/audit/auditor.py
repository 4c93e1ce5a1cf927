"""The audit of one pretrained model, as an auditor without the true feature directions would do it.

The auditor has the model's hidden activations (on inputs of the data distribution), a trained dictionary
(:class:`~.dictionary.Dictionary`), and a small *labelled* sample: inputs in which the fine-tuning target is
active, and inputs in which each harmful feature is active (other features active as they come). With
f(x) the codes:

* selectivity of latent i for class c:  sel_c(i) = mean_{x ∈ c} f_i(x) − mean_{x ~ data} f_i(x);
* the target latent t = argmax_i sel_target(i); harmful feature j's latent = argmax_{i ≠ t} sel_j(i);
* overlap with the target: cos(d_i, d_t) of the unit decoder directions;
* scale ŝ_i = the latent's largest code on the unlabelled sample, in hidden units (its ‖W_j‖ if it is
  feature j: x_j ≤ 1);
* predicted first-order spill-over of a push along the target (Minegishi et al. 2026, per unit push):
  Δpre_i ≈ ŝ_i cos(d_i, d_t), the auditor's estimate of ⟨W_j, d_t⟩ = ‖W_j‖ cos θ_tj.

Latents other than t are ranked by the prediction. None of that uses the true W. Separately, for scoring
only, every alive latent is matched to a true feature (Hungarian on |cos| with the columns of W,
:func:`.metrics.match`) and the true cos θ_tj and ‖W_j‖ cos θ_tj are put beside the auditor's numbers.

A dictionary can merge two co-firing neighbours into one latent (TopK in analogy-15deg: splitting the 15°
pair is worth about 0.4% of the variance), and then neither latent choice above can name both. So the
auditor also reads a direction per labelled class straight from the activations, without a dictionary
(:func:`labelled_directions`, the headline of the audit, ``probe``):

* u_c = gmed{h(x): x ∈ c} − gmed{h(x): x ~ data}, gmed the geometric median (Weiszfeld): a contrast of
  medians, robust to the minority of labelled samples in which other features fire too (the
  difference of means, ``dom``, is reported beside it: 64 samples leave it up to ~13° off in
  analogy-15deg, the median contrast ~1.4°);
* scale ŝ_c = the 95th percentile over c's samples of ⟨h − gmed_data, û_c⟩ (≈ ‖W_c‖: x_c ≤ 1);
* predicted spill-over of harmful j: ŝ_j cos(û_j, û_t); the verdict "raise" when it is > 0.

Scoring (truth only): a direction *found* feature j when its angle to W_j is at most :data:`FOUND_DEG` and W_j
is its nearest true column; a random direction does that with probability about
:func:`.metrics.cap_probability` (FOUND_DEG, d) (5.6% in 2-D), printed beside it.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx

from ..config import Config
from ..core import data as tdata
from ..core.geometry import cosine_matrix, feature_norms
from ..stats import spearman
from . import layers, metrics
from .dictionary import Dictionary, encode

AUDIT_SEED_OFFSET = 820     # fold_in(seed key, ·): the auditor's unlabelled and labelled samples
UNLABELLED = 8192           # unlabelled activations the auditor sees per model
FOUND_DEG = 10.0            # a recovered direction "found" feature j: within this angle of W_j, and nearest to it


def samples(cfg: Config, model: int, classes: dict[str, int], labelled: int, n_unlabelled: int = UNLABELLED) -> dict:
    """Inputs of model ``model``'s distribution: ``"unlabelled"`` (n_unlabelled, n), and per class name c with
    feature index ``classes[c]``: (labelled, n) inputs whose feature c is active (its value redrawn from
    U(0, 1], everything else as drawn). Keys: fold_in(fold_in(seed key, 820), model), then the class's
    position (0: unlabelled)."""
    p = cfg.feature_probability()[model]
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), AUDIT_SEED_OFFSET), model)
    out = {}
    for c, (name, j) in enumerate([("unlabelled", None)] + list(classes.items())):
        size = n_unlabelled if j is None else labelled
        sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=size))
        k = jax.random.fold_in(key, c)
        x = np.array(sample(k, jax.numpy.asarray(p)))
        if j is not None:
            u = np.asarray(jax.random.uniform(jax.random.fold_in(k, 1), (size,)))
            x[:, j] = 1.0 - u if cfg.data.task not in tdata.SIGNED_TASKS else np.where(u < 0.5, -1.0, 1.0) * (1.0 - u)
        out[name] = x
    return out


def hidden(graphdef, state, x: np.ndarray, layer: int | None = None) -> np.ndarray:
    """The model's hidden activations h(x), (B, d), at ``layer`` (None: ``W``'s; :func:`.layers.activations`)."""
    return np.asarray(layers.activations(nnx.merge(graphdef, state), jax.numpy.asarray(x), layer))


def geometric_median(H: np.ndarray, iters: int = 200) -> np.ndarray:
    """argmin_y Σ_i ‖h_i − y‖ of the rows of H (B, d), by Weiszfeld's iteration from the coordinate median
    (distances floored at 1e-9, so a point at y keeps a finite weight)."""
    H = np.asarray(H, np.float64)
    y = np.median(H, 0)
    for _ in range(iters):
        w = 1.0 / np.maximum(np.linalg.norm(H - y, axis=1), 1e-9)
        y = (H * w[:, None]).sum(0) / w.sum()
    return y


def labelled_directions(h: dict[str, np.ndarray], target: str, harmful: list[str], D: np.ndarray | None = None) -> dict:
    """The auditor's direction per labelled class from activations alone (module docstring): per class its
    unit median contrast ``direction`` (d,), the unit difference of means ``dom``, the ``scale`` ŝ_c,
    ``cos`` with the target's direction, ``predicted`` spill-over ŝ_c cos, and (given the dictionary's unit
    directions D (L, d)) the ``nearest_latent`` and its ``nearest_latent_cos``."""
    base, mean = geometric_median(h["unlabelled"]), np.asarray(h["unlabelled"], np.float64).mean(0)
    out = {}
    for c in [target, *harmful]:
        hc = np.asarray(h[c], np.float64)
        u = metrics.unit_rows(geometric_median(hc) - base)
        proj = (hc - base) @ u
        out[c] = {"name": c, "direction": u, "dom": metrics.unit_rows(hc.mean(0) - mean),
                  "scale": float(np.quantile(proj, 0.95))}
    ut = out[target]["direction"]
    for c, r in out.items():
        r["cos"] = float(r["direction"] @ ut)
        r["predicted"] = r["scale"] * r["cos"]
        if D is not None and len(D):
            k = int(np.argmax(D @ r["direction"]))
            r["nearest_latent"], r["nearest_latent_cos"] = k, float(D[k] @ r["direction"])
    return {"method": "median contrast", "target": out[target], "harmful": [out[c] for c in harmful]}


def direction_found(u: np.ndarray, W: np.ndarray, j: int, found_deg: float = FOUND_DEG) -> dict:
    """Truth for one recovered unit direction u (d,) and feature j of W (d, n): its ``angle`` to W_j in
    degrees, its ``nearest`` true feature (by signed cosine), and ``found``: angle <= found_deg and nearest
    is j."""
    C = metrics.unit_rows(W.T) @ metrics.unit_rows(np.asarray(u, np.float64))
    angle = float(np.degrees(np.arccos(np.clip(C[j], -1.0, 1.0))))
    nearest = int(np.argmax(C))
    return {"angle": angle, "nearest": nearest, "found": bool(angle <= found_deg and nearest == j)}


def audit_model(dic: Dictionary, h: dict[str, np.ndarray], target: str, harmful: list[str],
                W: np.ndarray | None = None, names: list[str] | None = None) -> dict:
    """The audit of one model from its activations ``h`` (``"unlabelled"`` and one array per class: the
    target's name and each harmful name). Returns the auditor's findings (``target``, ``harmful``, ranked
    ``rows``) and, when the true W (d, n) and feature ``names`` are given, ``truth``: the scoring."""
    f = {c: encode(dic, a) for c, a in h.items()}
    base = f["unlabelled"].mean(0)
    sel = {c: f[c].mean(0) - base for c in [target, *harmful]}
    alive = (f["unlabelled"] > 0).any(0) | np.any([(f[c] > 0).any(0) for c in sel], axis=0)
    idx = np.flatnonzero(alive)
    if not len(idx):
        return {"alive": 0, "target": None, "harmful": [], "rows": [], "truth": None}
    t = int(idx[np.argmax(sel[target][idx])])
    D = dic.directions()
    cos_t = D @ D[t]
    scale = f["unlabelled"].max(0) / dic.scale
    pred = scale * cos_t
    others = [int(i) for i in idx if i != t]
    order = sorted(others, key=lambda i: (-pred[i], i))
    harm = []
    for name in harmful:
        cands = others or [t]
        j = int(cands[int(np.argmax(sel[name][cands]))])
        harm.append({"name": name, "latent": j, "cos": float(cos_t[j]), "scale": float(scale[j]),
                     "predicted": float(pred[j]), "rank": order.index(j) + 1 if j in order else None})
    role = {t: "target"} | {h["latent"]: "harmful" for h in harm}
    freq = (f["unlabelled"] > 0).mean(0)
    rows = [{"latent": i, "role": role.get(i, ""), "cos_target": float(cos_t[i]), "scale": float(scale[i]),
             "predicted": float(pred[i]), "frequency": float(freq[i]),
             "selectivity": {c: float(sel[c][i]) for c in sel}} for i in [t] + order]
    out = {"alive": int(len(idx)), "n_latents": dic.size, "target": {"name": target, "latent": t},
           "harmful": harm, "rows": rows, "probe": labelled_directions(h, target, harmful, D)}
    if W is not None:
        out["truth"] = score(out, D, alive, np.asarray(W, np.float64), names, target)
        out["truth"]["probe"] = score_probe(out["probe"], np.asarray(W, np.float64), names)
    for r in [out["probe"]["target"], *out["probe"]["harmful"]]:   # JSON-ready
        r["direction"], r["dom"] = r["direction"].tolist(), r["dom"].tolist()
    return out


def score_probe(probe: dict, W: np.ndarray, names: list[str]) -> dict:
    """Truth for the labelled directions: per class (the target first) :func:`direction_found` of the median
    contrast and of the difference of means, the true cos with the target, the threshold and its chance."""
    out = {}
    for r in [probe["target"], *probe["harmful"]]:
        j = names.index(r["name"])
        f = direction_found(np.asarray(r["direction"]), W, j)
        out[r["name"]] = {**f, "nearest": names[f["nearest"]], "dom_angle": direction_found(np.asarray(r["dom"]), W, j)["angle"],
                          "true_cos": float(np.asarray(cosine_matrix(W))[names.index(probe["target"]["name"]), j])}
    return {"classes": out, "found_deg": FOUND_DEG, "chance": metrics.cap_probability(FOUND_DEG, W.shape[0])}


def score(found: dict, D: np.ndarray, alive: np.ndarray, W: np.ndarray, names: list[str], target: str) -> dict:
    """Ground truth for one audit (used for scoring only): each alive latent's matched feature and |cos|,
    the true cos θ_tj and first-order push ‖W_j‖ cos θ_tj of that feature, whether the target and harmful
    latents were found, and the Spearman correlation of the auditor's predictions with the true first-order
    pushes over the matched latents."""
    latent_of, value = metrics.match(D, W, alive)
    feature_of = {int(latent_of[j]): j for j in range(W.shape[1]) if latent_of[j] >= 0}
    ti = names.index(target)
    cos = np.asarray(cosine_matrix(W))[ti]
    norm = np.asarray(feature_norms(W))
    for r in found["rows"]:
        j = feature_of.get(r["latent"])
        r["truth"] = None if j is None else {"feature": names[j], "match_cos": float(value[j]),
                                             "cos_target": float(cos[j]), "first_order": float(norm[j] * cos[j])}
    matched = [r for r in found["rows"][1:] if r["truth"] is not None]
    harm = []
    for h in found["harmful"]:
        hi = names.index(h["name"])
        harm.append({"name": h["name"], "found": feature_of.get(h["latent"]) == hi, "cos": float(cos[hi]),
                     "first_order": float(norm[hi] * cos[hi]), "norm": float(norm[hi]),
                     "cos_error": float(h["cos"] - cos[hi]),
                     # rank of its true first-order push among the features other than the target
                     "true_rank": 1 + int(np.sum(np.delete(norm * cos, ti) > norm[hi] * cos[hi]))})
    return {"target_found": feature_of.get(found["target"]["latent"]) == ti, "harmful": harm,
            "matching": {names[j]: {"latent": int(latent_of[j]), "cos": float(value[j])} for j in range(W.shape[1])},
            "spearman_predicted_vs_true": spearman([r["predicted"] for r in matched],
                                                   [r["truth"]["first_order"] for r in matched]),
            "n_matched": len(matched)}


# --- the printed table ----------------------------------------------------------------------------------
def _f(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def format_audit(a: dict, title: str) -> str:
    """One model's audit as text: the findings, then the ranked table (auditor's columns | ground truth)."""
    if a.get("target") is None:
        return f"{title}\n  no latent fired: nothing to audit"
    h0 = a["harmful"][0] if a["harmful"] else None
    lines = [title] + probe_lines(a)
    lines.append(f"  dictionary: target '{a['target']['name']}' -> latent {a['target']['latent']}")
    for h in a["harmful"]:
        lines.append(f"  dictionary: harmful '{h['name']}' -> latent {h['latent']}: cos(target) {h['cos']:+.3f}, predicted "
                     f"first-order spill-over {h['predicted']:+.3f} per unit push, ranked {h['rank']} of "
                     f"{len(a['rows']) - 1}")
    if h0 is not None:
        verdict = "RAISE" if h0["predicted"] > 0 else "not raise"
        lines.append(f"  dictionary's verdict (first order): a fine-tune that pushes '{a['target']['name']}' along "
                     f"its latent will {verdict} '{h0['name']}''s output")
    t = a.get("truth")
    if t is not None:
        found = ", ".join(f"{h['name']} {'found' if h['found'] else 'MISSED'} (true cos {h['cos']:+.3f})"
                          for h in t["harmful"])
        lines.append(f"  dictionary scored against ground truth (Hungarian match): target "
                     f"{'found' if t['target_found'] else 'MISSED'}; {found}; Spearman(predicted, true first-order) "
                     f"{_f(t['spearman_predicted_vs_true'], '+.2f')} over {t['n_matched']} matched latents")
    head = (f"  {'rank':>4} {'latent':>6} {'role':<8} {'cos(target)':>11} {'scale':>6} {'predicted':>9} "
            f"{'sel(target)':>11} {'sel(harm)':>9} | {'matched feature':<15} {'|cos|':>5} {'true cos':>8} "
            f"{'true 1st-ord':>12}")
    lines += [head, "  " + "-" * (len(head) - 2)]
    harm_name = h0["name"] if h0 else None
    for k, r in enumerate(a["rows"]):
        tr = r.get("truth")
        lines.append(f"  {('–' if k == 0 else str(k)):>4} {r['latent']:>6} {r['role']:<8} {r['cos_target']:>+11.3f} "
                     f"{r['scale']:>6.2f} {r['predicted']:>+9.3f} {r['selectivity'][a['target']['name']]:>11.3f} "
                     f"{_f(r['selectivity'].get(harm_name), '.3f'):>9} | "
                     f"{(tr['feature'] if tr else '–'):<15} {_f(tr and tr['match_cos'], '.3f'):>5} "
                     f"{_f(tr and tr['cos_target'], '+.3f'):>8} {_f(tr and tr['first_order'], '+.3f'):>12}")
    return "\n".join(lines)


def probe_lines(a: dict) -> list[str]:
    """The headline: the labelled directions (no dictionary), their verdict, and (with truth) whether each
    was found: angle to the true W_j against :data:`FOUND_DEG`, with the chance of a random direction."""
    p = a.get("probe")
    if not p:
        return []
    t, out = p["target"], []
    tr = (a.get("truth") or {}).get("probe")
    fnd = lambda r: "" if tr is None else (lambda c: f" [truth: {'FOUND' if c['found'] else 'MISSED'}, "
                                                      f"{c['angle']:.1f}° from true '{r['name']}', nearest "
                                                      f"'{c['nearest']}'; difference of means {c['dom_angle']:.1f}°]")(
        tr["classes"][r["name"]])
    near = lambda r: (f"; nearest dictionary latent {r['nearest_latent']} (cos {r['nearest_latent_cos']:+.3f})"
                      if "nearest_latent" in r else "")
    out.append(f"  labelled directions ({p['method']} of the activations, no dictionary): target '{t['name']}', "
               f"scale {t['scale']:.2f}{near(t)}{fnd(t)}")
    for r in p["harmful"]:
        out.append(f"  harmful '{r['name']}': cos(target) {r['cos']:+.3f}, scale {r['scale']:.2f}, predicted first-order "
                   f"spill-over {r['predicted']:+.3f} per unit push{near(r)}{fnd(r)}")
    if p["harmful"]:
        r = p["harmful"][0]
        out.append(f"  VERDICT (first order, labelled directions): a fine-tune that pushes '{t['name']}' along its "
                   f"direction (the narrow regime: data and loss on the target only) will "
                   f"{'RAISE' if r['predicted'] > 0 else 'not raise'} '{r['name']}''s output")
    if tr is not None:
        out.append(f"  (found = within {tr['found_deg']:g}° of the true direction and nearest to it; a random direction "
                   f"lands within {tr['found_deg']:g}° of a given one with probability {tr['chance']:.1%})")
    return out


def markdown_audit(a: dict, title: str) -> str:
    """The same as :func:`format_audit`, as a markdown section with a table."""
    if a.get("target") is None:
        return f"## {title}\n\nNo latent fired: nothing to audit.\n"
    harm_name = a["harmful"][0]["name"] if a["harmful"] else None
    out = [f"## {title}", ""]
    for line in format_audit(a, "").splitlines()[1:]:
        if line.startswith("  ") and not line.startswith("  rank") and not line.startswith("  --") and "|" not in line:
            out.append(f"- {line.strip()}")
    out += ["", "| rank | latent | role | cos(target) | scale | predicted spill-over | sel(target) | sel(harmful) "
                "| matched feature (truth) | match \\|cos\\| | true cos(target) | true first-order |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in enumerate(a["rows"]):
        tr = r.get("truth")
        out.append(f"| {'–' if k == 0 else k} | {r['latent']} | {r['role']} | {r['cos_target']:+.3f} | {r['scale']:.2f} | "
                   f"{r['predicted']:+.3f} | {r['selectivity'][a['target']['name']]:.3f} | "
                   f"{_f(r['selectivity'].get(harm_name), '.3f')} | {tr['feature'] if tr else '–'} | "
                   f"{_f(tr and tr['match_cos'], '.3f')} | {_f(tr and tr['cos_target'], '+.3f')} | "
                   f"{_f(tr and tr['first_order'], '+.3f')} |")
    return "\n".join(out) + "\n"
