"""Scoring an audit against ground truth: dictionary recovery, rankings and risk scores (numpy, scipy).

Dictionary recovery (D: (L, d) learned decoder directions, one per row; F: (d, n) the true W, feature j's
direction is the column F_j):

* :func:`cosines` ``C_ij = max(cos(D_i, F_j), 0)``: a decoder row along −F_j does not count (the features
  and the codes are non-negative); ``signed=False`` gives |cos|;
* :func:`mcc`: the mean correlation coefficient of SAELens' synthetic benchmarks (O'Neill et al. 2024):
  a one-to-one matching of latents to features that maximises Σ C_ij (Hungarian algorithm,
  ``scipy.optimize.linear_sum_assignment``), averaged over the n true features (a feature left without a
  latent, when L < n, counts 0). 1 for a permuted, rescaled identity; far from 0 for random directions
  in few dimensions (:func:`chance_recovery`);
* :func:`matched_mean`: the MCC of SynthSAEBench / SAELens' ``mean_correlation_coefficient``: the same
  Hungarian matching on a given similarity matrix, averaged over the min(L, n) *matched pairs* (not over the n
  features): a width-4096 dictionary can reach 1 against 16,384 features. :func:`uniqueness`: the number of
  distinct best features (argmax over each latent's row) / L;
* :func:`mean_max_cosine`: mean over features of max_i C_ij, no one-to-one constraint (SPD's "mean max
  cosine similarity"); it is ≥ the MCC;
* :func:`chance_recovery`: the chance level of both, from random unit dictionaries of the same width L and
  dimension d scored the same way (keys ``mcc``/``mcc_abs``/``mmcs``/``mmcs_abs``, each ``{"mean", "p95"}``).
  In low dimension chance is high: 10 random latents in 2-D score MCC ≈ 0.92 against 5 features.

Signed vs |cos|: our MCC uses max(cos, 0) (a latent along −W_j does not recover feature j); SAELens' synthetic
benchmarks and most papers use |cos|, which is never lower. Tables report both, each beside its own chance.

Rankings and risk scores (s: scores, y: 0/1 labels):

* :func:`auroc`: P(s_pos > s_neg) + ½ P(s_pos = s_neg), from the Mann–Whitney U statistic with average
  ranks (``scipy.stats.rankdata``); :func:`auroc_ci` a percentile (cluster) bootstrap interval of it;
* :func:`precision_recall_at_k`; :func:`best_threshold_accuracy`; :func:`calibration` (a logistic fit of
  y on s, cross-validated over clusters, and its reliability bins).
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

from ..stats import N_RESAMPLES, SEED

EPS = 1e-12


# --- dictionary recovery -------------------------------------------------------------------------------
def unit_rows(D: np.ndarray) -> np.ndarray:
    """Rows of D scaled to unit norm (zero rows stay zero)."""
    D = np.asarray(D, np.float64)
    n = np.linalg.norm(D, axis=-1, keepdims=True)
    return D / np.where(n > EPS, n, 1.0)


def cosines(D: np.ndarray, F: np.ndarray, signed: bool = True) -> np.ndarray:
    """Cosines between learned directions D (L, d) (rows) and true features F (d, n) (columns): (L, n).
    ``signed`` (the default): max(cos, 0). The toy's features are non-negative (x_j >= 0) and a code is
    non-negative, so a decoder row along −W_j does not represent feature j: in the 5-in-2-D pentagon an SAE
    can rebuild each sample from the *other* four features' negated directions (L0 ≈ 4), which |cos| would
    score as a perfect recovery. ``signed=False``: |cos| (for signed features, e.g. task 'abs')."""
    C = unit_rows(D) @ unit_rows(np.asarray(F, np.float64).T).T
    return np.maximum(C, 0.0) if signed else np.abs(C)


def match(D: np.ndarray, F: np.ndarray, alive=None, signed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The Hungarian matching of latents (rows of D, only ``alive`` ones when given) to true features
    (columns of F) maximising Σ C (:func:`cosines`). Returns (latent of each feature or −1, its C or 0):
    (n,), (n,)."""
    C = cosines(D, F, signed)
    idx = np.arange(C.shape[0]) if alive is None else np.flatnonzero(np.asarray(alive, bool))
    latent, value = np.full(C.shape[1], -1), np.zeros(C.shape[1])
    if len(idx):
        rows, cols = scipy.optimize.linear_sum_assignment(C[idx], maximize=True)
        latent[cols], value[cols] = idx[rows], C[idx][rows, cols]
    return latent, value


def mcc(D: np.ndarray, F: np.ndarray, alive=None, features=None, signed: bool = True) -> float:
    """Mean over the true features (or the subset ``features``) of the cosine of their matched latent
    (:func:`match`; an unmatched feature counts 0)."""
    _, value = match(D, F, alive, signed)
    return float(value.mean() if features is None else value[np.asarray(features)].mean())


