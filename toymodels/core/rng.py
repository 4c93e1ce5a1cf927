"""Uniform random numbers for the data stream: JAX's threefry, or a cheap counter-based hash.

With threefry a TMS step on CPU spends most of its time drawing random numbers: about 8.6 ns per
number here (``shared/ENGINEERING.md``), and the whole engine runs 5-8x slower with it
(``benchmarks/README.md``). The ``hash`` generator draws one 32-bit seed per call from threefry and
then hashes the element counter::

    bits_i = mix32(mix32(i) XOR seed)          i = 0 .. size-1 (row-major element index)
    u_i    = (bits_i >> 8) · 2⁻²⁴               ∈ [0, 1), 24 bits, exactly representable in float32

``mix32`` is Wellons' "lowbias32" integer finaliser (bijective on 32-bit words, bias ≈ 0.17).
``mix32(i)`` is a constant of the shape, so XLA folds it; the per-element cost is one xor, two
multiplies and three xor-shifts, about 11% of a training step at the 100 x (20->5) sweep. A single
multiply round would save 3-8% of a step but fails the independence tests across instances and
steps, so both rounds stay. It is *not* cryptographic and is only meant for the feature data;
``tests/test_rng.py`` checks uniformity and independence across elements, instances and steps.
``rng="threefry"`` keeps JAX's generator for anyone who prefers it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

GENERATORS = ("hash", "threefry")


def mix32(x: jax.Array) -> jax.Array:
    """lowbias32 (C. Wellons, 2018): an invertible avalanche mix of uint32 words."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    x = x ^ (x >> 16)
    return x


def _mix32_np(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint32)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    return x


def _counters(shape: tuple[int, ...]) -> np.ndarray:
    """``mix32(i)`` for the row-major element index i of ``shape``, with the last two axes swapped
    (a numpy constant of shape ``shape[:-2] + (shape[-1], shape[-2])``)."""
    size = int(np.prod(shape))
    counters = _mix32_np(np.arange(size, dtype=np.uint32)).reshape(shape)
    return np.ascontiguousarray(np.swapaxes(counters, -1, -2)) if len(shape) >= 2 else counters


def hash_bits(seed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 words ``mix32(mix32(i) ^ seed)`` for the row-major counters i of ``shape``.

    The words are computed with the last two axes swapped and handed back through a transpose. A
    caller that transposes them again (the training engine works feature-major, on ``x.T``) then
    gets the two transposes cancelled by XLA and a transpose-free fusion, instead of a strided copy
    of every random number. The values are the same either way: element (..., b, i) always gets
    counter ``b * shape[-1] + i``. (The transpose must come *after* the hash: a transposed constant
    is folded before XLA can cancel the transposes.)
    """
    bits = mix32(jnp.asarray(_counters(shape)) ^ seed.astype(jnp.uint32))  # the counters are a constant
    return jnp.swapaxes(bits, -1, -2) if len(shape) >= 2 else bits


def uniform(key: jax.Array, shape: tuple[int, ...], generator: str = "hash") -> jax.Array:
    """float32 U[0, 1) of ``shape`` from a JAX key, with the chosen generator."""
    if generator == "threefry":
        return jax.random.uniform(key, shape, dtype=jnp.float32)
    if generator != "hash":
        raise ValueError(f"generator={generator!r}: must be one of {', '.join(GENERATORS)}")
    seed = jax.random.bits(key, (), dtype=jnp.uint32)
    bits = hash_bits(seed, shape)
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)
