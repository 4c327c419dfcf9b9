"""The provider interface and the pieces every HTTP provider shares."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from convergiod.actors.router.messages import Message, ToolSpec

__all__ = ["Outcome", "Provider", "ProviderRequest", "Sink", "api_key", "tools_once"]


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


_TOOLS_CACHE_LIMIT = 256
_tools_bodies: dict[tuple[int, Any], tuple[list[ToolSpec], list[dict[str, Any]]]] = {}


def tools_once(
    tools: list[ToolSpec], build: Callable[[list[ToolSpec]], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """``build(tools)``, kept by the list's identity (with the list, so its id cannot be
    reused while kept): an agent offers the same list object on every turn, and tool lists
    are not changed once a call was made with them (as for the router's estimates). The
    result is shared: callers only encode it."""
    key = (id(tools), build)
    hit = _tools_bodies.get(key)
    if hit is not None and hit[0] is tools:
        return hit[1]
    body = build(tools)
    if len(_tools_bodies) >= _TOOLS_CACHE_LIMIT:
        _tools_bodies.clear()
    _tools_bodies[key] = (tools, body)
    return body
