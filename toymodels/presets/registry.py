"""The preset and suite-summary registries (leaf modules: the preset modules register into them).

A preset is a function returning a :class:`~toymodels.config.Config`, or a :class:`Suite` of configs
whose shapes differ (so they cannot share one compiled program) and that are run one after another
into sub-directories of one run directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import Config, ConfigError
from ..registry import Registry


@dataclass(frozen=True)
class Suite:
    """Several configs run in sequence into ``RUN_DIR/<member.name>/``, plus suite-level figures.

    ``summary`` optionally names a function registered with :func:`suite_summary`; after the members
    have run it turns their saved results into the suite's own ``RUN_DIR/summary.json``."""

    name: str
    members: tuple[Config, ...]
    plots: tuple[str, ...] = ()
    notes: str = ""
    meta: dict = field(default_factory=dict)
    summary: str = ""

    def replace(self, **overrides) -> Suite:
        """Apply the same dotted-key overrides to every member. The key ``suite.members`` (a list of
        member names) keeps only those members, in the suite's order (e.g. for a quick partial run)."""
        members = self.members
        if "suite.members" in overrides:
            keep = overrides.pop("suite.members")
            known = [m.name for m in members]
            keep = [keep] if isinstance(keep, str) else keep
            ok = isinstance(keep, (list, tuple)) and len(keep) > 0 and all(k in known for k in keep)
            if not ok:
                raise ConfigError("suite.members", keep, f"must be a non-empty list of member names: {', '.join(known)}")
            members = tuple(m for m in members if m.name in keep)
        return Suite(self.name, tuple(m.replace(**overrides) for m in members), self.plots, self.notes,
                     self.meta, self.summary)

    def to_dict(self) -> dict:
        return {"suite": self.name, "plots": list(self.plots), "notes": self.notes, "meta": self.meta,
                "members": [m.name for m in self.members], "summary": self.summary}


# Suite-level summaries: name -> fn(members: list[runs.Run], suite: dict, run_dir: Path) -> (summary, report).
# run_suite writes ``summary`` to RUN_DIR/summary.json and echoes ``report`` (a short text); fn may
# write further files into run_dir (e.g. a markdown table). Like figures, it reads saved results only.
SUITE_SUMMARIES: Registry[Callable] = Registry("suite summary")


def suite_summary(name: str, fn: Callable | None = None):
    """Register ``fn`` as the suite summary ``name`` (as a decorator when ``fn`` is None)."""
    return SUITE_SUMMARIES.register(name) if fn is None else SUITE_SUMMARIES.add(name, fn)


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    build: Callable[[], Config | Suite]


PRESETS: Registry[Preset] = Registry("preset")


# Tiny dotted-key overrides for tests/test_presets_smoke.py, keyed by preset name (default: shrink steps/batches).
SMOKE_OVERRIDES: dict[str, dict] = {}


def preset(name: str, summary: str):
    """Decorator: register a function returning a Config or a Suite as the preset ``name``."""
    def register(fn):
        PRESETS.add(name, Preset(name, summary, fn))
        return fn

    return register


def get(name: str) -> Config | Suite:
    """The Config or Suite of preset ``name`` (ConfigError listing the known presets otherwise)."""
    return PRESETS.get_or_raise(name, field="preset").build()