def matched_mean(C: np.ndarray) -> float:
    """Mean of C over the one-to-one matching of rows to columns that maximises Σ C (Hungarian), i.e. over
    min(L, n) pairs: SynthSAEBench's MCC when C (L, n) holds |cos| of every latent with every feature."""
    rows, cols = scipy.optimize.linear_sum_assignment(C, maximize=True)
    return float(np.mean(C[rows, cols])) if len(rows) else 0.0


def uniqueness(C: np.ndarray) -> float:
    """SynthSAEBench's uniqueness: distinct best features (argmax_j C_ij over latents i) / L; C (L, n)."""
    return float(len(np.unique(np.argmax(C, axis=1))) / C.shape[0]) if C.shape[0] else 0.0


def mean_max_cosine(D: np.ndarray, F: np.ndarray, alive=None, signed: bool = True) -> float:
    """Mean over true features of the largest cosine (:func:`cosines`) with any (alive) latent."""
    C = cosines(D, F, signed)
    if alive is not None:
        C = C[np.asarray(alive, bool)]
    return float(C.max(0).mean()) if len(C) else 0.0


def chance_recovery(L: int, F: np.ndarray, n_draws: int = 200, seed: int = SEED) -> dict:
    """The chance level of :func:`mcc` and :func:`mean_max_cosine` for a dictionary of L latents against the
    true features F (d, n): L directions drawn uniformly on the unit sphere of R^d (Gaussian rows, normalised;
    ``numpy.random.default_rng(seed)``), scored exactly as a trained dictionary, over ``n_draws`` draws.
    Returns ``{"mcc", "mcc_abs", "mmcs", "mmcs_abs"}`` (signed max(cos, 0) and |cos|), each ``{"mean", "p95"}``
    (the mean and 95th percentile over the draws), plus ``n_draws`` and ``L``. A trained dictionary beats
    chance when its score exceeds ``p95``."""
    F = np.asarray(F, np.float64)
    if int(L) < 1:
        raise ValueError(f"chance_recovery: L = {L!r}; the width must be an integer >= 1")
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("mcc", "mcc_abs", "mmcs", "mmcs_abs")}
    for _ in range(n_draws):
        D = rng.standard_normal((int(L), F.shape[0]))
        for signed, suffix in ((True, ""), (False, "_abs")):
            out["mcc" + suffix].append(mcc(D, F, signed=signed))
            out["mmcs" + suffix].append(mean_max_cosine(D, F, signed=signed))
    res = {k: {"mean": float(np.mean(v)), "p95": float(np.quantile(v, 0.95))} for k, v in out.items()}
    return {**res, "n_draws": int(n_draws), "L": int(L)}


def cap_probability(deg: float, d: int) -> float:
    """P(angle(u, v) <= deg) for u uniform on the unit sphere of R^d and a fixed v: the chance that a random
    direction lands within ``deg`` degrees of a given one, ½ I_{sin²θ}((d − 1)/2, ½) for θ <= 90° (θ/π in 2-D)."""
    t = np.radians(deg)
    if d < 2:
        return 1.0
    half = 0.5 * float(scipy.special.betainc((d - 1) / 2.0, 0.5, np.sin(min(t, np.pi / 2)) ** 2))
    return half if t <= np.pi / 2 else 1.0 - cap_probability(180.0 - deg, d)


