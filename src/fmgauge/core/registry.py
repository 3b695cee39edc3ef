"""A small generic registry: register by decorator, refuse duplicates, suggest near names on a miss."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fmgauge.core.validation import FmgaugeError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to components of one family (datasets, labelers, students, ...).

    >>> students = Registry("student")
    >>> @students.register("logreg")
    ... def make_logreg(): ...
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise FmgaugeError(f"{self.family} {name!r} is already registered; pick another name.")
        self._items[name] = obj

    def get(self, name: str) -> T:
        self.check(name)
        return self._items[name]

    def check(self, name: str, also: tuple[str, ...] = ()) -> None:
        """Refuse a name that is neither registered nor in ``also`` (names known to register later), suggesting
        near names."""
        known = sorted({*self._items, *also})
        if name not in known:
            near = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
            raise FmgaugeError(f"unknown {self.family} {name!r}.{hint} Known: {', '.join(known)}.")

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
