"""How callers use the router: ``open_chat`` streams one model call.

::

    from convergiod.actors.router.client import open_chat
    from convergiod.actors.router.messages import Message, TextDelta, Finished, Failed

    async with open_chat(
        system.ref("router"),
        tenant="local",
        request_id="task-7/step-3",
        messages=[Message(role="user", content="Hello")],
        agent="chief",
    ) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                print(event.text, end="")
    terminal = events.terminal   # Finished(result) or Failed(code, message, ...)

The call is sent with ``tell`` (back-pressure when the router's mailbox is full), not ``ask``:
the terminal event travels on the channel, so nothing waits for the router's bookkeeping
after the answer. Leaving the block early closes the channel, which stops the upstream call.
If the router dies mid-call the channel closes without a terminal event, and the stream
ends with ``Failed(code="unavailable")``.

``run_chat`` is the faster form for a caller that handles each event as it comes (forwards
it, collects it): it takes an async callback instead of yielding an iterator, and runs the
call on the caller's own task whenever the router has room (``ask_now(ChatSlot())``): no
worker task, no channel, no scheduler trip between a network read and the callback. When
the router is at its concurrency (or restarting) it goes through the mailbox like
``open_chat``. The router's shared state (pool, cooldowns, budgets, ledger) and its rules
(retries, fallbacks, timeouts, usage counted once) are the same on both paths::

    async def on_event(event: ChatEvent) -> None:
        if type(event) is TextDelta:
            await send_somewhere(event.text)

    terminal = await run_chat(system.ref("router"), on_event, tenant="local",
                              request_id="r1", messages=[Message(role="user", content="Hi")])

Output that arrived together comes as one ``TextDelta`` on both paths. ``on_event`` may
raise ``ClientGone`` (``convergiod.actors.router.core``) to stop the call: the terminal is
then ``Failed(code="cancelled")``; cancelling the caller stops it too (the usage of what was
already streamed is still recorded).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from convergiod.actors.router.core import ClientGone
from convergiod.actors.router.messages import (
    Chat,
    ChatEvent,
    ChatSlot,
    Failed,
    Finished,
    Message,
    Terminal,
    TextDelta,
    ToolSpec,
)
from convergiod.runtime import NOT_NOW

__all__ = ["ChatStream", "open_chat", "run_chat"]


class ChatStream:
    """Async iterator over a call's events; the terminal event is yielded last and kept in
    ``terminal``."""

    def __init__(self, receive: trio.MemoryReceiveChannel[ChatEvent]) -> None:
        self._receive = receive
        self._peeked: ChatEvent | None = None
        self.terminal: Terminal | None = None

    def __aiter__(self) -> ChatStream:
        return self

    def take_text(self) -> str:
        """The text of the ``TextDelta`` events already waiting, joined, without blocking:
        lets a caller that forwards text over a network send one frame for many deltas."""
        parts: list[str] = []
        while self._peeked is None:
            try:
                event = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if type(event) is TextDelta:
                parts.append(event.text)
            else:
                self._peeked = event
        return "".join(parts)

    async def __anext__(self) -> ChatEvent:
        if self.terminal is not None:
            raise StopAsyncIteration
        event: ChatEvent
        try:
            if self._peeked is not None:
                event, self._peeked = self._peeked, None
            else:
                event = await self._receive.receive()
        except trio.EndOfChannel:
            self.terminal = Failed(code="unavailable", message="the router stopped mid-call")
            return self.terminal
        if isinstance(event, (Finished, Failed)):
            self.terminal = event
        return event


def open_chat(
    router: Any,
    *,
    tenant: str,
    request_id: str,
    messages: list[Message],
    agent: str | None = None,
    model: str | None = None,
    tools: list[ToolSpec] | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    task: str | None = None,
    buffer: int = 64,
) -> _OpenChat:
    """Start a call on ``router`` (an ``ActorRef``): ``async with open_chat(...) as events``
    yields its event stream; leaving the block closes it (and stops the call)."""
    send, receive = trio.open_memory_channel[ChatEvent](buffer)
    chat = Chat(
        tenant=tenant,
        request_id=request_id,
        messages=messages,
        stream_to=send,
        agent=agent,
        model=model,
        tools=tools or [],
        max_tokens=max_tokens,
        temperature=temperature,
        task=task,
    )
    return _OpenChat(router, chat, receive)


class _OpenChat:
    """The context manager of ``open_chat`` (a plain class: it is on every call's path)."""

    __slots__ = ("_chat", "_receive", "_router")

    def __init__(
        self, router: Any, chat: Chat, receive: trio.MemoryReceiveChannel[ChatEvent]
    ) -> None:
        self._router = router
        self._chat = chat
        self._receive = receive

    async def __aenter__(self) -> ChatStream:
        try:
            await self._router.tell(self._chat)
        except BaseException:
            self._chat.stream_to.close()
            self._receive.close()
            raise
        return ChatStream(self._receive)

    async def __aexit__(self, *exc_info: object) -> None:
        self._receive.close()


async def run_chat(
    router: Any,
    on_event: Callable[[ChatEvent], Awaitable[None]],
    *,
    tenant: str,
    request_id: str,
    messages: list[Message],
    agent: str | None = None,
    model: str | None = None,
    tools: list[ToolSpec] | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    task: str | None = None,
) -> Terminal:
    """Make one call on ``router`` (an ``ActorRef``): ``on_event`` gets every event but the
    terminal one, which is returned. On the caller's task when the router has room (see the
    module's docstring), else through the mailbox."""
    chat = Chat(
        tenant=tenant,
        request_id=request_id,
        messages=messages,
        stream_to=None,
        agent=agent,
        model=model,
        tools=tools or [],
        max_tokens=max_tokens,
        temperature=temperature,
        task=task,
    )
    lease = router.ask_now(_SLOT)
    if lease is not NOT_NOW:
        return await lease.run(chat, on_event)  # type: ignore[no-any-return]
    send, receive = trio.open_memory_channel[ChatEvent](64)
    chat.stream_to = send
    async with _OpenChat(router, chat, receive) as events:
        async for event in events:
            if events.terminal is not None:
                break
            if type(event) is TextDelta:
                more = events.take_text()
                if more:
                    event = TextDelta(event.text + more)
            try:
                await on_event(event)
            except ClientGone:
                return Failed(code="cancelled", message="the caller went away")
    terminal = events.terminal
    assert terminal is not None
    return terminal


_SLOT = ChatSlot()
