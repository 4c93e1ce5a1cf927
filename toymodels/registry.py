"""A registry of named plug-ins (presets, figures, suite summaries): a leaf module, imported by the
modules that register into it and never importing them (SAELens' ``Registry`` pattern).

    FIGURES = Registry("figure")
    @FIGURES.register("loss")
    def loss_curve(...): ...
    FIGURES.get_or_raise("loss", field="plots")   # ConfigError naming the known names

Registering a name twice is an error: two plug-ins would silently shadow each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """``name -> T``, in registration order."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def add(self, name: str, item: T) -> T:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")`` adds the decorated object under ``name``."""
        return lambda item: self.add(name, item)

    def get_or_raise(self, name: str, field: str | None = None, where: str = "") -> T:
        """The item called ``name``; else a ConfigError on ``field`` listing the known names."""
        if name not in self:
            raise ConfigError(field or self.kind, name, f"unknown {self.kind}{f' ({where})' if where else ''}; "
                                                        f"known: {', '.join(sorted(self))}")
        return self[name]
