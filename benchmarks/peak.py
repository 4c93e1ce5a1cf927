"""Roofline helpers: the machine's fp32 matmul peak in JAX and the FLOP count of one TMS training step."""

from __future__ import annotations

import time


def measure_matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Best-of-``repeats`` fp32 GFLOP/s of a jitted ``a @ b`` with ``a, b`` of shape ``(n, n)``.

    One matmul counts ``2 * n**3`` FLOPs. The call is compiled and run once before timing, and every timed
    call waits with ``block_until_ready``. About 185-215 GFLOP/s on this project's 2-core machine when idle,
    100-110 under its usual load (``shared/ENGINEERING.md``).
    """
    return measure_matmul_gflops(n, n, n, repeats)


def measure_matmul_gflops(b: int, n: int, m: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` fp32 GFLOP/s of one jitted dense ``(b, n) @ (n, m)`` product (2 b n m FLOPs):
    the roofline of a step whose work is products of that shape, measured on this machine now."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (b, n), jnp.float32)
    w = jax.random.normal(kb, (n, m), jnp.float32)
    matmul = jax.jit(lambda a, w: a @ w)
    matmul(a, w).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, w).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * b * n * m / best / 1e9


def tms_step_flops(n_inst: int, n_features: int, d_hidden: int, batch: int) -> float:
    """Matmul FLOPs of one TMS training step (forward + backward), summed over instances.

    The model has two contractions per instance, ``h = x W`` and ``x' = h W^T``, each a
    ``(batch x n) by (n x m)``-sized product costing ``2 * B * n * m`` FLOPs forward. The backward pass
    needs two products of the same size per contraction (gradient w.r.t. the input and w.r.t. ``W``), so a
    step costs about three times the forward:

        flops = n_inst * 2 contractions * 3 * (2 * B * n * m) = 12 * n_inst * B * n * m

    Elementwise work (RNG, ReLU, loss, AdamW) is not counted; it is memory- or RNG-bound, not FLOP-bound.
    """
    return 12.0 * n_inst * batch * n_features * d_hidden


if __name__ == "__main__":
    peak = measure_matmul_peak_gflops()
    print(f"fp32 matmul peak (JAX, n=1024): {peak:.0f} GFLOP/s")
    for name, (n_inst, n, m) in {"intro": (10, 5, 2), "sweep": (100, 20, 5)}.items():
        flops = tms_step_flops(n_inst, n, m, 1024)
        per_inst = flops / n_inst
        print(f"{name}: {flops / 1e6:.2f} MFLOP/step; at peak, {peak * 1e9 / per_inst:,.0f} instance-steps/s")
    b, n, m = 1024, 16_384, 768
    shape = measure_matmul_gflops(b, n, m)
    print(f"16k x 768, batch {b}: {tms_step_flops(1, n, m, b) / 1e9:.1f} GFLOP/step; one ({b}x{n})@({n}x{m}) "
          f"matmul runs at {shape:.0f} GFLOP/s, so a step takes >= {tms_step_flops(1, n, m, b) / shape / 1e9:.2f} s")