# --- rankings -------------------------------------------------------------------------------------------
def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for 0/1 ``labels`` (NaN scores dropped): the Mann–Whitney U
    of the positives over n_pos · n_neg, with average ranks for ties. NaN without both classes."""
    s, y = _clean(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    r = scipy.stats.rankdata(s)
    u = r[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _clean(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray([np.nan if v is None else v for v in scores], np.float64)
    y = np.asarray(labels).astype(bool)
    ok = np.isfinite(s)
    return s[ok], y[ok]


def auroc_ci(scores, labels, clusters=None, level: float = 0.95, n_resamples: int = N_RESAMPLES,
             seed: int = SEED) -> list[float] | None:
    """Percentile bootstrap interval of :func:`auroc`. Each resample draws units with replacement (the
    items, or whole ``clusters``: e.g. every fine-tune of one pretrained model) as integer weights w, and
    its AUROC is Σ_{i pos, j neg} w_i w_j c_ij / (Σ w_pos Σ w_neg) with c_ij = 1[s_i > s_j] + ½ 1[s_i = s_j]
    (exactly the AUROC of the repeated items). Resamples without both classes are left out. None when
    the AUROC is undefined."""
    s = np.asarray([np.nan if v is None else v for v in scores], np.float64)
    y = np.asarray(labels).astype(bool)
    c = np.arange(len(s)) if clusters is None else np.asarray([str(x) for x in clusters])
    ok = np.isfinite(s)
    s, y, c = s[ok], y[ok], c[ok]
    if not y.any() or y.all():
        return None
    _, unit = np.unique(c, return_inverse=True)
    G = unit.max() + 1
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    cmp = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
    w = np.random.default_rng(seed).multinomial(G, np.full(G, 1.0 / G), size=n_resamples)[:, unit].astype(np.float64)
    wp, wn = w[:, pos], w[:, neg]
    den = wp.sum(1) * wn.sum(1)
    num = np.einsum("rp,pn,rn->r", wp, cmp, wn)
    vals = (num / np.where(den > 0, den, 1.0))[den > 0]
    if not len(vals):
        return None
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def precision_recall_at_k(scores, relevant, k: int, item_of=None) -> tuple[float, float]:
    """Precision and recall at k of a ranking by ``scores`` (descending; ties by index).

    ``relevant``: 0/1 per item. Precision = relevant items among the top k / k. Recall = relevant *units*
    found in the top k / all relevant units, where ``item_of`` (optional) maps items to the unit they stand
    for (e.g. latents to the true feature they matched; −1: none), so two latents of one feature are found
    once; without it each relevant item is its own unit."""
    s = np.asarray(scores, np.float64)
    rel = np.asarray(relevant).astype(bool)
    order = np.argsort(-np.where(np.isfinite(s), s, -np.inf), kind="stable")[:k]
    precision = float(rel[order].sum() / k) if k > 0 else float("nan")
    if item_of is None:
        total = rel.sum()
        return precision, float(rel[order].sum() / total) if total else float("nan")
    units = np.asarray(item_of)
    wanted = set(units[rel & (units >= 0)].tolist())
    found = set(units[order][rel[order] & (units[order] >= 0)].tolist())
    return precision, float(len(found) / len(wanted)) if wanted else float("nan")


def best_threshold_accuracy(scores, labels) -> dict:
    """The accuracy of the rule "positive when s > t" at the t that maximises it over this data (in-sample,
    so optimistic), the t, and the base rate (the accuracy of always answering the majority class)."""
    s, y = _clean(scores, labels)
    if not len(s):
        return {"accuracy": None, "threshold": None, "base_rate": None, "n": 0}
    cuts = np.concatenate([[-np.inf], np.unique(s)])
    acc = np.array([np.mean((s > t) == y) for t in cuts])
    best = int(np.argmax(acc))
    return {"accuracy": float(acc[best]), "threshold": float(cuts[best]) if best else None,
            "base_rate": float(max(y.mean(), 1 - y.mean())), "n": int(len(s))}


# --- calibration ----------------------------------------------------------------------------------------
def logistic_fit(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of P(y = 1 | s) = σ(a + b z), z = (s − mean s) / std s, by maximum likelihood with a weak
    ridge (1e-3 (a² + b²), which keeps separable data finite). Returns the coefficients on z."""
    z = (s - s.mean()) / max(s.std(), EPS)

    def nll(ab):
        t = ab[0] + ab[1] * z
        return float(np.sum(np.logaddexp(0.0, t) - y * t) + 1e-3 * (ab @ ab))

    return tuple(scipy.optimize.minimize(nll, np.zeros(2), method="BFGS").x)


def calibration(scores, labels, clusters, n_folds: int = 5, n_bins: int = 5) -> dict:
    """Cross-validated probabilities of a logistic fit of the outcome on the score: the clusters (e.g.
    pretrained models) are split into ``n_folds`` folds by their order of appearance; each fold is
    predicted by a fit on the others. Returns the Brier score, the base-rate Brier score, and reliability
    bins (equal-count bins of the predicted probability: mean predicted vs observed frequency, n)."""
    s = np.asarray([np.nan if v is None else v for v in scores], np.float64)
    y = np.asarray(labels).astype(np.float64)
    c = np.asarray([str(x) for x in clusters])
    ok = np.isfinite(s)
    s, y, c = s[ok], y[ok], c[ok]
    if len(s) < 4 or y.min() == y.max():
        return {"brier": None, "brier_base_rate": None, "bins": []}
    order = {u: i for i, u in enumerate(dict.fromkeys(c))}
    fold = np.array([order[u] % n_folds for u in c])
    p = np.empty_like(s)
    for f in range(n_folds):
        train, test = fold != f, fold == f
        if not test.any():
            continue
        if y[train].min() == y[train].max():
            p[test] = y[train].mean()
            continue
        a, b = logistic_fit(s[train], y[train])
        z = (s[test] - s[train].mean()) / max(s[train].std(), EPS)
        p[test] = 1.0 / (1.0 + np.exp(-(a + b * z)))
    bins = []
    for chunk in np.array_split(np.argsort(p, kind="stable"), min(n_bins, len(p))):
        bins.append({"predicted": float(p[chunk].mean()), "observed": float(y[chunk].mean()), "n": int(len(chunk))})
    return {"brier": float(np.mean((p - y) ** 2)), "brier_base_rate": float(np.mean((y.mean() - y) ** 2)),
            "bins": bins}
