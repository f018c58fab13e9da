"""One small registry type, used for every kind of pluggable component.

A registry maps a name to a class or factory. Registering the same name twice is an
error, so a typo or a copy-paste can never silently replace a component (as in timm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from radpath.errors import RadpathError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of components of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def decorate(obj: T) -> T:
            if name in self._items:
                raise RadpathError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The component called ``name``; the error lists what exists."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise RadpathError(f"unknown {self.kind} '{name}'; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
