"""The memory a run needs, estimated from its config before any compute, against the machine's memory.

A run that cannot fit used to train for minutes and then die in XLA with RESOURCE_EXHAUSTED (or be
killed by the OS); :func:`check` refuses it first, with one line naming the field that drives the
largest allocation::

    n_inst=1000000: the run needs ~1.71 TB of memory, more than the 18.9 GB available; its largest part is
    fine-tuning's evaluation batch (~1.67 TB: 4000000 fine-tunes x finetune.eval_batch_size=8192 x 5
    features); make n_inst or finetune.eval_batch_size smaller

(``toymodels run analogy-15deg n_inst=1000000``, which used to pass validation and die after 195 s
asking XLA for 557 GB.)

The estimate (:func:`estimate`) follows what the code allocates (numpy and JAX on the CPU, float32):

* the process itself: Python, JAX and XLA's compiled programs, ``BASE``;
* pretraining: the parameters and optimiser state of the n_inst·restarts engine instances; one training
  step of a group of instances (the engine runs at most ``GROUP_ELEMENTS`` numbers per group, or one
  instance's batch·max(n, m) when that is larger, :mod:`toymodels.core.engine`); a chunk's per-step
  losses; an evaluation chunk of at most 2^24 numbers (``core.pretrain._eval_chunks``);
* fine-tuning, n_ft = n_inst · orientations · optimisers · regimes instances: their states; the probe's
  evaluation batch, NOT chunked (n_ft · finetune.eval_batch_size · n_features numbers, the same for the
  defences' capability evaluation); the trajectory (W and b_final at every chunk boundary) and the probe
  rows kept in memory.

Calibration: peak RSS (``/usr/bin/time -v``) of ``toymodels run`` on a 2-core CPU (JAX on CPU), against
:func:`estimate`, in :data:`CALIBRATION`: the estimate is within -7 % .. +11 % of the measured peak on
every run measured, from 0.5 GB to 14 GB, over pretraining-bound and fine-tuning-bound runs. The
multipliers ``K_*`` below are fitted to these runs; the refusal only bites when the estimate exceeds
``HEADROOM`` of the available memory, so a 10 % error decides nothing near typical runs.
"""

from __future__ import annotations

import math
import os

from ..config import Config, ConfigError

F32 = 4
GiB = 1 << 30
BASE = int(0.5 * GiB)         # the process: a 1-instance tms-intro run peaks at 0.49 GB
GROUP_ELEMENTS = 1 << 19      # toymodels.core.engine.GROUP_ELEMENTS (mirrored: this module imports no JAX)
EVAL_CHUNK_ELEMENTS = 1 << 24  # toymodels.core.pretrain.EVAL_CHUNK_ELEMENTS
STATIONARITY_CHUNK = 1 << 19  # toymodels.core.stationarity.CHUNK_ELEMENTS
# Multipliers of a phase's largest array to its peak (intermediates, gradients, XLA's buffers), fitted
# to the measurements below.
K_STATE = 8      # params, grads, two optimiser moments, updates, the jitted chunk's copies
K_STEP = 8       # a training step's batch: the draw, x, hidden, output, their gradients
K_EVAL = 3       # an evaluation batch: x, output, the loss terms
K_PROBE = 2.55   # fine-tuning's probe batch (x, output, the harmful features' rates)
# Fraction of the available memory a run may plan to use.
HEADROOM = 0.9

CALIBRATION = """\
run (toymodels run PRESET ... plots=[]; train.steps=20, chunks of 10)    measured peak  estimate
tms-intro n_inst=1                                                             0.50 GB   0.55 GB
tms-intro n_inst=4000                                                          0.75 GB   0.74 GB
tms-intro n_inst=1 data.n_features=2000 model.d_hidden=20 data.batch_size=8192  0.98 GB   1.07 GB
tms-intro n_inst=1 data.n_features=4000 model.d_hidden=40 data.batch_size=16384 2.58 GB   2.66 GB
analogy-15deg n_inst=1000 (4000 fine-tunes x finetune.eval_batch_size 8192)    2.28 GB   2.21 GB
analogy-15deg n_inst=4000 (16000 x 8192)                                       7.46 GB   7.24 GB
analogy-15deg n_inst=2000 (8000 x 1024)                                        1.03 GB   0.96 GB
analogy-15deg n_inst=2000 (8000 x 8192)                                        4.05 GB   3.89 GB
analogy-15deg n_inst=2000 (8000 x 32768)                                      14.25 GB  13.92 GB
analogy-15deg n_inst=1000000 (the issue's run: died asking for 557 GB)              -  1.7 TB
"""


def _fmt(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1e3:.3g} kB"


