"""Name -> object registries (benchmarks, methods, backbones, calibrations).

An entry is the object itself (registered with the decorator) or the place it will be found, written
"package.module:attribute" and imported on the first `get`. The second kind lets a registry list and check
its names without importing what they name: a backbone or a method needs torch, and the command line checks
names before torch loads.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

from dmc.errors import UserError

T = TypeVar("T")


def locate(target: str) -> Any:
    """The object named "package.module:attribute" (the module is imported if it was not)."""
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T | str] = {}
        self._given: dict[str, T | str] = {}  # what each name was registered with (a place stays one once imported)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name`."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, target: T | str) -> None:
        """Register `target` under `name`: an object, or "package.module:attribute" imported on first use.
        Registering a name again with what it was registered with changes nothing."""
        if name in self._given:
            if self._given[name] is target or (isinstance(target, str) and self._given[name] == target):
                return
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._given[name] = self._items[name] = target

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        item = self._items[name]
        if isinstance(item, str):
            item = self._items[name] = locate(item)
        return item

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        """The names in the order they were registered."""
        return iter(list(self._items))

    def __contains__(self, name: str) -> bool:
        return name in self._items
