"""``IdentityCache``: a function's results kept by the identity of its argument.

An agent sends the same system prompt, the same earlier messages and the same tool list (the
same objects) on every turn, so what the router works out from them (token estimates, the
tools' JSON for a provider) is kept by identity, with the object itself (its id cannot be
reused while it is kept). Strings are immutable; messages and tool lists are not changed
once a call was made with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["IdentityCache"]

K = TypeVar("K")
V = TypeVar("V")


class IdentityCache(Generic[K, V]):
    """``cache(obj)`` is ``compute(obj)``, computed once per object while the object is
    kept (at most ``limit`` of them; all are dropped when full)."""

    __slots__ = ("_compute", "_entries", "_limit")

    def __init__(self, compute: Callable[[K], V], limit: int = 1024) -> None:
        self._compute = compute
        self._limit = limit
        self._entries: dict[int, tuple[K, V]] = {}

    def __call__(self, obj: K) -> V:
        entries = self._entries
        hit = entries.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        value = self._compute(obj)
        if len(entries) >= self._limit:
            entries.clear()
        entries[id(obj)] = (obj, value)
        return value
