"""A trained dictionary as the auditor holds it, and the SAE file of a run (``weights_sae.npz``).

``weights_sae.npz`` holds, per trained variant v of ``[sae]``, stacked over its instances s (the plan of
:mod:`.train`): ``v.W_enc`` (n, d, L), ``v.b_enc`` (n, L), ``v.W_dec`` (n, L, d), ``v.b_dec`` (n, d),
``v.log_threshold`` (n, L), ``v.model`` (n,) the pretrained model, ``v.size`` (n,) latents in use (the
first ``size`` of L), ``v.sparsity`` (n,) λ or k, ``v.scale`` (n,) the activation normaliser c (the SAE
reads c h), ``v.threshold`` (n,) BatchTopK's inference threshold (0 for the others), and
``v.revived`` (n, L) how often each latent was re-initialised. ``kmax`` and ``bandwidth`` are scalars.
Everything :func:`encode` needs is in the file, so an audit can run from saved files alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from . import sae as S

PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec", "log_threshold")
PER_INSTANCE = ("model", "size", "sparsity", "scale", "threshold", "revived")


@dataclass(frozen=True)
class Dictionary:
    """One trained SAE of one pretrained model: its parameters (numpy), the latents in use, the sparsity
    setting, the activation scale c, BatchTopK's threshold, and the static settings of :mod:`.sae`."""

    variant: str
    params: dict
    size: int
    sparsity: float
    scale: float
    threshold: float
    kmax: int = 1
    bandwidth: float = 0.05

    @property
    def L(self) -> int:
        return int(self.params["b_enc"].shape[0])

    def directions(self) -> np.ndarray:
        """Unit decoder directions of the latents in use, (size, d)."""
        D = np.asarray(self.params["W_dec"], np.float64)[: self.size]
        return D / np.maximum(np.linalg.norm(D, axis=1, keepdims=True), 1e-12)


def encode(dic: Dictionary, h: np.ndarray) -> np.ndarray:
    """The codes (B, size) of hidden activations h (B, d) (un-normalised: the scale c is applied here).
    BatchTopK uses its fixed inference threshold, so a code never depends on the rest of the batch."""
    inst = {"mask": jnp.asarray(np.arange(dic.L) < dic.size, jnp.float32),
            "sparsity": jnp.asarray(dic.sparsity, jnp.float32)}
    params = {k: jnp.asarray(v) for k, v in dic.params.items()}
    ht = jnp.asarray(np.asarray(h, np.float32).T) * dic.scale
    f = S.codes(params, ht, inst, dic.variant, dic.kmax, dic.bandwidth,
                threshold=dic.threshold if dic.variant in S.THRESHOLDED else None)
    return np.asarray(f).T[:, : dic.size]


def to_arrays(trained: dict, evaluation: dict, scale: np.ndarray, kmax: int, bandwidth: float) -> dict:
    """The ``weights_sae.npz`` arrays of every trained variant (``trained``: variant -> :class:`.train.Trained`;
    ``evaluation``: variant -> :func:`.train.evaluate` output)."""
    out = {"kmax": np.asarray(kmax), "bandwidth": np.asarray(bandwidth, np.float32)}
    for v, tr in trained.items():
        for k in PARAMS:
            out[f"{v}.{k}"] = np.asarray(tr.params[k])
        out[f"{v}.model"] = np.asarray(tr.plan.model, np.int32)
        out[f"{v}.size"] = np.asarray(tr.plan.size, np.int32)
        out[f"{v}.sparsity"] = np.asarray(tr.plan.sparsity, np.float32)
        out[f"{v}.scale"] = np.asarray(np.asarray(scale)[tr.plan.model], np.float32)
        out[f"{v}.threshold"] = np.asarray(evaluation[v]["threshold"], np.float32)
        out[f"{v}.revived"] = np.asarray(tr.revived, np.int32)
    return out


def variants_in(arrays: dict) -> list[str]:
    """The variants a ``weights_sae.npz`` holds, in :data:`.sae.VARIANTS` order."""
    return [v for v in S.VARIANTS if f"{v}.W_dec" in arrays]


def dictionary(arrays: dict, variant: str, s: int) -> Dictionary:
    """Instance s of ``variant`` from ``weights_sae.npz`` arrays."""
    g = lambda k: arrays[f"{variant}.{k}"][s]
    return Dictionary(variant, {k: np.asarray(g(k)) for k in PARAMS}, int(g("size")), float(g("sparsity")),
                      float(g("scale")), float(g("threshold")), int(arrays["kmax"]), float(arrays["bandwidth"]))


def from_true_directions(W: np.ndarray, scale: float = 1.0) -> Dictionary:
    """The ideal dictionary of a model (for tests and as a reference): one latent per true feature, decoder
    row W_j/‖W_j‖, encoder the same direction (a TopK-1 code: each sample's best-aligned feature)."""
    W = np.asarray(W, np.float64)
    D = (W / np.maximum(np.linalg.norm(W, axis=0, keepdims=True), 1e-12)).T
    n, d = D.shape
    params = {"W_enc": D.T.astype(np.float32), "b_enc": np.zeros(n, np.float32), "W_dec": D.astype(np.float32),
              "b_dec": np.zeros(d, np.float32), "log_threshold": np.zeros(n, np.float32)}
    return Dictionary("topk", params, n, 1.0, scale, 0.0, kmax=1)

