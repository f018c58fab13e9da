"""One small registry type, used for every kind of pluggable component.

A registry maps a name to a class or factory. The name is the component's own: a class's
``name`` attribute, or a function's ``__name__`` (as timm's ``@register_model``), so the
name lives in one place. Registering the same name twice is an error, so a typo or a
copy-paste can never silently replace a component (as in timm).

A registered class may declare its own settings, a pydantic model in ``settings``: the
config of its kind then nests them under the component's name (``coral:``, ``sar:``),
validated by :func:`nest_settings`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, ValidationError

from radpath.errors import RadpathError

T = TypeVar("T")


def component_name(obj: Any) -> str:
    """The name a component registers under: its ``name`` attribute, else ``__name__``."""
    name = getattr(obj, "name", None) if isinstance(obj, type) else None
    name = name or getattr(obj, "__name__", None)
    if not isinstance(name, str) or not name:
        raise RadpathError(f"{obj!r} has no name to register under (give it a 'name')")
    return name


class Registry(Generic[T]):
    """A named collection of components of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    @overload
    def register(self, obj: str) -> Callable[[T], T]: ...

    @overload
    def register(self, obj: T) -> T: ...

    def register(self, obj):
        """Register ``obj`` under its own name (``@registry.register``).

        ``@registry.register("name")`` gives the name explicitly instead.
        """
        if isinstance(obj, str):
            return lambda component: self._add(obj, component)
        return self._add(component_name(obj), obj)

    def _add(self, name: str, obj: T) -> T:
        if name in self._items:
            raise RadpathError(f"{self.kind} '{name}' is already registered")
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        """The component called ``name``; the error lists what exists."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise RadpathError(f"unknown {self.kind} '{name}'; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def settings(self) -> dict[str, type[BaseModel]]:
        """``{name: settings class}`` of the components that declare settings."""
        found = {name: getattr(obj, "settings", None) for name, obj in self._items.items()}
        return {name: cls for name, cls in sorted(found.items())
                if isinstance(cls, type) and issubclass(cls, BaseModel)}

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def nest_settings(data: Any, registry: Registry, where: str, fields: Mapping[str, Any],
                  renamed: Mapping[str, str] = {}) -> Any:
    """A config's raw ``data`` with each component's settings nested under its name.

    Every component of ``registry`` that declares settings gets them, validated (defaults
    where ``data`` has none), so that ``config.<name>`` always exists and a run's config
    file lists every setting. A key that is neither one of ``fields`` nor a component's
    name is an error; an old flat key of ``renamed`` (``{"coral_weight": "coral.weight"}``)
    moves to its new place with a deprecation warning, never silently.
    """
    if not isinstance(data, Mapping):
        return data
    data = _migrate(dict(data), where, renamed)
    settings = registry.settings()
    unknown = sorted(set(data) - set(fields) - set(settings))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; the settings of "
                         f"each {registry.kind} go under its name: {', '.join(settings)}")
    for name, cls in settings.items():
        given = data.get(name, {})
        try:
            data[name] = given if isinstance(given, cls) else cls.model_validate(given)
        except ValidationError as exc:
            raise ValueError(f"{where}.{name}: {exc}") from None
    return data


def _migrate(data: dict[str, Any], where: str, renamed: Mapping[str, str]) -> dict[str, Any]:
    for old, new in renamed.items():
        if old not in data:
            continue
        group, key = new.split(".")
        nested = data.get(group, {})
        nested = dict(nested.model_dump() if isinstance(nested, BaseModel) else nested)
        if key in nested:
            raise ValueError(f"{where}: both the old key {old!r} and its new place {new!r} "
                             "are given; keep the new one")
        warnings.warn(f"{where}.{old} is deprecated: write {where}.{new}", DeprecationWarning,
                      stacklevel=2)
        nested[key] = data.pop(old)
        data[group] = nested
    return data
