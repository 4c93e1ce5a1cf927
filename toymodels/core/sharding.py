"""The instance axis over devices and hosts: one mesh axis, ``"instances"``.

Instances share nothing, so a sweep splits over devices without communication. The engine's chunk
(:func:`toymodels.core.engine.make_chunk`) is wrapped in ``jax.shard_map`` over a 1-D mesh of every
device (``Mesh(np.array(jax.devices()), ("instances",))``): each device runs the same per-instance
program on its own slice of the instances, and only the per-step losses come back to the host.

* One device (the default on a laptop and in CI): :func:`instance_mesh` is ``None`` and the engine
  compiles exactly the program it compiled before sharding existed, so results are bit-identical.
* Several local devices (a GPU node, or ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` on
  CPU): the instances are padded to a multiple of the device count with copies of instance 0 (dropped
  again on the way out) and split evenly. Each device's program is the one-device program on fewer
  instances; XLA may then vectorise the batched products differently, which moves the last bits
  (``tests/test_sharding.py`` measures and bounds it).
* Several hosts: every process calls :func:`initialize` (``jax.distributed.initialize``) before any
  other JAX call; ``jax.devices()`` is then every process's devices and the mesh spans them. Every
  process builds the same initial state from the seed, puts only its own slice on its devices
  (:func:`shard`), and the losses and final parameters are gathered to every process
  (``multihost_utils.process_allgather``, :func:`gather`), so evaluation and the summary are the same
  on every host. Process 0 writes the run directory (:mod:`toymodels.experiment`).
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["AXIS", "gather", "initialize", "instance_mesh", "pad", "padded_size", "shard", "topology", "unpad"]

AXIS = "instances"


def instance_mesh(devices=None) -> Mesh | None:
    """A 1-D mesh named ``"instances"`` over ``devices`` (default: every device of every process), or
    None when there is only one device: the engine then runs its unsharded program."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) <= 1:
        return None
    return Mesh(np.array(devices), (AXIS,))


def topology() -> dict[str, int]:
    """``{"devices": …, "processes": …}`` as recorded in ``summary.json`` (the machine, not the result)."""
    return {"devices": jax.device_count(), "processes": jax.process_count()}


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> dict[str, int]:
    """Join a multi-host run (``jax.distributed.initialize``); arguments default to the environment
    variables ``TOYMODELS_COORDINATOR`` (host:port of process 0), ``TOYMODELS_NUM_PROCESSES`` and
    ``TOYMODELS_PROCESS_ID``; with none of them set JAX's own cluster detection (SLURM, TPU, MPI) is used.
    Must run before any other JAX operation. Returns :func:`topology`."""
    env = os.environ.get
    coordinator = coordinator or env("TOYMODELS_COORDINATOR")
    if num_processes is None and env("TOYMODELS_NUM_PROCESSES"):
        num_processes = int(env("TOYMODELS_NUM_PROCESSES"))
    if process_id is None and env("TOYMODELS_PROCESS_ID"):
        process_id = int(env("TOYMODELS_PROCESS_ID"))
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return topology()


def padded_size(n: int, mesh: Mesh | None) -> int:
    """``n`` rounded up to a multiple of the mesh's size (``n`` itself without a mesh)."""
    return n if mesh is None else math.ceil(n / mesh.size) * mesh.size


def _is_key(a) -> bool:
    return jnp.issubdtype(a.dtype, jax.dtypes.prng_key)


def pad(tree, n: int, total: int):
    """Every leaf (leading axis ``n``) extended to ``total`` rows with copies of row 0: a padded
    instance trains like instance 0, so it never diverges on its own; its results are dropped."""
    if total == n:
        return tree

    def one(a):
        if a is None:
            return None
        extra = jnp.repeat(a[:1], total - n, axis=0)
        return jnp.concatenate([a, extra], axis=0)

    return jax.tree.map(one, tree)


def unpad(tree, n: int):
    return jax.tree.map(lambda a: a[:n], tree)


def shard(tree, mesh: Mesh):
    """Every leaf split along its leading (instance) axis over ``mesh``. Each process holds the whole
    value (all processes built it from the same seed) and puts only its own devices' rows there."""
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))

    def one(a):
        if jax.process_count() == 1:
            return jax.device_put(a, sharding)
        if _is_key(a):
            impl = jax.random.key_impl(a)
            return jax.random.wrap_key_data(one(jax.random.key_data(a)), impl=impl)
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(one, tree)


BARRIER_TIMEOUT_MS = 30 * 60 * 1000   # how long a process waits for the others at a gather
_barriers = [0]                       # gathers so far in this process (every process counts the same)


def _barrier() -> None:
    """Wait for every process at the coordination service before a cross-process gather.

    Why: on CPU the gather runs over gloo, whose context set-up waits only 30 s for the other processes'
    addresses, and processes can reach their first gather much further apart than that (each compiles
    the training program on its own; on a loaded 2-core machine that took longer once in three runs).
    The coordination service's barrier (``jax.distributed``'s own client; no public wrapper exists that
    avoids a collective) waits up to :data:`BARRIER_TIMEOUT_MS`, so the gloo collective starts only
    once all processes are there. Does nothing without ``jax.distributed``."""
    from jax._src import distributed

    client = getattr(getattr(distributed, "global_state", None), "client", None)
    if client is None:
        return
    _barriers[0] += 1
    client.wait_at_barrier(f"toymodels_gather_{_barriers[0]}", BARRIER_TIMEOUT_MS)


def gather(tree):
    """The inverse of :func:`shard`: every leaf whole on this process's first device (after
    ``process_allgather`` when the mesh spans processes), so that everything after training runs as
    on one device."""
    device = jax.local_devices()[0]

    def one(a):
        if a is None or not isinstance(a, jax.Array):
            return a
        if _is_key(a):
            return jax.random.wrap_key_data(one(jax.random.key_data(a)), impl=jax.random.key_impl(a))
        if a.is_fully_addressable:
            return jax.device_put(a, device)
        from jax.experimental import multihost_utils

        return jax.device_put(multihost_utils.process_allgather(a, tiled=True), device)

    if any(isinstance(a, jax.Array) and not a.is_fully_addressable for a in jax.tree.leaves(tree)):
        _barrier()   # once per gather (every process gathers the same trees in the same order)
    return jax.tree.map(one, tree)
