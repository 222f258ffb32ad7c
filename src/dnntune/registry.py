"""One registry per component family: a name, a builder, and a pydantic model of its knobs."""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError

T = TypeVar("T")


class Knobs(BaseModel):
    """Base class of every registry entry's knobs: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoKnobs(Knobs):
    """An entry without knobs."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component: ``builder`` is called with the validated knobs and context."""

    name: str
    builder: Callable[..., T]
    knobs: type[Knobs]
    doc: str
    meta: dict[str, Any] = field(default_factory=dict)

    def knob_table(self) -> list[tuple[str, str, str]]:
        """(name, type, default) of each knob, for `dnntune models` / `dnntune datasets`."""
        rows = []
        for name, info in self.knobs.model_fields.items():
            choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else ()
            if choices:  # a choice: list what is allowed
                ann = " | ".join(map(str, choices))
            else:
                ann = getattr(info.annotation, "__name__", None) or str(info.annotation).replace("typing.", "")
            default = "required" if info.is_required() else repr(info.default)
            rows.append((name, ann, default))
        return rows


class Registry(Generic[T]):
    """Named builders of one kind (``datasets``, ``models``, ``optimizers``...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, knobs: type[Knobs] = NoKnobs, **meta: Any) -> Callable:
        """Decorator: ``@REG.register("mlp", MLPKnobs)`` on a builder function."""

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
            self._entries[name] = Entry(name, fn, knobs, doc, dict(meta))
            return fn

        return deco

    def get(self, name: str, field_path: str | None = None) -> Entry[T]:
        """The entry called ``name``; a ConfigError listing valid names otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            where = f"{field_path}: " if field_path else ""
            raise ConfigError(
                f"{where}unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries[n] for n in self.names())
