"""The compute a run needs, estimated from its config before any compute, as :mod:`.budget` does for
memory: a run that would train for days on this kind of machine is refused with one line naming the
field that drives the largest part (an evaluation batch of 10^12 samples used to be accepted).

The unit is one feature value of one sample of one instance, touched once per step (the data draw,
the forward pass and the gradient each touch it a few times; that factor is in the rate). The rate,
``ELEMENTS_PER_SECOND``, is from the measurements in ``shared/ENGINEERING.md``: the sweep's 100 x (20 -> 5)
at batch 1024 runs 12 700 instance-steps per second, i.e. 12 700 x 1024 x 20 ~ 2.6e8 elements a second.
"""

from __future__ import annotations

from ..config import Config, ConfigError

ELEMENTS_PER_SECOND = 2.6e8
MAX_SECONDS = 3 * 24 * 3600.0   # three days of compute: no toymodels preset needs more than minutes


def estimate(cfg: Config) -> list[tuple[str, float, str]]:
    """``(what, elements, field that drives it)`` of a run's compute, largest first."""
    n, m = cfg.data.n_features, cfg.model.d_hidden
    width = max(n, m)
    total = cfg.n_inst * cfg.train.restarts
    tr = cfg.train
    parts = [
        ("pretraining", float(total) * tr.steps * cfg.data.batch_size * width, "train.steps"),
        ("pretraining's evaluation", float(total) * tr.eval_batch_size * width, "train.eval_batch_size"),
    ]
    ft = cfg.finetune
    if ft is not None:
        n_ft = cfg.n_inst * ft.orientations * len(ft.optimizer_list()) * len(ft.regimes)
        probes = ft.steps // max(ft.chunk_size, 1) + 1
        parts.append(("fine-tuning", float(n_ft) * ft.steps * ft.batch_size * width, "finetune.steps"))
        parts.append(("fine-tuning's evaluation", float(n_ft) * probes * ft.eval_batch_size * width,
                      "finetune.eval_batch_size"))
        # the reported rates (lab.rates): every model's own inputs, scored at up to 2 + 2 x gains probes
        points = n_ft * (2 + 2 * len(ft.matched_gains))
        parts.append(("the reported rates", float(ft.rate_samples) * (cfg.n_inst * n + points),
                      "finetune.rate_samples"))
    return sorted(parts, key=lambda p: -p[1])


def check(cfg: Config) -> None:
    """Refuse a run whose estimated compute exceeds ``MAX_SECONDS`` at ``ELEMENTS_PER_SECOND``."""
    parts = estimate(cfg)
    seconds = sum(p[1] for p in parts) / ELEMENTS_PER_SECOND
    if seconds <= MAX_SECONDS:
        return
    what, elements, field_name = parts[0]
    value = field_name.split(".")
    v = getattr(getattr(cfg, value[0]), value[1]) if len(value) == 2 else getattr(cfg, field_name)
    raise ConfigError(field_name, v, f"the run would compute for ~{seconds / 86400:.0f} days on a 2-core machine "
                                     f"(~{elements:.2g} feature values in {what}), more than the "
                                     f"{MAX_SECONDS / 86400:.0f} days toymodels accepts; make it or n_inst smaller")
