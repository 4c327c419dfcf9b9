"""Status records for ``ActorSystem.info()`` and the event callback type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .node import State

__all__ = ["ActorInfo", "EventCallback"]

EventCallback = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class ActorInfo:
    """A snapshot of one actor or supervisor, for ``convergio status``."""

    name: str
    kind: Literal["actor", "supervisor"]
    parent: str | None
    state: State
    restarts: int
    mailbox_depth: int
    handled: int
    last_error: str | None
    started_at: float | None  # wall-clock time (time.time()) of the current run's start
