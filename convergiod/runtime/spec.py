"""Declarative supervision tree: child and supervisor specifications (Erlang/OTP style)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .actor import Actor

__all__ = ["ChildSpec", "Restart", "Strategy", "SupervisorSpec"]


class Restart(enum.Enum):
    """When a terminated child is restarted (OTP child restart types)."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit (an exception)
    TEMPORARY = "temporary"  # never, not even as part of a sibling's group restart


class Strategy(enum.Enum):
    """Which children a supervisor restarts when one of them terminates."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


@dataclass(frozen=True, kw_only=True)
class ChildSpec:
    """One child of a supervisor: an actor (``start`` is a factory) or a nested supervisor."""

    name: str
    start: Callable[[], Actor] | SupervisorSpec
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0  # seconds for stopping() and draining, then hard cancel
    mailbox_size: int = 1024

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("ChildSpec.name must not be empty")
        if self.shutdown < 0:
            raise ValueError(f"ChildSpec {self.name!r}: shutdown must be >= 0")
        if self.mailbox_size < 1:
            raise ValueError(f"ChildSpec {self.name!r}: mailbox_size must be >= 1")


@dataclass(frozen=True, kw_only=True)
class SupervisorSpec:
    """A supervisor: its children in start order, strategy and restart intensity."""

    name: str
    children: Sequence[ChildSpec]
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 3  # more than this many restarts ...
    period: float = 5.0  # ... within this many seconds: give up and fail upward

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("SupervisorSpec.name must not be empty")
        if self.intensity < 0:
            raise ValueError(f"SupervisorSpec {self.name!r}: intensity must be >= 0")
        if self.period <= 0:
            raise ValueError(f"SupervisorSpec {self.name!r}: period must be > 0")
        seen: set[str] = set()
        for child in self.children:
            if child.name in seen:
                raise ValueError(f"SupervisorSpec {self.name!r}: duplicate child {child.name!r}")
            seen.add(child.name)
