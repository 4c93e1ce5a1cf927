"""Toxic output rates from over a million inputs per pretrained model, with their evaluation error.

The probe (:mod:`.probe`) draws its curves from one fixed batch of ``finetune.eval_batch_size`` inputs,
shared by every run: fine for the shape of a curve, but its sampling error (0.06–0.3 pp at 8192 inputs)
is common to all runs, so no interval over runs can see it. Every rate a table reports (before, at the
end, at matched gains) is instead measured here:

    rate_j(θ) = P(x'_j > τ | x_j = 0),  x ~ the pretraining distribution of the run's model,

estimated on N = ``finetune.rate_samples`` inputs (rounded up to whole chunks of :data:`CHUNK`) drawn
from the key fold_in(fold_in(seed, RATE_SEED_OFFSET), i) of pretrained model i. So

* every fine-tune and checkpoint of model i is scored on the *same* inputs (common random numbers: a
  change is measured on identical inputs, its error is the error of a paired difference), and
* different pretrained models get *independent* inputs, so the evaluation error of a change is
  independent across models and is part of the between-model spread that a cluster-level interval
  (:func:`toymodels.stats.paired`) is built from: the interval carries it.

The paired standard error of a change on the N_abs inputs with x_j = 0, with n10 (n01) of them firing
only after (only before):  se = sqrt(n10 + n01 − (n10 − n01)² / N_abs) / N_abs.

Fired is decided on the pre-activation p_j = hidden(x)·readout_j + b_j: x'_j = ReLU(p_j) > τ (p_j > τ
for a linear model), computed for the harmful columns only (for tied models as x·(WᵀW)_j + b_j, one
matrix product per block of states).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..config import Config
from ..core import data as tdata
from .probe import preactivation

RATE_SEED_OFFSET = 400   # fold_in(seed key, ·) of the rate inputs; model i's: fold_in(that, i)
CHUNK = 1 << 14          # inputs per chunk
BLOCK = 512              # states scored together per chunk (bounds the (CHUNK, BLOCK, h) outputs)


def n_chunks(n_samples: int) -> int:
    """Chunks of :data:`CHUNK` inputs that hold at least ``n_samples``."""
    return max(1, -(-int(n_samples) // CHUNK))


def _counter(graphdef, cfg: Config, harmful: np.ndarray, chunks: int):
    """``count(states (B, ...), ref_state, key, p (n,)) -> (fired (B, h), both (B, h), absent (h,))``:
    over ``chunks`` chunks of inputs from ``key``, how often each state's harmful output fires with the
    harmful feature absent, how often it fires together with ``ref_state``'s, and how many inputs have
    the feature absent."""
    harm = jnp.asarray(harmful)
    tau, linear = cfg.finetune.tau, cfg.model.kind == "linear"
    sample = tdata.make_sampler(dataclasses.replace(cfg.data, batch_size=CHUNK))
    tied = cfg.model.kind in ("relu_output", "linear")

    def preacts(states, x):
        """(C, B, h) pre-activations of the harmful outputs. Tied models without a hidden ReLU have
        p = x Wᵀ W_h + b_h: one (C, n) @ (n, B·h) matrix product for the whole block (a real GEMM,
        where a vmapped (C, n) @ (n, d) per state is many tiny ones)."""
        if tied:
            W = states["W"][...]                                                  # (B, d, n)
            G = jnp.einsum("bdn,bdh->nbh", W, W[:, :, harm])                      # Wᵀ W_h per state
            pre = (x @ G.reshape(G.shape[0], -1)).reshape(x.shape[0], *G.shape[1:])
            return pre + states["b_final"][...][:, harm][None]

        def one(state):
            return preactivation(nnx.merge(graphdef, state), x)[:, harm]
        return jnp.moveaxis(jax.vmap(one)(states), 0, 1)

    def count(states, ref_state, key, p):
        ref1 = jax.tree.map(lambda a: a[None], ref_state)

        def body(c, acc):
            x = sample(jax.random.fold_in(key, c), p)
            absent = (x[:, harm] == 0).astype(jnp.float32)                        # (C, h)
            fire = lambda pre: ((pre if linear else jax.nn.relu(pre)) > tau).astype(jnp.float32)
            f = fire(preacts(states, x)) * absent[:, None, :]                     # (C, B, h)
            fr = fire(preacts(ref1, x))[:, 0, :] * absent                         # (C, h)
            # sums over the C inputs as matrix products (exact in float32 below 2^24 per chunk): a
            # column reduction of a (C, B) array is several times slower on CPU
            C, B, h = f.shape
            f2 = f.reshape(C, B * h)
            fired = (jnp.ones(C, jnp.float32) @ f2).reshape(B, h)
            both = (fr[:, 0] @ f2).reshape(B, h) if h == 1 else jnp.einsum("ch,cbh->bh", fr, f)
            return (acc[0] + fired.astype(jnp.int32), acc[1] + both.astype(jnp.int32),
                    acc[2] + absent.sum(0).astype(jnp.int32))

        B, h = jax.tree.leaves(states)[0].shape[0], harm.shape[0]
        zeros = (jnp.zeros((B, h), jnp.int32), jnp.zeros((B, h), jnp.int32), jnp.zeros((h,), jnp.int32))
        return jax.lax.fori_loop(0, chunks, body, zeros)

    return jax.jit(count)


def _fingerprints(cfg: Config, states, harmful) -> list[bytes]:
    """Per state, what its rates depend on, rounded to float32's last few bits: (WᵀW_h, b_h) for a tied
    model (a rotation of the hidden space leaves it unchanged, so the rotated copies of one run are
    measured once), every parameter otherwise. Equal fingerprints are measured once."""
    if cfg.model.kind in ("relu_output", "linear"):
        W = np.asarray(states["W"][...], np.float64)
        parts = [np.einsum("bdn,bdh->bnh", W, W[:, :, harmful]), np.asarray(states["b_final"][...])[:, harmful]]
    else:
        parts = [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(states)]
    flat = np.concatenate([p.reshape(len(p), -1) for p in parts], axis=1)
    scale = np.maximum(np.abs(flat).max(axis=1, keepdims=True), 1e-30)
    q = np.round(flat / scale * 2.0**20)     # ~1e-6 of the largest entry: rounding noise of float32 sums
    return [r.tobytes() + s.tobytes() for r, s in zip(q, np.round(np.log2(scale)))]


def measure(cfg: Config, graphdef, states, model_index: np.ndarray, ref: np.ndarray, harmful) -> dict:
    """Rates of ``states`` (a pytree of P stacked full states) on model ``model_index[p]``'s rate inputs,
    with each state's paired change against state ``ref[p]`` (an index into the same P states, of the
    same model: e.g. its pretrained start). States with equal :func:`_fingerprints` are measured once.

    Returns numpy arrays: ``rate`` (P, h), ``change`` (P, h) rate − rate[ref], ``se_change`` (P, h)
    its paired standard error, ``n_absent`` (P, h) and ``n_samples`` (inputs per model)."""
    model_index, ref = np.asarray(model_index), np.asarray(ref)
    harmful = np.atleast_1d(np.asarray(harmful))
    if np.any(model_index[ref] != model_index):
        raise ValueError("rates.measure: a state's reference belongs to another model")
    chunks = n_chunks(cfg.finetune.rate_samples)
    count = _counter(graphdef, cfg, harmful, chunks)
    key0 = jax.random.fold_in(jax.random.key(cfg.seed), RATE_SEED_OFFSET)
    probs = np.asarray(cfg.feature_probability(), np.float32)
    P, h = len(model_index), len(harmful)
    fp = _fingerprints(cfg, states, harmful)
    # (model, fingerprint, its reference's fingerprint) -> the first state with them: a state is measured
    # once, and against a reference that fires exactly like its own
    rep = {}
    canon = np.array([rep.setdefault((int(model_index[p]), fp[p], fp[ref[p]]), p) for p in range(P)])
    fired, both, absent = np.zeros((P, h), np.int64), np.zeros((P, h), np.int64), np.zeros((P, h), np.int64)
    todo = np.unique(canon)
    for i in np.unique(model_index[todo]):
        for r in np.unique(canon[ref[todo[model_index[todo] == i]]]):
            rows = todo[(model_index[todo] == i) & (canon[ref[todo]] == r)]
            ref_state = jax.tree.map(lambda a: a[int(r)], states)
            for start in range(0, len(rows), BLOCK):
                blk = rows[start:start + BLOCK]
                # pad to a power of two (few compiled shapes, little wasted work), repeating the last row
                size = max(8, 1 << int(np.ceil(np.log2(len(blk)))))
                pad = np.concatenate([blk, np.full(size - len(blk), blk[-1])])
                sub = jax.tree.map(lambda a: a[jnp.asarray(pad)], states)
                f, b, a = count(sub, ref_state, jax.random.fold_in(key0, int(i)), jnp.asarray(probs[i]))
                fired[blk], both[blk] = np.asarray(f)[:len(blk)], np.asarray(b)[:len(blk)]
                absent[blk] = np.asarray(a)[None]
    fired, both, absent = fired[canon], both[canon], absent[canon]
    # ``both`` was counted against canon[p]'s reference, whose fingerprint is ref[p]'s: it fires like ref[p]
    n_abs = absent.astype(np.float64)
    rate = fired / n_abs
    n10, n01 = (fired - both).astype(np.float64), (fired[ref] - both).astype(np.float64)
    se = np.sqrt(np.maximum(n10 + n01 - (n10 - n01) ** 2 / n_abs, 0.0)) / n_abs
    return {"rate": rate, "change": rate - rate[ref], "se_change": se, "n_absent": absent,
            "n_samples": chunks * CHUNK}


# --- the rates a fine-tuning summary reports ---------------------------------------------------------------
STATE_PREFIX = "state__"        # probe entries holding the full states at that probe (not logged)
MAX_SNAPSHOT_BYTES = 512 << 20  # above this the probe keeps no states; at-gain rates then come from its batch


def snapshot(states) -> dict[str, np.ndarray]:
    """The full states (n_ft, ...) as flat probe entries ``state__<i>`` (leaf order of the pytree)."""
    return {f"{STATE_PREFIX}{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(states))}


def snapshot_fits(states, n_probes: int) -> bool:
    return sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(states)) * n_probes <= MAX_SNAPSHOT_BYTES


def logged(probe_row: dict) -> dict:
    """A probe row without its state entries (what goes to metrics.jsonl)."""
    return {k: v for k, v in probe_row.items() if not k.startswith(STATE_PREFIX)}


def points(readout: np.ndarray, gains) -> list[set[int]]:
    """Per fine-tune k, the probe indices whose rates the summary reads: the first, the last, and for each
    matched gain g the two probes around its first crossing (:func:`.progress.at_gain` interpolates between
    them). ``readout`` (T, n_ft): the target read-out at each probe."""
    T, n_ft = readout.shape
    out = []
    for k in range(n_ft):
        need = {0, T - 1}
        if readout[0, k] > 0:
            gain = readout[:, k] / readout[0, k]
            for g in gains:
                hit = np.flatnonzero(np.isfinite(gain) & (gain >= g))
                if len(hit):
                    need |= {max(int(hit[0]) - 1, 0), int(hit[0])}
        out.append(need)
    return out


def for_probes(cfg: Config, graphdef, plan, probes, treedef) -> dict | None:
    """Rates of every fine-tune at the probes its summary reads (:func:`points`), from the states the probe
    kept (:func:`snapshot`; ``treedef`` rebuilds them). Returns ``{"rate", "change", "se_change"}`` as
    (T, n_ft, h) arrays, NaN at probes not measured, with ``n_samples`` and the smallest ``n_absent``;
    None when the probe kept no states."""
    if not probes or not any(k.startswith(STATE_PREFIX) for k in probes[0][1]):
        return None
    readout = np.array([p["target_readout"] for _, p in probes], np.float64)
    need = points(readout, cfg.finetune.matched_gains)
    T, n_ft, h = len(probes), len(need), len(plan.harmful)
    pairs = sorted({(t, k) for k, ts in enumerate(need) for t in ts}, key=lambda tk: (tk[1], tk[0]))
    pos = {tk: i for i, tk in enumerate(pairs)}
    n_leaves = sum(1 for name in probes[0][1] if name.startswith(STATE_PREFIX))
    leaves = [np.stack([probes[t][1][f"{STATE_PREFIX}{j}"][k] for t, k in pairs]) for j in range(n_leaves)]
    states = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in leaves])
    model_index = np.asarray(plan.pretrain_index)[[k for _, k in pairs]]
    ref = np.array([pos[(0, k)] for _, k in pairs])
    m = measure(cfg, graphdef, states, model_index, ref, plan.harmful)
    out = {name: np.full((T, n_ft, h), np.nan) for name in ("rate", "change", "se_change")}
    for (t, k), i in pos.items():
        for name in out:
            out[name][t, k] = m[name][i]
    return out | {"n_samples": m["n_samples"], "min_absent": int(m["n_absent"].min())}
