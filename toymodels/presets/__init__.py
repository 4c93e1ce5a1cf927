"""Named, ready-to-run experiments. ``toymodels list`` prints them; ``toymodels run NAME`` runs one.

:mod:`.registry` holds the registries; :mod:`.tms` (the paper's figures), :mod:`.lab` (the fine-tuning
lab) and :mod:`.defences` register their presets into them when imported, which this package does.
"""

from . import (  # noqa: F401  (register their presets)
    adversarial,
    audit,  # noqa: F401, I001  (registers the auditor's presets)
    deep,
    defences,
    lab,
    moe,
    residual,
    scale,
    tms,
)
from .registry import PRESETS, SMOKE_OVERRIDES, SUITE_SUMMARIES, Preset, Suite, get, preset, suite_summary

__all__ = ["PRESETS", "SMOKE_OVERRIDES", "SUITE_SUMMARIES", "Preset", "Suite", "get", "preset", "suite_summary"]
