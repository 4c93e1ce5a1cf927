"""The residual MLP toy of APD / SPD ("compressed computation", Braun et al. 2025, §4; Bushnaq et al. 2025).

n features are embedded into a residual stream of width d by a fixed random embedding W_E (d, n) whose
columns are unit vectors; L MLP blocks of d_mlp ReLU neurons each read the stream and add to it; the
embedding's transpose reads it out (no biases anywhere in the published model):

    r_0 = W_E x,    h_l = ReLU(W_inₗᵀ r_{l−1}),    r_l = r_{l−1} + W_outₗ h_l        (l = 1..L)
    f(x) = W_Eᵀ r_L + b_final

with W_inₗ, W_outₗ both (d, d_mlp) (the hidden axis first, so a rotation O of the stream acts as
W → O W on every one of them and leaves f unchanged), x (batch, n). Trained on y = x + ReLU(x)
(data.task ``resid_relu``, :func:`toymodels.core.data.target`) with x_i ∈ U[−1, 1] w.p. p.

Since W_Eᵀ W_E = I + M with M ≠ 0 (off-diagonal cosines of random unit vectors, ~1/√d), the stream's
pass-through gives (I + M) x, not x: the MLP must compute ReLU(x) − M x. The mixing term −M x is the
"label noise" of Bhagat, Molas-Medina, Giglemiani & Heimersheim (2025), "Compressed computation is
(probably) not computation in superposition". ``clean_labels`` removes it: the labels become
y = W_EᵀW_E x + ReLU(x), i.e. the MLP's target is exactly ReLU(x). Since the labels then depend on the
(fixed) embedding, the control is implemented as the equivalent read-out f_clean = f − M x
= x + W_Eᵀ Σ_l W_outₗ h_l + b_final against the same labels y = x + ReLU(x): the loss
(y − f_clean)² equals (y_clean − f)² term by term (``tests/test_residual.py``).

Fast path: since W_E is fixed and narrow (n ≪ d), the stream is never materialised at batch size. With
A_l = W_inₗᵀ W_E (d_mlp, n), C_lk = W_inₗᵀ W_outₖ (d_mlp, d_mlp), R_k = W_Eᵀ W_outₖ (n, d_mlp):
h_l = ReLU(A_l x + Σ_{k<l} C_lk h_k), f = (I + M) x + Σ_k R_k h_k + b — the same function (to float
rounding) at ~1/20 of the cost at d = 1000, and the same gradients for every parameter.

``W`` is W_E: the lab plants the named features into its columns. The published embedding is fixed:
``FROZEN_LEAVES`` (W, b_final) are held by the pretraining optimiser (:func:`toymodels.core.planting.
pretraining_optimizer`); fine-tuning trains what ``finetune.trainable`` says. ``layer_preacts`` is the
read-out of the stream after each block (the logit lens), its last layer the output ``preact``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class ResidualMLP(nnx.Module):
    """f(x) = W_Eᵀ r_L + b_final; see the module docstring. Shapes: x (batch, n)."""

    HIDDEN_LEAVES = ("W", "W_in", "W_out")
    FROZEN_LEAVES = ("W", "b_final")  # not trained in pretraining (the published setup: fixed W_E, no biases)

    def __init__(self, n_features: int, d_hidden: int, *, n_layers: int = 1, d_mlp: int = 50,
                 clean_labels: bool = False, rngs: nnx.Rngs):
        self.n_layers, self.d_mlp, self.clean_labels = n_layers, d_mlp, clean_labels
        E = jax.random.normal(rngs.params(), (d_hidden, n_features))
        self.W = nnx.Param(E / jnp.linalg.norm(E, axis=0, keepdims=True))   # unit columns (SPD: fixed_random_embedding)
        self.b_final = nnx.Param(jnp.zeros((n_features,)))
        # torch nn.Linear's default init, as in the SPD code's MLP: U(±1/√fan_in)
        a_in, a_out = 1.0 / math.sqrt(d_hidden), 1.0 / math.sqrt(d_mlp)
        self.W_in = nnx.Param(jax.random.uniform(rngs.params(), (n_layers, d_hidden, d_mlp), minval=-a_in, maxval=a_in))
        self.W_out = nnx.Param(jax.random.uniform(rngs.params(), (n_layers, d_hidden, d_mlp), minval=-a_out,
                                                  maxval=a_out))

    @classmethod
    def from_config(cls, model_cfg, n_features: int, *, std: float, rngs: nnx.Rngs) -> ResidualMLP:
        """``std`` (the TMS init) is unused: the embedding has unit columns, the MLP torch's init."""
        return cls(n_features, model_cfg.d_hidden, n_layers=model_cfg.n_layers, d_mlp=model_cfg.d_mlp,
                   clean_labels=model_cfg.clean_labels, rngs=rngs)

    # --- the stream, batch-major (the reference implementation) ------------------------------------
    def _streams(self, x: jax.Array) -> list[jax.Array]:
        """[r_0, ..., r_L], each (batch, d)."""
        r = x @ self.W[...].T
        out = [r]
        for layer in range(self.n_layers):
            h = jax.nn.relu(r @ self.W_in[...][layer])
            r = r + h @ self.W_out[...][layer].T
            out.append(r)
        return out

    def _readout(self, r: jax.Array, x: jax.Array) -> jax.Array:
        """W_Eᵀ r + b_final, minus the mixing term M x under ``clean_labels``: (batch, n)."""
        W = self.W[...]
        out = r @ W + self.b_final[...]
        if self.clean_labels:
            out = out - (x @ W.T @ W - x)
        return out

    def hidden(self, x: jax.Array) -> jax.Array:
        """r_0 = W_E x: the embedding (the layer of ``W``), (batch, n) -> (batch, d)."""
        return x @ self.W[...].T

    def hidden_at(self, x: jax.Array, layer: int) -> jax.Array:
        """r_{layer−1} (batch, d): the residual stream the MLP of ``layer`` (1-based) reads."""
        return self._streams(x)[layer - 1]

    def mlp_outputs(self, x: jax.Array) -> jax.Array:
        """(L, batch, n): W_Eᵀ W_outₗ h_l, what block l adds to the read-out."""
        rs = self._streams(x)
        W = self.W[...]
        return jnp.stack([(rs[i + 1] - rs[i]) @ W for i in range(self.n_layers)])

    def layer_preacts(self, x: jax.Array) -> jax.Array:
        """(L, batch, n): the read-out of r_l after each block l (the last is ``preact``)."""
        return jnp.stack([self._readout(r, x) for r in self._streams(x)[1:]])

    def preact(self, x: jax.Array) -> jax.Array:
        """f(x) (batch, n): the output, which has no activation after it."""
        return self._readout(self._streams(x)[-1], x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.preact(x)

    # --- the fast path, feature-major -------------------------------------------------------------------
    def forward_t(self, xt: jax.Array) -> jax.Array:
        """fᵀ from xt = xᵀ (n, batch) through the small composed maps (module docstring)."""
        W, W_in, W_out = self.W[...], self.W_in[...], self.W_out[...]
        hs = []
        for layer in range(self.n_layers):
            pre = (W_in[layer].T @ W) @ xt
            for k, h in enumerate(hs):
                pre = pre + (W_in[layer].T @ W_out[k]) @ h
            hs.append(jax.nn.relu(pre))
        out = xt if self.clean_labels else (W.T @ W) @ xt
        for k, h in enumerate(hs):
            out = out + (W.T @ W_out[k]) @ h
        return out + self.b_final[...][:, None]


# --- the published comparison: the naive baseline and the per-layer records (numpy, from saved weights) ---
def naive_loss(p, n_features: int, n_neurons: int, W=None) -> np.ndarray:
    """Loss per feature (mean over features of E(y_i − f_i)²) of the naive monosemantic solution, where each
    of ``n_neurons`` neurons computes one feature's ReLU exactly and the other n − N features get none:

        L_naive = p (n − N) / (6 n)                          (clean labels; E[ReLU(x)²] = p/6)
        L_naive = p (n − N) / (6 n) + p ‖M‖²_F / (3 n)        (published labels, with the embedding W)

    With the published labels the naive MLP leaves the pass-through's mixing term M x = (W_EᵀW_E − I) x in
    the output; E[(M x)_i ReLU(x_i)] = 0 (M_ii = 0, the x_j independent with mean 0) and E[x_j²] = p/3,
    hence the second term. ``W`` (…, d, n): the embedding(s); None gives the clean-label baseline.
    (n = 100, N = 50: p/12 clean, as in Braun et al. and Bhagat et al.)"""
    base = np.asarray(p, np.float64) * max(n_features - n_neurons, 0) / (6.0 * n_features)
    if W is None:
        return base
    W = np.asarray(W, np.float64)
    M = np.einsum("...dn,...dm->...nm", W, W) - np.eye(W.shape[-1])
    return base + np.asarray(p, np.float64) * (M**2).sum((-2, -1)) / (3.0 * n_features)


def layer_records(weights: dict, index: int, *, p: float, clean: bool, n_samples: int = 1 << 15,
                  seed: int = 0) -> list[dict]:
    """Per block l of instance ``index`` of saved ``weights`` (W, b_final, W_in, W_out): the loss per feature
    of the read-out after block l (``loss_after``, against y = x + ReLU(x); the last is the model's loss),
    and the mean square of what block l adds to the read-out per feature (``mlp_out_power``) and of its
    neurons' activations (``neuron_power``), on ``n_samples`` fresh inputs (numpy, seeded). Computed with
    the composed small maps of :meth:`ResidualMLP.forward_t`; float64."""
    W = np.asarray(weights["W"][index], np.float64)
    W_in, W_out = (np.asarray(weights[k][index], np.float64) for k in ("W_in", "W_out"))
    b = np.asarray(weights["b_final"][index], np.float64)
    n = W.shape[1]
    rng = np.random.default_rng(seed)
    x = np.where(rng.random((n_samples, n)) < p, rng.uniform(-1.0, 1.0, (n_samples, n)), 0.0)
    y = x + np.maximum(x, 0.0)
    out = (x if clean else x @ (W.T @ W)) + b
    hs, records = [], []
    for layer in range(W_in.shape[0]):
        pre = x @ (W_in[layer].T @ W).T
        for k, h in enumerate(hs):
            pre = pre + h @ (W_in[layer].T @ W_out[k]).T
        h = np.maximum(pre, 0.0)
        hs.append(h)
        add = h @ (W.T @ W_out[layer]).T
        out = out + add
        records.append({"layer": layer + 1, "loss_after": float(((y - out) ** 2).mean()),
                        "mlp_out_power": float((add**2).mean()), "neuron_power": float((h**2).mean()),
                        "active_neurons": float((h > 0).mean())})
    return records


def seed_of(p_per_instance) -> np.ndarray:
    """The seed of each instance in the presets' layout, instance ``s * K + k`` = seed s at the k-th of K
    feature probabilities (K = the number of distinct p): ``index // K``."""
    p = np.asarray(p_per_instance, np.float64)
    return np.arange(len(p)) // max(len(np.unique(p)), 1)
