"""Decorator registries with near-miss suggestions (after lm-evaluation-harness).

Every kind of component (defense, attack, dataset, backbone) lives in one ``Registry``.
Third-party packages add entries through the entry-point group ``suite.<kind>`` (e.g.
``suite.defenses``); the entry point must name a module or callable whose import registers
the component with the decorator.
"""
from __future__ import annotations

import difflib
import logging
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from suite.core.errors import SuiteError, UnknownNameError

T = TypeVar("T")
log = logging.getLogger(__name__)


class Registry(Generic[T]):
    """A name -> object mapping filled by a decorator.

    >>> colours = Registry("colour")
    >>> @colours.register("red")
    ... class Red: ...
    >>> colours.get("red") is Red
    True
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            keys = (name, *aliases)
            for key in keys:  # check every key before registering any
                existing = self._entries.get(key)
                if existing is not None and existing is not obj:
                    raise SuiteError(
                        f"{self.kind} '{key}' is registered twice ({_describe(existing)} and "
                        f"{_describe(obj)}); give the new one a different name"
                    )
            for key in keys:
                self._entries[key] = obj
            return obj

        return decorator

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            try:
                loaded = ep.load()
                if callable(loaded) and not isinstance(loaded, type):
                    loaded(self)  # a registration function: call it with this registry
            except Exception as exc:  # a broken plugin must not break the suite
                log.warning("could not load %s plugin '%s' (%s): %s", self.kind, ep.name, ep.value, exc)

    def get(self, name: str) -> T:
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return (
            f"unknown {self.kind} '{name}': {hint}"
            f"run 'suite list {self.kind}s' to see all {len(names)} ({', '.join(names)})"
        )

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]


def _describe(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
