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
    """Where a provider delivers output.

    ``text``, ``tool_delta`` and ``tool_done`` queue output in order; ``flush`` sends what is
    queued, and may wait (back-pressure). A provider flushes once per batch of output that
    arrived together (one network read, one generated token), so text that arrived together
    reaches the caller as one ``TextDelta`` and consecutive fragments of one tool call as one
    ``ToolCallDelta``. It never holds back output to wait for more: every batch is flushed
    before the next wait for the network, and before a failure is raised. The last batch
    (the one that came with the end of the stream) may be left queued when ``stream``
    returns: the router flushes it with the end of the call, so the last text and the
    answer leave together. (Bytes that have
    already arrived while the previous batch was being handled join it: they are read
    without waiting; ``urgent`` says when not to, because the caller has had nothing yet.)
    """

    def activity(self) -> None:
        """Bytes arrived (keeps the idle timer alive, does not count as a first token)."""

    def text(self, text: str) -> None: ...

    def tool_delta(self, key: int, *, id: str | None, name: str | None, arguments: str) -> None: ...

    def tool_done(self, key: int) -> None: ...

    def urgent(self) -> bool:
        """Output is queued and none has gone out yet (the first token): flush it now,
        without first taking what else has already arrived."""
        ...

    def crowded(self) -> bool:
        """Other calls are in flight: before flushing, let their tasks run once (no waiting
        on the clock) and take what arrived meanwhile: under load one frame carries what
        one frame per read would have, at the cost of no latency when alone."""
        ...

    async def flush(self) -> None: ...


class Provider(Protocol):
    async def stream(self, request: ProviderRequest, sink: Sink) -> Outcome: ...


def api_key(env_name: str | None) -> str | None:
    """The key from the named environment variable, read at call time (never stored)."""
    if not env_name:
        return None
    return os.environ.get(env_name) or None
