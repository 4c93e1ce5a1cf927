"""The Matryoshka SAE variant (toymodels.audit.sae, ``matryoshka``): its nested-prefix loss, and that it
trains and evaluates in the engine like the other variants."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_audit_sae import _pentagon_run

from toymodels.audit import sae as S
from toymodels.audit import train as T
from toymodels.config import ConfigError
from toymodels.config.sae import SAEConfig


def test_matryoshka_loss_is_the_mean_of_the_nested_prefix_reconstructions():
    """By hand in numpy: codes from the batch rule, then each prefix m = ceil(size * φ) reconstructs alone."""
    d, L, B, size = 6, 16, 64, 12
    p = S.init_params(jax.random.key(0), d, L, 0.1)
    p = {**p, "b_dec": jnp.linspace(-0.1, 0.1, d), "b_enc": jnp.linspace(0, 0.2, L)}
    ht = jax.random.normal(jax.random.key(1), (d, B))
    inst = {"mask": jnp.asarray(np.arange(L) < size, jnp.float32), "sparsity": jnp.float32(3.0)}
    f = np.asarray(S.codes(p, ht, inst, "matryoshka"), np.float64)
    assert np.all(f[size:] == 0) and 0 < (f > 0).sum() <= 3 * B
    D = np.asarray(S.directions(p, "matryoshka"), np.float64)
    h, b = np.asarray(ht, np.float64), np.asarray(p["b_dec"], np.float64)
    want = np.mean([np.mean(np.sum((h - (D[:m].T @ f[:m]) - b[:, None]) ** 2, axis=0))
                    for m in (int(np.ceil(size * fr)) for fr in S.MATRYOSHKA_FRACTIONS)])
    got = float(S.loss(p, ht, inst, "matryoshka"))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # its last term (the whole dictionary) is BatchTopK's loss: the same codes and decoder
    full = np.mean(np.sum((h - D[:size].T @ f[:size] - b[:, None]) ** 2, axis=0))
    np.testing.assert_allclose(float(S.loss(p, ht, inst, "batch_topk")), full, rtol=1e-5)


def test_matryoshka_trains_and_evaluates_with_a_threshold():
    cfg, graphdef, params, W = _pentagon_run("matryoshka", batch_k=(1.0,), steps=60, chunk_size=30)
    tr = T.train_variant(cfg, graphdef, params, "matryoshka", progress=False)
    ev = T.evaluate(cfg, graphdef, tr)
    assert np.all(np.isfinite(ev["explained_variance"])) and ev["fired"].shape == (1, 10)
    assert ev["threshold"][0] > 0


def test_matryoshka_is_a_choice_but_not_in_the_default_set():
    assert "matryoshka" not in SAEConfig().variants   # existing configs train what they trained
    assert SAEConfig(variants=("matryoshka",)).sparsities("matryoshka") == SAEConfig().batch_k
    with pytest.raises(ConfigError):
        SAEConfig(variants=("matryoshka2",))
