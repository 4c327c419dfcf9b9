"""The provider interface and the pieces every HTTP provider shares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from convergiod.actors.router.messages import Message, ToolSpec

__all__ = ["Outcome", "Provider", "ProviderRequest", "Sink", "api_key"]


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    upstream: str
    messages: list[Message]
    tools: list[ToolSpec]
    max_tokens: int
    temperature: float | None


@dataclass(slots=True)
class Outcome:
    finish_reason: str = "stop"
    input_tokens: int | None = None
    output_tokens: int | None = None


class Sink(Protocol):
    """Where a provider delivers output; each call may wait (back-pressure)."""

    def activity(self) -> None:
        """Bytes arrived (keeps the idle timer alive, does not count as a first token)."""

    async def text(self, text: str) -> None: ...

    async def tool_delta(
        self, key: int, *, id: str | None, name: str | None, arguments: str
    ) -> None: ...

    async def tool_done(self, key: int) -> None: ...


class Provider(Protocol):
    async def stream(self, request: ProviderRequest, sink: Sink) -> Outcome: ...


def api_key(env_name: str | None) -> str | None:
    """The key from the named environment variable, read at call time (never stored)."""
    if not env_name:
        return None
    return os.environ.get(env_name) or None