def _eval_chunk(B: int, n_inst: int, n: int) -> int:
    """Samples per evaluation chunk (``core.pretrain._eval_chunks``): at most 2^24 numbers over all instances."""
    per = max(1, EVAL_CHUNK_ELEMENTS // (n_inst * n))
    return B if B <= per else math.ceil(B / math.ceil(B / per))


def _params_per_instance(cfg: Config) -> int:
    from ..core.models import param_shapes  # every leaf (a deep stack's L layers, E experts, W_out)

    return sum(math.prod(s[1:]) for s in param_shapes(cfg.model, cfg.data.n_features, 1).values())


def estimate(cfg: Config) -> list[tuple[str, int, tuple[str, ...], str]]:
    """The largest allocations of a run of ``cfg``: ``(what, bytes, fields that drive it, how it is
    counted)``, with the peak (the process plus the larger of pretraining and fine-tuning) first."""
    n, m = cfg.data.n_features, cfg.model.d_hidden
    P = _params_per_instance(cfg)
    total = cfg.n_inst * cfg.train.restarts
    tr = cfg.train
    parts: list[tuple[str, int, tuple[str, ...], str]] = []

    pre_state = total * P * F32 * K_STATE
    parts.append(("pretraining's parameters and optimiser state", pre_state, ("n_inst", "train.restarts"),
                  f"{total} instances x {P} parameters"))
    step = max(GROUP_ELEMENTS, cfg.data.batch_size * max(n, m)) * F32 * K_STEP
    parts.append(("a training step", step, ("data.batch_size", "data.n_features"),
                  f"data.batch_size={cfg.data.batch_size} x {max(n, m)} numbers per instance"))
    losses = total * min(tr.chunk_size, max(tr.steps, 1)) * F32 * 2
    parts.append(("a chunk's losses", losses, ("n_inst", "train.restarts", "train.chunk_size"),
                  f"{total} instances x train.chunk_size={tr.chunk_size}"))
    # restarts are ranked with every engine instance at once, the kept ones scored alone
    c, N = max(((_eval_chunk(tr.eval_batch_size, N, n), N) for N in {total, cfg.n_inst}), key=lambda x: x[0] * x[1])
    ev = max(c * N * n, STATIONARITY_CHUNK) * F32 * K_EVAL
    parts.append(("pretraining's evaluation batch", ev, ("train.eval_batch_size", "n_inst", "train.restarts"),
                  f"chunks of {c} samples x {N} instances x {n} features"))
    pre = pre_state + max(step, ev) + losses
    fine = 0
    ft = cfg.finetune
    if ft is not None:
        n_ft = cfg.n_inst * ft.orientations * len(ft.optimizer_list()) * len(ft.regimes)
        h = len(cfg.features.harmful) if cfg.features is not None else 1
        frames = math.ceil(ft.steps / max(ft.chunk_size, 1)) + 1
        ft_state = n_ft * P * F32 * (K_STATE + 2)  # + the pretrained copies and the merged states
        parts.append(("fine-tuning's parameters and optimiser state", ft_state,
                      ("n_inst", "finetune.regimes", "finetune.optimizers", "finetune.orientations"),
                      f"{n_ft} fine-tunes x {P} parameters"))
        ft_step = max(GROUP_ELEMENTS, ft.batch_size * max(n, m)) * F32 * K_STEP
        parts.append(("a fine-tuning step", ft_step, ("finetune.batch_size", "data.n_features"),
                      f"finetune.batch_size={ft.batch_size} x {max(n, m)} numbers per instance"))
        probe = int(n_ft * ft.eval_batch_size * n * F32 * K_PROBE)
        parts.append(("fine-tuning's evaluation batch", probe, ("n_inst", "finetune.eval_batch_size"),
                      f"{n_ft} fine-tunes x finetune.eval_batch_size={ft.eval_batch_size} x {n} features"))
        kept = n_ft * (9 * h + 8) * F32 * frames
        if ft.save_trajectory:
            kept += n_ft * (m * n + n) * F32 * frames * 2
        parts.append(("the trajectory and probe rows kept in memory", kept,
                      ("finetune.steps", "finetune.chunk_size", "finetune.save_trajectory", "n_inst"),
                      f"{frames} chunk boundaries x {n_ft} fine-tunes"))
        fine = ft_state + max(ft_step, probe) + kept + cfg.n_inst * P * F32 * 2
    peak = BASE + max(pre, fine)
    parts.sort(key=lambda p: -p[1])
    return [("the run", peak, parts[0][2], parts[0][0])] + parts


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation: MemAvailable of /proc/meminfo, else the physical
    memory (os.sysconf), else None (unknown: no check)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _defaults() -> dict[str, float]:
    from ..config import FineTuneConfig, TrainConfig

    d = Config()
    return {"n_inst": d.n_inst, "train.restarts": d.train.restarts, "data.batch_size": d.data.batch_size,
            "data.n_features": d.data.n_features, "train.chunk_size": d.train.chunk_size,
            "train.eval_batch_size": TrainConfig().eval_batch_size,
            "finetune.eval_batch_size": FineTuneConfig().eval_batch_size,
            "finetune.batch_size": FineTuneConfig().batch_size, "finetune.steps": FineTuneConfig().steps,
            "finetune.chunk_size": FineTuneConfig().chunk_size}


def _value(cfg: Config, name: str):
    obj = cfg
    for part in name.split("."):
        obj = getattr(obj, part)
    return len(obj) if isinstance(obj, tuple) else obj


def _culprit(cfg: Config, fields: tuple[str, ...]) -> str:
    """Of the fields that drive an allocation, the one furthest above its default."""
    defaults = _defaults()

    def ratio(name: str) -> float:
        v = _value(cfg, name)
        return float(v) / float(defaults[name]) if name in defaults and isinstance(v, (int, float)) else 0.0

    return max(fields, key=ratio)


def check(cfg: Config, available: int | None = None) -> None:
    """Refuse (ConfigError naming the field that drives the largest allocation) a run of ``cfg`` whose
    estimated peak exceeds ``HEADROOM`` of the available memory."""
    available = available_memory() if available is None else available
    if available is None:
        return
    (_, peak, _, _), *parts = estimate(cfg)
    if peak <= HEADROOM * available:
        return
    what, size, fields, how = parts[0]
    name = _culprit(cfg, fields)
    value = _value(cfg, name)
    raise ConfigError(name, value, f"the run needs ~{_fmt(peak)} of memory, more than the {_fmt(available)} "
                                   f"available; its largest part is {what} (~{_fmt(size)}: {how}); make "
                                   f"{' or '.join(fields[:2])} smaller")
